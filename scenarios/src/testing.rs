//! Seeds in `cargo test`: a few lines give a scenario its own test.
//!
//! ```no_run
//! #[test]
//! fn my_scenario_passes_its_seeds() {
//!     faultline_scenarios::testing::assert_seeds_pass("tests/scenarios/my-scenario.toml".as_ref());
//! }
//! ```
//!
//! The seeds come from the environment (listed once, here):
//! * `FAULTLINE_SEED`: run this one seed only (decimal or `0x` hex);
//! * `FAULTLINE_SEEDS`: how many seeds (default [`DEFAULT_SEEDS`]);
//! * `FAULTLINE_SEED_START`: the first seed (default 0).
//!
//! A failure panics with the failure, and its message ends with the command
//! that replays it.

use std::path::Path;

use crate::report::RunOptions;
use crate::run::run;
use crate::scenario::Scenario;

/// Seeds per scenario when `FAULTLINE_SEEDS` is not set: enough to catch
/// regressions in CI, few enough to keep it fast.
pub const DEFAULT_SEEDS: u64 = 6;

fn parse_seed(name: &str, text: &str) -> u64 {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.unwrap_or_else(|_| panic!("{name}={text:?} is not a seed (decimal or 0x-hex)"))
}

/// The seeds the environment asks for (see the module docs).
pub fn seeds_from_env() -> Vec<u64> {
    let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    if let Some(pinned) = var("FAULTLINE_SEED") {
        return vec![parse_seed("FAULTLINE_SEED", &pinned)];
    }
    let count =
        var("FAULTLINE_SEEDS").map_or(DEFAULT_SEEDS, |text| parse_seed("FAULTLINE_SEEDS", &text));
    let start =
        var("FAULTLINE_SEED_START").map_or(0, |text| parse_seed("FAULTLINE_SEED_START", &text));
    (0..count)
        .map(|offset| start.wrapping_add(offset))
        .collect()
}

/// The command that replays `seed` of the scenario in `path`.
pub fn replay_command(path: &Path, seed: u64, hash: &str) -> String {
    format!(
        "faultline sim replay {} --seed {seed:#x} --expect-hash {hash}",
        path.display()
    )
}

/// Run the scenario in `path` over the environment's seeds; panic at the
/// first failure with a message that ends with its replay command.
pub fn assert_seeds_pass(path: &Path) {
    let scenario = Scenario::load(path).unwrap_or_else(|error| panic!("{error}"));
    for seed in seeds_from_env() {
        let report = run(&scenario, &RunOptions::new(seed));
        if let Some(failure) = report.failure() {
            let hang = failure
                .hang_report
                .as_deref()
                .map(|hang| format!("\n{hang}"))
                .unwrap_or_default();
            panic!(
                "{} seed {seed:#x} failed: {failure}{hang}\nreplay: {}",
                scenario.name,
                replay_command(path, seed, &report.hash)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_in_decimal_and_hex() {
        assert_eq!(parse_seed("X", "0x10"), 16);
        assert_eq!(parse_seed("X", "17"), 17);
    }

    #[test]
    #[should_panic(expected = "FAULTLINE_SEEDS=\"many\" is not a seed")]
    fn a_bad_seed_variable_is_named() {
        parse_seed("FAULTLINE_SEEDS", "many");
    }

    #[test]
    fn replay_command_names_scenario_seed_and_hash() {
        let command = replay_command(Path::new("catalogue/smoke.toml"), 255, "00ff");
        assert_eq!(
            command,
            "faultline sim replay catalogue/smoke.toml --seed 0xff --expect-hash 00ff"
        );
    }
}
