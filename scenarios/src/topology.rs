//! The world's nodes and how a scenario configures them: node names,
//! ports, tokens, and the supervisor's and agents' configurations.
//!
//! Nodes: `sup` (the supervisor), `a-1` … `a-N` (agents), `c-1` … `c-N`
//! (clients). Users are spread over the clients in name order: the i-th
//! user (0-based) lives on client `c-(i mod N + 1)`.

use std::collections::BTreeMap;
use std::time::Duration;

use faultline_core::agent::AgentConfig;
use faultline_core::config::{
    AgentAuthConfig, DurationPerKind, OptionalDurationPerKind, PerKind, PlanConfig, Role,
    SupervisorConfig, UserConfig,
};
use faultline_core::protocol::{AgentId, JobKind};

use crate::scenario::Scenario;

/// The supervisor's node.
pub const SUPERVISOR_NODE: &str = "sup";
/// The supervisor's port for agents.
pub const AGENT_PORT: u16 = 7000;
/// The supervisor's port for clients.
pub const CLIENT_PORT: u16 = 7001;

/// The agents' reconnect backoff bounds.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// `a-1` … `a-N`.
pub fn agent_names(scenario: &Scenario) -> Vec<String> {
    (1..=scenario.topology.agents)
        .map(|index| format!("a-{index}"))
        .collect()
}

/// `c-1` … `c-N`.
pub fn client_names(scenario: &Scenario) -> Vec<String> {
    (1..=scenario.topology.clients)
        .map(|index| format!("c-{index}"))
        .collect()
}

/// Every node: the supervisor, the agents, the clients.
pub fn node_names(scenario: &Scenario) -> Vec<String> {
    let mut names = vec![SUPERVISOR_NODE.to_owned()];
    names.extend(agent_names(scenario));
    names.extend(client_names(scenario));
    names
}

/// The client node a user's requests come from.
pub fn client_of(scenario: &Scenario, user: &str) -> String {
    let index = scenario
        .topology
        .users
        .keys()
        .position(|name| name == user)
        .unwrap_or(0);
    let clients = scenario.topology.clients.max(1) as usize;
    format!("c-{}", index % clients + 1)
}

/// A user's token (the simulated world has no secrets to keep).
pub fn user_token(user: &str) -> String {
    format!("user-token-{user}")
}

/// An agent's token.
pub fn agent_token(agent: &str) -> String {
    format!("agent-token-{agent}")
}

/// The address clients call.
pub fn client_address() -> String {
    format!("{SUPERVISOR_NODE}:{CLIENT_PORT}")
}

/// The supervisor's configuration for `scenario`.
pub fn supervisor_config(scenario: &Scenario) -> SupervisorConfig {
    let timing = &scenario.supervisor;
    let pool = |kind: JobKind| scenario.topology.pools.get(&kind).copied().unwrap_or(1);
    let max_run = |kind: JobKind| {
        timing
            .max_run
            .get(&kind)
            .copied()
            .unwrap_or(Duration::from_secs(86_400))
    };
    let plans: BTreeMap<String, PlanConfig> = scenario
        .topology
        .plans
        .iter()
        .map(|(name, plan)| {
            let config = PlanConfig {
                max_running: plan.max_running,
                max_pending: plan.max_pending,
                max_run: OptionalDurationPerKind {
                    sequential: Some(plan.max_run),
                    parallel: Some(plan.max_run),
                },
            };
            (name.clone(), config)
        })
        .collect();
    let users = scenario
        .topology
        .users
        .iter()
        .map(|(name, user)| {
            let config = UserConfig {
                token: user_token(name),
                plan: user.plan.clone(),
                role: Role::User,
            };
            (name.clone(), config)
        })
        .collect();
    let agents = agent_names(scenario)
        .into_iter()
        .map(|name| {
            let token = agent_token(&name);
            (name, AgentAuthConfig { token })
        })
        .collect();
    let silence = timing.heartbeat_interval * timing.heartbeat_grace;
    SupervisorConfig {
        pools: PerKind {
            sequential: pool(JobKind::Sequential),
            parallel: pool(JobKind::Parallel),
        },
        max_run: DurationPerKind {
            sequential: max_run(JobKind::Sequential),
            parallel: max_run(JobKind::Parallel),
        },
        plans,
        users,
        agents,
        agent_reply_timeout: timing.reply_timeout,
        agent_start_timeout: timing.reply_timeout * 2,
        agent_hello_timeout: timing.reply_timeout,
        heartbeat_interval: timing.heartbeat_interval,
        heartbeat_grace_intervals: timing.heartbeat_grace,
        recovery_grace: timing.reply_timeout * 2 + silence + RECONNECT_BACKOFF_MAX,
        ..SupervisorConfig::default()
    }
}

/// The configuration of agent node `name`.
pub fn agent_config(scenario: &Scenario, name: &str) -> AgentConfig {
    let mut config = AgentConfig::new(
        AgentId(name.to_owned()),
        agent_token(name),
        format!("{SUPERVISOR_NODE}:{AGENT_PORT}"),
    );
    config.kinds = scenario.topology.agent_kinds.clone();
    config.slots = scenario.topology.agent_slots;
    config.reconnect_backoff_min = RECONNECT_BACKOFF_MIN;
    config.reconnect_backoff_max = RECONNECT_BACKOFF_MAX;
    config.reply_timeout = scenario.supervisor.reply_timeout;
    config.heartbeat_grace_intervals = scenario.supervisor.heartbeat_grace;
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn scenario() -> Scenario {
        Scenario::parse(Path::new("t.toml"), "name = \"t\"\n").expect("defaults are valid")
    }

    #[test]
    fn every_default_scenario_gives_a_valid_supervisor_config() {
        let config = supervisor_config(&scenario());
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.agents.len(), 2);
        assert_eq!(config.users.len(), 2);
        assert_eq!(config.pools.parallel, 3);
    }

    #[test]
    fn users_are_spread_over_the_clients() {
        let scenario = scenario();
        assert_eq!(client_of(&scenario, "alice"), "c-1");
        assert_eq!(client_of(&scenario, "bob"), "c-2");
        assert_eq!(
            node_names(&scenario),
            ["sup", "a-1", "a-2", "c-1", "c-2"].map(String::from)
        );
    }

    #[test]
    fn agent_configs_are_valid() {
        let config = agent_config(&scenario(), "a-1");
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.slots, 2);
    }
}
