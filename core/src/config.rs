//! The supervisor's configuration: pools, plans, users, agents, timeouts.
//!
//! Deserializable from TOML (the tokio shell reads a file) with every field
//! optional: a missing field takes the default documented on it, an unknown
//! field is an error. [`SupervisorConfig::validate`] rejects contradictions
//! before the supervisor starts. Durations are text read by
//! [`duration::parse_duration`](crate::duration::parse_duration): `250ms`,
//! `90s`, `5m`, `2h`, `1d`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::serde_text;
use crate::protocol::JobKind;

/// One value per job kind.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerKind<T> {
    /// For `sequential` jobs.
    pub sequential: T,
    /// For `parallel` jobs.
    pub parallel: T,
}

impl<T: Copy> PerKind<T> {
    /// The value for `kind`.
    pub fn get(&self, kind: JobKind) -> T {
        match kind {
            JobKind::Sequential => self.sequential,
            JobKind::Parallel => self.parallel,
        }
    }
}

impl<T: Default> Default for PerKind<T> {
    fn default() -> PerKind<T> {
        PerKind {
            sequential: T::default(),
            parallel: T::default(),
        }
    }
}

/// A duration per job kind, written as text (`max_run = { parallel = "2h" }`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DurationPerKind {
    /// For `sequential` jobs.
    #[serde(with = "serde_text")]
    pub sequential: Duration,
    /// For `parallel` jobs.
    #[serde(with = "serde_text")]
    pub parallel: Duration,
}

impl DurationPerKind {
    /// The value for `kind`.
    pub fn get(&self, kind: JobKind) -> Duration {
        match kind {
            JobKind::Sequential => self.sequential,
            JobKind::Parallel => self.parallel,
        }
    }
}

/// An optional duration per job kind; a missing kind has no limit of its own.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptionalDurationPerKind {
    /// For `sequential` jobs.
    #[serde(with = "optional_text", skip_serializing_if = "Option::is_none")]
    pub sequential: Option<Duration>,
    /// For `parallel` jobs.
    #[serde(with = "optional_text", skip_serializing_if = "Option::is_none")]
    pub parallel: Option<Duration>,
}

impl OptionalDurationPerKind {
    /// The value for `kind`.
    pub fn get(&self, kind: JobKind) -> Option<Duration> {
        match kind {
            JobKind::Sequential => self.sequential,
            JobKind::Parallel => self.parallel,
        }
    }
}

/// `Option<Duration>` as optional text.
mod optional_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => crate::duration::serde_text::serialize(duration, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(deserializer)?;
        crate::duration::parse_duration(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// What a user may do.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sees and cancels only their own jobs.
    #[default]
    User,
    /// Also sees every job, op, pool holder and agent run.
    Admin,
}

/// A user: a secret token, a plan, a role.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The secret the user presents (`Authorization: Bearer …`).
    pub token: String,
    /// The plan's name in [`SupervisorConfig::plans`]. Default `"default"`.
    #[serde(default = "default_plan_name")]
    pub plan: String,
    /// Default [`Role::User`].
    #[serde(default)]
    pub role: Role,
}

/// Per-user limits.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlanConfig {
    /// Jobs of one user running (or being dispatched) at once. Default 2.
    pub max_running: u32,
    /// Jobs of one user waiting to run at once; a submit beyond it is
    /// refused with `LimitExceeded`. Default 100.
    pub max_pending: u32,
    /// Maximum run time per kind for this plan's users. Default: none of its
    /// own (only the kind's limit applies).
    pub max_run: OptionalDurationPerKind,
}

impl Default for PlanConfig {
    fn default() -> PlanConfig {
        PlanConfig {
            max_running: 2,
            max_pending: 100,
            max_run: OptionalDurationPerKind::default(),
        }
    }
}

/// An agent allowed to connect.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentAuthConfig {
    /// The secret the agent presents in its hello.
    pub token: String,
}

/// Everything the supervisor is configured with.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorConfig {
    /// Slots per job kind across all agents: how many jobs of the kind run
    /// at once. Default 1 sequential, 4 parallel.
    pub pools: PerKind<u32>,
    /// Maximum run time per kind. A job's effective limit is the smallest of
    /// this, its plan's and its own request. Default `1d` for both kinds.
    pub max_run: DurationPerKind,
    /// Plans by name. Default: one plan named `default` with
    /// [`PlanConfig::default`] limits.
    pub plans: BTreeMap<String, PlanConfig>,
    /// Users by name. Default: none (nobody can submit).
    pub users: BTreeMap<String, UserConfig>,
    /// Agents by id. Default: none (no agent can connect).
    pub agents: BTreeMap<String, AgentAuthConfig>,
    /// How long an agent has to confirm a kill, or to report a run it did
    /// not declare after a reconnect, before the supervisor settles the run
    /// without it. Default `10s`.
    #[serde(with = "serde_text")]
    pub agent_reply_timeout: Duration,
    /// How long an agent has to report a dispatched run as started; past
    /// it the run is killed and the job fails. Default `30s`.
    #[serde(with = "serde_text")]
    pub agent_start_timeout: Duration,
    /// How long a new agent connection (or a client connection over `Net`)
    /// has to send its first frame. Default `10s`.
    #[serde(with = "serde_text")]
    pub agent_hello_timeout: Duration,
    /// How often agents heartbeat (sent to them in the welcome). Default
    /// `1s`.
    #[serde(with = "serde_text")]
    pub heartbeat_interval: Duration,
    /// An agent silent for this many heartbeat intervals is lost, with its
    /// jobs. Default 5.
    pub heartbeat_grace_intervals: u32,
    /// After a restart, how long running jobs wait for their agents to come
    /// back before they are settled `Lost`. Default `30s`.
    #[serde(with = "serde_text")]
    pub recovery_grace: Duration,
    /// Runs per job: a run that provably never reached its agent is
    /// dispatched again, at most this many runs in all. Default 3.
    pub max_attempts: u32,
    /// Jobs waiting to run across all users; a submit beyond it is refused
    /// with `Unavailable`. Default 10 000.
    pub max_pending_total: u32,
    /// Largest command accepted, in bytes over all arguments. Default 64 KiB.
    pub max_command_bytes: u32,
    /// Client connections served at once over `Net` (the simulator's
    /// clients). Default 256.
    pub max_client_connections: u32,
}

