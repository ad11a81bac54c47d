//! Sometimes-probes: named rare situations the scenarios are meant to
//! reach. Core names each where it happens with a `tracing` event carrying
//! a `probe` field; the simulator counts them (`Trace::probes`), and every
//! run reports how often each was reached, so fuzzing can flag the probes
//! no seed reached (a scenario that no longer exercises what it is for).

/// Every probe, in a fixed order.
pub const PROBES: &[&str] = &[
    "cancel-during-slot-wait",
    "cancel-during-slot-hand-off",
    "cancel-of-running-job",
    "cancel-between-runs",
    "reply-after-op-destroyed",
    "completion-races-timeout",
    "completion-races-cancel",
    "kill-unconfirmed",
    "reconnect-with-jobs-to-reconcile",
    "recovered-run-adopted",
    "stale-connection-message",
    "duplicate-finish",
    "submit-dropped-mid-await",
    "request-dropped-mid-await",
    "agent-declared-lost",
    "idempotent-resubmit",
    "undelivered-run-queued-again",
    "start-timeout",
];

/// Every probe of [`PROBES`] with its count in `reached` (0 if absent),
/// plus any other probe `reached` names.
pub fn complete(
    reached: &std::collections::BTreeMap<String, u64>,
) -> std::collections::BTreeMap<String, u64> {
    let mut all: std::collections::BTreeMap<String, u64> = PROBES
        .iter()
        .map(|probe| ((*probe).to_owned(), 0))
        .collect();
    for (probe, count) in reached {
        *all.entry(probe.clone()).or_insert(0) += count;
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_names_are_unique_and_kebab_case() {
        let unique: std::collections::BTreeSet<_> = PROBES.iter().collect();
        assert_eq!(unique.len(), PROBES.len());
        assert!(PROBES
            .iter()
            .all(|probe| probe.chars().all(|c| c.is_ascii_lowercase() || c == '-')));
    }

    #[test]
    fn completion_lists_every_probe() {
        let reached = std::collections::BTreeMap::from([("duplicate-finish".to_owned(), 2)]);
        let all = complete(&reached);
        assert_eq!(all.len(), PROBES.len());
        assert_eq!(all["duplicate-finish"], 2);
        assert_eq!(all["start-timeout"], 0);
    }
}
