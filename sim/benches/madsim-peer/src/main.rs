//! `madsim-peer`: runs faultline's peer workloads on madsim and prints one
//! `RESULT madsim <workload> <value> <unit>` line per workload on stdout
//! (details on stderr). madsim replaces tokio's runtime, clock and network
//! only when compiled with `RUSTFLAGS="--cfg madsim"`; `sim/benches/compare`
//! builds it that way into its own target directory.
//!
//! Usage: `madsim-peer [--workload NAME]...`

#[cfg(not(madsim))]
compile_error!("madsim-peer measures madsim's simulator: build it with RUSTFLAGS=\"--cfg madsim\"");

mod madsim_side;
#[path = "../../peers/src/workload.rs"]
mod workload;

use std::process::ExitCode;

use workload::{format_result, parse_workloads, Size};

fn parse_args(args: &[String]) -> Result<Vec<workload::Workload>, String> {
    let mut workloads = Vec::new();
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--workload" => workloads.push(value.clone()),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    parse_workloads(&workloads)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let workloads = match parse_args(&args) {
        Ok(workloads) => workloads,
        Err(message) => {
            eprintln!("madsim-peer: {message}");
            eprintln!("usage: madsim-peer [--workload NAME]...");
            return ExitCode::from(4);
        }
    };
    for workload in workloads {
        let measurement = madsim_side::measure(workload, Size::FULL);
        eprintln!(
            "madsim {}: wall {:.3} s, simulated {:.3} s",
            workload.name(),
            measurement.wall.as_secs_f64(),
            measurement.simulated.as_secs_f64()
        );
        let value = measurement.throughput(workload, Size::FULL);
        println!("{}", format_result("madsim", workload, value));
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_select_workloads_by_name() {
        let all = parse_args(&[]).expect("empty is valid");
        assert_eq!(all, workload::Workload::ALL.to_vec());
        assert!(parse_args(&["--workload".to_string(), "nope".to_string()]).is_err());
    }
}
