//! Fault plans for a scenario: drawn up front from the seed's faults
//! stream, as the simulator's explicit [`FaultPlan`], with swarm testing.
//!
//! **Swarm testing**: with `faults.swarm`, each seed first switches a
//! random subset of the profile's families off entirely (each family off
//! with probability 1/2, at least one kept), so that some seeds see many
//! partitions and no stalls, others the reverse: a fault that masks another
//! (a kill hides a stall of the same node) is absent from some runs.
//!
//! `faults.events_per_minute` is the mean number of *episodes* per minute
//! before `heal`, shared equally by the families left on. An episode is one
//! fault and its undoing (a partition and its heal, a kill and its
//! restart, a clog and its unclog, a skew and its return to zero), a stall,
//! or a reset. Every episode ends before `heal`; episodes that would
//! contradict earlier ones (two kills of a node at once, two partitions at
//! once) are skipped, so every plan is valid.

use std::time::Duration;

use faultline_sim::net::Direction;
use faultline_sim::{Choices, Fault, FaultEvent, FaultPlan, Purpose, SimRng};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::scenario::Scenario;
use crate::topology::{agent_names, client_names, node_names, SUPERVISOR_NODE};

/// Shortest partition, clog, downtime or skew episode.
const EPISODE_MIN: Duration = Duration::from_millis(500);

/// A generated plan and the families swarm testing switched off for it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct GeneratedFaults {
    /// The plan.
    pub plan: FaultPlan,
    /// Families of the profile switched off for this seed.
    pub swarm_off: Vec<String>,
}

/// The fault plan of `scenario` for `seed` (swarm applied).
pub fn generate_fault_plan(scenario: &Scenario, seed: u64) -> FaultPlan {
    generate_faults(scenario, seed).plan
}

/// The fault plan of `scenario` for `seed`, and which families swarm
/// testing switched off.
pub fn generate_faults(scenario: &Scenario, seed: u64) -> GeneratedFaults {
    let mut rng = Choices::new(seed).stream(Purpose::Faults);
    let families = &scenario.faults.families;
    let mut on: Vec<bool> = families
        .iter()
        .map(|_| !scenario.faults.swarm || rng.gen_bool(0.5))
        .collect();
    if !families.is_empty() && !on.contains(&true) {
        let keep = rng.gen_range(0..families.len());
        on[keep] = true;
    }
    let enabled: Vec<&String> = families
        .iter()
        .zip(&on)
        .filter(|(_, on)| **on)
        .map(|(family, _)| family)
        .collect();
    let swarm_off = families
        .iter()
        .zip(&on)
        .filter(|(_, on)| !**on)
        .map(|(family, _)| family.clone())
        .collect();
    let mut generator = Generator {
        scenario,
        rng,
        events: Vec::new(),
        taken: Taken::default(),
    };
    let minutes = scenario.heal.as_secs_f64() / 60.0;
    let mean = if enabled.is_empty() {
        0.0
    } else {
        scenario.faults.events_per_minute * minutes / enabled.len() as f64
    };
    for family in enabled {
        let count = generator.count(mean);
        for _ in 0..count {
            generator.episode(family);
        }
    }
    let mut events = generator.events;
    events.sort_by_key(|(at, order, _)| (*at, *order));
    let plan = FaultPlan::new(
        events
            .into_iter()
            .map(|(at, _, fault)| FaultEvent { at, fault })
            .collect(),
    );
    if let Err(error) = plan.validate(Some(&node_names(scenario))) {
        panic!("generated plans are valid by construction, but: {error}\n{plan}");
    }
    GeneratedFaults { plan, swarm_off }
}

/// Intervals already taken, to skip contradicting episodes.
#[derive(Default)]
struct Taken {
    /// Kills and stalls: `(node, start, end)`.
    nodes: Vec<(String, Duration, Duration)>,
    /// Partitions, one at a time.
    partitions: Vec<(Duration, Duration)>,
    /// Clogs: `(from, to, start, end)`.
    clogs: Vec<(String, String, Duration, Duration)>,
    /// Skews: `(node, start, end)`.
    skews: Vec<(String, Duration, Duration)>,
}

fn overlaps(a: (Duration, Duration), b: (Duration, Duration)) -> bool {
    a.0 <= b.1 && b.0 <= a.1
}

struct Generator<'a> {
    scenario: &'a Scenario,
    rng: SimRng,
    /// `(at, order drawn, fault)`.
    events: Vec<(Duration, usize, Fault)>,
    taken: Taken,
}

