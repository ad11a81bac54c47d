//! The `faultline serve` configuration file (TOML).
//!
//! Two tables: `[server]` (this file: where to listen, where the data lives,
//! the HTTP limits) and `[supervisor]` (core's `SupervisorConfig`: pools,
//! plans, users, agents, timeouts). Every field is optional and documented
//! with its default in `faultline.example.toml` at the repository root.
//! Unknown fields and contradictions are refused with the file, the line and
//! the field named.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use faultline_core::config::SupervisorConfig;
use serde::{Deserialize, Serialize};

use super::http::HttpLimits;

/// The `[server]` table.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the HTTP API and the agent endpoint. Default
    /// `127.0.0.1:7070`: loopback only.
    pub listen: SocketAddr,
    /// Where tokens, the URL file and (later) the job store live. Default:
    /// `$FAULTLINE_DATA`, else `$XDG_DATA_HOME/faultline`, else
    /// `~/.local/share/faultline`.
    pub data_dir: Option<PathBuf>,
    /// Largest request body, in bytes; larger ones get 413. Default 65536.
    pub body_bytes_max: usize,
    /// Client requests served at once; more get 503. Default 1024.
    pub requests_in_flight_max: usize,
    /// Agent connections open at once; more get 503. Default 1024.
    pub agent_connections_max: usize,
    /// Slots of each agent started by `--local-agents`. Default 4.
    pub local_agent_slots: u32,
    /// How long a client may take to send a request's header block before
    /// its connection is closed. Default `10s`.
    #[serde(with = "faultline_core::duration::serde_text")]
    pub header_read_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        let limits = HttpLimits::default();
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            data_dir: None,
            body_bytes_max: limits.body_bytes_max,
            requests_in_flight_max: limits.requests_in_flight_max,
            agent_connections_max: limits.agent_connections_max,
            local_agent_slots: 4,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

impl ServerConfig {
    /// The HTTP layer's bounds.
    pub fn http_limits(&self) -> HttpLimits {
        HttpLimits {
            body_bytes_max: self.body_bytes_max,
            requests_in_flight_max: self.requests_in_flight_max,
            agent_connections_max: self.agent_connections_max,
        }
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let positive = [
            ("body_bytes_max", self.body_bytes_max),
            ("requests_in_flight_max", self.requests_in_flight_max),
            ("agent_connections_max", self.agent_connections_max),
            ("local_agent_slots", self.local_agent_slots as usize),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err((format!("server.{field}"), "must be positive".into()));
        }
        if self.header_read_timeout.is_zero() {
            return Err((
                "server.header_read_timeout".into(),
                "must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// The whole file.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[supervisor]`.
    pub supervisor: SupervisorConfig,
}

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file cannot be read.
    #[error("{}: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, an unknown field, or a value of the wrong type.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong, naming the field.
        message: String,
    },
    /// Valid TOML that contradicts itself.
    #[error("{}{}: field `{field}`: {reason}", path.display(), line.map(|line| format!(":{line}")).unwrap_or_default())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the field, when it appears in the file.
        line: Option<usize>,
        /// The field, as a dotted path (`supervisor.users.alice.plan`).
        field: String,
        /// What is wrong.
        reason: String,
    },
}

impl ConfigFile {
    /// Read, parse and validate the file at `path`.
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
        ConfigFile::parse(path, &text)
    }

    /// Parse and validate `text`, read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, ConfigFileError> {
        let config: ConfigFile = toml::from_str(text).map_err(|error| {
            let (line, column) = error
                .span()
                .map_or((1, 1), |span| line_column(text, span.start));
            ConfigFileError::Syntax {
                path: path.to_owned(),
                line,
                column,
                message: error.message().trim().to_owned(),
            }
        })?;
        config
            .validate()
            .map_err(|(field, reason)| ConfigFileError::Invalid {
                path: path.to_owned(),
                line: field_line(text, &field),
                field,
                reason,
            })?;
        Ok(config)
    }

    /// Contradictions, as (dotted field, reason).
    pub fn validate(&self) -> Result<(), (String, String)> {
        self.server.validate()?;
        self.supervisor
            .validate()
            .map_err(|error| (format!("supervisor.{}", error.field), error.reason))
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |newline| before.len() - newline - 1)
        + 1;
    (line, column)
}

