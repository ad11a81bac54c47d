//! [`FakeAgent`]: the agent side of a connection, driven by hand.

use crate::codec;
use crate::protocol::{AgentId, AgentMessage, ExitInfo, JobId, RunId, SupervisorMessage};
use crate::runtime::{Connection, TaskHandle};
use crate::supervisor::testkit::try_recv;

/// The agent side of a connection, driven by hand.
pub(in crate::supervisor) struct FakeAgent {
    pub(in crate::supervisor) id: AgentId,
    pub(in crate::supervisor) connection: Connection,
    /// The supervisor's task serving this connection.
    pub(in crate::supervisor) task: TaskHandle,
}

impl FakeAgent {
    /// Send `message`; returns false if the connection is over.
    pub(in crate::supervisor) fn send(&self, message: &AgentMessage) -> bool {
        self.connection.sender.send(codec::encode(message)).is_ok()
    }

    /// Close the agent's side of the connection, as a crashed agent would.
    pub(in crate::supervisor) fn close(&self) {
        self.connection.sender.close();
    }

    /// Every message the supervisor sent so far; `Err` once closed.
    pub(in crate::supervisor) fn received(
        &mut self,
    ) -> Result<Vec<SupervisorMessage>, Vec<SupervisorMessage>> {
        let mut messages = Vec::new();
        loop {
            match try_recv(&mut self.connection.receiver) {
                None => return Ok(messages),
                Some(Ok(frame)) => {
                    messages.push(codec::decode(&frame).expect("supervisor frames decode"))
                }
                Some(Err(_)) => return Err(messages),
            }
        }
    }

    /// The runs the supervisor asked this agent to start, in order.
    pub(in crate::supervisor) fn runs(&mut self) -> Vec<(JobId, RunId)> {
        self.received()
            .expect("open")
            .into_iter()
            .filter_map(|message| match message {
                SupervisorMessage::Run { job, run, .. } => Some((job, run)),
                _ => None,
            })
            .collect()
    }

    /// The runs the supervisor asked this agent to kill, in order.
    pub(in crate::supervisor) fn kills(&mut self) -> Vec<(JobId, RunId)> {
        self.received()
            .expect("open")
            .into_iter()
            .filter_map(|message| match message {
                SupervisorMessage::Kill { job, run } => Some((job, run)),
                _ => None,
            })
            .collect()
    }

    pub(in crate::supervisor) fn started(&self, job: &JobId, run: RunId) {
        self.send(&AgentMessage::Started {
            job: job.clone(),
            run,
        });
    }

    pub(in crate::supervisor) fn finished(
        &self,
        job: &JobId,
        run: RunId,
        exit: ExitInfo,
        killed: bool,
    ) {
        self.send(&AgentMessage::Finished {
            job: job.clone(),
            run,
            exit,
            killed,
        });
    }

    pub(in crate::supervisor) fn heartbeat(&self, seq: u64) {
        self.send(&AgentMessage::Heartbeat { seq });
    }
}
