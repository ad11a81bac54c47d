//! Scenario files: the TOML description of one simulated world.
//!
//! A scenario names a topology (agents, slot capacities, users and plans), a
//! workload, a fault profile, a scheduler, the simulated duration, the heal
//! time after which faults stop and the liveness window. Every field has a
//! default (see `catalogue/example.toml`, which documents them all), unknown
//! fields are refused, and every error names the file, the line and the field.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use faultline_core::duration::serde_text;
use faultline_core::protocol::JobKind;
use serde::{Deserialize, Serialize};

/// A parsed and validated scenario.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in reports and replay commands (`cancel-storm`).
    pub name: String,
    /// One sentence on what the scenario exercises.
    #[serde(default)]
    pub description: String,
    /// The scheduler: `random`, `pct:D` (PCT with depth D) or `fifo`.
    #[serde(default = "default_scheduler")]
    pub scheduler: String,
    /// Total simulated time; the run ends here whatever happens.
    #[serde(default = "default_duration", with = "serde_text")]
    pub duration: Duration,
    /// Faults are injected only before this time; afterwards the world heals.
    #[serde(default = "default_heal", with = "serde_text")]
    pub heal: Duration,
    /// After `heal`, every job must be terminal and every acknowledged cancel
    /// settled within this window.
    #[serde(default = "default_liveness_window", with = "serde_text")]
    pub liveness_window: Duration,
    /// Agents, clients, pools, plans and users.
    #[serde(default)]
    pub topology: Topology,
    /// Supervisor timing.
    #[serde(default)]
    pub supervisor: SupervisorTiming,
    /// What the clients do.
    #[serde(default)]
    pub workload: WorkloadProfile,
    /// Network conditions during the fault phase.
    #[serde(default)]
    pub network: NetworkProfile,
    /// Which faults are injected, how often and how long.
    #[serde(default)]
    pub faults: FaultProfile,
}

/// Nodes and capacities.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topology {
    /// Number of agent nodes (`a-1` … `a-N`).
    pub agents: u32,
    /// Jobs each agent runs at once.
    pub agent_slots: u32,
    /// Kinds every agent accepts.
    pub agent_kinds: Vec<JobKind>,
    /// Number of client nodes (`c-1` … `c-N`); users are spread over them.
    pub clients: u32,
    /// Supervisor-wide capacity per kind.
    pub pools: BTreeMap<JobKind, u32>,
    /// Plans by name.
    pub plans: BTreeMap<String, PlanProfile>,
    /// Users by name, each on a plan.
    pub users: BTreeMap<String, UserProfile>,
}

/// A plan's limits.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanProfile {
    /// Jobs of one user running at once.
    #[serde(default = "default_plan_max_running")]
    pub max_running: u32,
    /// Jobs of one user waiting at once.
    #[serde(default = "default_plan_max_pending")]
    pub max_pending: u32,
    /// Longest run time the plan allows.
    #[serde(default = "default_plan_max_run", with = "serde_text")]
    pub max_run: Duration,
}

/// A user.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserProfile {
    /// The plan's name (a key of `topology.plans`).
    pub plan: String,
}

/// Supervisor timing, mapped onto the supervisor's configuration.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorTiming {
    /// How often agents heartbeat.
    #[serde(with = "serde_text")]
    pub heartbeat_interval: Duration,
    /// Missed heartbeat intervals before an agent is declared lost.
    pub heartbeat_grace: u32,
    /// How long the supervisor waits for an agent's reply.
    #[serde(with = "serde_text")]
    pub reply_timeout: Duration,
    /// Longest run time per kind.
    #[serde(with = "kind_durations")]
    pub max_run: BTreeMap<JobKind, Duration>,
}

