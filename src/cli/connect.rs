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
    let read_local_token = || match &local {
        Some(dir) => dir.read_user_token(),
        None => Ok(None),
    };
    let (url, token) = choose(args, local_url, read_local_token)?;
    Client::new(&url, token).map_err(|error| exit::usage(error.to_string()))
}

/// The URL and token to use, given the flags and what the local data
/// directory holds. The local token is read only when it will be sent to
/// the local supervisor.
fn choose<E>(
    args: &ServerArgs,
    local_url: Option<String>,
    read_local_token: impl FnOnce() -> Result<Option<String>, E>,
) -> Result<(String, Option<String>), E> {
    let url = args
        .url
        .clone()
        .or_else(|| local_url.clone())
        .unwrap_or_else(|| DEFAULT_URL.to_owned());
    let token = match &args.token {
        Some(token) => Some(token.clone()),
        None if local_url.as_deref() == Some(url.trim_end_matches('/')) => read_local_token()?,
        None => None,
    };
    Ok((url, token))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: Option<&str>, token: Option<&str>) -> ServerArgs {
        ServerArgs {
            url: url.map(str::to_owned),
            token: token.map(str::to_owned),
        }
    }

    fn local_token() -> Result<Option<String>, ()> {
        Ok(Some("local-secret".to_owned()))
    }

    const LOCAL: &str = "http://127.0.0.1:7123";

    #[test]
    fn with_no_flags_the_local_supervisor_and_its_token_are_used() {
        let chosen = choose(&args(None, None), Some(LOCAL.into()), local_token);
        assert_eq!(
            chosen,
            Ok((LOCAL.to_owned(), Some("local-secret".to_owned())))
        );
        let chosen = choose(
            &args(Some("http://127.0.0.1:7123/"), None),
            Some(LOCAL.into()),
            local_token,
        );
        assert_eq!(
            chosen.map(|(_, token)| token),
            Ok(Some("local-secret".to_owned()))
        );
    }

    #[test]
    fn the_local_token_is_never_sent_to_another_server() {
        let never = || -> Result<Option<String>, ()> { panic!("the local token must not be read") };
        let chosen = choose(
            &args(Some("http://elsewhere:7070"), None),
            Some(LOCAL.into()),
            never,
        );
        assert_eq!(chosen, Ok(("http://elsewhere:7070".to_owned(), None)));
        let chosen = choose(&args(None, None), None, never);
        assert_eq!(chosen, Ok((DEFAULT_URL.to_owned(), None)));
    }

    #[test]
    fn an_explicit_token_wins() {
        let chosen = choose(&args(None, Some("mine")), Some(LOCAL.into()), local_token);
        assert_eq!(chosen, Ok((LOCAL.to_owned(), Some("mine".to_owned()))));
    }
}
