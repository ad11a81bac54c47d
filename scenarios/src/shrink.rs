//! Delta debugging: make a failing input minimal.
//!
//! The seed stays fixed; what shrinks is the explicit list of events a run
//! was given (fault-plan events and workload actions). [`shrink`] runs
//! Zeller's ddmin (remove chunks of halving size, keep any removal after which
//! the run still fails the same way), then single-event removal until the
//! result is *1-minimal*: removing any one further event makes the failure
//! disappear. Every candidate is one run, so the number of runs is bounded by
//! the caller's budget.

/// The outcome of [`shrink`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Shrunk<T> {
    /// The smallest failing list found.
    pub items: Vec<T>,
    /// Candidate runs performed.
    pub runs: usize,
    /// Whether removing any single remaining item was tried and made the
    /// failure disappear (false when the budget ran out first).
    pub one_minimal: bool,
}

/// Shrink `items` while `still_fails` holds, using at most `budget` runs.
///
/// `still_fails` must be deterministic (the simulator makes it so) and is
/// expected to hold for `items` itself; it is never called on `items` again.
pub fn shrink<T: Clone>(
    items: &[T],
    budget: usize,
    mut still_fails: impl FnMut(&[T]) -> bool,
) -> Shrunk<T> {
    let mut current = items.to_vec();
    let mut runs = 0;
    let mut granularity = 2usize;
    // ddmin: try removing each of `granularity` chunks.
    while current.len() >= 2 && runs < budget {
        let chunk = current.len().div_ceil(granularity);
        let mut reduced = false;
        let mut start = 0;
        while start < current.len() && runs < budget {
            let end = (start + chunk).min(current.len());
            let candidate: Vec<T> = current[..start]
                .iter()
                .chain(&current[end..])
                .cloned()
                .collect();
            runs += 1;
            if still_fails(&candidate) {
                current = candidate;
                granularity = (granularity - 1).max(2);
                reduced = true;
                break;
            }
            start = end;
        }
        if !reduced {
            if granularity >= current.len() {
                break;
            }
            granularity = (granularity * 2).min(current.len());
        }
    }
    // Single-item removal until nothing more can go (1-minimality).
    let mut one_minimal = false;
    while runs < budget {
        let mut removed_any = false;
        let mut index = 0;
        while index < current.len() && runs < budget {
            let mut candidate = current.clone();
            candidate.remove(index);
            runs += 1;
            if still_fails(&candidate) {
                current = candidate;
                removed_any = true;
            } else {
                index += 1;
            }
        }
        if !removed_any && index >= current.len() {
            one_minimal = true;
            break;
        }
    }
    Shrunk {
        items: current,
        runs,
        one_minimal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn finds_the_two_culprits_among_many() {
        let items: Vec<u32> = (0..64).collect();
        let shrunk = shrink(&items, 1_000, |candidate| {
            candidate.contains(&13) && candidate.contains(&51)
        });
        assert_eq!(shrunk.items, vec![13, 51]);
        assert!(shrunk.one_minimal);
        assert!(
            shrunk.runs < 200,
            "ddmin should need far fewer runs than 2^64, used {}",
            shrunk.runs
        );
    }

    #[test]
    fn a_failure_needing_nothing_shrinks_to_empty() {
        let shrunk = shrink(&[1, 2, 3], 100, |_| true);
        assert!(shrunk.items.is_empty());
    }

    #[test]
    fn the_budget_bounds_the_runs() {
        let items: Vec<u32> = (0..100).collect();
        let shrunk = shrink(&items, 5, |candidate| candidate.contains(&7));
        assert_eq!(shrunk.runs, 5);
        assert!(!shrunk.one_minimal);
        assert!(
            shrunk.items.contains(&7),
            "every kept candidate still fails"
        );
    }

    proptest! {
        #[test]
        fn result_still_fails_and_is_one_minimal(
            len in 0usize..40,
            needed in proptest::collection::btree_set(0u32..40, 0..4),
        ) {
            let items: Vec<u32> = (0..len as u32).collect();
            let fails = |candidate: &[u32]| needed.iter().all(|n| *n >= len as u32 || candidate.contains(n));
            let shrunk = shrink(&items, 10_000, fails);
            prop_assert!(fails(&shrunk.items));
            prop_assert!(shrunk.one_minimal);
            for index in 0..shrunk.items.len() {
                let mut smaller = shrunk.items.clone();
                smaller.remove(index);
                prop_assert!(!fails(&smaller), "removing {} still fails", shrunk.items[index]);
            }
        }
    }
}
