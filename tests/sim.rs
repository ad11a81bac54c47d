//! The simulator through the command line: determinism across processes,
//! fault plan files (valid, generated, malformed, contradictory), and the
//! benchmark output contract.

use std::path::PathBuf;
use std::process::Output;

use faultline_sim::workloads::chatter;
use faultline_sim::{FaultPlan, SchedulerKind, TraceCapture};

use crate::support::faultline;

fn run(args: &[&str]) -> Output {
    faultline().args(args).output().expect("run faultline")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A file under the system's temporary directory, unique to this process
/// and its name, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn to_str(&self) -> Option<&str> {
        self.0.to_str()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A [`TempFile`] named after `name`, holding `text`.
fn temp_file(name: &str, text: &str) -> TempFile {
    let path = std::env::temp_dir().join(format!("faultline-sim-{}-{name}", std::process::id()));
    std::fs::write(&path, text).expect("write a temporary file");
    TempFile(path)
}

#[test]
fn a_seed_replayed_in_another_process_gives_the_same_trace_hash() {
    for (seed, scheduler, name) in [
        (0, SchedulerKind::Random, "random"),
        (42, SchedulerKind::Random, "random"),
        (0x5eed_1234, SchedulerKind::Random, "random"),
        (
            7,
            SchedulerKind::Pct {
                depth: 3,
                steps_estimate: 10_000,
            },
            "pct",
        ),
        (7, SchedulerKind::Fifo, "fifo"),
    ] {
        let (sim, _) = chatter::run(seed, scheduler, TraceCapture::HashOnly);
        let here = sim.trace().hash_hex();
        let output = run(&[
            "sim",
            "selftest",
            "--seed",
            &seed.to_string(),
            "--scheduler",
            name,
        ]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let there = stdout(&output);
        assert!(
            there.contains(&format!("hash={here}")),
            "seed {seed} ({name}): here {here}, there {there}"
        );
    }
}

#[test]
fn a_valid_plan_file_is_printed_one_fault_a_line() {
    let path = temp_file(
        "valid.toml",
        r#"
[[fault]]
at = "1s"
kind = "partition"
a = ["sup"]
b = ["a-1", "a-2"]

[[fault]]
at = "2.5s"
kind = "heal"
a = ["sup"]
b = ["a-1", "a-2"]

[[fault]]
at = "3s"
kind = "stall"
node = "a-1"
duration = "250ms"
"#,
    );
    let output = run(&[
        "sim",
        "plan",
        path.to_str().expect("utf-8"),
        "--nodes",
        "sup,a-1,a-2",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("valid, 3 fault(s)"), "{text}");
    assert!(
        text.contains("t=1.000s partition {sup} | {a-1,a-2}"),
        "{text}"
    );
    assert!(text.contains("t=3.000s stall a-1 for 250ms"), "{text}");
}

#[test]
fn a_contradictory_plan_names_the_file_and_line_and_exits_4() {
    let path = temp_file(
        "contradictory.toml",
        "[[fault]]\nat = \"1s\"\nkind = \"kill\"\nnode = \"a-1\"\n\n[[fault]]\nat = \"2s\"\nkind = \"restart\"\nnode = \"a-2\"\n",
    );
    let file = path.to_str().expect("utf-8");
    let output = run(&["sim", "plan", file]);
    assert_eq!(output.status.code(), Some(4));
    let error = stderr(&output);
    assert!(
        error.contains(&format!("{file}:6:1: restarts a-2, which is not killed")),
        "{error}"
    );
}

#[test]
fn a_malformed_plan_names_the_file_and_line_and_exits_4() {
    for (name, text, line, problem) in [
        ("syntax.toml", "[[fault]]\nat = \"1s\nkind = \"kill\"\n", 2, "string"),
        ("field.toml", "[[fault]]\nat = \"1s\"\nkind = \"stall\"\nnode = \"n\"\nduration = \"soon\"\n", 5, "invalid duration `soon`"),
        ("kind.toml", "[[fault]]\nat = \"1s\"\nkind = \"meteor\"\n", 3, "unknown kind"),
        ("order.toml", "[[fault]]\nat = \"2s\"\nkind = \"kill\"\nnode = \"n\"\n[[fault]]\nat = \"1s\"\nkind = \"restart\"\nnode = \"n\"\n", 5, "sorted by time"),
    ] {
        let path = temp_file(name, text);
        let file = path.to_str().expect("utf-8");
        let output = run(&["sim", "plan", file]);
        assert_eq!(output.status.code(), Some(4), "{name}");
        let error = stderr(&output);
        assert!(error.contains(&format!("{file}:{line}:")), "{name}: {error}");
        assert!(error.contains(problem), "{name}: {error}");
        assert!(!error.contains("panicked"), "{name}: {error}");
    }
}

#[test]
fn a_plan_naming_an_unknown_node_exits_4() {
    let path = temp_file(
        "unknown.toml",
        "[[fault]]\nat = \"1s\"\nkind = \"kill\"\nnode = \"ghost\"\n",
    );
    let file = path.to_str().expect("utf-8");
    let output = run(&["sim", "plan", file, "--nodes", "sup,a-1"]);
    assert_eq!(output.status.code(), Some(4));
    assert!(
        stderr(&output).contains(&format!(
            "{file}:1:1: unknown node \"ghost\" (the nodes are: sup, a-1)"
        )),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_missing_plan_file_exits_4_naming_it() {
    let output = run(&["sim", "plan", "/no/such/plan.toml"]);
    assert_eq!(output.status.code(), Some(4));
    assert!(
        stderr(&output).contains("/no/such/plan.toml: cannot read the plan"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_generated_plan_reloads_as_the_same_plan() {
    let args = [
        "sim",
        "plan",
        "--generate",
        "--seed",
        "9",
        "--profile",
        "chaos",
        "--nodes",
        "sup,a-1,a-2",
        "--duration",
        "30s",
    ];
    let output = run(&args);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.starts_with("# generated by: faultline sim plan --generate --seed 9 --profile chaos"),
        "{text}"
    );
    let loaded = FaultPlan::from_toml(&text, "generated.toml").expect("the printed plan loads");
    assert!(!loaded.is_empty());
    assert_eq!(
        stdout(&run(&args)),
        text,
        "the same seed prints the same plan"
    );
    let path = temp_file("generated.toml", &text);
    let check = run(&[
        "sim",
        "plan",
        path.to_str().expect("utf-8"),
        "--nodes",
        "sup,a-1,a-2",
    ]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
}

#[test]
fn an_unknown_profile_or_workload_is_a_usage_error() {
    let output = run(&[
        "sim",
        "plan",
        "--generate",
        "--profile",
        "doom",
        "--nodes",
        "a,b",
    ]);
    assert_eq!(output.status.code(), Some(4));
    assert!(stderr(&output).contains("unknown fault profile \"doom\""));
    let output = run(&["sim", "bench", "--workload", "teleport"]);
    assert_eq!(output.status.code(), Some(4));
    assert!(stderr(&output).contains("unknown workload \"teleport\""));
}

#[test]
fn bench_machine_output_is_one_result_line_per_workload() {
    let output = run(&[
        "sim",
        "bench",
        "--machine",
        "--workload",
        "sleepers",
        "--seed",
        "3",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let fields: Vec<&str> = lines[0].split(' ').collect();
    assert_eq!(
        (fields[0], fields[1], fields[2], fields[4]),
        ("RESULT", "faultline-sim", "sleepers", "sim_s/wall_s")
    );
    assert!(fields[3].parse::<f64>().expect("a number") > 0.0);
}

#[test]
fn bench_human_output_shows_throughput_and_compression() {
    let output = run(&["sim", "bench", "--workload", "sleepers"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.starts_with("sleepers"), "{text}");
    assert!(
        text.contains("sim_s/wall_s") && text.contains("compression") && text.contains("(wall "),
        "{text}"
    );
}

#[test]
fn selftest_writes_a_chrome_trace() {
    let path = temp_file("trace.json", "");
    let output = run(&[
        "sim",
        "selftest",
        "--seed",
        "5",
        "--chrome-trace",
        path.to_str().expect("utf-8"),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let document: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path.0).expect("written")).expect("JSON");
    assert!(document["traceEvents"]
        .as_array()
        .is_some_and(|events| events.len() > 100));
}
