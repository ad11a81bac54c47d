//! Simulated disks: one durable key → bytes store per node, owned by the
//! [`Sim`], so it survives the node's kills and restarts.
//!
//! Node code reaches its disk through [`NodeContext::disk`] (the test
//! through [`Sim::disk`]); the handle belongs to one incarnation of the
//! node, like its runtime, and fails with [`DiskError::Killed`] once that
//! incarnation is gone.
//!
//! Semantics, which every store built on it has to live with:
//! * a **write** (or delete) goes to a volatile buffer at once and never
//!   awaits; reads on the node see it (the page cache);
//! * [`SimDisk::sync`] makes every write issued *before the call* durable,
//!   after a seeded virtual latency drawn from [`DiskConfig`] on the
//!   node's clock. A sync whose node is killed before it completes fails
//!   and makes nothing durable;
//! * when the node is **killed**, its unsynced writes are lost
//!   ([`CrashLoss::Unsynced`]), or a seeded in-order prefix of them
//!   survives and the rest is lost ([`CrashLoss::UnsyncedTail`]). With
//!   probability [`DiskConfig::torn_write_chance`] the last unsynced write,
//!   if it was lost and was not a delete, reaches the disk *torn*: a seeded
//!   prefix of the new bytes over what the key held before (or cut short).
//!   Readers must detect torn values themselves (a checksum).
//!
//! Randomness comes from the seed's [`Purpose::Disk`] stream, drawn only
//! when a disk is used, so runs without disks are unchanged by this module.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use faultline_core::runtime::{BoxFuture, Runtime};
use rand::Rng;

use crate::choices::{chance, SimRng};
use crate::ids::NodeId;
use crate::node::NodeContext;
use crate::sim::Sim;
use crate::world::Shared;

#[cfg(doc)]
use crate::choices::Purpose;

/// What a node loses when it is killed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum CrashLoss {
    /// Every write not covered by a completed sync is lost. The default.
    #[default]
    Unsynced,
    /// The disk had written a seeded prefix of the unsynced writes, in
    /// write order; the rest is lost.
    UnsyncedTail,
}

/// How one node's disk behaves. Set with [`Sim::set_disk`]; a node that
/// was given none uses [`DiskConfig::default`].
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct DiskConfig {
    /// Shortest sync. Default: 100 µs.
    pub sync_latency_min: Duration,
    /// Longest sync. Default: 2 ms.
    pub sync_latency_max: Duration,
    /// What a kill loses. Default: [`CrashLoss::Unsynced`].
    pub crash_loss: CrashLoss,
    /// The chance that a kill tears the last unsynced write (see the
    /// module documentation). Default: 0.
    pub torn_write_chance: f64,
    /// The most writes waiting for a sync; one more fails with
    /// [`DiskError::Backlog`]. Default: 100 000.
    pub unsynced_writes_max: usize,
    /// The largest value. Default: 16 MiB.
    pub value_bytes_max: usize,
}

impl Default for DiskConfig {
    fn default() -> DiskConfig {
        DiskConfig {
            sync_latency_min: Duration::from_micros(100),
            sync_latency_max: Duration::from_millis(2),
            crash_loss: CrashLoss::Unsynced,
            torn_write_chance: 0.0,
            unsynced_writes_max: 100_000,
            value_bytes_max: 16 << 20,
        }
    }
}

impl DiskConfig {
    /// Check the configuration for contradictions.
    pub fn validate(&self) -> Result<(), DiskError> {
        if self.sync_latency_min > self.sync_latency_max {
            return Err(DiskError::Config(format!(
                "sync latency min {:?} exceeds max {:?}",
                self.sync_latency_min, self.sync_latency_max
            )));
        }
        if !(0.0..=1.0).contains(&self.torn_write_chance) {
            return Err(DiskError::Config(format!(
                "torn write chance {} is not in [0, 1]",
                self.torn_write_chance
            )));
        }
        if self.unsynced_writes_max == 0 {
            return Err(DiskError::Config("unsynced writes max is 0".into()));
        }
        Ok(())
    }
}