/// The line that sets `field` (a dotted path), or failing that the line
/// that sets its closest enclosing table. A line-based reading of TOML:
/// table headers and `key = value` lines, which is what configuration files
/// are made of; `None` if nothing on the path appears.
fn field_line(text: &str, field: &str) -> Option<usize> {
    let target: Vec<&str> = field.split('.').collect();
    let mut table: Vec<String> = Vec::new();
    let mut best: Option<(usize, usize)> = None; // (matched segments, line)
    for (index, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        let path: Vec<String> = if let Some(header) = line.strip_prefix('[') {
            table = split_key(header.trim_start_matches('[').trim_end_matches(']'));
            table.clone()
        } else if let Some((key, _)) = line.split_once('=') {
            table.iter().cloned().chain(split_key(key)).collect()
        } else {
            continue;
        };
        let matched = path
            .iter()
            .zip(&target)
            .take_while(|(have, want)| have.as_str() == **want)
            .count();
        if matched == path.len() && matched > best.map_or(0, |(count, _)| count) {
            best = Some((matched, index + 1));
        }
    }
    best.map(|(_, line)| line)
}

/// `a."b.c".d` → `["a", "b.c", "d"]`.
fn split_key(key: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in key.trim().chars() {
        match c {
            '"' | '\'' => quoted = !quoted,
            '.' if !quoted => parts.push(std::mem::take(&mut current).trim().to_owned()),
            c => current.push(c),
        }
    }
    parts.push(current.trim().to_owned());
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile, ConfigFileError> {
        ConfigFile::parse(Path::new("test.toml"), text)
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        let config = parse("").expect("empty is valid");
        assert_eq!(config, ConfigFile::default());
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:7070");
    }

    #[test]
    fn unknown_fields_name_the_file_line_and_field() {
        let text =
            "[server]\nlisten = \"127.0.0.1:1\"\n\n[supervisor]\nheartbeat_intervall = \"5s\"\n";
        let error = parse(text).expect_err("typo is refused").to_string();
        assert!(error.starts_with("test.toml:5:"), "{error}");
        assert!(error.contains("heartbeat_intervall"), "{error}");
    }

    #[test]
    fn wrong_types_name_the_line() {
        let error = parse("[server]\n\nlisten = 7070\n")
            .expect_err("not an address")
            .to_string();
        assert!(error.starts_with("test.toml:3:"), "{error}");
    }

    #[test]
    fn contradictions_name_the_line_and_the_field() {
        let text = "[supervisor]\nheartbeat_interval = \"200ms\"\n\n[supervisor.users.alice]\ntoken = \"t\"\nplan = \"gold\"\n";
        let error = parse(text).expect_err("unknown plan");
        let ConfigFileError::Invalid { line, field, .. } = &error else {
            panic!("expected Invalid, got {error}");
        };
        assert_eq!(field, "supervisor.users.alice.plan");
        assert_eq!(*line, Some(6));
        assert!(error
            .to_string()
            .starts_with("test.toml:6: field `supervisor.users.alice.plan`"));
    }

    #[test]
    fn contradictions_in_inline_tables_point_at_the_table() {
        let text = "[supervisor]\npools = { sequential = 0, parallel = 2 }\n";
        let error = parse(text).expect_err("empty pool");
        assert!(
            matches!(&error, ConfigFileError::Invalid { line: Some(2), field, .. } if field == "supervisor.pools.sequential"),
            "{error}"
        );
    }

    #[test]
    fn server_limits_must_be_positive() {
        let error = parse("[server]\nbody_bytes_max = 0\n").expect_err("zero limit");
        assert!(
            matches!(&error, ConfigFileError::Invalid { line: Some(2), field, .. } if field == "server.body_bytes_max"),
            "{error}"
        );
    }

    #[test]
    fn the_example_file_is_valid_and_documents_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("faultline.example.toml");
        let config = ConfigFile::load(&path).expect("the example parses");
        let defaults = ConfigFile::default();
        assert_eq!(config.server, defaults.server);
        let mut supervisor = config.supervisor.clone();
        supervisor.users.clear();
        supervisor.agents.clear();
        supervisor.plans = defaults.supervisor.plans.clone();
        assert_eq!(
            supervisor, defaults.supervisor,
            "the example's values are the defaults"
        );
    }
}
