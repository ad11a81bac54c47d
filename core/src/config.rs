//! The supervisor's configuration: pools, plans, users, agents, timeouts.
//!
//! Deserializable from TOML (the tokio shell reads a file) with every field
//! optional: a missing field takes the default documented on it, an unknown
//! field is an error. [`SupervisorConfig::validate`] rejects contradictions
//! before the supervisor starts. Durations are integer milliseconds, named
//! with an `_ms` suffix.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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

/// What a user may do.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sees and cancels only their own jobs.
    #[default]
    User,
    /// Also sees every op, pool holder and agent in the overview.
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
    /// Maximum run time per kind for this plan's users, in milliseconds.
    /// `None` (the default) leaves only the kind's limit.
    pub max_run_ms: PerKind<Option<u64>>,
}

impl Default for PlanConfig {
    fn default() -> PlanConfig {
        PlanConfig {
            max_running: 2,
            max_pending: 100,
            max_run_ms: PerKind::default(),
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
    /// Maximum run time per kind, in milliseconds. A job's effective limit is
    /// the smallest of this, its plan's and its own request. Default 24 h.
    pub max_run_ms: PerKind<u64>,
    /// Plans by name. Default: one plan named `default` with
    /// [`PlanConfig::default`] limits.
    pub plans: BTreeMap<String, PlanConfig>,
    /// Users by name. Default: none (nobody can submit).
    pub users: BTreeMap<String, UserConfig>,
    /// Agents by id. Default: none (no agent can connect).
    pub agents: BTreeMap<String, AgentAuthConfig>,
    /// How long an agent has to confirm a kill before the job is settled
    /// anyway. Default 10 s.
    pub agent_reply_timeout_ms: u64,
    /// How long an agent has to report a dispatched run as started. Default
    /// 30 s.
    pub agent_start_timeout_ms: u64,
    /// How long a new agent connection has to say hello. Default 10 s.
    pub agent_hello_timeout_ms: u64,
    /// How often agents heartbeat (sent to them in the welcome). Default 1 s.
    pub heartbeat_interval_ms: u64,
    /// An agent silent for this many heartbeat intervals is lost, with its
    /// jobs. Default 5.
    pub heartbeat_grace_intervals: u32,
    /// After a restart, how long running jobs wait for their agents to come
    /// back before they are settled `Lost`. Default 30 s.
    pub recovery_grace_ms: u64,
    /// Dispatches per job: a run that provably never started on its agent is
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
        SupervisorConfig {
            pools: PerKind {
                sequential: 1,
                parallel: 4,
            },
            max_run_ms: PerKind {
                sequential: 24 * 3_600_000,
                parallel: 24 * 3_600_000,
            },
            plans: BTreeMap::from([(default_plan_name(), PlanConfig::default())]),
            users: BTreeMap::new(),
            agents: BTreeMap::new(),
            agent_reply_timeout_ms: 10_000,
            agent_start_timeout_ms: 30_000,
            agent_hello_timeout_ms: 10_000,
            heartbeat_interval_ms: 1_000,
            heartbeat_grace_intervals: 5,
            recovery_grace_ms: 30_000,
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
            if self.max_run_ms.get(kind) == 0 {
                return Err(invalid(format!("max_run_ms.{kind}"), "must be positive"));
            }
        }
        let positive = [
            ("agent_reply_timeout_ms", self.agent_reply_timeout_ms),
            ("agent_start_timeout_ms", self.agent_start_timeout_ms),
            ("agent_hello_timeout_ms", self.agent_hello_timeout_ms),
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("recovery_grace_ms", self.recovery_grace_ms),
            (
                "heartbeat_grace_intervals",
                u64::from(self.heartbeat_grace_intervals),
            ),
            ("max_attempts", u64::from(self.max_attempts)),
            ("max_pending_total", u64::from(self.max_pending_total)),
            ("max_command_bytes", u64::from(self.max_command_bytes)),
            (
                "max_client_connections",
                u64::from(self.max_client_connections),
            ),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, value)| *value == 0) {
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
                if plan.max_run_ms.get(kind) == Some(0) {
                    return Err(invalid(
                        format!("plans.{name}.max_run_ms.{kind}"),
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

    /// The effective max run time of a job of `kind` submitted by `user`
    /// asking for `requested_ms`: the smallest of the three limits.
    pub fn max_run_for(&self, user: &str, kind: JobKind, requested_ms: Option<u64>) -> u64 {
        let mut limit = self.max_run_ms.get(kind);
        if let Some(plan_ms) = self.plan_of(user).max_run_ms.get(kind) {
            limit = limit.min(plan_ms);
        }
        if let Some(requested_ms) = requested_ms {
            limit = limit.min(requested_ms.max(1));
        }
        limit
    }

    /// [`SupervisorConfig::heartbeat_interval_ms`] as a duration.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// How long an agent may stay silent before it is lost.
    pub fn heartbeat_grace(&self) -> Duration {
        self.heartbeat_interval() * self.heartbeat_grace_intervals
    }

    /// [`SupervisorConfig::agent_reply_timeout_ms`] as a duration.
    pub fn agent_reply_timeout(&self) -> Duration {
        Duration::from_millis(self.agent_reply_timeout_ms)
    }

    /// [`SupervisorConfig::agent_start_timeout_ms`] as a duration.
    pub fn agent_start_timeout(&self) -> Duration {
        Duration::from_millis(self.agent_start_timeout_ms)
    }

    /// [`SupervisorConfig::agent_hello_timeout_ms`] as a duration.
    pub fn agent_hello_timeout(&self) -> Duration {
        Duration::from_millis(self.agent_hello_timeout_ms)
    }

    /// [`SupervisorConfig::recovery_grace_ms`] as a duration.
    pub fn recovery_grace(&self) -> Duration {
        Duration::from_millis(self.recovery_grace_ms)
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
        config.heartbeat_interval_ms = 0;
        assert_eq!(
            config.validate().expect_err("zero interval").field,
            "heartbeat_interval_ms"
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
        config.max_run_ms.parallel = 10_000;
        assert_eq!(config.max_run_for("alice", JobKind::Parallel, None), 10_000);
        assert_eq!(
            config.max_run_for("alice", JobKind::Parallel, Some(4_000)),
            4_000
        );
        config
            .plans
            .get_mut("default")
            .expect("plan")
            .max_run_ms
            .parallel = Some(2_000);
        assert_eq!(
            config.max_run_for("alice", JobKind::Parallel, Some(4_000)),
            2_000
        );
    }

    #[test]
    fn deserializes_partial_toml_like_json_and_rejects_unknown_fields() {
        let config: SupervisorConfig = serde_json::from_str(
            r#"{"pools":{"sequential":2,"parallel":8},"users":{"bob":{"token":"x"}}}"#,
        )
        .expect("partial config");
        assert_eq!(config.pools.parallel, 8);
        assert_eq!(config.users["bob"].plan, "default");
        assert_eq!(config.heartbeat_interval_ms, 1_000);
        let error = serde_json::from_str::<SupervisorConfig>(r#"{"no_such_field":1}"#)
            .expect_err("unknown field");
        assert!(error.to_string().contains("no_such_field"));
    }
}