/// What a disk operation can fail with.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum DiskError {
    /// The handle's node incarnation was killed.
    #[error("the disk of {node} belongs to a killed incarnation")]
    Killed {
        /// The node.
        node: String,
    },
    /// Too many writes wait for a sync.
    #[error("{unsynced} writes wait for a sync (at most {max})")]
    Backlog {
        /// Writes waiting.
        unsynced: usize,
        /// The bound.
        max: usize,
    },
    /// A value larger than the configured bound.
    #[error("a value of {size} bytes exceeds the disk's {max}")]
    ValueTooLarge {
        /// Its size.
        size: usize,
        /// The bound.
        max: usize,
    },
    /// A [`DiskConfig`] that contradicts itself.
    #[error("disk configuration: {0}")]
    Config(String),
}

/// What one disk did so far.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct DiskStats {
    /// Writes and deletes issued.
    pub writes: u64,
    /// Syncs issued.
    pub syncs: u64,
    /// Writes made durable by a sync.
    pub synced_writes: u64,
    /// Kills of the node while it had a disk.
    pub crashes: u64,
    /// Unsynced writes that survived a kill (only [`CrashLoss::UnsyncedTail`]).
    pub kept_writes: u64,
    /// Unsynced writes lost to a kill (a torn one included).
    pub lost_writes: u64,
    /// Writes that reached the disk torn.
    pub torn_writes: u64,
}

/// What a kill did to a disk with unsynced writes, for the trace.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct CrashReport {
    kept: usize,
    lost: usize,
    torn: Option<String>,
}

impl fmt::Display for CrashReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "disk crash: {} unsynced write(s) kept, {} lost",
            self.kept, self.lost
        )?;
        if let Some(key) = &self.torn {
            write!(f, ", `{key}` torn")?;
        }
        Ok(())
    }
}

/// One unsynced write: `None` deletes the key.
#[derive(Clone, Debug)]
struct Write {
    key: String,
    value: Option<Vec<u8>>,
}

/// One node's disk.
#[derive(Debug, Default)]
struct DiskState {
    config: DiskConfig,
    durable: BTreeMap<String, Vec<u8>>,
    /// Writes since the last sync point, oldest first; `unsynced[i]` has
    /// write number `first_unsynced + i`.
    unsynced: Vec<Write>,
    first_unsynced: u64,
    stats: DiskStats,
}

impl DiskState {
    /// Number of the next write.
    fn next_write(&self) -> u64 {
        self.first_unsynced + self.unsynced.len() as u64
    }

    /// Make writes numbered below `upto` durable (a prefix of `unsynced`).
    fn make_durable(&mut self, upto: u64) {
        let count = usize::try_from(upto.saturating_sub(self.first_unsynced))
            .expect("unsynced writes are bounded")
            .min(self.unsynced.len());
        let synced: Vec<Write> = self.unsynced.drain(..count).collect();
        self.first_unsynced += count as u64;
        self.stats.synced_writes += count as u64;
        apply(&mut self.durable, synced);
    }

    fn read(&self, key: &str) -> Option<Vec<u8>> {
        match self.unsynced.iter().rev().find(|write| write.key == key) {
            Some(write) => write.value.clone(),
            None => self.durable.get(key).cloned(),
        }
    }
}

fn apply(durable: &mut BTreeMap<String, Vec<u8>>, writes: Vec<Write>) {
    for write in writes {
        match write.value {
            Some(value) => durable.insert(write.key, value),
            None => durable.remove(&write.key),
        };
    }
}

/// Every node's disk; part of the world, so it outlives incarnations.
pub(crate) struct Disks {
    rng: SimRng,
    by_node: BTreeMap<NodeId, DiskState>,
}

