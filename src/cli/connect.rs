//! How the client commands (`job`, `status`) find their supervisor and
//! token, and how they turn the supervisor's errors into words and exit
//! statuses.
//!
//! The URL is `--url`/`FAULTLINE_URL`, else the one a local `faultline
//! serve` recorded in its data directory, else `http://127.0.0.1:7070`. The
//! token is `--token`/`FAULTLINE_TOKEN`, else the local supervisor's token,
//! but only when talking to that local supervisor: a token is never sent to
//! a server it was not made for.

use clap::Args;
use faultline_core::protocol::{ClientRequest, ClientResponse, ErrorCode};

use super::env;
use super::exit;
use crate::real::client::{Client, ClientError};
use crate::real::datadir::DataDir;

/// Where the supervisor is when nothing says otherwise.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7070";

/// `--url` and `--token`, shared by every client command.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// The supervisor's URL [default: the local supervisor's, else http://127.0.0.1:7070].
    #[arg(long, env = env::URL, global = true)]
    pub url: Option<String>,
    /// Your token [default: the local supervisor's, when talking to it].
    #[arg(long, env = env::TOKEN, global = true, hide_env_values = true)]
    pub token: Option<String>,
}

/// A client for the supervisor `args` point at.
pub fn client(args: &ServerArgs) -> anyhow::Result<Client> {
    let local = DataDir::resolve(None).ok();
    let local_url = match &local {
        Some(dir) => dir.read_url().unwrap_or(None),
        None => None,
    };
    let url = args
        .url
        .clone()
        .or_else(|| local_url.clone())
        .unwrap_or_else(|| DEFAULT_URL.to_owned());
    let token = match (&args.token, &local) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(dir)) if local_url.as_deref() == Some(url.trim_end_matches('/')) => {
            dir.read_user_token()?
        }
        (None, _) => None,
    };
    Client::new(&url, token).map_err(|error| exit::usage(error.to_string()))
}

/// Send one request on a fresh single-threaded runtime.
pub fn call(client: &Client, request: &ClientRequest) -> anyhow::Result<ClientResponse> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime
        .block_on(client.call(request))
        .map_err(|error| explain(client, error))
}

/// The supervisor's error in words, with the exit status it deserves:
/// the caller's mistakes (credentials, ids, input) are usage errors (4),
/// everything else a runtime error (5).
pub fn explain(client: &Client, error: ClientError) -> anyhow::Error {
    let ClientError::Server { code, message, .. } = &error else {
        let hint = match error {
            ClientError::Unreachable { .. } => {
                "\n  is `faultline serve` running there? (--url / FAULTLINE_URL)"
            }
            _ => "",
        };
        return anyhow::anyhow!("{error}{hint}");
    };
    match code {
        ErrorCode::Unauthorized => exit::usage(format!(
            "no valid token for {}: {message}; set {} or pass --token \
             (a local `faultline serve` keeps one in its data directory, file `token`)",
            client.url(),
            env::TOKEN
        )),
        ErrorCode::NotFound | ErrorCode::BadRequest | ErrorCode::TooLarge => {
            exit::usage(error.to_string())
        }
        ErrorCode::LimitExceeded | ErrorCode::Unavailable => anyhow::Error::new(error),
    }
}
