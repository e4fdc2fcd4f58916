//! cargo fuzz target: [`meridian_tests::fuzzing::tablet_rpc`]: a spanserver's tablet and Raft
//! transport RPCs fed decoded protos, on a one-node in-process cluster.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meridian_tests::fuzzing::tablet_rpc(data));