impl Disks {
    pub(crate) fn new(rng: SimRng) -> Disks {
        Disks {
            rng,
            by_node: BTreeMap::new(),
        }
    }

    fn state(&mut self, node: NodeId) -> &mut DiskState {
        self.by_node.entry(node).or_default()
    }

    /// The node was killed: resolve its unsynced writes. `None` if it had
    /// no disk or nothing unsynced.
    pub(crate) fn crash(&mut self, node: NodeId) -> Option<CrashReport> {
        let state = self.by_node.get_mut(&node)?;
        state.stats.crashes += 1;
        let pending = std::mem::take(&mut state.unsynced);
        if pending.is_empty() {
            return None;
        }
        let total = pending.len();
        let kept = match state.config.crash_loss {
            CrashLoss::Unsynced => 0,
            CrashLoss::UnsyncedTail => self.rng.gen_range(0..=total),
        };
        let last = pending.last().cloned().expect("pending is not empty");
        apply(&mut state.durable, pending[..kept].to_vec());
        state.first_unsynced += total as u64;
        let lost = total - kept;
        let mut torn = None;
        if lost > 0 && chance(&mut self.rng, state.config.torn_write_chance) {
            if let Some(value) = last.value {
                let old = state.durable.get(&last.key).cloned();
                let bytes = tear(&mut self.rng, &value, old.as_deref());
                state.durable.insert(last.key.clone(), bytes);
                state.stats.torn_writes += 1;
                torn = Some(last.key);
            }
        }
        state.stats.kept_writes += kept as u64;
        state.stats.lost_writes += lost as u64;
        Some(CrashReport { kept, lost, torn })
    }
}

/// A torn write of `new` over `old`: a seeded prefix of `new` (never all
/// of it), then what `old` held at the same offsets up to `new`'s length.
fn tear(rng: &mut SimRng, new: &[u8], old: Option<&[u8]>) -> Vec<u8> {
    if new.is_empty() {
        return Vec::new();
    }
    let cut = rng.gen_range(0..new.len());
    let mut bytes = new[..cut].to_vec();
    if let Some(old) = old {
        let end = new.len().min(old.len());
        if end > cut {
            bytes.extend_from_slice(&old[cut..end]);
        }
    }
    bytes
}

/// A node's disk, for one incarnation of the node. Cheap to clone.
#[derive(Clone)]
pub struct SimDisk {
    shared: Arc<Shared>,
    node: NodeId,
    incarnation: u32,
    runtime: Arc<dyn Runtime>,
}

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimDisk")
            .field("node", &self.node)
            .field("incarnation", &self.incarnation)
            .finish()
    }
}

impl SimDisk {
    pub(crate) fn new(context: &NodeContext, shared: Arc<Shared>) -> SimDisk {
        SimDisk {
            shared,
            node: context.id(),
            incarnation: context.incarnation(),
            runtime: context.runtime(),
        }
    }

    /// Run `f` on this node's disk if the handle's incarnation is current.
    fn with_state<T>(&self, f: impl FnOnce(&mut DiskState) -> T) -> Result<T, DiskError> {
        let mut world = self.shared.world();
        if !world.is_current(self.node, self.incarnation) {
            return Err(DiskError::Killed {
                node: world.node(self.node).name.to_string(),
            });
        }
        Ok(f(world.disks.state(self.node)))
    }

    fn push(&self, write: Write) -> Result<(), DiskError> {
        self.with_state(|state| {
            if state.unsynced.len() >= state.config.unsynced_writes_max {
                return Err(DiskError::Backlog {
                    unsynced: state.unsynced.len(),
                    max: state.config.unsynced_writes_max,
                });
            }
            if let Some(value) = &write.value {
                if value.len() > state.config.value_bytes_max {
                    return Err(DiskError::ValueTooLarge {
                        size: value.len(),
                        max: state.config.value_bytes_max,
                    });
                }
            }
            state.stats.writes += 1;
            state.unsynced.push(write);
            Ok(())
        })?
    }

