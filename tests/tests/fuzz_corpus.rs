//! Replays every saved fuzz input (`fuzz/corpus/<target>/`, and `fuzz/regressions/<target>/`
//! for inputs that once crashed) through the fuzz targets' bodies
//! ([`meridian_tests::fuzzing`]), on a default-sized test thread: what the fuzzer found stays
//! fixed in the default test run. Plus the hostile inputs that started it all.

use std::path::PathBuf;

use meridian_tests::fuzzing::{self, TabletRpcTarget, TARGETS};

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

#[test]
fn every_saved_fuzz_input_runs_cleanly() {
    let mut replayed = 0;
    for (name, target) in TARGETS {
        for (path, data) in saved_inputs(name) {
            eprintln!("{name}: {}", path.display());
            target(&data);
            replayed += 1;
        }
    }
    assert!(
        replayed > 100,
        "only {replayed} saved inputs: is fuzz/corpus missing?"
    );
}

/// The saved inputs of every fuzz target in `fuzz/<kind>/<name>/`, read.
fn saved_inputs(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut inputs = Vec::new();
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(kind).join(name)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_file() {
                let data = std::fs::read(&path).expect("read a saved input");
                inputs.push((path, data));
            }
        }
    }
    inputs
}

/// The tablet RPC target's saved inputs, on one node, and a few by hand: every RPC with an
/// empty body and with a body of 0xff bytes.
#[test]
fn every_saved_tablet_rpc_input_runs_cleanly() {
    let target = TabletRpcTarget::start();
    for which in 0..7u8 {
        target.call(&[which]);
        let mut junk = vec![which];
        junk.extend_from_slice(&[0xff; 64]);
        target.call(&junk);
    }
    let inputs = saved_inputs("tablet_rpc");
    for (path, data) in &inputs {
        eprintln!("tablet_rpc: {}", path.display());
        target.call(data);
    }
    assert!(
        inputs.len() > 50,
        "only {} saved tablet_rpc inputs: is fuzz/corpus/tablet_rpc missing?",
        inputs.len()
    );
}

/// The inputs that crash pgwire's decoder when it decodes them unchecked: the server's frame
/// check refuses them first, so the target (which reads as the server does) survives them.
#[test]
fn inputs_that_crash_pgwire_unchecked_are_refused_first() {
    let dir = fuzz_dir().join("known-upstream/pgwire_frontend");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/known-upstream/pgwire_frontend") {
        let path = entry.expect("a directory entry").path();
        eprintln!("pgwire_frontend: {}", path.display());
        fuzzing::pgwire_frontend(&std::fs::read(&path).expect("a saved input"));
        replayed += 1;
    }
    assert!(replayed >= 5, "only {replayed} known-upstream inputs");
}

#[test]
fn hostile_inputs_run_cleanly() {
    let chain = format!("SELECT {}", vec!["1"; 300_000].join("+"));
    fuzzing::sql_text(chain.as_bytes());
    fuzzing::sql_text(format!("SELECT {}1{}", "(".repeat(10_000), ")".repeat(10_000)).as_bytes());
    fuzzing::sql_text(format!("SELECT {}1", "- ".repeat(100_000)).as_bytes());
    fuzzing::sql_text(
        format!(
            "SELECT {} 1 {}",
            "CASE WHEN TRUE THEN ".repeat(5_000),
            " END".repeat(5_000)
        )
        .as_bytes(),
    );
    fuzzing::sql_text(vec!["SELECT 1"; 60_000].join(" UNION ").as_bytes());
    fuzzing::sql_text(b"\xff\xfe not utf-8");
    // A message claiming 2 GiB, a negative length, a truncated startup.
    fuzzing::pgwire_frontend(b"Q\x7f\xff\xff\xffSELECT");
    fuzzing::pgwire_frontend(b"Q\xff\xff\xff\xf0");
    fuzzing::pgwire_frontend(&[0, 0, 0, 40, 0, 3]);
    fuzzing::stored_bytes(&[0xff; 64]);
    fuzzing::stored_bytes(&[]);
}
