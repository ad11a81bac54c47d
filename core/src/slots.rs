//! Slot pools: bounded capacity with a FIFO of waiters and owned permits.
//!
//! A [`SlotPool`] is a pure state machine: `capacity` slots, each either
//! free or held by one permit; waiters queue in priority order (the job's
//! submission order, then arrival), and a slot that frees is **handed** to
//! the first waiter at once: the waiter's ticket becomes *granted* and the
//! permit is counted as held from that moment, before the waiter's task has
//! even woken. Invariant, asserted after every change: `held + free ==
//! capacity`, and no slot stays free while a waiter waits.
//!
//! The async glue is two RAII handles over a shared pool:
//! * a [`SlotTicket`] is a place in the queue; dropping it withdraws it, and
//!   if the pool had already handed it a slot, returns that slot;
//! * a [`SlotPermit`] is a held slot; dropping it, whatever the reason,
//!   returns the slot (and hands it to the next waiter).
//!
//! Lock order: the supervisor's state lock may be held while a pool's lock is
//! taken (permits are dropped under it), never the reverse.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use tokio::sync::Notify;

use crate::protocol::JobId;
use crate::runtime::Instant;

/// Identifies a held slot within its pool.
pub type PermitId = u64;
/// Identifies a place in a pool's queue.
pub type TicketId = u64;

/// Who holds or waits for a slot: an op of a job.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct Holder {
    /// The job.
    pub job: JobId,
    /// The op acting for it (`None` while the op does not exist yet).
    pub op: Option<u64>,
    /// For humans: `j-3#1`.
    pub label: String,
}

/// What a withdrawn ticket does with a slot the pool had already handed it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GrantOnWithdraw {
    /// Return it to the pool (the correct behaviour).
    Release,
    /// Leave it held ([`Flaw::SlotLeakOnCancel`](crate::flaws::Flaw)).
    Leak,
}

#[derive(Clone, Debug)]
struct Held {
    holder: Holder,
    since: Instant,
}

#[derive(Clone, Debug)]
struct Waiter {
    ticket: TicketId,
    priority: u64,
    holder: Holder,
    since: Instant,
    granted: Option<PermitId>,
    wake: Option<Arc<Notify>>,
}

/// A pool of `capacity` slots with a priority-FIFO of waiters. Pure: no
/// clock of its own (callers pass `now`) and no tasks.
#[derive(Debug)]
pub struct SlotPool {
    name: String,
    capacity: u32,
    /// Free slots. Kept as its own counter, as a semaphore would, so that a
    /// double release shows up as `held + free > capacity`.
    free: u32,
    held: BTreeMap<PermitId, Held>,
    /// Sorted by `(priority, ticket)`.
    waiters: Vec<Waiter>,
    next_id: u64,
    /// Set once [`SlotPool::release_unchecked`] broke `held + free ==
    /// capacity` (only a flaw calls it); the pool stops asserting it.
    accounting_broken: bool,
}

/// A holder or waiter, as the snapshot shows it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct SlotEntry {
    /// Permit (for holders) or ticket (for waiters) id.
    pub id: u64,
    /// Who.
    pub holder: Holder,
    /// Since when it holds or waits.
    pub since: Instant,
    /// For waiters: whether the pool already handed it a slot.
    pub granted: bool,
}

/// A pool's state for snapshots and oracles.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct PoolSnapshot {
    /// The pool's name (`kind/parallel`, `user/alice`, `job/j-3`).
    pub name: String,
    /// Total slots.
    pub capacity: u32,
    /// Slots held (including ones handed to waiters not yet awake).
    pub held: u32,
    /// Slots free. `held + free == capacity` unless a flaw broke it.
    pub free: u32,
    /// Holders, by permit id.
    pub holders: Vec<SlotEntry>,
    /// Waiters, first in line first.
    pub waiters: Vec<SlotEntry>,
}

