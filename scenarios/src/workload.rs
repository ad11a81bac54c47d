//! Workloads: what the clients do, as an explicit timed list drawn up front
//! from the seed's workload stream.
//!
//! A [`Workload`] can be printed, written to and read from TOML, edited and
//! shrunk: every action stands on its own (a cancel whose submit was removed
//! is skipped, as is a duplicate submit without its original), so any
//! sublist is a valid workload.
//!
//! ```toml
//! [[action]]
//! at = "1.25s"            # virtual time since the start of the run
//! client = "c-1"
//! user = "alice"
//! op = "submit"           # submit | cancel | duplicate-submit
//! key = "k-1"             # the idempotency key naming the job
//! kind = "parallel"
//! duration = "12.3s"      # how long the job's process runs
//! exit_code = 0
//! max_run = "5s"          # optional: the job asks for a shorter limit
//! disconnect_after_polls = 2   # optional: the client goes away mid-request
//! ```

use std::fmt;
use std::path::Path;
use std::time::Duration;

use faultline_core::duration::{format_decimal, parse_duration};
use faultline_core::protocol::JobKind;
use faultline_sim::{Choices, Purpose, SimRng};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::scenario::Scenario;
use crate::topology::client_of;

/// The most polls after which a disconnecting client drops its request.
pub const DISCONNECT_POLLS_MAX: u32 = 3;

/// Every client action of a run, sorted by time.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Workload {
    /// The actions, in the order they start.
    #[serde(rename = "action", default)]
    pub actions: Vec<ClientAction>,
}

/// One thing a client does at a virtual time.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ClientAction {
    /// Virtual time since the start of the run.
    #[serde(with = "exact")]
    pub at: Duration,
    /// The client node (`c-1`).
    pub client: String,
    /// The user the client acts for.
    pub user: String,
    /// What it does.
    #[serde(flatten)]
    pub what: Action,
    /// Drop the first attempt's request future after this many polls (the
    /// client disconnects mid-request); the client retries later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect_after_polls: Option<u32>,
}

/// What a client does.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Action {
    /// Submit a job, then watch it until it ends.
    Submit {
        /// The idempotency key, which also names the job in the workload.
        key: String,
        /// The job's kind.
        kind: JobKind,
        /// How long its process runs.
        #[serde(with = "exact")]
        duration: Duration,
        /// The exit code its process ends with.
        exit_code: i32,
        /// A max run time asked for, if any.
        #[serde(
            default,
            with = "exact_option",
            skip_serializing_if = "Option::is_none"
        )]
        max_run: Option<Duration>,
    },
    /// Cancel the job submitted with `key`, once its id is known.
    Cancel {
        /// The job's key.
        key: String,
    },
    /// Submit the job of `key` again, with the same idempotency key.
    DuplicateSubmit {
        /// The job's key.
        key: String,
    },
}

impl Action {
    /// The key of the job the action is about.
    pub fn key(&self) -> &str {
        match self {
            Action::Submit { key, .. }
            | Action::Cancel { key }
            | Action::DuplicateSubmit { key } => key,
        }
    }
}

/// A workload file that cannot be used.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("{file}{}: {problem}", line.map(|line| format!(":{line}")).unwrap_or_default())]
pub struct WorkloadError {
    /// The file, as given.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub problem: String,
}

impl Workload {
    /// The workload as TOML that [`Workload::from_toml`] reads back.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a workload of strings and numbers serialises to TOML")
    }

    /// Parse a workload; errors name `file` and the line. Actions must be
    /// sorted by time.
    pub fn from_toml(text: &str, file: &str) -> Result<Workload, WorkloadError> {
        let workload: Workload = toml::from_str(text).map_err(|error| WorkloadError {
            file: file.to_owned(),
            line: error
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1),
            problem: error.message().trim().to_owned(),
        })?;
        if let Some(index) = workload
            .actions
            .windows(2)
            .position(|pair| pair[1].at < pair[0].at)
        {
            return Err(WorkloadError {
                file: file.to_owned(),
                line: None,
                problem: format!(
                    "action #{} is earlier than the one before it: actions are sorted by `at`",
                    index + 2
                ),
            });
        }
        Ok(workload)
    }

    /// Read a workload file.
    pub fn load(path: &Path) -> Result<Workload, WorkloadError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| WorkloadError {
            file: file.clone(),
            line: None,
            problem: format!("cannot read: {error}"),
        })?;
        Workload::from_toml(&text, &file)
    }

    /// The submit action of `key`, if the workload has one.
    pub fn submit_of(&self, key: &str) -> Option<&ClientAction> {
        self.actions
            .iter()
            .find(|action| matches!(&action.what, Action::Submit { key: k, .. } if k == key))
    }

    /// The workload without the actions whose index is in `removed`.
    pub fn without(&self, removed: &[usize]) -> Workload {
        Workload {
            actions: self
                .actions
                .iter()
                .enumerate()
                .filter(|(index, _)| !removed.contains(index))
                .map(|(_, action)| action.clone())
                .collect(),
        }
    }
}

