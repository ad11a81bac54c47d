//! The failure report: one Markdown file for people and one JSON file for
//! tools, both led by the one-line command that replays the failure.

use std::path::{Path, PathBuf};

use anyhow::Context;
use faultline_scenarios::{catalogue_dir, Failure, RunReport, SchedulerChoice};
use serde::Serialize;

use super::shrinking::{write_shrunk, Shrunk};
use super::{file_hash, RunTarget, BUILD_COMMIT};

/// How a scheduler is written on the command line.
pub fn scheduler_arg(choice: SchedulerChoice) -> String {
    match choice {
        SchedulerChoice::Random => "random".into(),
        SchedulerChoice::Fifo => "fifo".into(),
        SchedulerChoice::Pct { depth } => format!("pct:{depth}"),
    }
}

/// A scenario as a replay command names it: its catalogue name when it is
/// in the shipped catalogue (portable across checkouts), else its path.
fn scenario_arg(path: &Path, name: &str) -> String {
    let in_catalogue = path
        .parent()
        .zip(catalogue_dir().canonicalize().ok())
        .is_some_and(|(parent, catalogue)| {
            parent
                .canonicalize()
                .is_ok_and(|parent| parent == catalogue)
        });
    if in_catalogue {
        name.to_string()
    } else {
        path.display().to_string()
    }
}

/// The command that replays `report` bit for bit, including the commit and
/// the scenario file's hash. `hash` overrides the expected hash.
pub fn replay_command(
    scenario_path: &Path,
    target: &RunTarget,
    report: &RunReport,
    hash: Option<&str>,
) -> anyhow::Result<String> {
    let mut command = format!(
        "faultline sim replay {} --seed {:#x}",
        scenario_arg(scenario_path, &report.scenario),
        report.seed
    );
    if let Some(choice) = target.scheduler {
        command.push_str(&format!(" --scheduler {}", scheduler_arg(choice)));
    }
    if let Some(plan) = &target.plan {
        command.push_str(&format!(" --plan {}", plan.display()));
    }
    if let Some(workload) = &target.workload {
        command.push_str(&format!(" --workload {}", workload.display()));
    }
    for flaw in &target.flaws {
        command.push_str(&format!(" --flaw {flaw}"));
    }
    command.push_str(&format!(
        " --expect-hash {} --commit {BUILD_COMMIT} --scenario-hash {}",
        hash.unwrap_or(&report.hash),
        file_hash(scenario_path)?
    ));
    Ok(command)
}

#[derive(Serialize)]
struct ShrunkSection {
    faults_before: usize,
    faults_after: usize,
    actions_before: usize,
    actions_after: usize,
    runs: usize,
    one_minimal: bool,
    wall_seconds: f64,
    hash: String,
    plan: Vec<String>,
    workload: Vec<String>,
    plan_file: PathBuf,
    workload_file: PathBuf,
    replay: String,
}

#[derive(Serialize)]
struct BugReport<'a> {
    scenario: &'a str,
    scenario_file: String,
    scenario_hash: String,
    commit: &'a str,
    seed: u64,
    scheduler: &'a str,
    flaws: &'a [String],
    signature: String,
    failure: &'a Failure,
    hash: &'a str,
    replay: String,
    swarm_off: &'a [String],
    plan: Vec<String>,
    shrunk: Option<ShrunkSection>,
    probes: &'a std::collections::BTreeMap<String, u64>,
    trace_tail: &'a [String],
}

/// Write `<dir>/<scenario>-<seed>.md` and `.json` (and the shrunk plan and
/// workload beside them); returns the Markdown file's path.
pub fn write_report(
    dir: &Path,
    scenario_path: &Path,
    target: &RunTarget,
    report: &RunReport,
    shrunk: Option<&Shrunk>,
) -> anyhow::Result<PathBuf> {
    let failure = report.failure().context("a report needs a failed run")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let shrunk_section = match shrunk {
        Some(shrunk) => Some(shrunk_section(dir, scenario_path, target, report, shrunk)?),
        None => None,
    };
    let bug = BugReport {
        scenario: &report.scenario,
        scenario_file: scenario_path.display().to_string(),
        scenario_hash: file_hash(scenario_path)?,
        commit: BUILD_COMMIT,
        seed: report.seed,
        scheduler: &report.scheduler,
        flaws: &target.flaws,
        signature: failure.signature(),
        failure,
        hash: &report.hash,
        replay: replay_command(scenario_path, target, report, None)?,
        swarm_off: &report.swarm_off,
        plan: report.plan.events.iter().map(ToString::to_string).collect(),
        shrunk: shrunk_section,
        probes: &report.probes,
        trace_tail: &report.trace_tail,
    };
    let stem = format!("{}-{:#x}", report.scenario, report.seed);
    let json_path = dir.join(format!("{stem}.json"));
    let markdown_path = dir.join(format!("{stem}.md"));
    let json = serde_json::to_string_pretty(&bug).context("serializing the report")?;
    std::fs::write(&json_path, json).with_context(|| format!("writing {}", json_path.display()))?;
    std::fs::write(&markdown_path, render_markdown(&bug))
        .with_context(|| format!("writing {}", markdown_path.display()))?;
    Ok(markdown_path)
}