impl SlotPool {
    /// An empty pool with `capacity` free slots.
    pub fn new(name: impl Into<String>, capacity: u32) -> SlotPool {
        SlotPool {
            name: name.into(),
            capacity,
            free: capacity,
            held: BTreeMap::new(),
            waiters: Vec::new(),
            next_id: 1,
            accounting_broken: false,
        }
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Total slots.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Slots free now.
    pub fn free(&self) -> u32 {
        self.free
    }

    /// Slots held now (granted tickets included).
    pub fn held(&self) -> u32 {
        u32::try_from(self.held.len()).expect("held slots are bounded by capacity")
    }

    /// Whether nobody holds or waits.
    pub fn is_idle(&self) -> bool {
        self.held.is_empty() && self.waiters.is_empty()
    }

    /// Join the queue. `priority` orders waiters (lower first; ties by
    /// arrival). The ticket may be granted at once if a slot is free and
    /// nobody is ahead. `wake` is notified when the ticket is granted.
    pub fn enqueue(
        &mut self,
        holder: Holder,
        priority: u64,
        now: Instant,
        wake: Option<Arc<Notify>>,
    ) -> TicketId {
        let ticket = self.allocate_id();
        let index = self
            .waiters
            .partition_point(|waiter| (waiter.priority, waiter.ticket) < (priority, ticket));
        self.waiters.insert(
            index,
            Waiter {
                ticket,
                priority,
                holder,
                since: now,
                granted: None,
                wake,
            },
        );
        self.grant_waiters(now);
        ticket
    }

    /// The permit the pool handed `ticket`, taking the ticket out of the
    /// queue; `None` if it is still waiting (or unknown).
    pub fn take(&mut self, ticket: TicketId) -> Option<PermitId> {
        let index = self.index_of(ticket)?;
        let permit = self.waiters[index].granted?;
        self.waiters.remove(index);
        self.check();
        Some(permit)
    }

    /// Leave the queue. A slot already handed to the ticket is returned or
    /// leaked according to `grant`. Returns the permit that was handed to the
    /// ticket, if any.
    pub fn withdraw(
        &mut self,
        ticket: TicketId,
        grant: GrantOnWithdraw,
        now: Instant,
    ) -> Option<PermitId> {
        let index = self.index_of(ticket)?;
        let waiter = self.waiters.remove(index);
        if let Some(permit) = waiter.granted {
            match grant {
                GrantOnWithdraw::Release => self.release(permit, now),
                GrantOnWithdraw::Leak => {}
            }
        }
        self.check();
        waiter.granted
    }

    /// Return a held slot; hand it to the first waiter, if any.
    pub fn release(&mut self, permit: PermitId, now: Instant) {
        let held = self.held.remove(&permit);
        assert!(
            held.is_some(),
            "pool {}: release of permit {permit} that is not held",
            self.name
        );
        self.free += 1;
        self.grant_waiters(now);
        self.check();
    }

    /// Count a slot as free again without any holder check: what a
    /// duplicated release does to a semaphore
    /// ([`Flaw::DoubleFreeOnDuplicateFinish`](crate::flaws::Flaw)). Breaks
    /// `held + free == capacity` on purpose, for the oracle to see.
    pub fn release_unchecked(&mut self, now: Instant) {
        self.accounting_broken = true;
        self.free += 1;
        self.grant_waiters(now);
    }

    /// 1-based place of `ticket` among the waiters not yet granted (1 = next
    /// to be served); `None` once granted or unknown.
    pub fn position(&self, ticket: TicketId) -> Option<u32> {
        let index = self.index_of(ticket)?;
        if self.waiters[index].granted.is_some() {
            return None;
        }
        let ahead = self.waiters[..index]
            .iter()
            .filter(|waiter| waiter.granted.is_none())
            .count();
        Some(u32::try_from(ahead + 1).expect("waiters are bounded"))
    }

    /// The pool's state for snapshots.
    pub fn snapshot(&self) -> PoolSnapshot {
        PoolSnapshot {
            name: self.name.clone(),
            capacity: self.capacity,
            held: self.held(),
            free: self.free,
            holders: self
                .held
                .iter()
                .map(|(permit, held)| SlotEntry {
                    id: *permit,
                    holder: held.holder.clone(),
                    since: held.since,
                    granted: true,
                })
                .collect(),
            waiters: self
                .waiters
                .iter()
                .map(|waiter| SlotEntry {
                    id: waiter.ticket,
                    holder: waiter.holder.clone(),
                    since: waiter.since,
                    granted: waiter.granted.is_some(),
                })
                .collect(),
        }
    }

    /// Hand a waiting ticket to the op that now owns it: name the op and
    /// wake it (now if already granted, and on a later grant).
    pub fn set_owner(&mut self, ticket: TicketId, op: u64, wake: Arc<Notify>) {
        if let Some(index) = self.index_of(ticket) {
            let waiter = &mut self.waiters[index];
            waiter.holder.op = Some(op);
            if let Some(permit) = waiter.granted {
                if let Some(held) = self.held.get_mut(&permit) {
                    held.holder.op = Some(op);
                }
                wake.notify_one();
            }
            waiter.wake = Some(wake);
        }
    }

    fn grant_waiters(&mut self, now: Instant) {
        for index in 0..self.waiters.len() {
            if self.free == 0 {
                break;
            }
            if self.waiters[index].granted.is_some() {
                continue;
            }
            let permit = self.allocate_id();
            self.free -= 1;
            let waiter = &mut self.waiters[index];
            waiter.granted = Some(permit);
            self.held.insert(
                permit,
                Held {
                    holder: waiter.holder.clone(),
                    since: now,
                },
            );
            if let Some(wake) = &waiter.wake {
                wake.notify_one();
            }
        }
    }

    fn index_of(&self, ticket: TicketId) -> Option<usize> {
        self.waiters
            .iter()
            .position(|waiter| waiter.ticket == ticket)
    }

    fn allocate_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn check(&self) {
        if self.accounting_broken {
            // A flaw broke the accounting on purpose: the oracle reports it.
            return;
        }
        assert_eq!(
            self.held() + self.free,
            self.capacity,
            "pool {}: held + free == capacity",
            self.name
        );
        assert!(
            self.free == 0 || self.waiters.iter().all(|w| w.granted.is_some()),
            "pool {}: a slot is free while a waiter waits",
            self.name
        );
    }
}

/// A pool shared by the supervisor and the permits it hands out.
#[derive(Clone, Debug)]
pub struct SharedPool {
    inner: Arc<Mutex<SlotPool>>,
}

impl SharedPool {
    /// Share `pool`.
    pub fn new(pool: SlotPool) -> SharedPool {
        SharedPool {
            inner: Arc::new(Mutex::new(pool)),
        }
    }