impl fmt::Display for ClientAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "t={:.3}s {} {}: ",
            self.at.as_secs_f64(),
            self.client,
            self.user
        )?;
        match &self.what {
            Action::Submit {
                key,
                kind,
                duration,
                exit_code,
                max_run,
            } => {
                write!(
                    f,
                    "submit {key} {kind} running {} exit {exit_code}",
                    format_decimal(*duration)
                )?;
                if let Some(max_run) = max_run {
                    write!(f, " max-run {}", format_decimal(*max_run))?;
                }
            }
            Action::Cancel { key } => write!(f, "cancel {key}")?,
            Action::DuplicateSubmit { key } => write!(f, "submit {key} again")?,
        }
        if let Some(polls) = self.disconnect_after_polls {
            write!(f, " (disconnects after {polls} polls)")?;
        }
        Ok(())
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.actions.is_empty() {
            return writeln!(f, "(no client actions)");
        }
        for action in &self.actions {
            writeln!(f, "{action}")?;
        }
        Ok(())
    }
}

/// The workload of `scenario` for `seed`, drawn from the seed's workload
/// stream only.
pub fn generate_workload(scenario: &Scenario, seed: u64) -> Workload {
    let mut rng = Choices::new(seed).stream(Purpose::Workload);
    let profile = &scenario.workload;
    let users: Vec<&String> = scenario.topology.users.keys().collect();
    let mut actions: Vec<(Duration, usize, ClientAction)> = Vec::new();
    let mut push = |action: ClientAction| {
        let order = actions.len();
        actions.push((action.at, order, action));
    };
    for index in 0..profile.jobs {
        let draws = JobDraws::draw(&mut rng, scenario, users.len());
        let user = users[draws.user].clone();
        let client = client_of(scenario, &user);
        let key = format!("k-{}", index + 1);
        let action = |at: Duration, what: Action, disconnect: Option<u32>| ClientAction {
            at,
            client: client.clone(),
            user: user.clone(),
            what,
            disconnect_after_polls: disconnect,
        };
        push(action(
            draws.at,
            Action::Submit {
                key: key.clone(),
                kind: draws.kind,
                duration: draws.duration,
                exit_code: draws.exit_code,
                max_run: draws.max_run,
            },
            draws.disconnects[0],
        ));
        if let Some(delay) = draws.cancel_after {
            let what = Action::Cancel { key: key.clone() };
            push(action(draws.at + delay, what, draws.disconnects[1]));
        }
        if let Some(delay) = draws.duplicate_after {
            let what = Action::DuplicateSubmit { key: key.clone() };
            push(action(draws.at + delay, what, draws.disconnects[2]));
        }
    }
    actions.sort_by_key(|(at, order, _)| (*at, *order));
    Workload {
        actions: actions.into_iter().map(|(_, _, action)| action).collect(),
    }
}

/// Everything drawn for one job: the same number of draws whatever the
/// probabilities, so a change of one probability keeps the other draws.
struct JobDraws {
    at: Duration,
    user: usize,
    kind: JobKind,
    duration: Duration,
    exit_code: i32,
    max_run: Option<Duration>,
    cancel_after: Option<Duration>,
    duplicate_after: Option<Duration>,
    /// For the submit, the cancel and the duplicate.
    disconnects: [Option<u32>; 3],
}

/// How soon after its submit a duplicate submit comes, at most.
const DUPLICATE_DELAY_MAX: Duration = Duration::from_secs(5);