fn shrunk_section(
    dir: &Path,
    scenario_path: &Path,
    target: &RunTarget,
    report: &RunReport,
    shrunk: &Shrunk,
) -> anyhow::Result<ShrunkSection> {
    let (plan_file, workload_file) = write_shrunk(dir, &report.scenario, report.seed, shrunk)?;
    let mut shrunk_target = target.clone();
    shrunk_target.plan = Some(plan_file.clone());
    shrunk_target.workload = Some(workload_file.clone());
    Ok(ShrunkSection {
        faults_before: shrunk.original_sizes.0,
        faults_after: shrunk.plan.events.len(),
        actions_before: shrunk.original_sizes.1,
        actions_after: shrunk.workload.actions.len(),
        runs: shrunk.runs,
        one_minimal: shrunk.one_minimal,
        wall_seconds: shrunk.wall.as_secs_f64(),
        hash: shrunk.report.hash.clone(),
        plan: shrunk.plan.events.iter().map(ToString::to_string).collect(),
        workload: shrunk
            .workload
            .actions
            .iter()
            .map(ToString::to_string)
            .collect(),
        plan_file,
        workload_file,
        replay: replay_command(scenario_path, &shrunk_target, &shrunk.report, None)?,
    })
}

fn render_markdown(bug: &BugReport<'_>) -> String {
    let mut out = String::new();
    let failure = bug.failure;
    out.push_str(&format!(
        "# FAIL {} seed={:#x}: {}\n\n",
        bug.scenario, bug.seed, bug.signature
    ));
    out.push_str(&format!(
        "{} failure at t={:.3}s (virtual): **{}**: {}\n\n",
        failure.kind.as_str(),
        failure.at.as_secs_f64(),
        failure.oracle,
        failure.message
    ));
    out.push_str(&format!(
        "Replay (bit for bit):\n\n```sh\n{}\n```\n\n",
        bug.replay
    ));
    out.push_str("| | |\n|---|---|\n");
    out.push_str(&format!(
        "| scenario | `{}` ({}) |\n",
        bug.scenario, bug.scenario_file
    ));
    out.push_str(&format!(
        "| scenario file hash | `{}` |\n",
        bug.scenario_hash
    ));
    out.push_str(&format!("| commit | `{}` |\n", bug.commit));
    out.push_str(&format!("| seed | `{:#x}` ({}) |\n", bug.seed, bug.seed));
    out.push_str(&format!("| scheduler | `{}` |\n", bug.scheduler));
    out.push_str(&format!("| trace hash | `{}` |\n", bug.hash));
    if !bug.flaws.is_empty() {
        out.push_str(&format!("| flaws on | `{}` |\n", bug.flaws.join(", ")));
    }
    if !bug.swarm_off.is_empty() {
        out.push_str(&format!(
            "| swarm switched off | {} |\n",
            bug.swarm_off.join(", ")
        ));
    }
    out.push('\n');
    match &bug.shrunk {
        Some(shrunk) => {
            out.push_str(&format!(
                "## Shrunk: {} of {} faults, {} of {} workload actions\n\n",
                shrunk.faults_after,
                shrunk.faults_before,
                shrunk.actions_after,
                shrunk.actions_before
            ));
            out.push_str(&format!(
                "{} runs, {:.1}s, {}.\n\n```sh\n{}\n```\n\n",
                shrunk.runs,
                shrunk.wall_seconds,
                if shrunk.one_minimal {
                    "1-minimal"
                } else {
                    "shrink budget exhausted"
                },
                shrunk.replay
            ));
            push_list(&mut out, "Faults", &shrunk.plan);
            push_list(&mut out, "Workload", &shrunk.workload);
        }
        None => push_list(&mut out, "Fault plan", &bug.plan),
    }
    if let Some(hang) = &failure.hang_report {
        out.push_str(&format!("## Hang report\n\n```\n{hang}\n```\n\n"));
    }
    out.push_str(&format!(
        "## Last {} trace lines\n\n```\n",
        bug.trace_tail.len()
    ));
    for line in bug.trace_tail {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("```\n");
    out
}

fn push_list(out: &mut String, title: &str, lines: &[String]) {
    out.push_str(&format!("### {title}\n\n"));
    if lines.is_empty() {
        out.push_str("(none)\n\n");
        return;
    }
    for line in lines {
        out.push_str(&format!("- {line}\n"));
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use faultline_scenarios::{find_scenario, run, FailureKind, Outcome, RunOptions};

    use super::*;

    #[test]
    fn report_format_is_stable() {
        let (path, scenario) = find_scenario(&catalogue_dir(), "smoke")
            .expect("the catalogue loads")
            .expect("smoke is in the catalogue");
        let mut report = run(&scenario, &RunOptions::new(1));
        report.outcome = Outcome::Fail(Failure {
            kind: FailureKind::Safety,
            oracle: "slot-accounting".into(),
            site: "kind-pool".into(),
            message: "pool kind/parallel: held 4 + free 0 != capacity 3".into(),
            at: Duration::from_millis(12_301),
            hang_report: None,
        });
        report.trace_tail.truncate(3);
        let target = RunTarget {
            scenario: "smoke".into(),
            seed: 1,
            scheduler: None,
            plan: None,
            workload: None,
            flaws: Vec::new(),
        };
        let dir =
            std::env::temp_dir().join(format!("faultline-report-format-{}", std::process::id()));
        let written =
            write_report(&dir, &path, &target, &report, None).expect("the report is written");
        let markdown = std::fs::read_to_string(&written).expect("read the report");
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(written.with_extension("json")).expect("read the JSON"),
        )
        .expect("the JSON report parses");
        std::fs::remove_dir_all(&dir).expect("remove the report directory");
        assert_eq!(json["signature"], "slot-accounting@kind-pool");
        assert_eq!(
            json["replay"].as_str(),
            markdown
                .lines()
                .find(|line| line.starts_with("faultline sim replay"))
        );
        let redacted = markdown
            .replace(BUILD_COMMIT, "<commit>")
            .replace(
                &file_hash(&path).expect("hash the scenario"),
                "<scenario-hash>",
            )
            .replace(&path.display().to_string(), "<scenario-file>")
            .replace(&report.hash, "<trace-hash>");
        insta::assert_snapshot!("bug_report_markdown", redacted);
    }
}
