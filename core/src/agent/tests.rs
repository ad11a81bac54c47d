//! The agent against a fake supervisor: a [`ManualRuntime`], a [`FakeNet`]
//! whose far end the test plays, and a [`FakeLauncher`].

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::protocol::{
    AgentMessage, ExitInfo, JobId, RunningJob, SupervisorMessage, PROTOCOL_VERSION,
};
use crate::runtime::{Instant, Runtime};
use crate::testkit::{FakeLauncher, FakeNet, FakePeer, ManualRuntime, TaskResult, KILL_SIGNAL};

const HEARTBEAT: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(8);
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

fn config() -> AgentConfig {
    AgentConfig {
        kinds: vec![JobKind::Parallel],
        slots: 2,
        reconnect_backoff_min: BACKOFF_MIN,
        reconnect_backoff_max: BACKOFF_MAX,
        reply_timeout: REPLY_TIMEOUT,
        heartbeat_grace_intervals: 3,
        ..AgentConfig::new(AgentId("a-1".into()), "secret".into(), "sup:7070".into())
    }
}

struct Harness {
    runtime: ManualRuntime,
    net: FakeNet,
    launcher: FakeLauncher,
    agent: TaskResult<Result<(), AgentError>>,
}

impl Harness {
    fn start(config: AgentConfig) -> Harness {
        let runtime = ManualRuntime::new(7);
        let net = FakeNet::new();
        let launcher = FakeLauncher::new();
        let deps = AgentDeps {
            runtime: Arc::new(runtime.clone()),
            net: Arc::new(net.clone()),
            launcher: Arc::new(launcher.clone()),
        };
        let agent = runtime.start("agent a-1", run_agent(config, deps));
        runtime.run_until_idle();
        Harness {
            runtime,
            net,
            launcher,
            agent,
        }
    }

    /// The far end of the agent's newest connection, with its hello read.
    fn accept(&self) -> (FakePeer, AgentMessage) {
        let peer = self.net.take_peer().expect("the agent connected");
        let mut received = peer.received::<AgentMessage>();
        assert_eq!(received.len(), 1, "exactly a hello: {received:?}");
        let hello = received.remove(0);
        assert!(matches!(hello, AgentMessage::Hello { .. }), "{hello:?}");
        (peer, hello)
    }

    /// Accept the agent's newest connection and welcome it.
    fn welcome(&self, session: u64, kill: Vec<RunningJob>) -> (FakePeer, AgentMessage) {
        let (peer, hello) = self.accept();
        peer.send(&SupervisorMessage::Welcome {
            session,
            heartbeat_ms: u64::try_from(HEARTBEAT.as_millis()).expect("small"),
            kill,
        })
        .expect("send welcome");
        self.runtime.run_until_idle();
        (peer, hello)
    }

    fn send(&self, peer: &FakePeer, message: SupervisorMessage) {
        peer.send(&message).expect("send");
        self.runtime.run_until_idle();
    }

    fn run(&self, peer: &FakePeer, job: &str, run: u64) {
        self.send(
            peer,
            SupervisorMessage::Run {
                job: JobId(job.into()),
                run,
                kind: JobKind::Parallel,
                command: vec!["work".into(), job.into()],
            },
        );
    }

    fn exit(&self, job: &str, run: u64, code: i32) {
        self.launcher.exit(job, run, code, "out");
        self.runtime.run_until_idle();
    }
}

fn running(job: &str, run: u64) -> RunningJob {
    RunningJob {
        job: JobId(job.into()),
        run,
    }
}

fn started(job: &str, run: u64) -> AgentMessage {
    AgentMessage::Started {
        job: JobId(job.into()),
        run,
    }
}

fn finished(job: &str, run: u64, code: i32) -> AgentMessage {
    AgentMessage::Finished {
        job: JobId(job.into()),
        run,
        exit: ExitInfo {
            code: Some(code),
            signal: None,
            output_tail: "out".into(),
        },
        killed: false,
    }
}

fn finished_keys(messages: &[AgentMessage]) -> Vec<(String, u64, bool)> {
    messages
        .iter()
        .filter_map(|message| match message {
            AgentMessage::Finished {
                job, run, killed, ..
            } => Some((job.0.clone(), *run, *killed)),
            _ => None,
        })
        .collect()
}