    /// Lock the pool. Never held across an `.await` (clippy denies it).
    pub fn lock(&self) -> MutexGuard<'_, SlotPool> {
        self.inner
            .lock()
            .expect("a pool lock is only poisoned if an invariant assert fired under it")
    }

    /// Lock the pool from a destructor: a poisoned lock (an invariant assert
    /// already fired and the thread is unwinding) must not turn into a second
    /// panic, which would abort the process and hide the first.
    fn lock_in_drop(&self) -> MutexGuard<'_, SlotPool> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Join the queue; see [`SlotPool::enqueue`].
    pub fn enqueue(
        &self,
        holder: Holder,
        priority: u64,
        now: Instant,
        wake: Option<Arc<Notify>>,
        grant: GrantOnWithdraw,
    ) -> SlotTicket {
        let ticket = self.lock().enqueue(holder, priority, now, wake);
        SlotTicket {
            pool: self.clone(),
            ticket: Some(ticket),
            grant,
            now,
        }
    }
}

/// A place in a pool's queue. Dropping it withdraws it (see
/// [`GrantOnWithdraw`]).
#[derive(Debug)]
pub struct SlotTicket {
    pool: SharedPool,
    /// `None` once taken or detached.
    ticket: Option<TicketId>,
    grant: GrantOnWithdraw,
    /// The latest time the owner told us about, for the pool's records.
    now: Instant,
}

impl SlotTicket {
    /// The ticket's id.
    pub fn id(&self) -> Option<TicketId> {
        self.ticket
    }

    /// The pool's name.
    pub fn pool_name(&self) -> String {
        self.pool.lock().name().to_owned()
    }

    /// The permit, if the pool handed this ticket a slot. The ticket is
    /// spent afterwards.
    pub fn take(&mut self, now: Instant) -> Option<SlotPermit> {
        let ticket = self.ticket?;
        let permit = self.pool.lock().take(ticket)?;
        self.ticket = None;
        Some(SlotPermit {
            pool: self.pool.clone(),
            permit,
            now,
        })
    }