/// What the clients do; drawn up front from the seed.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadProfile {
    /// Number of jobs submitted.
    pub jobs: u32,
    /// Submissions are spread uniformly over `[0, arrival_window)`.
    #[serde(with = "serde_text")]
    pub arrival_window: Duration,
    /// Fraction of jobs of kind `parallel` (the rest are `sequential`).
    pub parallel_fraction: f64,
    /// Shortest job run time.
    #[serde(with = "serde_text")]
    pub duration_min: Duration,
    /// Longest job run time.
    #[serde(with = "serde_text")]
    pub duration_max: Duration,
    /// Probability that a job's process exits non-zero.
    pub failure_probability: f64,
    /// Probability that a job asks for a max run time shorter than it needs.
    pub overrun_probability: f64,
    /// Probability that the owner cancels the job.
    pub cancel_probability: f64,
    /// A cancel is sent within this delay after the submit.
    #[serde(with = "serde_text")]
    pub cancel_delay_max: Duration,
    /// Probability that a client submits the same job twice (same idempotency key).
    pub duplicate_submit_probability: f64,
    /// Probability that a request's client disconnects mid-request.
    pub disconnect_probability: f64,
}

/// Network conditions applied to every link during the fault phase.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkProfile {
    /// Shortest one-way latency.
    #[serde(with = "serde_text")]
    pub latency_min: Duration,
    /// Longest one-way latency.
    #[serde(with = "serde_text")]
    pub latency_max: Duration,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Probability that a message overtakes the one sent before it.
    pub reorder: f64,
}

/// Fault families a profile may inject.
pub const FAULT_FAMILIES: [&str; 8] = [
    "partition",
    "one-way-partition",
    "clog",
    "reset",
    "kill-agent",
    "stall",
    "clock-skew",
    "crash-supervisor",
];

/// Which faults are injected, how often and how long.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultProfile {
    /// Enabled families (see [`FAULT_FAMILIES`]).
    pub families: Vec<String>,
    /// Swarm testing: per seed, switch a random subset of the families off.
    pub swarm: bool,
    /// Mean number of fault events per simulated minute before `heal`.
    pub events_per_minute: f64,
    /// Longest partition or clog.
    #[serde(with = "serde_text")]
    pub partition_duration_max: Duration,
    /// Longest time a killed node stays down.
    #[serde(with = "serde_text")]
    pub downtime_max: Duration,
    /// Longest stall (a node frozen by a blocking call or a GC pause).
    #[serde(with = "serde_text")]
    pub stall_duration_max: Duration,
    /// Largest clock skew of a node.
    #[serde(with = "serde_text")]
    pub clock_skew_max: Duration,
}

fn default_scheduler() -> String {
    "random".into()
}
fn default_duration() -> Duration {
    Duration::from_secs(600)
}
fn default_heal() -> Duration {
    Duration::from_secs(180)
}
fn default_liveness_window() -> Duration {
    Duration::from_secs(300)
}
fn default_plan_max_running() -> u32 {
    4
}
fn default_plan_max_pending() -> u32 {
    100
}
fn default_plan_max_run() -> Duration {
    Duration::from_secs(3_600)
}

impl Default for Topology {
    fn default() -> Topology {
        let plan = PlanProfile {
            max_running: default_plan_max_running(),
            max_pending: default_plan_max_pending(),
            max_run: default_plan_max_run(),
        };
        let user = |plan: &str| UserProfile { plan: plan.into() };
        Topology {
            agents: 2,
            agent_slots: 2,
            agent_kinds: JobKind::ALL.to_vec(),
            clients: 2,
            pools: BTreeMap::from([(JobKind::Sequential, 1), (JobKind::Parallel, 3)]),
            plans: BTreeMap::from([("basic".to_string(), plan)]),
            users: BTreeMap::from([
                ("alice".to_string(), user("basic")),
                ("bob".to_string(), user("basic")),
            ]),
        }
    }
}

impl Default for SupervisorTiming {
    fn default() -> SupervisorTiming {
        SupervisorTiming {
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_grace: 3,
            reply_timeout: Duration::from_secs(5),
            max_run: BTreeMap::from([
                (JobKind::Sequential, Duration::from_secs(600)),
                (JobKind::Parallel, Duration::from_secs(600)),
            ]),
        }
    }
}

impl Default for WorkloadProfile {
    fn default() -> WorkloadProfile {
        WorkloadProfile {
            jobs: 20,
            arrival_window: Duration::from_secs(60),
            parallel_fraction: 0.7,
            duration_min: Duration::from_secs(1),
            duration_max: Duration::from_secs(30),
            failure_probability: 0.1,
            overrun_probability: 0.0,
            cancel_probability: 0.0,
            cancel_delay_max: Duration::from_secs(20),
            duplicate_submit_probability: 0.0,
            disconnect_probability: 0.0,
        }
    }
}

