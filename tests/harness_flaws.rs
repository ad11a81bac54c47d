//! With known flaws compiled in (`--features flaws`): a failure found by
//! `sim fuzz` replays from its report's command alone, in a fresh process,
//! to the same hash; its shrunk plan and workload still fail the same way.

#![cfg(feature = "flaws")]

use std::process::{Command, Output};

use serde_json::Value;

use crate::support::binary_path;
use crate::support::cluster::TempDir;

/// Run a command line printed by faultline (`faultline sim replay …`).
fn run_printed(command: &str) -> Output {
    let mut words = command.split_whitespace();
    assert_eq!(words.next(), Some("faultline"), "{command}");
    Command::new(binary_path())
        .args(words)
        .output()
        .expect("run the printed command")
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

#[test]
fn a_fuzz_report_replays_from_its_command_alone_and_its_shrunk_plan_still_fails() {
    let dir = TempDir::new("flaw-report");
    let fuzz = Command::new(binary_path())
        .args([
            "sim",
            "fuzz",
            "timeout-races",
            "--flaw",
            "use-after-destroy",
            "--seeds",
            "20",
        ])
        .args([
            "--jobs",
            "1",
            "--stop-at-first",
            "--determinism-every",
            "0",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .expect("fuzz");
    let printed = String::from_utf8_lossy(&fuzz.stdout).into_owned();
    assert_eq!(
        fuzz.status.code(),
        Some(1),
        "a safety failure is found:\n{printed}"
    );
    let report_path = std::fs::read_dir(dir.path())
        .expect("the report directory")
        .map(|entry| entry.expect("an entry").path())
        .find(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .expect("a JSON report");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).expect("read")).expect("JSON");
    assert_eq!(report["signature"], "use-after-destroy@op", "{report:#}");

    let replay = run_printed(report["replay"].as_str().expect("a replay command"));
    let replay_out = String::from_utf8_lossy(&replay.stdout).into_owned();
    let last = replay_out.lines().last().expect("a closing line");
    assert_eq!(replay.status.code(), Some(1), "{last}");
    assert!(last.starts_with("FAIL scenario=timeout-races"), "{last}");
    assert_eq!(
        field(last, "hash="),
        report["hash"].as_str().expect("hash"),
        "same hash in a fresh process"
    );

    let shrunk = &report["shrunk"];
    let faults_after = shrunk["faults_after"].as_u64().expect("shrunk faults");
    let actions_after = shrunk["actions_after"].as_u64().expect("shrunk actions");
    assert!(faults_after <= 6, "a handful of faults: {shrunk:#}");
    assert!(
        actions_after < shrunk["actions_before"].as_u64().expect("actions before"),
        "{shrunk:#}"
    );
    let shrunk_replay = run_printed(shrunk["replay"].as_str().expect("a shrunk replay command"));
    let shrunk_out = String::from_utf8_lossy(&shrunk_replay.stdout).into_owned();
    assert_eq!(shrunk_replay.status.code(), Some(1), "{shrunk_out}");
    assert!(
        shrunk_out.contains("signature: use-after-destroy@op"),
        "{shrunk_out}"
    );
    let last = shrunk_out.lines().last().expect("a closing line");
    assert_eq!(
        field(last, "hash="),
        shrunk["hash"].as_str().expect("shrunk hash")
    );
}