    /// 1-based place in the queue; see [`SlotPool::position`].
    pub fn position(&self) -> Option<u32> {
        self.pool.lock().position(self.ticket?)
    }

    /// Hand the ticket to the op that now owns it; see
    /// [`SlotPool::set_owner`].
    pub fn set_owner(&self, op: u64, wake: Arc<Notify>) {
        if let Some(ticket) = self.ticket {
            self.pool.lock().set_owner(ticket, op, wake);
        }
    }

    /// Remember `now` for the pool's records when the ticket is dropped.
    pub fn touch(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// Stop managing the ticket: it stays in the queue after this handle is
    /// gone. Only [`Flaw::DropUnsafeSubmit`](crate::flaws::Flaw) does this.
    pub fn detach(mut self) -> Option<TicketId> {
        self.ticket.take()
    }

    /// Manage a ticket that was detached.
    pub fn reattach(
        pool: &SharedPool,
        ticket: TicketId,
        grant: GrantOnWithdraw,
        now: Instant,
    ) -> SlotTicket {
        SlotTicket {
            pool: pool.clone(),
            ticket: Some(ticket),
            grant,
            now,
        }
    }
}

impl Drop for SlotTicket {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            if !std::thread::panicking() {
                self.pool
                    .lock_in_drop()
                    .withdraw(ticket, self.grant, self.now);
            }
        }
    }
}

/// A held slot. Dropping it returns the slot, whatever the reason.
#[derive(Debug)]
pub struct SlotPermit {
    pool: SharedPool,
    permit: PermitId,
    now: Instant,
}

impl SlotPermit {
    /// The permit's id within its pool.
    pub fn id(&self) -> PermitId {
        self.permit
    }

    /// The pool this permit belongs to.
    pub fn pool(&self) -> &SharedPool {
        &self.pool
    }

