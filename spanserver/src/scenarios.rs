//! The runner shared by the scenario tests: scripts under `spanserver/testdata/<dir>/*.txt` feed
//! a harness one command per line, and the transcript (comments and blank lines kept, each
//! command echoed as `> command`, then its output or `error: …`) is compared with the recorded
//! `.out` file beside the script. `UPDATE_GOLDEN=1` rewrites the recordings instead.

use std::path::{Path, PathBuf};

/// Runs every script in `testdata/<dir>`, each on a fresh harness from `new_harness`, and fails
/// listing every script whose transcript differs from its recording.
pub fn check<H>(dir: &str, mut new_harness: impl FnMut() -> H)
where
    H: FnMut(&str) -> Result<String, String>,
{
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(dir);
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    scripts.sort();
    assert!(
        !scripts.is_empty(),
        "no scenario scripts in {}",
        root.display()
    );
    let mut differing = Vec::new();
    for script in scripts {
        let text = std::fs::read_to_string(&script).expect("read script");
        let actual = transcript(&text, new_harness());
        let golden = script.with_extension("out");
        if update {
            std::fs::write(&golden, &actual).expect("write golden");
            continue;
        }
        let expected = std::fs::read_to_string(&golden)
            .unwrap_or_else(|_| panic!("{} missing: run with UPDATE_GOLDEN=1", golden.display()));
        if actual != expected {
            differing.push(format!(
                "{} differs from its recorded output:\n--- expected\n{expected}\n--- actual\n{actual}",
                script.display()
            ));
        }
    }
    assert!(differing.is_empty(), "{}", differing.join("\n"));
}

fn transcript(script: &str, mut harness: impl FnMut(&str) -> Result<String, String>) -> String {
    let mut out = String::new();
    for line in script.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        out.push_str(&format!("> {trimmed}\n"));
        match harness(trimmed) {
            Ok(text) => out.push_str(&text),
            Err(e) => out.push_str(&format!("error: {e}\n")),
        }
    }
    out
}

/// A script line split into its command, its `key=value` options and its bare words.
pub struct Line<'a> {
    pub command: &'a str,
    pub args: std::collections::BTreeMap<&'a str, &'a str>,
    pub bare: Vec<&'a str>,
}

/// Splits a script line (see [`Line`]).
pub fn split_line(line: &str) -> Line<'_> {
    let mut words = line.split_whitespace();
    let command = words.next().unwrap_or_default();
    let mut args = std::collections::BTreeMap::new();
    let mut bare = Vec::new();
    for word in words {
        match word.split_once('=') {
            Some((k, v)) => {
                args.insert(k, v);
            }
            None => bare.push(word),
        }
    }
    Line {
        command,
        args,
        bare,
    }
}