fn failure_reason(message: &AgentMessage) -> &str {
    match message {
        AgentMessage::Finished {
            exit,
            killed: false,
            ..
        } if exit.code.is_none() && exit.signal.is_none() => &exit.output_tail,
        other => panic!("expected a failed finished, got {other:?}"),
    }
}

#[test]
fn hello_carries_id_token_kinds_slots_and_no_runs() {
    let harness = Harness::start(config());
    assert_eq!(harness.net.connects(), ["sup:7070"]);
    let (_peer, hello) = harness.accept();
    assert_eq!(
        hello,
        AgentMessage::Hello {
            agent: AgentId("a-1".into()),
            token: "secret".into(),
            kinds: vec![JobKind::Parallel],
            slots: 2,
            running: vec![],
        }
    );
}

#[test]
fn heartbeats_every_interval_with_increasing_seq() {
    let harness = Harness::start(config());
    let (peer, _) = harness.welcome(1, vec![]);
    assert!(peer.received::<AgentMessage>().is_empty());
    for seq in 0..5 {
        harness
            .runtime
            .advance(HEARTBEAT - Duration::from_millis(1));
        assert!(
            peer.received::<AgentMessage>().is_empty(),
            "not before the interval"
        );
        harness.runtime.advance(Duration::from_millis(1));
        assert_eq!(
            peer.received::<AgentMessage>(),
            [AgentMessage::Heartbeat { seq }]
        );
        harness.send(&peer, SupervisorMessage::HeartbeatAck { seq });
    }
    assert!(!peer.is_closed());
    assert_eq!(harness.net.connects().len(), 1);
}

#[test]
fn silent_supervisor_is_abandoned_after_the_grace_and_the_agent_reconnects() {
    let harness = Harness::start(config());
    let (peer, _) = harness.welcome(1, vec![]);
    harness
        .runtime
        .advance(HEARTBEAT * 3 - Duration::from_millis(1));
    assert!(!peer.is_closed(), "within the grace");
    harness.runtime.advance(Duration::from_millis(1));
    assert!(
        peer.is_closed(),
        "three silent intervals end the connection"
    );
    assert_eq!(harness.net.connects().len(), 1);
    harness.runtime.advance(BACKOFF_MIN);
    assert_eq!(
        harness.net.connects().len(),
        2,
        "reconnects after the minimum backoff"
    );
}

#[test]
fn reconnects_with_the_minimum_backoff_after_a_reset() {
    let harness = Harness::start(config());
    let (peer, _) = harness.welcome(1, vec![]);
    peer.reset();
    harness.runtime.run_until_idle();
    harness
        .runtime
        .advance(BACKOFF_MIN - Duration::from_millis(1));
    assert_eq!(
        harness.net.connects().len(),
        1,
        "no reconnect before the backoff"
    );
    harness.runtime.advance(Duration::from_millis(1));
    assert_eq!(harness.net.connects().len(), 2);
    let (_peer, hello) = harness.welcome(2, vec![]);
    assert!(matches!(hello, AgentMessage::Hello { running, .. } if running.is_empty()));
}

#[test]
fn refused_connects_back_off_exponentially_within_the_bounds() {
    let harness = Harness::start(config());
    harness.net.refuse_connections(true);
    harness
        .net
        .take_peer()
        .expect("first connect was accepted")
        .reset();
    harness.runtime.run_until_idle();
    let mut attempts = vec![harness.runtime.now()];
    while attempts.len() < 10 {
        let next = harness
            .runtime
            .next_timer()
            .expect("a backoff timer is pending");
        harness.runtime.advance_to(next);
        if harness.net.connects().len() > attempts.len() {
            attempts.push(harness.runtime.now());
        }
    }
    let delays: Vec<Duration> = attempts.windows(2).map(|pair| pair[1] - pair[0]).collect();
    assert_eq!(
        delays[0], BACKOFF_MIN,
        "first delay after a loss is the minimum"
    );
    for (index, delay) in delays.iter().enumerate() {
        let ceiling = (BACKOFF_MIN * 2u32.pow(index as u32)).min(BACKOFF_MAX);
        assert!(
            *delay >= (ceiling / 2).max(BACKOFF_MIN) && *delay <= ceiling,
            "delay {index} = {delay:?} outside [{:?}, {ceiling:?}]",
            ceiling / 2
        );
    }
    assert!(delays[5..].iter().all(|delay| *delay >= BACKOFF_MAX / 2));
}

