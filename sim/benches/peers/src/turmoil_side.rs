//! The workloads on turmoil: every host runs on its own tokio current-thread
//! runtime with paused time, and the simulation advances all of them in fixed
//! ticks (turmoil's default, 1 ms). `ping-pong` runs over turmoil's simulated
//! TCP between two hosts (`server` and `client`), each message framed with a
//! 4-byte big-endian length prefix; the link latency is pinned to
//! [`LINK_LATENCY`] (minimum = maximum) with no loss. `sleepers` and
//! `spawn-yield` run as tokio tasks on one client host.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::{TcpListener, TcpStream};

use crate::tasks::{sleep_all, yield_all};
use crate::workload::{longest, Measurement, Size, Workload, LINK_LATENCY};

/// Port the `ping-pong` server listens on.
const PORT: u16 = 9000;
/// Seed of turmoil's own random choices (latency draws are fixed anyway).
const TURMOIL_SEED: u64 = 0x5eed_0002;
/// Simulated time after which turmoil gives up: well past every workload.
const SIMULATION_LIMIT: Duration = Duration::from_secs(4 * 3600);

/// Run `workload` of `size` once and measure it.
pub fn measure(workload: Workload, size: Size) -> Measurement {
    let mut sim = turmoil::Builder::new()
        .simulation_duration(SIMULATION_LIMIT)
        .min_message_latency(LINK_LATENCY)
        .max_message_latency(LINK_LATENCY)
        .rng_seed(TURMOIL_SEED)
        .build();
    let durations = size.sleep_durations();
    let longest_sleep = longest(&durations);
    match workload {
        Workload::PingPong => {
            sim.host("server", serve_echo);
            sim.client("client", request_all(size.round_trips));
        }
        Workload::Sleepers => sim.client("client", async move {
            assert_eq!(
                sleep_all(&durations).await,
                durations.len(),
                "every sleeper wakes"
            );
            Ok(())
        }),
        Workload::SpawnYield => sim.client("client", async move {
            assert_eq!(
                yield_all(size).await,
                size.yields(),
                "every task yields in full"
            );
            Ok(())
        }),
    }
    let wall_start = std::time::Instant::now();
    sim.run()
        .expect("the turmoil simulation completes within its limit");
    let wall = wall_start.elapsed();
    let simulated = sim.elapsed();
    if workload == Workload::Sleepers {
        assert!(
            simulated >= longest_sleep,
            "the clock passed the longest sleep"
        );
    }
    Measurement { wall, simulated }
}

/// The server: accept one connection and echo every frame until it closes.
async fn serve_echo() -> turmoil::Result {
    let listener = TcpListener::bind(("0.0.0.0", PORT)).await?;
    let (mut stream, _) = listener.accept().await?;
    while let Some(frame) = read_frame(&mut stream).await? {
        write_frame(&mut stream, &frame).await?;
    }
    Ok(())
}

/// The client: `round_trips` sequential requests, each awaiting its echo.
async fn request_all(round_trips: u64) -> turmoil::Result {
    let mut stream = TcpStream::connect(("server", PORT)).await?;
    for sequence in 0..round_trips {
        write_frame(&mut stream, &sequence.to_le_bytes()).await?;
        let reply = read_frame(&mut stream)
            .await?
            .expect("the server replies to every request");
        assert_eq!(
            reply,
            sequence.to_le_bytes(),
            "the reply echoes the request"
        );
    }
    Ok(())
}

/// Write `payload` as one length-prefixed frame (a single write, so a single
/// simulated segment).
async fn write_frame(stream: &mut TcpStream, payload: &[u8]) -> std::io::Result<()> {
    let length = u32::try_from(payload.len()).expect("frames are small");
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(payload);
    stream.write_all(&frame).await
}

/// Read one length-prefixed frame; `None` when the peer closed between frames.
async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut length = [0u8; 4];
    match stream.read_exact(&mut length).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let length = usize::try_from(u32::from_be_bytes(length)).expect("u32 fits in usize");
    let mut payload = vec![0u8; length];
    stream.read_exact(&mut payload).await?;
    Ok(Some(payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_pong_spends_at_least_one_latency_per_hop() {
        let measurement = measure(Workload::PingPong, Size::SMALL);
        let hops = u32::try_from(2 * Size::SMALL.round_trips).expect("small");
        assert!(measurement.simulated >= LINK_LATENCY * hops);
    }

    #[test]
    fn sleepers_end_soon_after_the_longest_sleep() {
        let measurement = measure(Workload::Sleepers, Size::SMALL);
        let longest_sleep = longest(&Size::SMALL.sleep_durations());
        assert!(measurement.simulated >= longest_sleep);
        assert!(measurement.simulated < longest_sleep + Duration::from_millis(10));
    }

    #[test]
    fn spawn_yield_completes_within_a_few_ticks() {
        let measurement = measure(Workload::SpawnYield, Size::SMALL);
        assert!(measurement.simulated < Duration::from_millis(10));
    }
}
