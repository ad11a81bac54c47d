//! `faultline agent`: connect to a supervisor and run its jobs as processes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use faultline_core::agent::{run_agent, AgentConfig, AgentDeps, AgentError};
use faultline_core::protocol::{AgentId, JobKind};

use super::env;
use super::exit;
use crate::real::launcher::ProcessLauncher;
use crate::real::logging;
use crate::real::runtime::TokioRuntime;
use crate::real::ws::TokioNet;

/// How often an agent started with `--exit-with-parent` checks its parent.
const PARENT_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Arguments of `faultline agent`.
#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The supervisor's URL (`http://host:7070`, or its `ws://…/v1/agent` endpoint).
    #[arg(long)]
    supervisor: String,
    /// This agent's token, as the supervisor's config lists it.
    #[arg(long, env = env::AGENT_TOKEN, hide_env_values = true)]
    token: String,
    /// This agent's id, as the supervisor's config lists it [default: the host name].
    #[arg(long)]
    id: Option<String>,
    /// Job kinds to accept, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "sequential,parallel")]
    kinds: Vec<JobKind>,
    /// Jobs to run at once.
    #[arg(long, default_value_t = 1)]
    slots: u32,
    /// Exit when the parent process exits (used by `serve --local-agents`).
    #[arg(long, hide = true)]
    exit_with_parent: bool,
}

/// The agent endpoint for a supervisor URL.
pub fn agent_endpoint(supervisor: &str) -> anyhow::Result<String> {
    let trimmed = supervisor.trim_end_matches('/');
    if trimmed.starts_with("ws://") {
        return Ok(trimmed.to_owned());
    }
    match trimmed.strip_prefix("http://") {
        Some(rest) if !rest.is_empty() => Ok(format!("ws://{rest}/v1/agent")),
        _ => Err(exit::usage(format!(
            "invalid --supervisor `{supervisor}`: expected http://host:port (TLS is not supported)"
        ))),
    }
}

/// The machine's host name, the default agent id.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "agent".to_owned())
}

/// Run an agent until the supervisor rejects it or a signal stops it.
pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    logging::init("info");
    let id = args.id.clone().unwrap_or_else(host_name);
    let mut config = AgentConfig::new(
        AgentId(id),
        args.token.clone(),
        agent_endpoint(&args.supervisor)?,
    );
    config.kinds = args.kinds.clone();
    config.slots = args.slots;
    config
        .validate()
        .map_err(|error| exit::usage(error.to_string()))?;
    let deps = AgentDeps {
        runtime: Arc::new(TokioRuntime::new()),
        net: Arc::new(TokioNet),
        launcher: Arc::new(ProcessLauncher::new()),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("faultline-agent")
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        // Dropping the agent's future kills every process it started.
        tokio::select! {
            biased;
            reason = stop_signal(args.exit_with_parent) => {
                tracing::info!(reason, "agent stops");
                Ok(())
            }
            ended = run_agent(config, deps) => match ended {
                Ok(()) => Ok(()),
                Err(error @ (AgentError::Rejected { .. } | AgentError::InvalidConfig(_))) => {
                    Err(exit::usage(error.to_string()))
                }
                Err(error) => Err(anyhow::Error::new(error)),
            },
        }
    })
}

/// Completes on SIGINT or SIGTERM, or when the parent process is gone if
/// `watch_parent`.
async fn stop_signal(watch_parent: bool) -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let parent = std::os::unix::process::parent_id();
    let parent_gone = async move {
        loop {
            tokio::time::sleep(PARENT_CHECK_INTERVAL).await;
            if std::os::unix::process::parent_id() != parent {
                return;
            }
        }
    };
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        biased;
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
        () = parent_gone, if watch_parent => "parent exited",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls_map_to_the_agent_endpoint() {
        assert_eq!(
            agent_endpoint("http://127.0.0.1:7070").expect("valid"),
            "ws://127.0.0.1:7070/v1/agent"
        );
        assert_eq!(
            agent_endpoint("http://h:1/base/").expect("valid"),
            "ws://h:1/base/v1/agent"
        );
        assert_eq!(
            agent_endpoint("ws://h:1/v1/agent").expect("valid"),
            "ws://h:1/v1/agent"
        );
        assert!(agent_endpoint("https://h:1").is_err());
        assert!(agent_endpoint("h:1").is_err());
    }
}