#[test]
fn no_welcome_within_the_reply_timeout_closes_and_reconnects() {
    let harness = Harness::start(config());
    let (peer, _) = harness.accept();
    harness
        .runtime
        .advance(REPLY_TIMEOUT - Duration::from_millis(1));
    assert!(!peer.is_closed());
    harness.runtime.advance(Duration::from_millis(1));
    assert!(peer.is_closed());
    harness.runtime.advance(BACKOFF_MIN);
    assert_eq!(harness.net.connects().len(), 2);
}

#[test]
fn runs_a_job_then_reports_started_and_finished() {
    let harness = Harness::start(config());
    let (peer, _) = harness.welcome(1, vec![]);
    harness.run(&peer, "j-3", 1);
    let spec = harness.launcher.starts().pop().expect("started a process");
    assert_eq!((spec.job_id.as_str(), spec.run_id), ("j-3", 1));
    assert_eq!(spec.command, ["work", "j-3"]);
    assert_eq!(peer.received::<AgentMessage>(), [started("j-3", 1)]);
    assert!(harness
        .runtime
        .live_tasks()
        .contains(&"agent a-1 run j-3#1".to_owned()));

    harness.exit("j-3", 1, 0);
    assert_eq!(peer.received::<AgentMessage>(), [finished("j-3", 1, 0)]);
    assert!(!harness
        .runtime
        .live_tasks()
        .contains(&"agent a-1 run j-3#1".to_owned()));
}

#[test]
fn finished_while_disconnected_is_declared_and_sent_after_the_welcome() {
    let harness = Harness::start(config());
    let (peer, _) = harness.welcome(1, vec![]);
    harness.run(&peer, "j-1", 1);
    peer.reset();
    harness.exit("j-1", 1, 4);
    harness.runtime.advance(BACKOFF_MIN);
    let (peer, hello) = harness.welcome(2, vec![]);
    assert!(
        matches!(&hello, AgentMessage::Hello { running: declared, .. } if declared == &[running("j-1", 1)]),
        "the unreported run is declared: {hello:?}"
    );
    assert_eq!(peer.received::<AgentMessage>(), [finished("j-1", 1, 4)]);
}

#[test]
fn unconfirmed_finished_is_resent_after_a_reconnect_and_confirmed_is_not() {
    let harness = Harness::start(config());
    let (peer, _) = harness.welcome(1, vec![]);
    harness.run(&peer, "j-1", 1);
    harness.exit("j-1", 1, 0);
    harness.runtime.advance(HEARTBEAT);
    assert_eq!(
        peer.received::<AgentMessage>(),
        [
            started("j-1", 1),
            finished("j-1", 1, 0),
            AgentMessage::Heartbeat { seq: 0 }
        ]
    );
    harness.send(&peer, SupervisorMessage::HeartbeatAck { seq: 0 });

    harness.run(&peer, "j-2", 1);
    harness.exit("j-2", 1, 1);
    assert_eq!(
        peer.received::<AgentMessage>(),
        [started("j-2", 1), finished("j-2", 1, 1)]
    );
    // The ack of a heartbeat sent before j-2's report confirms nothing new.
    harness.send(&peer, SupervisorMessage::HeartbeatAck { seq: 0 });
    peer.reset();
    harness.runtime.advance(BACKOFF_MIN);
    let (peer, hello) = harness.welcome(2, vec![]);
    assert!(
        matches!(&hello, AgentMessage::Hello { running: declared, .. } if declared == &[running("j-2", 1)]),
        "{hello:?}"
    );
    assert_eq!(peer.received::<AgentMessage>(), [finished("j-2", 1, 1)]);

    harness.runtime.advance(HEARTBEAT);
    assert_eq!(
        peer.received::<AgentMessage>(),
        [AgentMessage::Heartbeat { seq: 0 }]
    );
    harness.send(&peer, SupervisorMessage::HeartbeatAck { seq: 0 });
    peer.reset();
    harness.runtime.advance(BACKOFF_MIN);
    let (peer, hello) = harness.welcome(3, vec![]);
    assert!(matches!(&hello, AgentMessage::Hello { running, .. } if running.is_empty()));
    assert!(
        peer.received::<AgentMessage>().is_empty(),
        "nothing left to resend"
    );
}

