//! `peers`: runs faultline's peer workloads on turmoil and on tokio with
//! paused time, and prints one `RESULT <runtime> <workload> <value> <unit>`
//! line per measurement on stdout (details on stderr). `sim/benches/compare`
//! runs it next to `faultline sim bench --machine` and `madsim-peer`.
//!
//! Usage: `peers [--runtime turmoil|tokio-paused|all] [--workload NAME]...`

mod tasks;
mod tokio_paused;
mod turmoil_side;
mod workload;

use std::process::ExitCode;

use workload::{format_result, parse_workloads, Measurement, Size, Workload};

/// A runtime this binary measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peer {
    Turmoil,
    TokioPaused,
}

impl Peer {
    const ALL: [Peer; 2] = [Peer::Turmoil, Peer::TokioPaused];

    fn name(self) -> &'static str {
        match self {
            Peer::Turmoil => "turmoil",
            Peer::TokioPaused => "tokio-paused",
        }
    }

    fn measure(self, workload: Workload, size: Size) -> Measurement {
        match self {
            Peer::Turmoil => turmoil_side::measure(workload, size),
            Peer::TokioPaused => tokio_paused::measure(workload, size),
        }
    }
}

/// What the command line asked for.
struct Selection {
    peers: Vec<Peer>,
    workloads: Vec<Workload>,
}

fn parse_args(args: &[String]) -> Result<Selection, String> {
    let mut runtimes = Vec::new();
    let mut workloads = Vec::new();
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let value = rest
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .clone();
        match flag.as_str() {
            "--runtime" => runtimes.push(value),
            "--workload" => workloads.push(value),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    let peers = if runtimes.is_empty() || runtimes.iter().any(|name| name == "all") {
        Peer::ALL.to_vec()
    } else {
        runtimes
            .iter()
            .map(|name| {
                Peer::ALL
                    .into_iter()
                    .find(|peer| peer.name() == name)
                    .ok_or_else(|| {
                        format!("unknown runtime {name:?} (turmoil, tokio-paused or all)")
                    })
            })
            .collect::<Result<_, _>>()?
    };
    Ok(Selection {
        peers,
        workloads: parse_workloads(&workloads)?,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let selection = match parse_args(&args) {
        Ok(selection) => selection,
        Err(message) => {
            eprintln!("peers: {message}");
            eprintln!("usage: peers [--runtime turmoil|tokio-paused|all] [--workload NAME]...");
            return ExitCode::from(4);
        }
    };
    for &peer in &selection.peers {
        for &workload in &selection.workloads {
            let measurement = peer.measure(workload, Size::FULL);
            eprintln!(
                "{} {}: wall {:.3} s, simulated {:.3} s",
                peer.name(),
                workload.name(),
                measurement.wall.as_secs_f64(),
                measurement.simulated.as_secs_f64()
            );
            let value = measurement.throughput(workload, Size::FULL);
            println!("{}", format_result(peer.name(), workload, value));
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|arg| arg.to_string()).collect()
    }

    #[test]
    fn no_arguments_select_every_runtime_and_workload() {
        let selection = parse_args(&[]).expect("empty is valid");
        assert_eq!(selection.peers, Peer::ALL.to_vec());
        assert_eq!(selection.workloads, Workload::ALL.to_vec());
    }

    #[test]
    fn options_narrow_the_selection_and_unknown_names_are_rejected() {
        let selection = parse_args(&strings(&[
            "--runtime",
            "turmoil",
            "--workload",
            "sleepers",
        ]))
        .expect("valid names");
        assert_eq!(selection.peers, vec![Peer::Turmoil]);
        assert_eq!(selection.workloads, vec![Workload::Sleepers]);
        assert!(parse_args(&strings(&["--runtime", "madsim"])).is_err());
        assert!(parse_args(&strings(&["--workload"])).is_err());
    }
}
