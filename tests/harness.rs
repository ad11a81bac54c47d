//! The scenario harness through the command line: `sim list`, `run`,
//! `replay`, `fuzz`, their closing lines, exit statuses and bad input.

use std::process::Output;

use crate::support::cluster::TempDir;
use crate::support::faultline;

const REQUIRED_SCENARIOS: [&str; 9] = [
    "smoke",
    "cancel-storm",
    "slot-pressure",
    "agent-churn",
    "partitions",
    "stalls",
    "timeout-races",
    "client-disconnects",
    "chaos",
];

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn last_line(output: &Output) -> String {
    stdout(output)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

/// The `hash=` field of a closing line.
fn hash_of(line: &str) -> String {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("hash="))
        .unwrap_or_else(|| panic!("no hash in {line:?}"))
        .to_string()
}

#[test]
fn list_names_every_required_scenario() {
    let output = faultline()
        .args(["sim", "list"])
        .output()
        .expect("run faultline");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed = stdout(&output);
    for name in REQUIRED_SCENARIOS {
        assert!(
            listed
                .lines()
                .any(|line| line.split_whitespace().next() == Some(name)),
            "`{name}` missing from:\n{listed}"
        );
    }
}

#[test]
fn run_ends_with_the_closing_line_and_replay_reproduces_its_hash() {
    let run = faultline()
        .args(["sim", "run", "smoke", "--seed", "7"])
        .output()
        .expect("run");
    assert_eq!(run.status.code(), Some(0), "{}", stdout(&run));
    let line = last_line(&run);
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[0], "ok", "{line}");
    for (index, key) in [
        "scenario=smoke",
        "seed=0x7",
        "hash=",
        "events=",
        "sim_time=",
        "wall=",
    ]
    .iter()
    .enumerate()
    {
        assert!(fields[index + 1].starts_with(key), "field {key} in {line}");
    }
    let hash = hash_of(&line);
    assert_eq!(hash.len(), 16, "{line}");

    let replay = faultline()
        .args([
            "sim",
            "replay",
            "smoke",
            "--seed",
            "0x7",
            "--quiet",
            "--expect-hash",
            &hash,
        ])
        .output()
        .expect("replay");
    assert_eq!(replay.status.code(), Some(0), "{}", stdout(&replay));
    assert_eq!(
        hash_of(&last_line(&replay)),
        hash,
        "a replay in a fresh process gives the same hash"
    );

    let wrong = faultline()
        .args([
            "sim",
            "replay",
            "smoke",
            "--seed",
            "7",
            "--quiet",
            "--expect-hash",
            "0123456789abcdef",
        ])
        .output()
        .expect("replay");
    assert_eq!(
        wrong.status.code(),
        Some(3),
        "a different hash is nondeterminism"
    );
    assert!(stdout(&wrong).contains("NONDETERMINISM"));
}

#[test]
fn different_seeds_give_different_traces() {
    let hashes: Vec<String> = ["1", "2"]
        .iter()
        .map(|seed| {
            let output = faultline()
                .args(["sim", "run", "cancel-storm", "--seed", seed])
                .output()
                .expect("run");
            hash_of(&last_line(&output))
        })
        .collect();
    assert_ne!(hashes[0], hashes[1]);
}

#[test]
fn a_bad_scenario_file_exits_4_naming_file_line_and_field() {
    let dir = TempDir::new("bad-scenario");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "name = \"bad\"\n[workload]\ncancel_probability = 2.0\n",
    )
    .expect("write");
    let output = faultline()
        .args([
            "sim",
            "run",
            path.to_str().expect("utf-8 path"),
            "--seed",
            "1",
        ])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.toml:3"), "{stderr}");
    assert!(stderr.contains("workload.cancel_probability"), "{stderr}");

    let unknown = faultline()
        .args(["sim", "run", "no-such-scenario", "--seed", "1"])
        .output()
        .expect("run");
    assert_eq!(unknown.status.code(), Some(4));
    let bad_shard = faultline()
        .args(["sim", "fuzz", "smoke", "--shard", "4/4"])
        .output()
        .expect("run");
    assert_eq!(bad_shard.status.code(), Some(4));
}

#[test]
fn fuzz_passes_a_clean_build_and_ends_with_its_summary_line() {
    let dir = TempDir::new("fuzz-clean");
    let output = faultline()
        .args([
            "sim",
            "fuzz",
            "smoke",
            "timeout-races",
            "--seeds",
            "6",
            "--jobs",
            "2",
            "--determinism-every",
            "3",
        ])
        .arg("--out")
        .arg(dir.path())
        .output()
        .expect("fuzz");
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let line = last_line(&output);
    assert!(
        line.starts_with("fuzz: runs=12 failures=0 seeds_per_sec="),
        "{line}"
    );
    assert!(stdout(&output).contains("sometimes-probes"));
}

#[test]
fn flaws_need_a_build_with_the_flaws_feature() {
    if cfg!(feature = "flaws") {
        return;
    }
    let output = faultline()
        .args([
            "sim",
            "run",
            "smoke",
            "--seed",
            "1",
            "--flaw",
            "use-after-destroy",
        ])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--features flaws"));
}
