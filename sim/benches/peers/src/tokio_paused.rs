//! The workloads on tokio's current-thread runtime with paused time
//! (`tokio::time::pause`): timers fire in virtual time and the clock jumps to
//! the next timer whenever every task is idle. There is no simulated network:
//! `ping-pong` runs over a pair of in-process channels and each hop sleeps
//! [`LINK_LATENCY`] before it hands over the message.

use tokio::sync::mpsc;

use crate::tasks::{sleep_all, yield_all};
use crate::workload::{longest, Measurement, Size, Workload, LINK_LATENCY};

/// Run `workload` of `size` once and measure it.
pub fn measure(workload: Workload, size: Size) -> Measurement {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds");
    let durations = size.sleep_durations();
    let wall_start = std::time::Instant::now();
    let simulated = runtime.block_on(async {
        let start = tokio::time::Instant::now();
        match workload {
            Workload::PingPong => ping_pong(size.round_trips).await,
            Workload::Sleepers => {
                assert_eq!(
                    sleep_all(&durations).await,
                    durations.len(),
                    "every sleeper wakes"
                );
            }
            Workload::SpawnYield => {
                assert_eq!(
                    yield_all(size).await,
                    size.yields(),
                    "every task yields in full"
                );
            }
        }
        start.elapsed()
    });
    let wall = wall_start.elapsed();
    if workload == Workload::Sleepers {
        assert!(
            simulated >= longest(&durations),
            "the clock passed the longest sleep"
        );
    }
    Measurement { wall, simulated }
}

/// `round_trips` sequential request/reply exchanges between a client (this
/// task) and a spawned server, one [`LINK_LATENCY`] sleep per hop.
async fn ping_pong(round_trips: u64) {
    let (request_tx, mut request_rx) = mpsc::channel::<Vec<u8>>(1);
    let (reply_tx, mut reply_rx) = mpsc::channel::<Vec<u8>>(1);
    let server = tokio::spawn(async move {
        while let Some(request) = request_rx.recv().await {
            tokio::time::sleep(LINK_LATENCY).await;
            if reply_tx.send(request).await.is_err() {
                break;
            }
        }
    });
    for sequence in 0..round_trips {
        tokio::time::sleep(LINK_LATENCY).await;
        request_tx
            .send(sequence.to_le_bytes().to_vec())
            .await
            .expect("the server lives as long as the client");
        let reply = reply_rx
            .recv()
            .await
            .expect("the server replies to every request");
        assert_eq!(
            reply,
            sequence.to_le_bytes(),
            "the reply echoes the request"
        );
    }
    drop(request_tx);
    server.await.expect("the server never panics");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn ping_pong_takes_exactly_one_latency_per_hop_in_virtual_time() {
        let measurement = measure(Workload::PingPong, Size::SMALL);
        let hops = u32::try_from(2 * Size::SMALL.round_trips).expect("small");
        assert_eq!(measurement.simulated, LINK_LATENCY * hops);
    }

    #[test]
    fn sleepers_end_when_the_longest_sleep_ends() {
        let measurement = measure(Workload::Sleepers, Size::SMALL);
        let longest_sleep = longest(&Size::SMALL.sleep_durations());
        assert!(measurement.simulated >= longest_sleep);
        assert!(measurement.simulated < longest_sleep + Duration::from_millis(2));
    }

    #[test]
    fn spawn_yield_takes_no_virtual_time() {
        let measurement = measure(Workload::SpawnYield, Size::SMALL);
        assert_eq!(measurement.simulated, Duration::ZERO);
    }
}