    /// Remember `now` for the pool's records when the permit is dropped.
    pub fn touch(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.pool.lock_in_drop().release(self.permit, self.now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn holder(n: u64) -> Holder {
        Holder {
            job: JobId(format!("j-{n}")),
            op: Some(n),
            label: format!("j-{n}#1"),
        }
    }

    const T: Instant = Instant::ZERO;

    #[test]
    fn grants_up_to_capacity_then_queues_in_priority_order() {
        let mut pool = SlotPool::new("kind/parallel", 2);
        let a = pool.enqueue(holder(1), 1, T, None);
        let b = pool.enqueue(holder(2), 2, T, None);
        let late = pool.enqueue(holder(9), 9, T, None);
        let early = pool.enqueue(holder(3), 3, T, None);
        assert!(pool.take(a).is_some());
        assert!(pool.take(b).is_some());
        assert_eq!(pool.free(), 0);
        assert_eq!(pool.position(early), Some(1));
        assert_eq!(pool.position(late), Some(2));
    }

    #[test]
    fn a_released_slot_is_handed_to_the_first_waiter() {
        let mut pool = SlotPool::new("p", 1);
        let a = pool.enqueue(holder(1), 1, T, None);
        let permit = pool.take(a).expect("granted at once");
        let wake = Arc::new(Notify::new());
        let b = pool.enqueue(holder(2), 2, T, Some(wake.clone()));
        assert_eq!(pool.take(b), None);
        pool.release(permit, T);
        assert_eq!(pool.held(), 1, "handed over, still counted as held");
        assert_eq!(pool.position(b), None, "granted tickets have no position");
        assert!(pool.take(b).is_some());
    }

    #[test]
    fn withdrawing_a_granted_ticket_returns_its_slot() {
        let mut pool = SlotPool::new("p", 1);
        let a = pool.enqueue(holder(1), 1, T, None);
        assert!(pool.withdraw(a, GrantOnWithdraw::Release, T).is_some());
        assert_eq!(pool.free(), 1);
        assert!(pool.is_idle());
    }

    #[test]
    fn the_leak_policy_keeps_a_withdrawn_grant_held() {
        let mut pool = SlotPool::new("p", 1);
        let a = pool.enqueue(holder(1), 1, T, None);
        pool.withdraw(a, GrantOnWithdraw::Leak, T);
        let snapshot = pool.snapshot();
        assert_eq!((snapshot.held, snapshot.free), (1, 0));
        assert_eq!(snapshot.holders[0].holder.job, JobId("j-1".into()));
        assert!(snapshot.waiters.is_empty());
    }

    #[test]
    fn an_unchecked_release_breaks_the_accounting_visibly() {
        let mut pool = SlotPool::new("p", 1);
        let a = pool.enqueue(holder(1), 1, T, None);
        let permit = pool.take(a).expect("granted");
        pool.release(permit, T);
        pool.release_unchecked(T);
        let snapshot = pool.snapshot();
        assert_ne!(snapshot.held + snapshot.free, snapshot.capacity);
    }

    #[test]
    fn dropping_tickets_and_permits_returns_slots() {
        let shared = SharedPool::new(SlotPool::new("p", 1));
        let mut first = shared.enqueue(holder(1), 1, T, None, GrantOnWithdraw::Release);
        let permit = first.take(T).expect("free slot");
        let second = shared.enqueue(holder(2), 2, T, None, GrantOnWithdraw::Release);
        assert_eq!(second.position(), Some(1));
        drop(permit);
        assert_eq!(shared.lock().held(), 1, "handed to the second ticket");
        drop(second);
        assert_eq!(
            shared.lock().free(),
            1,
            "a dropped granted ticket returns it"
        );
        assert!(shared.lock().is_idle());
    }

    #[test]
    fn a_detached_ticket_stays_in_the_queue() {
        let shared = SharedPool::new(SlotPool::new("p", 1));
        let blocker = shared
            .enqueue(holder(1), 1, T, None, GrantOnWithdraw::Release)
            .take(T)
            .expect("free");
        let ticket = shared.enqueue(holder(2), 2, T, None, GrantOnWithdraw::Release);
        let id = ticket.detach().expect("not taken");
        assert_eq!(shared.lock().position(id), Some(1));
        let back = SlotTicket::reattach(&shared, id, GrantOnWithdraw::Release, T);
        drop(back);
        drop(blocker);
        assert!(shared.lock().is_idle());
    }

    #[derive(Clone, Debug)]
    enum Step {
        Enqueue(u64),
        Take(usize),
        Withdraw(usize),
        DropPermit(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u64..5).prop_map(Step::Enqueue),
            (0usize..8).prop_map(Step::Take),
            (0usize..8).prop_map(Step::Withdraw),
            (0usize..8).prop_map(Step::DropPermit),
        ]
    }

    proptest! {
        #[test]
        fn any_sequence_keeps_held_plus_free_equal_to_capacity(
            capacity in 1u32..4,
            steps in proptest::collection::vec(step(), 0..60),
        ) {
            let shared = SharedPool::new(SlotPool::new("p", capacity));
            let mut tickets: Vec<SlotTicket> = Vec::new();
            let mut permits: Vec<SlotPermit> = Vec::new();
            let mut seq = 0;
            for step in steps {
                match step {
                    Step::Enqueue(priority) => {
                        seq += 1;
                        tickets.push(shared.enqueue(holder(seq), priority, T, None, GrantOnWithdraw::Release));
                    }
                    Step::Take(i) if !tickets.is_empty() => {
                        let index = i % tickets.len();
                        if let Some(permit) = tickets[index].take(T) {
                            tickets.remove(index);
                            permits.push(permit);
                        }
                    }
                    Step::Withdraw(i) if !tickets.is_empty() => {
                        let index = i % tickets.len();
                        tickets.remove(index);
                    }
                    Step::DropPermit(i) if !permits.is_empty() => {
                        let index = i % permits.len();
                        permits.remove(index);
                    }
                    _ => {}
                }
                let pool = shared.lock();
                prop_assert_eq!(pool.held() + pool.free(), capacity);
                prop_assert!(pool.held() <= capacity);
                let granted = pool.snapshot().waiters.iter().filter(|w| w.granted).count();
                prop_assert_eq!(pool.held() as usize, permits.len() + granted);
                if pool.free() > 0 {
                    prop_assert_eq!(pool.snapshot().waiters.iter().filter(|w| !w.granted).count(), 0,
                        "a free slot while someone waits");
                }
            }
            drop(tickets);
            drop(permits);
            prop_assert!(shared.lock().is_idle());
            prop_assert_eq!(shared.lock().free(), capacity);
        }
    }
}
