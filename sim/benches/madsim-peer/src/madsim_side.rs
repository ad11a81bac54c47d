//! The workloads on madsim. Tasks run on madsim's single-threaded executor,
//! which picks a random ready task at every step, and the clock jumps to the
//! next timer whenever nothing is ready. `ping-pong` runs between two
//! simulated nodes over `madsim::net::Endpoint` (`send_to` / `recv_from`:
//! tagged, message-oriented datagrams, no framing, no connection). The link
//! latency is set through `Config::net.send_latency` to the range
//! [1 ms, 1 ms + 1 ns), that is exactly [`LINK_LATENCY`], with no loss
//! (`packet_loss_rate` 0). madsim also delays every send by a random 0–4 µs
//! before the message enters the link, a sleep its clock stretches to at
//! least 1 ms; measured, a hop takes 3 ms of simulated time, not 1 ms. The
//! metric is messages per wall second, so this changes how far the clock
//! jumps, not how many events are processed.

use std::net::SocketAddr;
use std::time::Duration;

use madsim::net::Endpoint;
use madsim::runtime::{Handle, Runtime};

use crate::workload::{longest, Measurement, Size, Workload, LINK_LATENCY};

/// Seed of madsim's own random choices (schedule, send delays).
const MADSIM_SEED: u64 = 0x5eed_0003;
/// Where the `ping-pong` server listens.
const SERVER_ADDRESS: &str = "10.0.0.1:9000";
/// The `ping-pong` client's address.
const CLIENT_IP: &str = "10.0.0.2";
/// Tag of requests (client to server).
const REQUEST_TAG: u64 = 1;
/// Tag of replies (server to client).
const REPLY_TAG: u64 = 2;

/// Run `workload` of `size` once and measure it.
pub fn measure(workload: Workload, size: Size) -> Measurement {
    let mut config = madsim::Config::default();
    config.net.send_latency = LINK_LATENCY..LINK_LATENCY + Duration::from_nanos(1);
    let runtime = Runtime::with_seed_and_config(MADSIM_SEED, config);
    let durations = size.sleep_durations();
    let longest_sleep = longest(&durations);
    // Inside the runtime the std clock reads simulated time (madsim intercepts
    // clock_gettime), so wall time is taken out here, around `block_on`.
    let wall_start = std::time::Instant::now();
    let simulated = runtime.block_on(async move {
        let start = madsim::time::Instant::now();
        match workload {
            Workload::PingPong => ping_pong(Handle::current(), size.round_trips).await,
            Workload::Sleepers => {
                assert_eq!(
                    sleep_all(durations).await,
                    size.sleepers,
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
            simulated >= longest_sleep,
            "the clock passed the longest sleep"
        );
    }
    Measurement { wall, simulated }
}

/// `round_trips` sequential request/reply exchanges between a client node and
/// a server node.
async fn ping_pong(handle: Handle, round_trips: u64) {
    let server_address: SocketAddr = SERVER_ADDRESS.parse().expect("a valid socket address");
    let server = handle
        .create_node()
        .name("server")
        .ip(server_address.ip())
        .build();
    let client = handle
        .create_node()
        .name("client")
        .ip(CLIENT_IP.parse().expect("a valid IP address"))
        .build();
    // Bind before the client starts, so no request can reach an unbound port.
    let endpoint = server
        .spawn(Endpoint::bind(server_address))
        .await
        .expect("binding never panics")
        .expect("the server binds");
    let served = server.spawn(async move {
        let mut buffer = [0u8; 64];
        for _ in 0..round_trips {
            let (length, from) = endpoint
                .recv_from(REQUEST_TAG, &mut buffer)
                .await
                .expect("the server receives every request");
            endpoint
                .send_to(from, REPLY_TAG, &buffer[..length])
                .await
                .expect("the server replies");
        }
    });
    let requested = client.spawn(async move {
        let endpoint = Endpoint::bind("0.0.0.0:0").await.expect("the client binds");
        let mut buffer = [0u8; 64];
        for sequence in 0..round_trips {
            let request = sequence.to_le_bytes();
            endpoint
                .send_to(server_address, REQUEST_TAG, &request)
                .await
                .expect("the client sends");
            let (length, _) = endpoint
                .recv_from(REPLY_TAG, &mut buffer)
                .await
                .expect("the client receives every reply");
            assert_eq!(&buffer[..length], request, "the reply echoes the request");
        }
    });
    requested.await.expect("the client never panics");
    served.await.expect("the server never panics");
}

/// Spawn one task per duration, each sleeping that long, and wait for all of
/// them. Returns how many finished.
async fn sleep_all(durations: Vec<Duration>) -> usize {
    let handles: Vec<_> = durations
        .into_iter()
        .map(|duration| madsim::task::spawn(madsim::time::sleep(duration)))
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
async fn yield_all(size: Size) -> u64 {
    let handles: Vec<_> = (0..size.yielders)
        .map(|_| madsim::task::spawn(yield_repeatedly(size.yields_per_task)))
        .collect();
    let mut yields = 0;
    for handle in handles {
        yields += handle.await.expect("a yielding task never panics");
    }
    yields
}

async fn yield_repeatedly(count: u64) -> u64 {
    for _ in 0..count {
        madsim::task::yield_now().await;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_pong_hops_take_the_link_latency_plus_madsims_send_delay() {
        let measurement = measure(Workload::PingPong, Size::SMALL);
        let hops = u32::try_from(2 * Size::SMALL.round_trips).expect("small");
        assert!(measurement.simulated >= LINK_LATENCY * hops);
        // The send delay of a few µs is rounded up by madsim's clock: see the
        // module docs and BENCHMARKS.md.
        let send_delay_max = Duration::from_millis(2) + Duration::from_micros(5);
        let bind_max = Duration::from_millis(5);
        let simulated_max = (LINK_LATENCY + send_delay_max) * hops + bind_max;
        assert!(measurement.simulated <= simulated_max, "{measurement:?}");
    }

    #[test]
    fn sleepers_end_soon_after_the_longest_sleep() {
        let measurement = measure(Workload::Sleepers, Size::SMALL);
        let longest_sleep = longest(&Size::SMALL.sleep_durations());
        assert!(measurement.simulated >= longest_sleep);
        assert!(measurement.simulated < longest_sleep + Duration::from_millis(2));
    }

    #[test]
    fn spawn_yield_takes_no_virtual_time() {
        let measurement = measure(Workload::SpawnYield, Size::SMALL);
        assert!(measurement.simulated < Duration::from_millis(1));
    }
}