impl Generator<'_> {
    /// A count with mean `mean`: its whole part, plus one with the
    /// probability of its fraction. Bounded.
    fn count(&mut self, mean: f64) -> usize {
        const EPISODES_MAX: usize = 1_000;
        let whole = mean.floor();
        let extra = usize::from(self.rng.gen::<f64>() < mean - whole);
        (whole as usize).saturating_add(extra).min(EPISODES_MAX)
    }

    fn push(&mut self, at: Duration, fault: Fault) {
        let order = self.events.len();
        self.events.push((at, order, fault));
    }

    fn millis(&mut self, min: Duration, max: Duration) -> Duration {
        let (min, max) = (min.as_millis() as u64, max.as_millis() as u64);
        Duration::from_millis(self.rng.gen_range(min..=max.max(min)))
    }

    /// `(start, end)` of an episode of `[min, max]` that ends before heal.
    fn window(&mut self, min: Duration, max: Duration) -> Option<(Duration, Duration)> {
        let length = self.millis(min, max.max(min)).max(Duration::from_millis(1));
        let latest = self
            .scenario
            .heal
            .checked_sub(length + Duration::from_millis(1))?;
        if latest < Duration::from_millis(1) {
            return None;
        }
        let start = self.millis(Duration::from_millis(1), latest);
        Some((start, start + length))
    }

    fn pick(&mut self, names: &[String]) -> String {
        names
            .choose(&mut self.rng)
            .expect("a scenario has at least one agent")
            .clone()
    }

    /// The supervisor and the agents: the nodes that stall, skew and crash.
    fn servers(&self) -> Vec<String> {
        let mut names = vec![SUPERVISOR_NODE.to_owned()];
        names.extend(agent_names(self.scenario));
        names
    }

    fn episode(&mut self, family: &str) {
        let faults = &self.scenario.faults;
        match family {
            "partition" => self.partition(Direction::Both),
            "one-way-partition" => self.partition(Direction::OneWay),
            "clog" => self.clog(),
            "reset" => self.reset(),
            "kill-agent" => {
                let agent = self.pick(&agent_names(self.scenario));
                self.kill(agent, faults.downtime_max);
            }
            "crash-supervisor" => self.kill(SUPERVISOR_NODE.to_owned(), faults.downtime_max),
            "stall" => self.stall(),
            "clock-skew" => self.skew(),
            other => panic!("validated scenarios name known fault families, not {other}"),
        }
    }

    /// Cut `sup` (and some clients) from some agents (and other clients).
    fn partition(&mut self, direction: Direction) {
        let max = self.scenario.faults.partition_duration_max;
        let Some(window) = self.window(EPISODE_MIN, max) else {
            return;
        };
        if self
            .taken
            .partitions
            .iter()
            .any(|taken| overlaps(window, *taken))
        {
            return;
        }
        let mut a = vec![SUPERVISOR_NODE.to_owned()];
        let mut b = Vec::new();
        let agents = agent_names(self.scenario);
        for node in agents.iter().chain(&client_names(self.scenario)) {
            if self.rng.gen_bool(0.5) {
                b.push(node.clone());
            } else {
                a.push(node.clone());
            }
        }
        if !b.iter().any(|node| agents.contains(node)) {
            let agent = self.pick(&agents);
            a.retain(|node| *node != agent);
            b.push(agent);
        }
        if direction == Direction::OneWay && self.rng.gen_bool(0.5) {
            std::mem::swap(&mut a, &mut b);
        }
        self.taken.partitions.push(window);
        let (start, end) = window;
        self.push(
            start,
            Fault::Partition {
                a: a.clone(),
                b: b.clone(),
                direction,
            },
        );
        self.push(end, Fault::Heal { a, b, direction });
    }

    /// Hold the traffic one way between `sup` and an agent.
    fn clog(&mut self) {
        let max = self.scenario.faults.partition_duration_max;
        let Some(window) = self.window(EPISODE_MIN, max) else {
            return;
        };
        let agent = self.pick(&agent_names(self.scenario));
        let (from, to) = if self.rng.gen_bool(0.5) {
            (SUPERVISOR_NODE.to_owned(), agent)
        } else {
            (agent, SUPERVISOR_NODE.to_owned())
        };
        if self
            .taken
            .clogs
            .iter()
            .any(|(f, t, s, e)| (f, t) == (&from, &to) && overlaps(window, (*s, *e)))
        {
            return;
        }
        self.taken
            .clogs
            .push((from.clone(), to.clone(), window.0, window.1));
        self.push(
            window.0,
            Fault::Clog {
                from: from.clone(),
                to: to.clone(),
            },
        );
        self.push(window.1, Fault::Unclog { from, to });
    }

    /// Reset the connections between `sup` and an agent or a client.
    fn reset(&mut self) {
        let Some((at, _)) = self.window(Duration::from_millis(1), Duration::from_millis(1)) else {
            return;
        };
        let peer = if self.rng.gen_bool(0.75) {
            self.pick(&agent_names(self.scenario))
        } else {
            self.pick(&client_names(self.scenario))
        };
        let fault = Fault::Reset {
            node: SUPERVISOR_NODE.to_owned(),
            peer: Some(peer),
        };
        if self
            .events
            .iter()
            .any(|(other_at, _, other)| *other_at == at && *other == fault)
        {
            return;
        }
        self.push(at, fault);
    }

    fn node_is_free(&self, node: &str, window: (Duration, Duration)) -> bool {
        !self
            .taken
            .nodes
            .iter()
            .any(|(taken, s, e)| taken == node && overlaps(window, (*s, *e)))
    }

    fn kill(&mut self, node: String, downtime_max: Duration) {
        let Some(window) = self.window(EPISODE_MIN, downtime_max) else {
            return;
        };
        if !self.node_is_free(&node, window) {
            return;
        }
        self.taken.nodes.push((node.clone(), window.0, window.1));
        self.push(window.0, Fault::Kill { node: node.clone() });
        self.push(window.1, Fault::Restart { node });
    }

    fn stall(&mut self) {
        let max = self.scenario.faults.stall_duration_max;
        let Some(window) = self.window(Duration::from_millis(1), max) else {
            return;
        };
        let node = self.pick(&self.servers());
        if !self.node_is_free(&node, window) {
            return;
        }
        self.taken.nodes.push((node.clone(), window.0, window.1));
        self.push(
            window.0,
            Fault::Stall {
                node,
                duration: window.1 - window.0,
            },
        );
    }

    fn skew(&mut self) {
        let max = self.scenario.faults.partition_duration_max;
        let Some(window) = self.window(EPISODE_MIN, max) else {
            return;
        };
        let node = self.pick(&self.servers());
        if self
            .taken
            .skews
            .iter()
            .any(|(taken, s, e)| *taken == node && overlaps(window, (*s, *e)))
        {
            return;
        }
        let magnitude = self.millis(
            Duration::from_millis(1),
            self.scenario.faults.clock_skew_max,
        );
        let magnitude = i64::try_from(magnitude.as_nanos()).unwrap_or(i64::MAX);
        let offset_nanos = if self.rng.gen_bool(0.5) {
            magnitude
        } else {
            -magnitude
        };
        self.taken.skews.push((node.clone(), window.0, window.1));
        self.push(
            window.0,
            Fault::Skew {
                node: node.clone(),
                offset_nanos,
            },
        );
        self.push(
            window.1,
            Fault::Skew {
                node,
                offset_nanos: 0,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn scenario(faults: &str) -> Scenario {
        let text = format!("name = \"f\"\nheal = \"2m\"\n[faults]\n{faults}");
        Scenario::parse(Path::new("f.toml"), &text).expect("valid")
    }

    const ALL: &str = "families = [\"partition\", \"one-way-partition\", \"clog\", \"reset\", \
        \"kill-agent\", \"stall\", \"clock-skew\", \"crash-supervisor\"]\nevents_per_minute = 20.0\n";

    #[test]
    fn the_same_seed_gives_the_same_plan_and_every_episode_ends_before_heal() {
        let scenario = scenario(ALL);
        for seed in 0..40 {
            let generated = generate_faults(&scenario, seed);
            assert_eq!(generated, generate_faults(&scenario, seed));
            for event in &generated.plan.events {
                assert!(event.at < scenario.heal, "{event}");
                if let Fault::Stall { duration, .. } = event.fault {
                    assert!(event.at + duration < scenario.heal, "{event}");
                }
            }
        }
    }

    #[test]
    fn swarm_switches_families_off_and_keeps_one() {
        let scenario = scenario(ALL);
        let mut off_counts = 0;
        for seed in 0..40 {
            let generated = generate_faults(&scenario, seed);
            assert!(
                generated.swarm_off.len() < 8,
                "at least one family stays on"
            );
            off_counts += generated.swarm_off.len();
            for event in &generated.plan.events {
                let family = match &event.fault {
                    Fault::Partition {
                        direction: Direction::Both,
                        ..
                    } => "partition",
                    Fault::Partition { .. } => "one-way-partition",
                    Fault::Clog { .. } => "clog",
                    Fault::Reset { .. } => "reset",
                    Fault::Kill { node } if node == SUPERVISOR_NODE => "crash-supervisor",
                    Fault::Kill { .. } => "kill-agent",
                    Fault::Stall { .. } => "stall",
                    Fault::Skew { offset_nanos, .. } if *offset_nanos != 0 => "clock-skew",
                    _ => continue,
                };
                assert!(
                    !generated.swarm_off.iter().any(|off| off == family),
                    "seed {seed}: {family} is off but {event} happens"
                );
            }
        }
        assert!(off_counts > 40, "swarm switches families off: {off_counts}");
    }

    #[test]
    fn without_swarm_every_family_is_on() {
        let scenario = scenario(&format!("{ALL}swarm = false\n"));
        let generated = generate_faults(&scenario, 5);
        assert!(generated.swarm_off.is_empty());
        assert!(generated.plan.events.len() > 20);
    }

    #[test]
    fn no_families_means_no_faults() {
        let generated = generate_faults(&scenario(""), 1);
        assert!(generated.plan.is_empty());
        assert!(generated.swarm_off.is_empty());
    }
}
