//! The layers point one way (DESIGN.md, "Workspace layout"), checked on `cargo metadata`: each
//! production crate may depend only on the Meridian crates below it, and nothing in production
//! depends on the tests crate.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Each workspace crate and the Meridian crates it may depend on (normal and build
/// dependencies; dev-dependencies are for its own tests).
const ALLOWED: &[(&str, &[&str])] = &[
    ("meridian-common", &[]),
    ("meridian-security", &[]),
    ("meridian-proto", &[]),
    ("meridian-truetime", &[]),
    (
        "meridian-truetime-daemon",
        &["meridian-proto", "meridian-truetime"],
    ),
    (
        "meridian-spanserver",
        &["meridian-common", "meridian-proto", "meridian-truetime"],
    ),
    (
        "meridian-kv",
        &["meridian-common", "meridian-proto", "meridian-truetime"],
    ),
    (
        "meridian-sql",
        &[
            "meridian-common",
            "meridian-kv",
            "meridian-security",
            "meridian-truetime",
        ],
    ),
    ("meridian-pd", &["meridian-common", "meridian-proto"]),
    (
        "meridian-client",
        &["meridian-common", "meridian-proto", "meridian-security"],
    ),
    (
        "meridian-node",
        &[
            "meridian-common",
            "meridian-proto",
            "meridian-truetime",
            "meridian-truetime-daemon",
            "meridian-spanserver",
            "meridian-kv",
            "meridian-sql",
            "meridian-pd",
        ],
    ),
    (
        "meridian-bench",
        &["meridian-client", "meridian-node", "meridian-truetime"],
    ),
    (
        "meridian",
        &[
            "meridian-bench",
            "meridian-client",
            "meridian-node",
            "meridian-pd",
            "meridian-proto",
            "meridian-security",
            "meridian-spanserver",
            "meridian-truetime",
            "meridian-truetime-daemon",
        ],
    ),
];

/// Crates that must not reach RPC libraries: the leaf and TrueTime's core.
const NO_RPC: &[&str] = &["meridian-common", "meridian-truetime"];

fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .args(["--manifest-path", manifest])
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

/// Each workspace package's non-dev dependencies.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let meta = metadata();
    let packages = meta["packages"].as_array().expect("packages");
    packages
        .iter()
        .map(|p| {
            let name = p["name"].as_str().expect("name").to_string();
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|d| d["kind"].as_str() != Some("dev"))
                .map(|d| d["name"].as_str().expect("dependency name").to_string())
                .collect();
            (name, deps)
        })
        .collect()
}

#[test]
fn every_crate_depends_only_on_the_layers_below_it() {
    let deps = dependencies();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for (name, crate_deps) in &deps {
        if name == "meridian-tests" {
            continue;
        }
        let Some(ok) = allowed.get(name.as_str()) else {
            wrong.push(format!("{name} is not in the layering table: add it"));
            continue;
        };
        for dep in crate_deps.iter().filter(|d| d.starts_with("meridian")) {
            if !ok.contains(&dep.as_str()) {
                wrong.push(format!("{name} must not depend on {dep}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "layering violations:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_leaf_and_truetimes_core_stay_free_of_rpc() {
    let deps = dependencies();
    for name in NO_RPC {
        let crate_deps = &deps[*name];
        for rpc in ["tonic", "prost", "meridian-proto"] {
            assert!(!crate_deps.contains(rpc), "{name} depends on {rpc}");
        }
    }
}

#[test]
fn the_check_itself_can_fail() {
    // The table must know every production crate, and a crate named in it must exist; a
    // renamed crate would otherwise pass unchecked.
    let deps = dependencies();
    for (name, _) in ALLOWED {
        assert!(deps.contains_key(*name), "{name} is not a workspace crate");
    }
    assert!(
        !ALLOWED
            .iter()
            .any(|(name, ok)| *name == "meridian-spanserver" && ok.contains(&"meridian-sql")),
        "the tablet server may never depend on the SQL layer"
    );
}
