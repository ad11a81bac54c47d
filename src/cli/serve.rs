//! `faultline serve`: the supervisor, its HTTP API and agent endpoint, and
//! optionally local agents.
//!
//! With no config file it starts with safe local defaults: loopback only,
//! one admin user `local` whose token is created in the data directory
//! (mode 0600, printed once), and the URL recorded there so `faultline job`
//! on the same machine needs no flags. Jobs live in `DIR/jobs.db` (SQLite).
//!
//! SIGTERM or SIGINT stops it gracefully within `--shutdown-timeout`: no
//! new requests or agent connections, in-flight requests finish, the
//! supervisor stops (agents keep running their jobs and reconnect to the
//! next supervisor, which adopts them), the store commits and closes, exit
//! 0. A second signal abandons the graceful path (what was acknowledged is
//! durable already).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use faultline_core::config::{AgentAuthConfig, Role, SupervisorConfig, UserConfig};
use faultline_core::duration::parse_duration;
use faultline_core::flaws::FlawSet;
use faultline_core::store::StoreError;
use faultline_core::supervisor::{StartError, Supervisor, SupervisorDeps};

use super::env;
use super::exit;
use crate::real::config::{ConfigFile, ServerConfig};
use crate::real::datadir::{DataDir, DataDirError};
use crate::real::local_agents::{LocalAgentSpec, LocalAgents};
use crate::real::runtime::TokioRuntime;
use crate::real::sqlite::SqliteStore;
use crate::real::{http, listener, logging, store};

/// The user created when no config file defines any.
pub const LOCAL_USER: &str = "local";

/// Of the shutdown timeout, what is kept for stopping the supervisor and
/// closing the store after in-flight requests had their turn.
const STORE_CLOSE_RESERVE: Duration = Duration::from_secs(1);

/// How long tasks left behind may take to notice the runtime stopping.
const RUNTIME_STOP_MAX: Duration = Duration::from_millis(500);

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
    /// How long a graceful stop (SIGTERM, SIGINT) may take before `serve` exits anyway.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    shutdown_timeout: Duration,
}

/// Everything `serve` decided before starting.
struct Plan {
    server: ServerConfig,
    supervisor: SupervisorConfig,
    data: DataDir,
    listen: SocketAddr,
    local_agents: Vec<LocalAgentSpec>,
    shutdown_timeout: Duration,
}

/// Run the supervisor until SIGINT or SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    logging::init("info");
    let file = match &args.config {
        Some(path) => ConfigFile::load(path).map_err(|error| exit::usage(error.to_string()))?,
        None => ConfigFile::default(),
    };
    let data = DataDir::resolve(args.data.as_deref().or(file.server.data_dir.as_deref()))?;
    // Held until the process ends: one supervisor per data directory.
    let _lock = data.lock().map_err(|error| match error {
        DataDirError::Locked { .. } => exit::usage(error.to_string()),
        other => anyhow::Error::new(other),
    })?;
    // The store is checked before anything is written beside it.
    let store = store::open_store(&data).map_err(|error| {
        if error.is_bad_input() {
            exit::usage(error.to_string())
        } else {
            anyhow::Error::new(error)
        }
    })?;
    let plan = prepare(&args, file, data)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("faultline-serve")
        .build()
        .context("cannot start the tokio runtime")?;
    let result = runtime.block_on(serve(plan, store));
    runtime.shutdown_timeout(RUNTIME_STOP_MAX);
    result
}

/// Settle users (creating the `local` user's token if none is configured)
/// and local agents, and check the resulting configuration.
fn prepare(args: &ServeArgs, file: ConfigFile, data: DataDir) -> anyhow::Result<Plan> {
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
        shutdown_timeout: args.shutdown_timeout,
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

async fn serve(plan: Plan, store: Arc<SqliteStore>) -> anyhow::Result<()> {
    let deps = SupervisorDeps {
        runtime: Arc::new(TokioRuntime::new()),
        store: store.clone(),
        flaws: FlawSet::none(),
    };
    let supervisor = match Supervisor::start(plan.supervisor, deps).await {
        Ok(supervisor) => supervisor,
        Err(StartError::Store(StoreError::Corrupt(reason))) => {
            return Err(exit::usage(format!(
                "{}: the job store is corrupt: {reason}; it was left untouched",
                store.path().display()
            )))
        }
        Err(error) => return Err(anyhow::Error::new(error).context("cannot start the supervisor")),
    };
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
    let server = tokio::spawn(listener::serve(
        listener,
        app,
        plan.server.header_read_timeout,
        async {
            let _ = stopped.await;
        },
    ));
    let reason = stop_signal().await?;
    let timeout = plan.shutdown_timeout;
    tracing::info!(reason, ?timeout, "shutting down");
    let graceful = async {
        let deadline = tokio::time::Instant::now() + timeout;
        drain_requests(stop, server, deadline - STORE_CLOSE_RESERVE.min(timeout)).await;
        // Agents keep running their jobs; the next supervisor adopts them.
        supervisor.shutdown();
        agents.kill().await;
        match tokio::time::timeout_at(deadline, store.close()).await {
            Ok(Ok(())) => {
                tracing::info!("job store closed; shutdown complete");
                Ok(())
            }
            Ok(Err(error)) => Err(anyhow::anyhow!("cannot close the job store: {error}")),
            Err(_) => Err(anyhow::anyhow!(
                "the job store did not close within the shutdown timeout of {timeout:?}; \
                 what was acknowledged is durable, the next start recovers the rest"
            )),
        }
    };
    tokio::select! {
        biased;
        result = graceful => result,
        second = stop_signal() => {
            let second = second?;
            Err(anyhow::anyhow!("{second} during shutdown: stopping at once"))
        }
    }
}

/// Stop accepting HTTP requests and agent connections and let in-flight
/// requests finish, until `deadline`.
async fn drain_requests(
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    deadline: tokio::time::Instant,
) {
    let _ = stop.send(());
    match tokio::time::timeout_at(deadline, server).await {
        Ok(Ok(Ok(()))) => tracing::info!("in-flight requests finished"),
        Ok(Ok(Err(error))) => tracing::error!(%error, "HTTP server failed"),
        Ok(Err(error)) => tracing::error!(%error, "HTTP server task failed"),
        Err(_) => tracing::warn!("requests still open at the shutdown deadline; abandoning them"),
    }
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
