//! cargo fuzz target: [`meridian_tests::fuzzing::sql_text`] on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meridian_tests::fuzzing::sql_text(data));
