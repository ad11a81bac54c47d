//! `faultline serve`: the supervisor, its HTTP API and agent endpoint, and
//! optionally local agents.
//!
//! With no config file it starts with safe local defaults: loopback only,
//! one admin user `local` whose token is created in the data directory
//! (mode 0600, printed once), and the URL recorded there so `faultline job`
//! on the same machine needs no flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use faultline_core::config::{AgentAuthConfig, Role, SupervisorConfig, UserConfig};
use faultline_core::flaws::FlawSet;
use faultline_core::supervisor::{Supervisor, SupervisorDeps};

use super::env;
use super::exit;
use crate::real::config::{ConfigFile, ServerConfig};
use crate::real::datadir::DataDir;
use crate::real::local_agents::{LocalAgentSpec, LocalAgents};
use crate::real::runtime::TokioRuntime;
use crate::real::{http, logging, store};

/// The user created when no config file defines any.
pub const LOCAL_USER: &str = "local";

/// How long the HTTP server may take to finish its requests on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Arguments of `faultline serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on [default: the config's `server.listen`, 127.0.0.1:7070]. Port 0 picks a free port.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Data directory [default: the config's `server.data_dir`, else $XDG_DATA_HOME/faultline, else ~/.local/share/faultline].
    #[arg(long, env = env::DATA)]
    data: Option<PathBuf>,
    /// Configuration file (TOML; see faultline.example.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Start this many agents as child processes (ids local-1, local-2, …).
    #[arg(long, default_value_t = 0)]
    local_agents: u32,
}

/// Everything `serve` decided before starting.
struct Plan {
    server: ServerConfig,
    supervisor: SupervisorConfig,
    data: DataDir,
    listen: SocketAddr,
    local_agents: Vec<LocalAgentSpec>,
}

/// Run the supervisor until SIGINT or SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    logging::init("info");
    let plan = prepare(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("faultline-serve")
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(serve(plan))
}

/// Read the config, settle the data directory, users and local agents.
fn prepare(args: &ServeArgs) -> anyhow::Result<Plan> {
    let file = match &args.config {
        Some(path) => ConfigFile::load(path).map_err(|error| exit::usage(error.to_string()))?,
        None => ConfigFile::default(),
    };
    let data = DataDir::resolve(args.data.as_deref().or(file.server.data_dir.as_deref()))?;
    data.create()?;
    let mut supervisor = file.supervisor;
    if supervisor.users.is_empty() {
        let token = data.user_token()?;
        if !token.created {
            tracing::info!(file = %data.path().join("token").display(), "user `local` uses the token in its data directory");
        }
        if token.created {
            println!(
                "created a token for user `{LOCAL_USER}` in {}:\n  {}\n\
                 (`faultline job` on this machine finds it by itself; elsewhere set {})",
                data.path().join("token").display(),
                token.value,
                env::TOKEN
            );
        }
        let user = UserConfig {
            token: token.value,
            plan: supervisor
                .plans
                .keys()
                .next()
                .cloned()
                .unwrap_or_else(|| "default".into()),
            role: Role::Admin,
        };
        supervisor.users.insert(LOCAL_USER.to_owned(), user);
    }
    let local_agents = local_agent_specs(args.local_agents, &file.server, &data, &mut supervisor)?;
    supervisor.validate().map_err(|error| {
        let origin = args
            .config
            .as_ref()
            .map_or("built-in defaults".to_owned(), |path| {
                path.display().to_string()
            });
        exit::usage(format!(
            "{origin}: field `supervisor.{}`: {}",
            error.field, error.reason
        ))
    })?;
    let listen = args.listen.unwrap_or(file.server.listen);
    if !listen.ip().is_loopback() {
        tracing::warn!(%listen, "listening beyond loopback: every request still needs a token");
    }
    Ok(Plan {
        server: file.server,
        supervisor,
        data,
        listen,
        local_agents,
    })
}

/// Ids and tokens of the local agents: the config's token for an id it
/// lists, else one derived from the data directory's agent secret
/// (`SECRET.local-N`: tokens must differ between agents), registered here.
fn local_agent_specs(
    count: u32,
    server: &ServerConfig,
    data: &DataDir,
    supervisor: &mut SupervisorConfig,
) -> anyhow::Result<Vec<LocalAgentSpec>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let shared = data.agent_token()?.value;
    let specs = (1..=count)
        .map(|n| {
            let id = format!("local-{n}");
            let token = supervisor
                .agents
                .entry(id.clone())
                .or_insert_with(|| AgentAuthConfig {
                    token: format!("{shared}.{id}"),
                })
                .token
                .clone();
            LocalAgentSpec {
                id,
                token,
                slots: server.local_agent_slots,
            }
        })
        .collect();
    Ok(specs)
}

async fn serve(plan: Plan) -> anyhow::Result<()> {
    let deps = SupervisorDeps {
        runtime: Arc::new(TokioRuntime::new()),
        store: store::open_store(&plan.data),
        flaws: FlawSet::none(),
    };
    let supervisor = Supervisor::start(plan.supervisor, deps)
        .await
        .context("cannot start the supervisor")?;
    let listener = tokio::net::TcpListener::bind(plan.listen)
        .await
        .map_err(|error| exit::usage(format!("cannot listen on {}: {error}", plan.listen)))?;
    let url = format!("http://{}", listener.local_addr()?);
    plan.data.write_url(&url)?;
    println!("faultline supervisor listening on {url}");
    tracing::info!(%url, data_dir = %plan.data.path().display(), "supervisor listening");
    let mut agents =
        LocalAgents::spawn(&url, &plan.local_agents).context("cannot start local agents")?;
    let app = http::router(Arc::new(supervisor.clone()), plan.server.http_limits());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(listener, app, async {
        let _ = stopped.await;
    }));
    let reason = stop_signal().await?;
    tracing::info!(reason, "shutting down");
    // Agents' WebSockets end with the supervisor's sessions, so the HTTP
    // server's graceful shutdown does not wait on them.
    supervisor.shutdown();
    agents.kill().await;
    let _ = stop.send(());
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(Ok(result)) => result.context("HTTP server failed")?,
        Ok(Err(error)) => return Err(anyhow::anyhow!("HTTP server task failed: {error}")),
        Err(_) => tracing::warn!("requests still open after the shutdown grace; leaving them"),
    }
    Ok(())
}

/// Completes on SIGINT or SIGTERM, naming which.
async fn stop_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(tokio::select! {
        biased;
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    })
}