    /// Set `key` to `value` (volatile until a sync).
    pub fn write(&self, key: &str, value: Vec<u8>) -> Result<(), DiskError> {
        self.push(Write {
            key: key.to_owned(),
            value: Some(value),
        })
    }

    /// Remove `key` (volatile until a sync).
    pub fn delete(&self, key: &str) -> Result<(), DiskError> {
        self.push(Write {
            key: key.to_owned(),
            value: None,
        })
    }

    /// The value of `key` as this node sees it (unsynced writes included).
    pub fn read(&self, key: &str) -> Result<Option<Vec<u8>>, DiskError> {
        self.with_state(|state| state.read(key))
    }

    /// The keys starting with `prefix`, in order, as this node sees them.
    pub fn keys(&self, prefix: &str) -> Result<Vec<String>, DiskError> {
        self.with_state(|state| {
            let mut keys: BTreeSet<String> = state
                .durable
                .keys()
                .filter(|key| key.starts_with(prefix))
                .cloned()
                .collect();
            for write in state.unsynced.iter().filter(|w| w.key.starts_with(prefix)) {
                if write.value.is_some() {
                    keys.insert(write.key.clone());
                } else {
                    keys.remove(&write.key);
                }
            }
            keys.into_iter().collect()
        })
    }

    /// Make every write issued before this call durable. The latency is
    /// drawn now; the future completes after it on the node's clock, and
    /// fails if the node was killed meanwhile.
    pub fn sync(&self) -> BoxFuture<'static, Result<(), DiskError>> {
        let drawn = {
            let mut guard = self.shared.world();
            let world = &mut *guard;
            if world.is_current(self.node, self.incarnation) {
                let state = world.disks.by_node.entry(self.node).or_default();
                state.stats.syncs += 1;
                let upto = state.next_write();
                let (min, max) = (state.config.sync_latency_min, state.config.sync_latency_max);
                Ok((upto, draw_latency(&mut world.disks.rng, min, max)))
            } else {
                Err(DiskError::Killed {
                    node: world.node(self.node).name.to_string(),
                })
            }
        };
        let (upto, latency) = match drawn {
            Ok(drawn) => drawn,
            Err(error) => return Box::pin(std::future::ready(Err(error))),
        };
        let sleep = self.runtime.sleep(latency);
        let disk = self.clone();
        Box::pin(async move {
            sleep.await;
            disk.with_state(|state| state.make_durable(upto))
        })
    }
}

fn draw_latency(rng: &mut SimRng, min: Duration, max: Duration) -> Duration {
    if min == max {
        return min;
    }
    let span = u64::try_from((max - min).as_nanos()).unwrap_or(u64::MAX);
    min + Duration::from_nanos(rng.gen_range(0..=span))
}

impl Sim {
    /// Configure `node`'s disk. Takes effect for the writes, syncs and
    /// kills that follow; what the disk holds is kept.
    pub fn set_disk(&mut self, node: NodeId, config: DiskConfig) -> Result<(), DiskError> {
        config.validate()?;
        self.world().disks.state(node).config = config;
        Ok(())
    }

    /// `node`'s disk, for its current incarnation.
    pub fn disk(&self, node: NodeId) -> SimDisk {
        self.context(node).disk()
    }

    /// What `node`'s disk holds durably (what a kill now would leave,
    /// before torn writes and [`CrashLoss::UnsyncedTail`] survivors).
    pub fn disk_durable(&self, node: NodeId) -> BTreeMap<String, Vec<u8>> {
        let world = self.world();
        world
            .disks
            .by_node
            .get(&node)
            .map(|state| state.durable.clone())
            .unwrap_or_default()
    }

    /// What `node`'s disk did so far.
    pub fn disk_stats(&self, node: NodeId) -> DiskStats {
        let world = self.world();
        world
            .disks
            .by_node
            .get(&node)
            .map(|state| state.stats)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
