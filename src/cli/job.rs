//! `faultline job …` and `faultline status`: the client commands.
//!
//! `job wait` exits 0 when the job completed and [`exit::JOB_UNSUCCESSFUL`]
//! (6) when it ended otherwise (failed, canceled, timed out, lost).

use std::time::Duration;

use clap::{Args, Subcommand};
use faultline_core::duration::parse_duration;
use faultline_core::protocol::{
    ClientRequest, ClientResponse, JobId, JobKind, JobStatus, JobView, SubmitRequest,
};

use super::connect::{self, ServerArgs};
use super::exit;
use super::overview;

/// Arguments of `faultline job`.
#[derive(Args, Debug)]
pub struct JobArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: JobCommand,
}

#[derive(Subcommand, Debug)]
enum JobCommand {
    /// Submit a job and print its id.
    Submit(SubmitArgs),
    /// Show a job.
    Status(ShowArgs),
    /// Wait until a job ends; exit 0 if it completed, 6 otherwise.
    Wait(WaitArgs),
    /// Cancel a job (pending or running).
    Cancel(ShowArgs),
    /// List your jobs, oldest first.
    List(ListArgs),
}

#[derive(Args, Debug)]
struct SubmitArgs {
    /// The job's kind: `sequential` or `parallel`.
    #[arg(long, default_value = "parallel")]
    kind: JobKind,
    /// Stop the job after this long (`90s`, `5m`, `2h`, `1d`); capped by your plan.
    #[arg(long, value_parser = parse_duration)]
    max_run: Option<Duration>,
    /// Submitting again with the same key returns the first job instead of a new one.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Print the whole job as JSON instead of its id.
    #[arg(long)]
    json: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, num_args = 1..)]
    command: Vec<String>,
}