impl Default for NetworkProfile {
    fn default() -> NetworkProfile {
        NetworkProfile {
            latency_min: Duration::from_millis(1),
            latency_max: Duration::from_millis(10),
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
        }
    }
}

impl Default for FaultProfile {
    fn default() -> FaultProfile {
        FaultProfile {
            families: Vec::new(),
            swarm: true,
            events_per_minute: 2.0,
            partition_duration_max: Duration::from_secs(20),
            downtime_max: Duration::from_secs(20),
            stall_duration_max: Duration::from_secs(5),
            clock_skew_max: Duration::from_secs(2),
        }
    }
}

/// A durations-per-kind table (`{ sequential = "10m", parallel = "1h" }`).
mod kind_durations {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use faultline_core::duration::{format_duration, parse_duration};
    use faultline_core::protocol::JobKind;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<JobKind, Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let text: BTreeMap<JobKind, String> = map
            .iter()
            .map(|(kind, d)| (*kind, format_duration(*d)))
            .collect();
        text.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<JobKind, Duration>, D::Error> {
        let text = BTreeMap::<JobKind, String>::deserialize(deserializer)?;
        text.into_iter()
            .map(|(kind, value)| {
                parse_duration(&value)
                    .map(|d| (kind, d))
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

/// A scenario file that cannot be used, with where and why.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ScenarioError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// Dotted path of the offending field (`workload.cancel_probability`), when known.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": ")?;
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ScenarioError {}

impl Scenario {
    /// Read, parse and validate a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|error| ScenarioError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            field: None,
            message: format!("cannot read: {error}"),
        })?;
        Scenario::parse(path, &text)
    }

    /// Parse and validate scenario text; `path` is used in errors only.
    pub fn parse(path: &Path, text: &str) -> Result<Scenario, ScenarioError> {
        let locate =
            |span: Option<std::ops::Range<usize>>| span.map(|span| line_column(text, span.start));
        let scenario: Scenario = toml::from_str(text).map_err(|error| {
            let (line, column) = locate(error.span()).unzip();
            ScenarioError {
                file: path.to_path_buf(),
                line,
                column,
                field: None,
                message: error.message().trim().to_string(),
            }
        })?;
        scenario.validate().map_err(|(field, message)| {
            let (line, column) = locate(field_span(text, &field)).unzip();
            ScenarioError {
                file: path.to_path_buf(),
                line,
                column,
                field: Some(field),
                message,
            }
        })?;
        Ok(scenario)
    }

    /// Check contradictions and ranges. Errors carry the dotted field path.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let fail = |field: &str, message: String| Err((field.to_string(), message));
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return fail(
                "name",
                format!(
                    "`{}` must be non-empty letters, digits, `-` or `_`",
                    self.name
                ),
            );
        }
        parse_scheduler(&self.scheduler).map_err(|message| ("scheduler".to_string(), message))?;
        if self.heal > self.duration {
            return fail(
                "heal",
                format!(
                    "heal time {:?} is after the end of the run ({:?})",
                    self.heal, self.duration
                ),
            );
        }
        if self.heal + self.liveness_window > self.duration {
            return fail(
                "liveness_window",
                format!(
                    "heal {:?} + liveness window {:?} exceeds the run's duration {:?}",
                    self.heal, self.liveness_window, self.duration
                ),
            );
        }
        self.topology.validate()?;
        self.supervisor.validate()?;
        self.workload.validate()?;
        self.network.validate()?;
        self.faults.validate()
    }
}

