//! [`SimRuntime`]: `faultline_core::runtime::Runtime` for one node of the
//! simulation.
//!
//! A handle belongs to one incarnation of its node. After the node is
//! killed the handle is stale: `spawn` drops the future and reports it
//! aborted, `sleep` never completes, `now` keeps reading the node's clock.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use faultline_core::runtime::{BoxFuture, Instant, Runtime, TaskHandle};
use rand::Rng;

use crate::ids::NodeId;
use crate::world::{Shared, World};

/// The simulator's `Runtime` for one node incarnation.
pub struct SimRuntime {
    shared: Arc<Shared>,
    node: NodeId,
    incarnation: u32,
}

impl SimRuntime {
    pub(crate) fn new(shared: Arc<Shared>, node: NodeId, incarnation: u32) -> SimRuntime {
        SimRuntime {
            shared,
            node,
            incarnation,
        }
    }
}

impl Runtime for SimRuntime {
    fn now(&self) -> Instant {
        self.shared.world().local_now(self.node)
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        let mut guard = self.shared.world();
        if !guard.is_current(self.node, self.incarnation) {
            return Box::pin(std::future::pending());
        }
        let world = &mut *guard;
        let now = world.now();
        let clock = world.node(self.node).clock;
        let local_deadline = clock.local(now) + duration;
        let id = world
            .timers
            .create(&mut world.events, self.node, &clock, local_deadline, now);
        drop(guard);
        Box::pin(Sleep {
            shared: Arc::clone(&self.shared),
            state: SleepState::Waiting(id),
        })
    }

    fn spawn(&self, name: &str, future: BoxFuture<'static, ()>) -> TaskHandle {
        crate::task::spawn(&self.shared, self.node, self.incarnation, name, future)
    }

    fn random_u64(&self) -> u64 {
        self.shared.world().ids_rng.gen()
    }

    fn buggify(&self, site: &'static str) -> bool {
        let mut guard = self.shared.world();
        let world = &mut *guard;
        let fired = world.buggify.ask(site);
        if fired {
            world.trace.record_simulator(
                world.now(),
                Some(self.node),
                tracing::Level::DEBUG,
                format_args!("buggify {site} fired"),
            );
        }
        fired
    }
}

enum SleepState {
    /// Waiting for the timer with this id.
    Waiting(u64),
    /// Completed.
    Done,
}

/// The future of [`SimRuntime::sleep`]. Owns its timer: dropping it
/// cancels the timer.
struct Sleep {
    shared: Arc<Shared>,
    state: SleepState,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let SleepState::Waiting(id) = self.state else {
            return Poll::Ready(());
        };
        let mut world = self.shared.world();
        let timer = world
            .timers
            .get_mut(id)
            .expect("a waiting sleep owns its timer");
        if timer.fired {
            world.timers.take_fired(id);
            drop(world);
            self.state = SleepState::Done;
            return Poll::Ready(());
        }
        match &timer.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => timer.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let SleepState::Waiting(id) = self.state {
            let mut guard = self.shared.world();
            let World { timers, events, .. } = &mut *guard;
            timers.remove(events, id);
        }
    }
}
