//! `ping-pong`: a client sends a small request frame, the server replies,
//! `round_trips` times in sequence over a fixed 1 ms link.

use std::time::Duration;

use crate::net::LinkConfig;
use crate::sim::Sim;

use super::{bench_config, finish, WorkloadError, WorkloadRun};

const PORT: u16 = 1;

/// Run `round_trips` sequential round trips.
pub fn run(seed: u64, round_trips: u32) -> Result<WorkloadRun, WorkloadError> {
    let mut config = bench_config(seed);
    config.link_default = LinkConfig::fixed(Duration::from_millis(1));
    let mut sim = Sim::new(config).expect("the bench configuration is valid");
    sim.add_node("server", |node| {
        let net = node.net();
        Box::pin(async move {
            let mut listener = net.listen(PORT).expect("the port is free");
            let Ok(mut connection) = listener.accept().await else {
                return;
            };
            while let Ok(request) = connection.receiver.recv().await {
                if connection.sender.send(request).is_err() {
                    return;
                }
            }
        })
    })
    .expect("a fresh node name");
    sim.add_node("client", move |node| {
        let net = node.net();
        Box::pin(async move {
            let Ok(mut connection) = net.connect("server:1").await else {
                return;
            };
            let request = vec![7u8; 16];
            for _ in 0..round_trips {
                if connection.sender.send(request.clone()).is_err() {
                    return;
                }
                if connection.receiver.recv().await.is_err() {
                    return;
                }
            }
            connection.sender.close();
        })
    })
    .expect("a fresh node name");
    let run = finish("ping-pong", sim)?;
    assert_eq!(
        run.messages,
        2 * u64::from(round_trips),
        "every request and reply is delivered on a faultless link"
    );
    Ok(run)
}