impl Default for SupervisorConfig {
    fn default() -> SupervisorConfig {
        let day = Duration::from_secs(86_400);
        SupervisorConfig {
            pools: PerKind {
                sequential: 1,
                parallel: 4,
            },
            max_run: DurationPerKind {
                sequential: day,
                parallel: day,
            },
            plans: BTreeMap::from([(default_plan_name(), PlanConfig::default())]),
            users: BTreeMap::new(),
            agents: BTreeMap::new(),
            agent_reply_timeout: Duration::from_secs(10),
            agent_start_timeout: Duration::from_secs(30),
            agent_hello_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_grace_intervals: 5,
            recovery_grace: Duration::from_secs(30),
            max_attempts: 3,
            max_pending_total: 10_000,
            max_command_bytes: 64 * 1024,
            max_client_connections: 256,
        }
    }
}

fn default_plan_name() -> String {
    "default".to_owned()
}

/// A configuration that contradicts itself.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("invalid configuration: `{field}`: {reason}")]
pub struct ConfigError {
    /// The offending field, as a dotted path (`users.alice.plan`).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        reason: reason.into(),
    }
}

impl SupervisorConfig {
    /// Reject contradictions: empty pools, zero timeouts, users on unknown
    /// plans, empty or shared tokens, zero limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for kind in JobKind::ALL {
            if self.pools.get(kind) == 0 {
                return Err(invalid(format!("pools.{kind}"), "must be at least 1"));
            }
            if self.max_run.get(kind).is_zero() {
                return Err(invalid(format!("max_run.{kind}"), "must be positive"));
            }
        }
        let durations = [
            ("agent_reply_timeout", self.agent_reply_timeout),
            ("agent_start_timeout", self.agent_start_timeout),
            ("agent_hello_timeout", self.agent_hello_timeout),
            ("heartbeat_interval", self.heartbeat_interval),
            ("recovery_grace", self.recovery_grace),
        ];
        if let Some((field, _)) = durations.iter().find(|(_, value)| value.is_zero()) {
            return Err(invalid(*field, "must be positive"));
        }
        let counts = [
            ("heartbeat_grace_intervals", self.heartbeat_grace_intervals),
            ("max_attempts", self.max_attempts),
            ("max_pending_total", self.max_pending_total),
            ("max_command_bytes", self.max_command_bytes),
            ("max_client_connections", self.max_client_connections),
        ];
        if let Some((field, _)) = counts.iter().find(|(_, value)| *value == 0) {
            return Err(invalid(*field, "must be positive"));
        }
        self.validate_plans()?;
        self.validate_tokens()
    }

    fn validate_plans(&self) -> Result<(), ConfigError> {
        for (name, plan) in &self.plans {
            if plan.max_running == 0 {
                return Err(invalid(
                    format!("plans.{name}.max_running"),
                    "must be at least 1",
                ));
            }
            for kind in JobKind::ALL {
                if plan.max_run.get(kind).is_some_and(|limit| limit.is_zero()) {
                    return Err(invalid(
                        format!("plans.{name}.max_run.{kind}"),
                        "must be positive",
                    ));
                }
            }
        }
        for (name, user) in &self.users {
            if !self.plans.contains_key(&user.plan) {
                return Err(invalid(
                    format!("users.{name}.plan"),
                    format!("no plan named `{}`", user.plan),
                ));
            }
        }
        Ok(())
    }

    fn validate_tokens(&self) -> Result<(), ConfigError> {
        let mut owners: BTreeMap<&str, String> = BTreeMap::new();
        let users = self
            .users
            .iter()
            .map(|(name, user)| (format!("users.{name}.token"), user.token.as_str()));
        let agents = self
            .agents
            .iter()
            .map(|(id, agent)| (format!("agents.{id}.token"), agent.token.as_str()));
        for (field, token) in users.chain(agents) {
            if token.is_empty() {
                return Err(invalid(field, "must not be empty"));
            }
            if let Some(first) = owners.insert(token, field.clone()) {
                return Err(invalid(field, format!("same token as `{first}`")));
            }
        }
        Ok(())
    }

    /// The plan of `user`. Panics if the user is unknown: callers hold a name
    /// that authentication produced.
    pub fn plan_of(&self, user: &str) -> &PlanConfig {
        let plan = &self
            .users
            .get(user)
            .expect("plan_of is only asked about authenticated users")
            .plan;
        self.plans
            .get(plan)
            .expect("validate() checked that every user's plan exists")
    }

    /// The effective max run time, in milliseconds, of a job of `kind`
    /// submitted by `user` asking for `requested_ms`: the smallest of the
    /// kind's, the plan's and the request's limits.
    pub fn max_run_ms_for(&self, user: &str, kind: JobKind, requested_ms: Option<u64>) -> u64 {
        let millis = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let mut limit = millis(self.max_run.get(kind)).max(1);
        if let Some(plan) = self.plan_of(user).max_run.get(kind) {
            limit = limit.min(millis(plan).max(1));
        }
        if let Some(requested_ms) = requested_ms {
            limit = limit.min(requested_ms.max(1));
        }
        limit
    }

    /// How long an agent may stay silent before it is lost.
    pub fn heartbeat_grace(&self) -> Duration {
        self.heartbeat_interval * self.heartbeat_grace_intervals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_users() -> SupervisorConfig {
        let mut config = SupervisorConfig::default();
        config.users.insert(
            "alice".into(),
            UserConfig {
                token: "t-alice".into(),
                plan: "default".into(),
                role: Role::User,
            },
        );
        config.agents.insert(
            "a-1".into(),
            AgentAuthConfig {
                token: "t-agent".into(),
            },
        );
        config
    }

    #[test]
    fn default_is_valid() {
        SupervisorConfig::default()
            .validate()
            .expect("default is valid");
        with_users().validate().expect("users and agents are valid");
    }

    #[test]
    fn rejects_an_empty_pool_and_zero_timeouts() {
        let mut config = with_users();
        config.pools.parallel = 0;
        assert_eq!(
            config.validate().expect_err("zero pool").field,
            "pools.parallel"
        );
        let mut config = with_users();
        config.heartbeat_interval = Duration::ZERO;
        assert_eq!(
            config.validate().expect_err("zero interval").field,
            "heartbeat_interval"
        );
    }

    #[test]
    fn rejects_unknown_plans_and_shared_tokens() {
        let mut config = with_users();
        config.users.get_mut("alice").expect("alice").plan = "gold".into();
        let error = config.validate().expect_err("unknown plan");
        assert_eq!(error.field, "users.alice.plan");
        let mut config = with_users();
        config.agents.get_mut("a-1").expect("a-1").token = "t-alice".into();
        let error = config.validate().expect_err("shared token");
        assert_eq!(error.field, "agents.a-1.token");
        assert!(error.reason.contains("users.alice.token"));
    }

    #[test]
    fn max_run_is_the_smallest_limit() {
        let mut config = with_users();
        config.max_run.parallel = Duration::from_secs(10);
        let limit = |config: &SupervisorConfig, requested| {
            config.max_run_ms_for("alice", JobKind::Parallel, requested)
        };
        assert_eq!(limit(&config, None), 10_000);
        assert_eq!(limit(&config, Some(4_000)), 4_000);
        let plan = config.plans.get_mut("default").expect("plan");
        plan.max_run.parallel = Some(Duration::from_secs(2));
        assert_eq!(limit(&config, Some(4_000)), 2_000);
    }

    #[test]
    fn deserializes_partial_config_with_text_durations_and_rejects_unknown_fields() {
        let text = r#"{
            "pools": {"sequential": 2, "parallel": 8},
            "heartbeat_interval": "250ms",
            "plans": {"free": {"max_running": 1, "max_run": {"parallel": "5m"}}},
            "users": {"bob": {"token": "x", "plan": "free"}}
        }"#;
        let config: SupervisorConfig = serde_json::from_str(text).expect("partial config");
        assert_eq!(config.pools.parallel, 8);
        assert_eq!(config.heartbeat_interval, Duration::from_millis(250));
        assert_eq!(config.recovery_grace, Duration::from_secs(30));
        assert_eq!(
            config.plans["free"].max_run.parallel,
            Some(Duration::from_secs(300))
        );
        assert_eq!(config.plans["free"].max_run.sequential, None);
        config.validate().expect("valid");
        let error = serde_json::from_str::<SupervisorConfig>(r#"{"no_such_field":1}"#)
            .expect_err("unknown field");
        assert!(error.to_string().contains("no_such_field"));
        let error = serde_json::from_str::<SupervisorConfig>(r#"{"heartbeat_interval":"5"}"#)
            .expect_err("a duration needs a unit");
        assert!(error.to_string().contains("unit"));
    }

    #[test]
    fn the_default_round_trips_through_serde() {
        let text = serde_json::to_string(&SupervisorConfig::default()).expect("serializes");
        let back: SupervisorConfig = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(back, SupervisorConfig::default());
    }
}