impl Topology {
    fn validate(&self) -> Result<(), (String, String)> {
        let fail = |field: &str, message: String| Err((format!("topology.{field}"), message));
        if self.agents == 0 {
            return fail("agents", "at least one agent is needed".into());
        }
        if self.agent_slots == 0 {
            return fail("agent_slots", "agents need at least one slot".into());
        }
        if self.agent_kinds.is_empty() {
            return fail("agent_kinds", "agents must accept at least one kind".into());
        }
        if self.clients == 0 {
            return fail("clients", "at least one client is needed".into());
        }
        if let Some((kind, _)) = self.pools.iter().find(|(_, capacity)| **capacity == 0) {
            return fail("pools", format!("pool `{kind}` has capacity 0"));
        }
        if self.users.is_empty() {
            return fail("users", "at least one user is needed".into());
        }
        for (name, user) in &self.users {
            if !self.plans.contains_key(&user.plan) {
                return Err((
                    format!("topology.users.{name}.plan"),
                    format!(
                        "user `{name}` is on plan `{}`, which is not defined in topology.plans",
                        user.plan
                    ),
                ));
            }
        }
        for (name, plan) in &self.plans {
            if plan.max_running == 0 {
                return Err((
                    format!("topology.plans.{name}.max_running"),
                    "must be at least 1".into(),
                ));
            }
        }
        Ok(())
    }
}

impl SupervisorTiming {
    fn validate(&self) -> Result<(), (String, String)> {
        if self.heartbeat_interval.is_zero() {
            return Err((
                "supervisor.heartbeat_interval".into(),
                "must be positive".into(),
            ));
        }
        if self.heartbeat_grace == 0 {
            return Err((
                "supervisor.heartbeat_grace".into(),
                "must be at least 1 interval".into(),
            ));
        }
        if self.reply_timeout.is_zero() {
            return Err(("supervisor.reply_timeout".into(), "must be positive".into()));
        }
        Ok(())
    }
}

impl WorkloadProfile {
    fn validate(&self) -> Result<(), (String, String)> {
        let probabilities = [
            ("parallel_fraction", self.parallel_fraction),
            ("failure_probability", self.failure_probability),
            ("overrun_probability", self.overrun_probability),
            ("cancel_probability", self.cancel_probability),
            (
                "duplicate_submit_probability",
                self.duplicate_submit_probability,
            ),
            ("disconnect_probability", self.disconnect_probability),
        ];
        check_probabilities("workload", &probabilities)?;
        if self.duration_min > self.duration_max {
            return Err((
                "workload.duration_min".into(),
                format!(
                    "{:?} is longer than duration_max {:?}",
                    self.duration_min, self.duration_max
                ),
            ));
        }
        Ok(())
    }
}

impl NetworkProfile {
    fn validate(&self) -> Result<(), (String, String)> {
        check_probabilities(
            "network",
            &[
                ("loss", self.loss),
                ("duplicate", self.duplicate),
                ("reorder", self.reorder),
            ],
        )?;
        if self.latency_min > self.latency_max {
            return Err((
                "network.latency_min".into(),
                format!(
                    "{:?} is larger than latency_max {:?}",
                    self.latency_min, self.latency_max
                ),
            ));
        }
        Ok(())
    }
}

impl FaultProfile {
    fn validate(&self) -> Result<(), (String, String)> {
        for family in &self.families {
            if !FAULT_FAMILIES.contains(&family.as_str()) {
                return Err((
                    "faults.families".into(),
                    format!(
                        "unknown fault family `{family}` (known: {})",
                        FAULT_FAMILIES.join(", ")
                    ),
                ));
            }
        }
        if !(self.events_per_minute.is_finite() && self.events_per_minute >= 0.0) {
            return Err((
                "faults.events_per_minute".into(),
                "must be a finite number >= 0".into(),
            ));
        }
        Ok(())
    }
}

fn check_probabilities(section: &str, values: &[(&str, f64)]) -> Result<(), (String, String)> {
    for (name, value) in values {
        if !(0.0..=1.0).contains(value) {
            return Err((
                format!("{section}.{name}"),
                format!("must be within [0, 1], got {value}"),
            ));
        }
    }
    Ok(())
}

/// The scheduler named in a scenario.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SchedulerChoice {
    /// Uniformly random choice among ready tasks.
    Random,
    /// Probabilistic concurrency testing with the given bug depth.
    Pct {
        /// Bug depth d (1 ..= 8).
        depth: u32,
    },
    /// First in, first out (a baseline).
    Fifo,
}

