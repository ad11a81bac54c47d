//! Fault plans drawn from a seed and a [`FaultProfile`].
//!
//! Faults come in *episodes* (a partition and its heal, a kill and its
//! restart, a clog and its unclog, a stall, a skew and its return to zero,
//! a reset) that all end before the horizon, so a run that continues past
//! it sees a healed system. Episodes that would contradict earlier ones
//! (overlapping on the same node or link) are skipped, so every generated
//! plan is valid. The draws come from the seed's
//! [`Purpose::Faults`](crate::Purpose) stream only.

use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;

use super::{Fault, FaultEvent, FaultPlan};
use crate::choices::{chance, Choices, Purpose, SimRng};
use crate::net::Direction;

/// How often each kind of fault happens, per simulated minute, and how long
/// episodes last.
#[derive(Clone, PartialEq, Debug)]
pub struct FaultProfile {
    /// Partition episodes per minute.
    pub partitions_per_minute: f64,
    /// Share of partitions that cut one way only.
    pub one_way_share: f64,
    /// Clog episodes per minute.
    pub clogs_per_minute: f64,
    /// Connection resets per minute.
    pub resets_per_minute: f64,
    /// Kill-and-restart episodes per minute.
    pub kills_per_minute: f64,
    /// Stalls per minute.
    pub stalls_per_minute: f64,
    /// Clock skew episodes per minute.
    pub skews_per_minute: f64,
    /// Shortest partition, clog, downtime or skew episode.
    pub episode_min: Duration,
    /// Longest partition or clog.
    pub partition_duration_max: Duration,
    /// Longest time a killed node stays down.
    pub downtime_max: Duration,
    /// Longest stall.
    pub stall_duration_max: Duration,
    /// Largest clock offset, either way.
    pub clock_skew_max: Duration,
    /// The nodes that may be killed or stalled (`None`: any node).
    pub crash_targets: Option<Vec<String>>,
}

impl FaultProfile {
    /// The names accepted by [`FaultProfile::named`].
    pub const NAMES: [&'static str; 5] = ["none", "calm", "network", "crashes", "chaos"];

    /// No faults.
    pub fn none() -> FaultProfile {
        FaultProfile {
            partitions_per_minute: 0.0,
            one_way_share: 0.25,
            clogs_per_minute: 0.0,
            resets_per_minute: 0.0,
            kills_per_minute: 0.0,
            stalls_per_minute: 0.0,
            skews_per_minute: 0.0,
            episode_min: Duration::from_millis(200),
            partition_duration_max: Duration::from_secs(5),
            downtime_max: Duration::from_secs(5),
            stall_duration_max: Duration::from_secs(2),
            clock_skew_max: Duration::from_secs(5),
            crash_targets: None,
        }
    }

    /// A preset by name: `none`, `calm` (a little of everything),
    /// `network` (partitions, clogs, resets), `crashes` (kills and stalls)
    /// or `chaos` (a lot of everything).
    pub fn named(name: &str) -> Option<FaultProfile> {
        let base = FaultProfile::none();
        let profile = match name {
            "none" => base,
            "calm" => FaultProfile {
                partitions_per_minute: 1.0,
                clogs_per_minute: 0.5,
                resets_per_minute: 1.0,
                kills_per_minute: 0.5,
                stalls_per_minute: 1.0,
                skews_per_minute: 0.5,
                ..base
            },
            "network" => FaultProfile {
                partitions_per_minute: 4.0,
                clogs_per_minute: 3.0,
                resets_per_minute: 4.0,
                ..base
            },
            "crashes" => FaultProfile {
                kills_per_minute: 4.0,
                stalls_per_minute: 4.0,
                ..base
            },
            "chaos" => FaultProfile {
                partitions_per_minute: 4.0,
                clogs_per_minute: 3.0,
                resets_per_minute: 4.0,
                kills_per_minute: 3.0,
                stalls_per_minute: 4.0,
                skews_per_minute: 2.0,
                ..base
            },
            _ => return None,
        };
        Some(profile)
    }
}

/// Intervals already taken, to skip episodes that would contradict them.
#[derive(Default)]
struct Taken {
    /// Kills and stalls: `(node, start, end)`.
    nodes: Vec<(usize, Duration, Duration)>,
    /// Partitions (at most one at a time): `(start, end)`.
    partitions: Vec<(Duration, Duration)>,
    /// Clogs: `(from, to, start, end)`.
    clogs: Vec<(usize, usize, Duration, Duration)>,
    /// Skews: `(node, start, end)`.
    skews: Vec<(usize, Duration, Duration)>,
}

fn overlaps(start: Duration, end: Duration, other_start: Duration, other_end: Duration) -> bool {
    start <= other_end && other_start <= end
}

struct Generator<'a> {
    profile: &'a FaultProfile,
    nodes: &'a [String],
    horizon: Duration,
    rng: SimRng,
    taken: Taken,
    /// `(at, order, fault)`: sorted by time, then by the order drawn.
    events: Vec<(Duration, usize, Fault)>,
}