#[test]
fn kill_ends_only_the_named_run() {
    let harness = Harness::start(config());
    let (peer, _) = harness.welcome(1, vec![]);
    harness.run(&peer, "j-1", 1);
    harness.run(&peer, "j-1", 2);
    peer.received::<AgentMessage>();
    harness.send(
        &peer,
        SupervisorMessage::Kill {
            job: JobId("j-1".into()),
            run: 1,
        },
    );
    let killed = harness.launcher.process("j-1", 1).expect("run 1 started");
    let spared = harness.launcher.process("j-1", 2).expect("run 2 started");
    assert_eq!((killed.kills(), spared.kills()), (1, 0));
    assert_eq!(harness.launcher.running(), [("j-1".to_owned(), 2)]);
    let messages = peer.received::<AgentMessage>();
    assert_eq!(finished_keys(&messages), [("j-1".to_owned(), 1, true)]);
    assert!(matches!(
        &messages[0],
        AgentMessage::Finished { exit, .. } if exit.signal == Some(KILL_SIGNAL)
    ));

    // A kill of a run that already ended does nothing.
    harness.send(
        &peer,
        SupervisorMessage::Kill {
            job: JobId("j-1".into()),
            run: 1,
        },
    );
    assert_eq!(killed.kills(), 1);
    assert!(peer.received::<AgentMessage>().is_empty());
}

#[test]
fn duplicate_and_stale_runs_are_ignored() {
    let harness = Harness::start(config());
    let (peer, _) = harness.welcome(1, vec![]);
    harness.run(&peer, "j-1", 2);
    harness.run(&peer, "j-1", 2);
    harness.run(&peer, "j-1", 1);
    assert_eq!(harness.launcher.starts().len(), 1);
    assert_eq!(peer.received::<AgentMessage>(), [started("j-1", 2)]);
    harness.exit("j-1", 2, 0);
    harness.run(&peer, "j-1", 2);
    assert_eq!(
        harness.launcher.starts().len(),
        1,
        "a finished run never runs again"
    );
    assert_eq!(peer.received::<AgentMessage>(), [finished("j-1", 2, 0)]);
}

#[test]
fn runs_of_another_kind_or_over_capacity_are_refused_with_a_reason() {
    let harness = Harness::start(config());
    let (peer, _) = harness.welcome(1, vec![]);
    harness.send(
        &peer,
        SupervisorMessage::Run {
            job: JobId("j-1".into()),
            run: 1,
            kind: JobKind::Sequential,
            command: vec!["work".into()],
        },
    );
    let refused = peer.received::<AgentMessage>();
    assert_eq!(finished_keys(&refused), [("j-1".to_owned(), 1, false)]);
    assert!(failure_reason(&refused[0]).contains("kind sequential not accepted"));

    harness.run(&peer, "j-2", 1);
    harness.run(&peer, "j-3", 1);
    harness.run(&peer, "j-4", 1);
    let messages = peer.received::<AgentMessage>();
    assert_eq!(messages[..2], [started("j-2", 1), started("j-3", 1)]);
    assert_eq!(
        finished_keys(&messages[2..]),
        [("j-4".to_owned(), 1, false)]
    );
    assert!(failure_reason(&messages[2]).contains("over capacity"));
    assert_eq!(harness.launcher.starts().len(), 2);
}

#[test]
fn a_process_that_cannot_start_is_reported_as_a_failure_naming_the_error() {
    let harness = Harness::start(config());
    let (peer, _) = harness.welcome(1, vec![]);
    harness.launcher.refuse_program("work");
    harness.run(&peer, "j-1", 1);
    let messages = peer.received::<AgentMessage>();
    assert_eq!(finished_keys(&messages), [("j-1".to_owned(), 1, false)]);
    assert!(failure_reason(&messages[0]).contains("program `work` not found"));
    assert_eq!(
        harness.runtime.live_tasks(),
        ["agent a-1"],
        "no run task is left behind"
    );
}

#[test]
fn welcome_kill_list_kills_declared_runs() {
    let harness = Harness::start(config());
    let (peer, _) = harness.welcome(1, vec![]);
    harness.run(&peer, "j-1", 1);
    harness.run(&peer, "j-2", 1);
    peer.reset();
    harness.runtime.advance(BACKOFF_MIN);
    let (peer, hello) = harness.welcome(2, vec![running("j-1", 1)]);
    assert!(matches!(
        &hello,
        AgentMessage::Hello { running: declared, .. }
            if declared == &[running("j-1", 1), running("j-2", 1)]
    ));
    assert_eq!(harness.launcher.running(), [("j-2".to_owned(), 1)]);
    assert_eq!(
        finished_keys(&peer.received::<AgentMessage>()),
        [("j-1".to_owned(), 1, true)]
    );
}

