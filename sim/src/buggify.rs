//! Buggify: rare but legal code paths, switched on per site and per run.
//!
//! Each site (a `&'static str` naming a place in the code) is enabled or
//! disabled once per run, from a hash of the seed and the site's name, so
//! the decision does not depend on the order in which sites are first
//! asked. An enabled site then fires with a small probability each time it
//! is asked, drawing from the seed's buggify stream.

use std::collections::BTreeMap;

use crate::choices::{chance, SimRng};
use crate::config::ConfigError;
use crate::trace::hash::Fingerprint;

/// How buggify behaves in a run.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum BuggifyConfig {
    /// No site ever fires.
    Off,
    /// Sites are enabled with `site_probability`; an enabled site fires with
    /// `fire_probability` each time it is asked.
    On {
        /// Chance that a site is enabled for the run.
        site_probability: f64,
        /// Chance that an enabled site fires when asked.
        fire_probability: f64,
    },
}

impl Default for BuggifyConfig {
    fn default() -> BuggifyConfig {
        BuggifyConfig::On {
            site_probability: 0.25,
            fire_probability: 0.05,
        }
    }
}

impl BuggifyConfig {
    /// Check that the probabilities are probabilities.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let BuggifyConfig::On {
            site_probability,
            fire_probability,
        } = *self
        {
            for (what, value) in [
                ("buggify site probability", site_probability),
                ("buggify fire probability", fire_probability),
            ] {
                if !(0.0..=1.0).contains(&value) {
                    return Err(ConfigError::Probability { what, value });
                }
            }
        }
        Ok(())
    }
}

/// What happened at one buggify site during a run.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BuggifySite {
    /// The site's name.
    pub name: String,
    /// Whether the site is enabled in this run.
    pub enabled: bool,
    /// How many times it was asked.
    pub asked: u64,
    /// How many times it fired.
    pub fired: u64,
}

struct SiteRecord {
    enabled: bool,
    asked: u64,
    fired: u64,
}

/// The buggify state of a run.
pub(crate) struct Buggify {
    config: BuggifyConfig,
    seed: u64,
    /// Every site asked so far, by name.
    sites: BTreeMap<&'static str, SiteRecord>,
    /// Sites switched on or off by the caller, overriding the seed.
    forced: BTreeMap<String, bool>,
    rng: SimRng,
}

impl Buggify {
    pub fn new(config: BuggifyConfig, seed: u64, rng: SimRng) -> Buggify {
        Buggify {
            config,
            seed,
            sites: BTreeMap::new(),
            forced: BTreeMap::new(),
            rng,
        }
    }

    /// Force `site` on or off for the rest of the run.
    pub fn force(&mut self, site: &str, enabled: bool) {
        self.forced.insert(site.to_owned(), enabled);
        if let Some(record) = self.sites.get_mut(site) {
            record.enabled = enabled;
        }
    }

    /// Whether `site` fires now.
    pub fn ask(&mut self, site: &'static str) -> bool {
        let BuggifyConfig::On {
            site_probability,
            fire_probability,
        } = self.config
        else {
            return false;
        };
        let seed = self.seed;
        let forced = &self.forced;
        let record = self.sites.entry(site).or_insert_with(|| SiteRecord {
            enabled: forced
                .get(site)
                .copied()
                .unwrap_or_else(|| site_enabled(seed, site, site_probability)),
            asked: 0,
            fired: 0,
        });
        record.asked += 1;
        let fired = record.enabled && chance(&mut self.rng, fire_probability);
        if fired {
            record.fired += 1;
        }
        fired
    }

    /// Every site asked so far, by name.
    pub fn sites(&self) -> Vec<BuggifySite> {
        self.sites
            .iter()
            .map(|(name, record)| BuggifySite {
                name: (*name).to_owned(),
                enabled: record.enabled,
                asked: record.asked,
                fired: record.fired,
            })
            .collect()
    }
}

/// Whether `site` is enabled in the run of `seed`: a fixed hash of both,
/// compared with the probability.
fn site_enabled(seed: u64, site: &str, probability: f64) -> bool {
    let mut fingerprint = Fingerprint::new();
    fingerprint.write_u64(seed);
    fingerprint.write_bytes(site.as_bytes());
    // The top 53 bits as a uniform fraction in [0, 1).
    let fraction = (fingerprint.value() >> 11) as f64 / (1u64 << 53) as f64;
    fraction < probability
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::choices::{Choices, Purpose};

    fn buggify(seed: u64, config: BuggifyConfig) -> Buggify {
        Buggify::new(config, seed, Choices::new(seed).stream(Purpose::Buggify))
    }

    #[test]
    fn off_never_fires() {
        let mut state = buggify(1, BuggifyConfig::Off);
        assert!((0..1000).all(|_| !state.ask("site")));
    }

    #[test]
    fn a_site_is_enabled_or_disabled_for_the_whole_run() {
        let config = BuggifyConfig::On {
            site_probability: 0.5,
            fire_probability: 0.5,
        };
        let mut enabled_runs = 0;
        for seed in 0..200 {
            let mut state = buggify(seed, config);
            let fired = (0..64).filter(|_| state.ask("retry")).count();
            let site = &state.sites()[0];
            if site.enabled {
                enabled_runs += 1;
                assert!(fired > 0, "an enabled site fires sometimes");
            } else {
                assert_eq!(fired, 0, "a disabled site never fires");
            }
            assert_eq!(site.asked, 64);
        }
        assert!(
            (60..140).contains(&enabled_runs),
            "{enabled_runs} of 200 runs enabled"
        );
    }

    #[test]
    fn site_decisions_do_not_depend_on_asking_order() {
        let config = BuggifyConfig::On {
            site_probability: 0.5,
            fire_probability: 0.0,
        };
        for seed in 0..50 {
            let mut forward = buggify(seed, config);
            forward.ask("a");
            forward.ask("b");
            let mut backward = buggify(seed, config);
            backward.ask("b");
            backward.ask("a");
            assert_eq!(forward.sites(), backward.sites());
        }
    }

    #[test]
    fn forced_sites_override_the_seed() {
        let config = BuggifyConfig::On {
            site_probability: 0.0,
            fire_probability: 1.0,
        };
        let mut state = buggify(1, config);
        assert!(!state.ask("slow-path"));
        state.force("slow-path", true);
        assert!(state.ask("slow-path"));
    }
}