impl FaultPlan {
    /// A plan for `nodes` whose every episode ends before `horizon`, drawn
    /// from `seed`. Valid by construction; empty with fewer than one node.
    pub fn generate(
        seed: u64,
        profile: &FaultProfile,
        nodes: &[String],
        horizon: Duration,
    ) -> FaultPlan {
        let mut generator = Generator {
            profile,
            nodes,
            horizon,
            rng: Choices::new(seed).stream(Purpose::Faults),
            taken: Taken::default(),
            events: Vec::new(),
        };
        if !nodes.is_empty() && !horizon.is_zero() {
            generator.draw_all();
        }
        let mut events = generator.events;
        events.sort_by_key(|(at, order, _)| (*at, *order));
        let plan = FaultPlan::new(
            events
                .into_iter()
                .map(|(at, _, fault)| FaultEvent { at, fault })
                .collect(),
        );
        let topology: Vec<String> = nodes.to_vec();
        if let Err(error) = plan.validate(Some(&topology)) {
            panic!("generated plans are valid by construction, but: {error}\n{plan}");
        }
        plan
    }
}

impl Generator<'_> {
    fn draw_all(&mut self) {
        let minutes = self.horizon.as_secs_f64() / 60.0;
        let profile = self.profile.clone();
        for _ in 0..self.count(profile.partitions_per_minute * minutes) {
            self.partition();
        }
        for _ in 0..self.count(profile.kills_per_minute * minutes) {
            self.kill();
        }
        for _ in 0..self.count(profile.stalls_per_minute * minutes) {
            self.stall();
        }
        for _ in 0..self.count(profile.skews_per_minute * minutes) {
            self.skew();
        }
        for _ in 0..self.count(profile.resets_per_minute * minutes) {
            self.reset();
        }
        for _ in 0..self.count(profile.clogs_per_minute * minutes) {
            self.clog();
        }
    }

    /// A count with the given mean: its whole part, plus one with the
    /// probability of its fraction. Capped to keep plans bounded.
    fn count(&mut self, mean: f64) -> usize {
        const EPISODES_MAX: usize = 10_000;
        let whole = mean.floor();
        let extra = usize::from(chance(&mut self.rng, mean - whole));
        (whole as usize).saturating_add(extra).min(EPISODES_MAX)
    }

    fn millis(&mut self, min: Duration, max: Duration) -> Duration {
        let (min, max) = (
            min.as_millis() as u64,
            max.as_millis().max(min.as_millis()) as u64,
        );
        Duration::from_millis(self.rng.gen_range(min..=max))
    }

    /// An episode of length in `[min, max]` that ends before the horizon:
    /// `(start, end)`, or `None` if the horizon is too short.
    fn episode(&mut self, min: Duration, max: Duration) -> Option<(Duration, Duration)> {
        let length = self.millis(min, max).max(Duration::from_millis(1));
        let latest_start = self
            .horizon
            .checked_sub(length + Duration::from_millis(1))?;
        let start = self.millis(
            Duration::from_millis(1),
            latest_start.max(Duration::from_millis(1)),
        );
        Some((start, start + length))
    }

    fn push(&mut self, at: Duration, fault: Fault) {
        let order = self.events.len();
        self.events.push((at, order, fault));
    }

    fn node(&mut self) -> usize {
        self.rng.gen_range(0..self.nodes.len())
    }

    fn name(&self, index: usize) -> String {
        self.nodes[index].clone()
    }

    fn partition(&mut self) {
        if self.nodes.len() < 2 {
            return;
        }
        let Some((start, end)) = self.episode(
            self.profile.episode_min,
            self.profile.partition_duration_max,
        ) else {
            return;
        };
        if self
            .taken
            .partitions
            .iter()
            .any(|(s, e)| overlaps(start, end, *s, *e))
        {
            return;
        }
        let mut shuffled: Vec<String> = self.nodes.to_vec();
        shuffled.shuffle(&mut self.rng);
        let split = self.rng.gen_range(1..shuffled.len());
        let b = shuffled.split_off(split);
        let a = shuffled;
        let direction = if chance(&mut self.rng, self.profile.one_way_share) {
            Direction::OneWay
        } else {
            Direction::Both
        };
        self.taken.partitions.push((start, end));
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

    fn node_is_free(&self, node: usize, start: Duration, end: Duration) -> bool {
        !self
            .taken
            .nodes
            .iter()
            .any(|(taken, s, e)| *taken == node && overlaps(start, end, *s, *e))
    }

    /// A node that may crash, or `None` if the profile allows none.
    fn crash_target(&mut self) -> Option<usize> {
        match &self.profile.crash_targets {
            None => Some(self.node()),
            Some(targets) => {
                let allowed: Vec<usize> = (0..self.nodes.len())
                    .filter(|index| targets.contains(&self.nodes[*index]))
                    .collect();
                allowed.choose(&mut self.rng).copied()
            }
        }
    }

    /// An episode of `min` to `max` on a crash target that has nothing else
    /// planned then, reserved for it: `(node, start, end)`.
    fn node_episode(
        &mut self,
        min: Duration,
        max: Duration,
    ) -> Option<(usize, Duration, Duration)> {
        let (start, end) = self.episode(min, max)?;
        let node = self.crash_target()?;
        if !self.node_is_free(node, start, end) {
            return None;
        }
        self.taken.nodes.push((node, start, end));
        Some((node, start, end))
    }

    fn kill(&mut self) {
        let Some((node, start, end)) =
            self.node_episode(self.profile.episode_min, self.profile.downtime_max)
        else {
            return;
        };
        self.push(
            start,
            Fault::Kill {
                node: self.name(node),
            },
        );
        self.push(
            end,
            Fault::Restart {
                node: self.name(node),
            },
        );
    }

    fn stall(&mut self) {
        let Some((node, start, end)) =
            self.node_episode(Duration::from_millis(1), self.profile.stall_duration_max)
        else {
            return;
        };
        self.push(
            start,
            Fault::Stall {
                node: self.name(node),
                duration: end - start,
            },
        );
    }

    fn skew(&mut self) {
        let Some((start, end)) = self.episode(
            self.profile.episode_min,
            self.profile.partition_duration_max,
        ) else {
            return;
        };
        let node = self.node();
        if self
            .taken
            .skews
            .iter()
            .any(|(taken, s, e)| *taken == node && overlaps(start, end, *s, *e))
        {
            return;
        }
        let magnitude = self
            .millis(Duration::from_millis(1), self.profile.clock_skew_max)
            .as_nanos() as i64;
        let offset_nanos = if self.rng.gen_bool(0.5) {
            magnitude
        } else {
            -magnitude
        };
        self.taken.skews.push((node, start, end));
        self.push(
            start,
            Fault::Skew {
                node: self.name(node),
                offset_nanos,
            },
        );
        self.push(
            end,
            Fault::Skew {
                node: self.name(node),
                offset_nanos: 0,
            },
        );
    }

    fn reset(&mut self) {
        if self.nodes.len() < 2 {
            return;
        }
        let at = self.millis(
            Duration::from_millis(1),
            self.horizon.saturating_sub(Duration::from_millis(1)),
        );
        let node = self.node();
        let peer = (node + self.rng.gen_range(1..self.nodes.len())) % self.nodes.len();
        let fault = Fault::Reset {
            node: self.name(node),
            peer: Some(self.name(peer)),
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

    fn clog(&mut self) {
        if self.nodes.len() < 2 {
            return;
        }
        let Some((start, end)) = self.episode(
            self.profile.episode_min,
            self.profile.partition_duration_max,
        ) else {
            return;
        };
        let from = self.node();
        let to = (from + self.rng.gen_range(1..self.nodes.len())) % self.nodes.len();
        if self
            .taken
            .clogs
            .iter()
            .any(|(f, t, s, e)| (*f, *t) == (from, to) && overlaps(start, end, *s, *e))
        {
            return;
        }
        self.taken.clogs.push((from, to, start, end));
        self.push(
            start,
            Fault::Clog {
                from: self.name(from),
                to: self.name(to),
            },
        );
        self.push(
            end,
            Fault::Unclog {
                from: self.name(from),
                to: self.name(to),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes() -> Vec<String> {
        ["sup", "a-1", "a-2", "c-1"]
            .iter()
            .map(|name| (*name).to_owned())
            .collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_plan() {
        let profile = FaultProfile::named("chaos").expect("a preset");
        let first = FaultPlan::generate(7, &profile, &nodes(), Duration::from_secs(60));
        let second = FaultPlan::generate(7, &profile, &nodes(), Duration::from_secs(60));
        assert_eq!(first, second);
        assert!(
            first.events.len() > 10,
            "chaos over a minute has many faults"
        );
        let other = FaultPlan::generate(8, &profile, &nodes(), Duration::from_secs(60));
        assert_ne!(first, other);
    }

    #[test]
    fn every_episode_ends_before_the_horizon() {
        let profile = FaultProfile::named("chaos").expect("a preset");
        let horizon = Duration::from_secs(30);
        for seed in 0..50 {
            let plan = FaultPlan::generate(seed, &profile, &nodes(), horizon);
            assert!(plan.events.iter().all(|event| event.at < horizon));
            for event in &plan.events {
                if let Fault::Stall { duration, .. } = event.fault {
                    assert!(event.at + duration < horizon);
                }
            }
        }
    }

    #[test]
    fn crashes_only_hit_the_allowed_targets() {
        let profile = FaultProfile {
            crash_targets: Some(vec!["a-1".to_owned()]),
            ..FaultProfile::named("crashes").expect("a preset")
        };
        for seed in 0..20 {
            let plan = FaultPlan::generate(seed, &profile, &nodes(), Duration::from_secs(60));
            assert!(!plan.is_empty());
            assert!(plan
                .events
                .iter()
                .all(|event| event.fault.nodes() == ["a-1"]));
        }
    }

    #[test]
    fn the_none_profile_generates_nothing() {
        let plan = FaultPlan::generate(1, &FaultProfile::none(), &nodes(), Duration::from_secs(60));
        assert!(plan.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn generated_plans_are_valid_and_round_trip(seed in 0u64..1_000_000, preset in 0usize..5, count in 1usize..6, seconds in 1u64..120) {
            let profile = FaultProfile::named(FaultProfile::NAMES[preset]).expect("a preset");
            let nodes: Vec<String> = (0..count).map(|index| format!("n{index}")).collect();
            let plan = FaultPlan::generate(seed, &profile, &nodes, Duration::from_secs(seconds));
            proptest::prop_assert_eq!(plan.validate(Some(&nodes)), Ok(()));
            let again = FaultPlan::from_toml(&plan.to_toml(), "again.toml").expect("the printed plan loads");
            proptest::prop_assert_eq!(again.events, plan.events);
        }
    }

    #[test]
    fn every_preset_has_a_name() {
        for name in FaultProfile::NAMES {
            assert!(FaultProfile::named(name).is_some(), "{name}");
        }
        assert!(FaultProfile::named("apocalypse").is_none());
    }
}
