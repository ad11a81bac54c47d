//! Task bodies of `sleepers` and `spawn-yield` on a tokio runtime. turmoil
//! runs every host on its own tokio runtime with paused time, so the same
//! bodies serve the `turmoil` and the `tokio-paused` sides.

use std::time::Duration;

use crate::workload::Size;

/// Spawn one task per duration, each sleeping that long, and wait for all of
/// them. Returns how many finished.
pub async fn sleep_all(durations: &[Duration]) -> usize {
    let handles: Vec<_> = durations
        .iter()
        .map(|&duration| tokio::spawn(tokio::time::sleep(duration)))
        .collect();
    let mut finished = 0;
    for handle in handles {
        handle.await.expect("a sleeping task never panics");
        finished += 1;
    }
    finished
}

/// Spawn [`Size::yielders`] tasks each yielding [`Size::yields_per_task`]
/// times, and wait for all of them. Returns the yields made in total.
pub async fn yield_all(size: Size) -> u64 {
    let handles: Vec<_> = (0..size.yielders)
        .map(|_| tokio::spawn(yield_repeatedly(size.yields_per_task)))
        .collect();
    let mut yields = 0;
    for handle in handles {
        yields += handle.await.expect("a yielding task never panics");
    }
    yields
}

async fn yield_repeatedly(count: u64) -> u64 {
    for _ in 0..count {
        tokio::task::yield_now().await;
    }
    count
}
