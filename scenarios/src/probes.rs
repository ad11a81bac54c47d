//! Sometimes-probes: named rare situations the scenarios are meant to
//! reach. Core names each where it happens with a `tracing` event carrying
//! a `probe` field; the simulator counts them (`Trace::probes`), and every
//! run reports how often each was reached, so fuzzing can flag the probes
//! no seed reached (a scenario that no longer exercises what it is for).

/// Every probe, in a fixed order.
pub const PROBES: &[&str] = &[
    // A cancel finds the job's op queued for a slot.
    "cancel-during-slot-wait",
    // ... just after a pool handed it a slot, before the op woke to take it.
    "cancel-during-slot-hand-off",
    // A cancel kills a running job.
    "cancel-of-running-job",
    // A canceled job's run turns out never to have started.
    "cancel-between-runs",
    // An agent reports a run whose op was destroyed meanwhile.
    "reply-after-op-destroyed",
    // A process ends by itself while a max-run kill is on its way.
    "completion-races-timeout",
    // ... while a cancel's kill is on its way.
    "completion-races-cancel",
    // A kill is not confirmed within the reply timeout.
    "kill-unconfirmed",
    // An agent reconnects with runs declared or on the supervisor's books.
    "reconnect-with-jobs-to-reconcile",
    // After a supervisor restart, an agent declares a recovered run.
    "recovered-run-adopted",
    // Traffic or the end of a superseded agent session arrives.
    "stale-connection-message",
    // A `Finished` arrives for a run already settled.
    "duplicate-finish",
    // A submit's handler is dropped at an await: its client left.
    "submit-dropped-mid-await",
    // Another request's handler is dropped at an await.
    "request-dropped-mid-await",
    // The monitor declares an agent lost.
    "agent-declared-lost",
    // A submit repeats an idempotency key and gets the first job back.
    "idempotent-resubmit",
    // A run that never reached its agent is queued again.
    "undelivered-run-queued-again",
    // An agent does not report a run started in time.
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