impl JobDraws {
    fn draw(rng: &mut SimRng, scenario: &Scenario, users: usize) -> JobDraws {
        let profile = &scenario.workload;
        let at = millis_within(rng, Duration::ZERO, profile.arrival_window);
        let user = rng.gen_range(0..users.max(1));
        let kind = if rng.gen::<f64>() < profile.parallel_fraction {
            JobKind::Parallel
        } else {
            JobKind::Sequential
        };
        let duration = millis_within(rng, profile.duration_min, profile.duration_max)
            .max(Duration::from_millis(1));
        let failing = rng.gen::<f64>() < profile.failure_probability;
        let code = rng.gen_range(1..=3);
        let overrun = rng.gen::<f64>() < profile.overrun_probability;
        let cancel = rng.gen::<f64>() < profile.cancel_probability;
        let cancel_after = millis_within(rng, Duration::ZERO, profile.cancel_delay_max);
        let duplicate = rng.gen::<f64>() < profile.duplicate_submit_probability;
        let duplicate_after = millis_within(rng, Duration::ZERO, DUPLICATE_DELAY_MAX);
        let mut disconnects = [None; 3];
        for slot in &mut disconnects {
            let disconnect = rng.gen::<f64>() < profile.disconnect_probability;
            let polls = rng.gen_range(1..=DISCONNECT_POLLS_MAX);
            *slot = disconnect.then_some(polls);
        }
        JobDraws {
            at,
            user,
            kind,
            duration,
            exit_code: if failing { code } else { 0 },
            max_run: overrun.then(|| (duration / 2).max(Duration::from_millis(1))),
            cancel_after: cancel.then_some(cancel_after),
            duplicate_after: duplicate.then_some(duplicate_after),
            disconnects,
        }
    }
}

/// A whole number of milliseconds in `[min, max]`.
fn millis_within(rng: &mut SimRng, min: Duration, max: Duration) -> Duration {
    let (min, max) = (min.as_millis() as u64, max.as_millis() as u64);
    Duration::from_millis(rng.gen_range(min..=max.max(min)))
}

/// Durations as exact text (`1.25s`, `300ms`) that round-trip.
mod exact {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_decimal(*duration))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// Optional durations as exact text.
mod exact_option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => super::exact::serialize(duration, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?;
        text.map(|text| super::parse_duration(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(extra: &str) -> Scenario {
        let text = format!("name = \"w\"\n{extra}");
        Scenario::parse(Path::new("w.toml"), &text).expect("valid")
    }

    #[test]
    fn the_same_seed_gives_the_same_workload() {
        let scenario = scenario("[workload]\ncancel_probability = 0.5\n");
        let first = generate_workload(&scenario, 3);
        assert_eq!(first, generate_workload(&scenario, 3));
        assert_ne!(first, generate_workload(&scenario, 4));
        let submits = first
            .actions
            .iter()
            .filter(|action| matches!(action.what, Action::Submit { .. }))
            .count();
        assert_eq!(submits, 20);
        assert!(first
            .actions
            .windows(2)
            .all(|pair| pair[0].at <= pair[1].at));
    }

    #[test]
    fn probabilities_shape_the_actions() {
        let none = generate_workload(&scenario(""), 1);
        assert!(none
            .actions
            .iter()
            .all(|action| matches!(action.what, Action::Submit { .. })
                && action.disconnect_after_polls.is_none()));
        let all = generate_workload(
            &scenario(
                "[workload]\ncancel_probability = 1.0\nduplicate_submit_probability = 1.0\n\
                 disconnect_probability = 1.0\n",
            ),
            1,
        );
        assert_eq!(all.actions.len(), 60);
        assert!(all
            .actions
            .iter()
            .all(|action| action.disconnect_after_polls.is_some()));
    }

    #[test]
    fn workloads_round_trip_through_toml() {
        let workload = generate_workload(
            &scenario("[workload]\ncancel_probability = 0.5\noverrun_probability = 0.5\n"),
            9,
        );
        let text = workload.to_toml();
        let back = Workload::from_toml(&text, "w.toml").expect("reads back");
        assert_eq!(back, workload);
    }

    #[test]
    fn a_bad_workload_file_names_its_line() {
        let text = "[[action]]\nat = \"1s\"\nclient = \"c-1\"\nuser = \"alice\"\nop = \"dance\"\nkey = \"k\"\n";
        let error = Workload::from_toml(text, "bad.toml").expect_err("unknown op");
        assert!(error.to_string().starts_with("bad.toml:"), "{error}");
        assert!(error.problem.contains("dance"), "{error}");
    }

    #[test]
    fn unsorted_actions_are_refused() {
        let text = "[[action]]\nat = \"2s\"\nclient = \"c-1\"\nuser = \"a\"\nop = \"cancel\"\nkey = \"k\"\n\
                    [[action]]\nat = \"1s\"\nclient = \"c-1\"\nuser = \"a\"\nop = \"cancel\"\nkey = \"k\"\n";
        let error = Workload::from_toml(text, "w.toml").expect_err("unsorted");
        assert!(error.problem.contains("#2"), "{error}");
    }

    #[test]
    fn a_workload_prints_one_line_per_action() {
        let workload = generate_workload(&scenario("[workload]\njobs = 2\n"), 1);
        let text = workload.to_string();
        assert_eq!(text.lines().count(), 2);
        assert!(text.contains("submit k-"), "{text}");
    }
}