#[test]
fn rejection_ends_run_agent_with_the_reason() {
    let harness = Harness::start(config());
    let (peer, _) = harness.accept();
    harness.send(
        &peer,
        SupervisorMessage::Rejected {
            reason: "bad token".into(),
        },
    );
    assert_eq!(
        harness.agent.take(),
        Some(Err(AgentError::Rejected {
            agent: AgentId("a-1".into()),
            reason: "bad token".into(),
        }))
    );
    assert!(peer.is_closed());
    assert!(harness.runtime.live_tasks().is_empty());
    harness.runtime.advance(BACKOFF_MAX * 4);
    assert_eq!(
        harness.net.connects().len(),
        1,
        "no reconnect after a rejection"
    );
}

#[test]
fn another_protocol_version_ends_run_agent() {
    let harness = Harness::start(config());
    let (peer, _) = harness.accept();
    let frame = br#"{"version":99,"body":{"type":"rejected","reason":"upgrade"}}"#;
    peer.send_frame(frame.to_vec()).expect("send");
    harness.runtime.run_until_idle();
    assert_eq!(
        harness.agent.take(),
        Some(Err(AgentError::ProtocolVersion {
            got: 99,
            expected: PROTOCOL_VERSION,
        }))
    );
}

#[test]
fn a_malformed_frame_ends_the_session_but_not_the_agent() {
    let harness = Harness::start(config());
    let (peer, _) = harness.welcome(1, vec![]);
    peer.send_frame(b"{not json".to_vec()).expect("send");
    harness.runtime.run_until_idle();
    assert!(peer.is_closed());
    harness.runtime.advance(BACKOFF_MIN);
    assert_eq!(harness.net.connects().len(), 2);
    assert!(harness.agent.take().is_none());
}

#[test]
fn stopping_the_agent_kills_its_processes() {
    let harness = Harness::start(config());
    let (peer, _) = harness.welcome(1, vec![]);
    harness.run(&peer, "j-1", 1);
    harness.agent.abort();
    harness.runtime.run_until_idle();
    assert!(harness.launcher.running().is_empty());
    assert!(peer.is_closed());
    assert!(
        harness.runtime.live_tasks().is_empty(),
        "run tasks end with their processes"
    );
}

#[test]
fn invalid_configurations_are_refused() {
    type Breakage = fn(&mut AgentConfig);
    let cases: [(Breakage, &str); 4] = [
        (|config| config.kinds.clear(), "job kind"),
        (|config| config.slots = 0, "slot"),
        (
            |config| config.reconnect_backoff_min = Duration::from_secs(60),
            "exceeds",
        ),
        (|config| config.heartbeat_grace_intervals = 0, "grace"),
    ];
    for (break_it, expected) in cases {
        let mut broken = config();
        break_it(&mut broken);
        let harness = Harness::start(broken);
        let error = harness.agent.take().expect("ended").expect_err("invalid");
        assert!(error.to_string().contains(expected), "{error}");
        assert!(harness.net.connects().is_empty());
    }
}

#[test]
fn the_token_is_not_in_the_debug_output() {
    assert!(!format!("{:?}", config()).contains("secret"));
}

#[test]
fn same_seed_gives_the_same_backoff_delays() {
    let delays = |seed| {
        let runtime = ManualRuntime::new(seed);
        (1..12)
            .map(|failures| {
                reconnect_delay(failures, BACKOFF_MIN, BACKOFF_MAX, runtime.random_u64())
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(delays(3), delays(3));
    assert_ne!(delays(3), delays(4));
}

#[test]
fn reconnect_delay_saturates_for_huge_failure_counts_and_extreme_bounds() {
    let step = Duration::from_secs(1 << 31);
    let delay = reconnect_delay(u32::MAX, Duration::from_secs(1), Duration::MAX, u64::MAX);
    assert!(delay <= step && delay >= step / 2, "{delay:?}");
    let delay = reconnect_delay(40, Duration::MAX / 2, Duration::MAX, u64::MAX);
    assert!(delay >= Duration::MAX / 2, "{delay:?}");
    assert_eq!(
        reconnect_delay(9, BACKOFF_MIN, BACKOFF_MIN, 12_345),
        BACKOFF_MIN
    );
    assert_eq!(
        Instant::ZERO + reconnect_delay(1, BACKOFF_MIN, BACKOFF_MAX, 99),
        Instant::from_millis(1_000)
    );
}