/// Parse `random`, `fifo` or `pct:D`.
pub fn parse_scheduler(text: &str) -> Result<SchedulerChoice, String> {
    match text {
        "random" => Ok(SchedulerChoice::Random),
        "fifo" => Ok(SchedulerChoice::Fifo),
        _ => {
            let depth = text
                .strip_prefix("pct:")
                .and_then(|depth| depth.parse::<u32>().ok())
                .ok_or_else(|| {
                    format!("unknown scheduler `{text}` (expected `random`, `fifo` or `pct:D`)")
                })?;
            if !(1..=8).contains(&depth) {
                return Err(format!("PCT depth must be within 1..=8, got {depth}"));
            }
            Ok(SchedulerChoice::Pct { depth })
        }
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

/// The span of the deepest part of `field` (a dotted path) present in the document.
fn field_span(text: &str, field: &str) -> Option<std::ops::Range<usize>> {
    let document = toml_edit::ImDocument::parse(text).ok()?;
    let mut item = document.as_item();
    let mut span = None;
    for key in field.split('.') {
        let Some(table) = item.as_table_like() else {
            break;
        };
        let Some((found_key, child)) = table.get_key_value(key) else {
            break;
        };
        span = found_key.span().or(span);
        item = child;
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(Path::new("test.toml"), text)
    }

    #[test]
    fn a_name_alone_gives_every_default() {
        let scenario = parse("name = \"tiny\"\n").expect("valid");
        assert_eq!(scenario.scheduler, "random");
        assert_eq!(scenario.topology, Topology::default());
        assert_eq!(scenario.workload, WorkloadProfile::default());
    }

    #[test]
    fn unknown_field_is_named_with_its_line() {
        let error = parse("name = \"x\"\n\n[workload]\njobs = 3\ncancel_probabilty = 0.5\n")
            .expect_err("typo");
        assert_eq!(error.line, Some(5));
        assert!(error.message.contains("cancel_probabilty"), "{error}");
        assert!(error.to_string().starts_with("test.toml:5:"), "{error}");
    }

    #[test]
    fn out_of_range_probability_names_field_and_line() {
        let error =
            parse("name = \"x\"\n[workload]\ncancel_probability = 1.5\n").expect_err("range");
        assert_eq!(error.field.as_deref(), Some("workload.cancel_probability"));
        assert_eq!(error.line, Some(3));
        assert!(error.message.contains("[0, 1]"), "{error}");
    }

    #[test]
    fn contradictions_are_refused() {
        let heal_after_end =
            parse("name = \"x\"\nduration = \"1m\"\nheal = \"2m\"\n").expect_err("heal");
        assert_eq!(heal_after_end.field.as_deref(), Some("heal"));
        assert_eq!(heal_after_end.line, Some(3));
        let missing_plan = parse("name = \"x\"\n[topology.users.carol]\nplan = \"gold\"\n")
            .expect_err("no such plan");
        assert!(missing_plan.message.contains("`gold`"), "{missing_plan}");
        assert_eq!(missing_plan.line, Some(3));
        let bad_family =
            parse("name = \"x\"\n[faults]\nfamilies = [\"meteor\"]\n").expect_err("family");
        assert!(bad_family.message.contains("meteor"), "{bad_family}");
    }

    #[test]
    fn bad_duration_and_scheduler_are_explained() {
        let duration = parse("name = \"x\"\nheal = \"90\"\n").expect_err("unit");
        assert!(duration.message.contains("missing unit"), "{duration}");
        assert_eq!(duration.line, Some(2));
        let scheduler = parse("name = \"x\"\nscheduler = \"pct:0\"\n").expect_err("depth");
        assert_eq!(scheduler.field.as_deref(), Some("scheduler"));
    }

    #[test]
    fn schedulers_parse() {
        assert_eq!(
            parse_scheduler("pct:3"),
            Ok(SchedulerChoice::Pct { depth: 3 })
        );
        assert_eq!(parse_scheduler("fifo"), Ok(SchedulerChoice::Fifo));
        assert!(parse_scheduler("lottery").is_err());
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn annotated_example_states_exactly_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("example.toml");
        let example = Scenario::load(&path).expect("example.toml is valid");
        let defaults =
            Scenario::parse(Path::new("defaults.toml"), "name = \"example\"\n").expect("valid");
        assert_eq!(
            example, defaults,
            "example.toml and the built-in defaults disagree"
        );
    }
}