#[derive(Args, Debug)]
struct ShowArgs {
    /// The job's id (`j-12`).
    id: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct WaitArgs {
    /// The job's id (`j-12`).
    id: String,
    /// Give up after this long (`30s`, `2h`); exit 5 if the job still runs.
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Print the final job as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ListArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `faultline status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Print the overview as JSON.
    #[arg(long)]
    json: bool,
}

/// Run a `job` subcommand.
pub fn run(args: JobArgs) -> anyhow::Result<()> {
    let client = connect::client(&args.server)?;
    match args.command {
        JobCommand::Submit(submit) => {
            let max_run_ms = submit
                .max_run
                .map(|limit| u64::try_from(limit.as_millis()).unwrap_or(u64::MAX).max(1));
            let request = ClientRequest::Submit(SubmitRequest {
                kind: submit.kind,
                command: submit.command,
                max_run_ms,
                idempotency_key: submit.idempotency_key,
            });
            let job = expect_job(connect::call(&client, &request)?)?;
            if submit.json {
                print_json(&job)
            } else {
                println!("{}", job.id);
                Ok(())
            }
        }
        JobCommand::Status(show) => {
            let job = expect_job(connect::call(
                &client,
                &ClientRequest::Status {
                    job: JobId(show.id),
                },
            )?)?;
            print_job(&job, show.json)
        }
        JobCommand::Cancel(show) => {
            let job = expect_job(connect::call(
                &client,
                &ClientRequest::Cancel {
                    job: JobId(show.id),
                },
            )?)?;
            print_job(&job, show.json)
        }
        JobCommand::Wait(wait) => wait_for(&client, wait),
        JobCommand::List(list) => {
            let ClientResponse::Jobs { jobs } = connect::call(&client, &ClientRequest::List)?
            else {
                anyhow::bail!("the supervisor answered a list with something else");
            };
            if list.json {
                print_json(&jobs)
            } else {
                print!("{}", render_list(&jobs, now_ms()));
                Ok(())
            }
        }
    }
}

/// Print the resource overview.
pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let client = connect::client(&args.server)?;
    let ClientResponse::Overview { overview } = connect::call(&client, &ClientRequest::Overview)?
    else {
        anyhow::bail!("the supervisor answered the overview with something else");
    };
    if args.json {
        print_json(&overview)
    } else {
        print!("{}", overview::render(&overview));
        Ok(())
    }
}

/// Poll until the job is terminal: every 100 ms at first, backing off to
/// every 2 s, for at most `timeout`.
fn wait_for(client: &crate::real::client::Client, wait: WaitArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let request = ClientRequest::Status {
        job: JobId(wait.id.clone()),
    };
    let deadline = wait
        .timeout
        .map(|timeout| tokio::time::Instant::now() + timeout);
    let job = runtime.block_on(async {
        let mut delay = Duration::from_millis(100);
        loop {
            let answer = client
                .call(&request)
                .await
                .map_err(|error| connect::explain(client, error))?;
            let job = expect_job(answer)?;
            if job.status.is_terminal() {
                return Ok(job);
            }
            if deadline.is_some_and(|deadline| tokio::time::Instant::now() + delay > deadline) {
                return Err(anyhow::anyhow!(
                    "job {} is still {} after the --timeout",
                    job.id,
                    job.status
                ));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 3 / 2).min(Duration::from_secs(2));
        }
    })?;
    print_job(&job, wait.json)?;
    if job.status == JobStatus::Completed {
        Ok(())
    } else {
        Err(exit::silent(exit::JOB_UNSUCCESSFUL))
    }
}

fn expect_job(response: ClientResponse) -> anyhow::Result<JobView> {
    match response {
        ClientResponse::Job { job } => Ok(job),
        other => {
            anyhow::bail!("the supervisor answered with something other than a job: {other:?}")
        }
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn print_job(job: &JobView, json: bool) -> anyhow::Result<()> {
    if json {
        print_json(job)
    } else {
        print!("{}", render_job(job, now_ms()));
        Ok(())
    }
}

/// Milliseconds since the UNIX epoch, the supervisor's clock on tokio.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// `12s`, `3m04s`, `2h05m`: short and human.
pub fn human_ms(ms: u64) -> String {
    let seconds = ms / 1000;
    match seconds {
        0..=59 if ms < 10_000 => format!("{:.1}s", ms as f64 / 1000.0),
        0..=59 => format!("{seconds}s"),
        60..=3599 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        3600..=86_399 => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{}d{:02}h", seconds / 86_400, seconds % 86_400 / 3600),
    }
}

/// The shell-like form of a command, for display.
fn show_command(command: &[String]) -> String {
    command
        .iter()
        .map(|word| {
            if !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn render_job(job: &JobView, now_ms: u64) -> String {
    let mut out = format!("{}  {}  {}\n", job.id, job.status, job.kind);
    let mut line = |label: &str, value: String| out.push_str(&format!("  {label:<10} {value}\n"));
    line("command", show_command(&job.command));
    line("owner", job.owner.clone());
    if let Some(position) = job.queue_position {
        line("queue", format!("position {position}"));
    }
    if let Some(situation) = &job.situation {
        line("waits for", situation.clone());
    }
    if let Some(agent) = &job.agent {
        line("agent", agent.to_string());
    }
    line("max run", human_ms(job.max_run_ms));
    line("attempts", job.attempts.to_string());
    line(
        "submitted",
        format!("{} ago", human_ms(now_ms.saturating_sub(job.created_ms))),
    );
    match (job.started_ms, job.finished_ms) {
        (Some(started), Some(finished)) => line("ran", human_ms(finished.saturating_sub(started))),
        (Some(started), None) => line(
            "running",
            format!("for {}", human_ms(now_ms.saturating_sub(started))),
        ),
        _ => {}
    }
    if let Some(exit) = &job.exit {
        let how = match (exit.code, exit.signal) {
            (Some(code), _) => format!("code {code}"),
            (None, Some(signal)) => format!("signal {signal}"),
            (None, None) => "unknown".to_owned(),
        };
        line("exit", how);
    }
    if let Some(reason) = &job.reason {
        line("reason", reason.clone());
    }
    if let Some(exit) = job
        .exit
        .as_ref()
        .filter(|exit| !exit.output_tail.is_empty())
    {
        out.push_str("  output (tail):\n");
        for text in exit.output_tail.lines() {
            out.push_str(&format!("    {text}\n"));
        }
    }
    out
}

fn render_list(jobs: &[JobView], now_ms: u64) -> String {
    if jobs.is_empty() {
        return "no jobs\n".to_owned();
    }
    let mut out = format!(
        "{:<10} {:<10} {:<10} {:>8}  {}\n",
        "ID", "STATUS", "KIND", "AGE", "COMMAND"
    );
    for job in jobs {
        out.push_str(&format!(
            "{:<10} {:<10} {:<10} {:>8}  {}\n",
            job.id.0,
            job.status.as_str(),
            job.kind.as_str(),
            human_ms(now_ms.saturating_sub(job.created_ms)),
            show_command(&job.command)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use clap::Parser;
    use faultline_core::protocol::{AgentId, ExitInfo};

    #[derive(Parser, Debug)]
    struct Harness {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(Subcommand, Debug)]
    enum Top {
        Job(JobArgs),
    }

    fn parse(args: &[&str]) -> Result<JobArgs, clap::Error> {
        let Harness {
            command: Top::Job(job),
        } = Harness::try_parse_from(["faultline", "job"].iter().chain(args))?;
        Ok(job)
    }

    #[test]
    fn submit_takes_everything_after_the_double_dash_as_the_command() {
        let args = parse(&[
            "submit",
            "--kind",
            "sequential",
            "--max-run",
            "5m",
            "--",
            "sh",
            "-c",
            "exit 3",
        ])
        .expect("valid");
        let JobCommand::Submit(submit) = args.command else {
            panic!("not a submit")
        };
        assert_eq!(submit.kind, JobKind::Sequential);
        assert_eq!(submit.max_run, Some(Duration::from_secs(300)));
        assert_eq!(submit.command, ["sh", "-c", "exit 3"]);
    }

    #[test]
    fn submit_refuses_bad_durations_kinds_and_empty_commands() {
        assert!(parse(&["submit", "--max-run", "5", "--", "true"]).is_err());
        assert!(parse(&["submit", "--kind", "huge", "--", "true"]).is_err());
        assert!(parse(&["submit"]).is_err());
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(human_ms(1_500), "1.5s");
        assert_eq!(human_ms(42_000), "42s");
        assert_eq!(human_ms(184_000), "3m04s");
        assert_eq!(human_ms(7_500_000), "2h05m");
        assert_eq!(human_ms(90_000_000), "1d01h");
    }

    #[test]
    fn commands_are_quoted_only_where_needed() {
        let command = ["sh", "-c", "echo it's"].map(String::from);
        assert_eq!(show_command(&command), r"sh -c 'echo it'\''s'");
    }

    #[test]
    fn a_finished_job_shows_its_exit_and_output() {
        let job = JobView {
            id: JobId("j-3".into()),
            owner: "alice".into(),
            kind: JobKind::Parallel,
            command: vec!["false".into()],
            status: JobStatus::Failed,
            queue_position: None,
            max_run_ms: 60_000,
            attempts: 1,
            agent: Some(AgentId("a-1".into())),
            situation: None,
            created_ms: 1_000,
            started_ms: Some(2_000),
            finished_ms: Some(5_000),
            exit: Some(ExitInfo {
                code: Some(1),
                signal: None,
                output_tail: "boom\n".into(),
            }),
            reason: Some("exit code 1".into()),
        };
        let text = render_job(&job, 10_000);
        assert!(text.starts_with("j-3  failed  parallel\n"), "{text}");
        for expected in [
            "agent      a-1",
            "ran        3.0s",
            "exit       code 1",
            "    boom",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        let list = render_list(&[job], 10_000);
        assert!(
            list.lines()
                .nth(1)
                .is_some_and(|row| row.starts_with("j-3        failed")),
            "{list}"
        );
    }
}
