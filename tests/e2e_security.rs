//! End to end: tokens, other users' jobs, malformed and oversized input on
//! the HTTP API and on the agent endpoint. Nothing acknowledged is lost
//! because of another client's bad input.

use std::net::TcpStream;

use faultline_core::protocol::{AgentMessage, SupervisorMessage};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::support::cluster::{
    agent_token, Cluster, Topology, ALICE, BOB, DEADLINE, HEADER_READ_TIMEOUT_MS,
};
use crate::support::http::request;

fn one_agent() -> Topology {
    Topology {
        sequential_slots: 1,
        parallel_slots: 2,
        agents: vec![("a-1", 2)],
    }
}

fn submit_body(command: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "version": 1,
        "body": { "kind": "parallel", "command": command }
    }))
    .expect("JSON")
}

#[test]
fn requests_without_a_valid_token_get_401() {
    let cluster = Cluster::start("tokens", &one_agent());
    for token in [None, Some("wrong"), Some("")] {
        for (method, path) in [
            ("GET", "/v1/jobs"),
            ("GET", "/v1/status"),
            ("POST", "/v1/jobs"),
        ] {
            let answer = request(cluster.addr(), method, path, token, &submit_body(&["true"]));
            assert_eq!(answer.status, 401, "{method} {path} with {token:?}");
            assert_eq!(answer.error_code(), "unauthorized");
        }
    }
    let output = cluster.cli("not-a-token", &["job", "list"]);
    assert_eq!(output.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no valid token"));
    let health = request(cluster.addr(), "GET", "/healthz", None, b"");
    assert_eq!(health.status, 200);
}

#[test]
fn a_user_cannot_see_or_cancel_another_users_job() {
    let cluster = Cluster::start("owners", &one_agent());
    let id = cluster.submit(ALICE, &[], &["sleep", "2"]);
    for (method, path) in [
        ("GET", format!("/v1/jobs/{id}")),
        ("POST", format!("/v1/jobs/{id}/cancel")),
    ] {
        let answer = request(cluster.addr(), method, &path, Some(BOB), b"");
        assert_eq!(answer.status, 404, "{method} {path} as bob");
        assert_eq!(answer.error_code(), "not_found");
    }
    let bobs = request(cluster.addr(), "GET", "/v1/jobs", Some(BOB), b"").json();
    assert_eq!(
        bobs["body"]["jobs"],
        serde_json::json!([]),
        "bob lists none of alice's jobs"
    );
    let output = cluster.cli(BOB, &["job", "cancel", &id]);
    assert_eq!(output.status.code(), Some(4));
    let job = cluster.wait_for_end(ALICE, &id);
    assert_eq!(
        job["status"], "completed",
        "bob's cancel did not touch it: {job}"
    );
}

#[test]
fn malformed_and_oversized_requests_are_refused_and_lose_nothing() {
    let cluster = Cluster::start("bad-input", &one_agent());
    let before = cluster.submit(ALICE, &[], &["sleep", "1"]);
    let addr = cluster.addr();
    for body in [
        &b"{"[..],
        b"null",
        br#"{"version":1,"body":{"kind":"parallel"}}"#,
        br#"{"version":9,"body":{}}"#,
    ] {
        let answer = request(addr, "POST", "/v1/jobs", Some(ALICE), body);
        assert_eq!(
            answer.status,
            400,
            "body {:?}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(answer.error_code(), "bad_request");
    }
    let huge = submit_body(&[&"x".repeat(200 * 1024)]);
    let answer = request(addr, "POST", "/v1/jobs", Some(ALICE), &huge);
    assert_eq!(answer.status, 413);
    assert_eq!(answer.error_code(), "too_large");
    let answer = request(addr, "GET", "/v1/jobs/%FF%FE", Some(ALICE), b"");
    assert!(
        answer.status == 400 || answer.status == 404,
        "status {}",
        answer.status
    );

    let job = cluster.wait_for_end(ALICE, &before);
    assert_eq!(job["status"], "completed", "{job}");
    let after = cluster.submit(ALICE, &[], &["true"]);
    assert_eq!(cluster.wait_for_end(ALICE, &after)["status"], "completed");
}

/// Whether the server closed `stream` (EOF or reset) before `deadline`.
fn closed_by_server(stream: &mut TcpStream, deadline: std::time::Duration) -> bool {
    use std::io::Read;
    stream
        .set_read_timeout(Some(deadline))
        .expect("set a read timeout");
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue, // an error response before the close is fine
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn a_client_that_never_finishes_its_headers_is_disconnected_and_others_are_served() {
    use std::io::Write;
    let cluster = Cluster::start("slow-headers", &one_agent());
    let addr = cluster.addr();
    let mut silent = TcpStream::connect(addr).expect("connect");
    let mut slow = TcpStream::connect(addr).expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: faultline\r\n")
        .expect("half a request head");
    let job = cluster.submit(ALICE, &[], &["true"]);
    assert_eq!(
        cluster.wait_for_end(ALICE, &job)["status"],
        "completed",
        "served while two clients hold connections open"
    );
    for (name, stream) in [("silent", &mut silent), ("slow", &mut slow)] {
        assert!(
            closed_by_server(stream, DEADLINE),
            "the {name} client still holds its connection after {DEADLINE:?} \
             (header_read_timeout is {HEADER_READ_TIMEOUT_MS} ms)"
        );
    }
    let answer = request(addr, "GET", "/healthz", None, b"");
    assert_eq!(answer.status, 200, "the server still answers");
}

type Socket = tungstenite::WebSocket<TcpStream>;

fn dial(cluster: &Cluster) -> Socket {
    let stream = TcpStream::connect(cluster.addr()).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("timeout");
    let url = format!("ws://{}/v1/agent", cluster.addr());
    tungstenite::client(url.as_str(), stream)
        .expect("WebSocket handshake")
        .0
}

fn hello(agent: &str, token: &str) -> Vec<u8> {
    faultline_core::codec::encode(&AgentMessage::Hello {
        agent: faultline_core::protocol::AgentId(agent.into()),
        token: token.into(),
        kinds: vec![faultline_core::protocol::JobKind::Parallel],
        slots: 1,
        running: vec![],
    })
}

/// Read until the supervisor closes; the messages it sent first.
fn read_until_closed(socket: &mut Socket) -> Vec<SupervisorMessage> {
    let mut messages = Vec::new();
    for _ in 0..100 {
        match socket.read() {
            Ok(Message::Binary(frame)) => {
                messages.push(faultline_core::codec::decode(&frame).expect("a supervisor message"));
            }
            Ok(Message::Text(text)) => {
                messages.push(
                    faultline_core::codec::decode(text.as_bytes()).expect("a supervisor message"),
                );
            }
            Ok(Message::Close(_)) | Err(_) => return messages,
            Ok(_) => {}
        }
    }
    panic!("the supervisor kept the connection open");
}

#[test]
fn agents_with_a_wrong_token_or_unknown_id_are_refused() {
    let cluster = Cluster::start("agent-auth", &one_agent());
    for (agent, token) in [
        ("a-1", "wrong".to_owned()),
        ("a-9", agent_token("a-1")),
        ("a-9", agent_token("a-9")),
    ] {
        let mut socket = dial(&cluster);
        socket
            .send(Message::Binary(hello(agent, &token).into()))
            .expect("send hello");
        let messages = read_until_closed(&mut socket);
        assert!(
            matches!(messages.as_slice(), [SupervisorMessage::Rejected { .. }]),
            "{agent} with {token}: {messages:?}"
        );
    }
    let entry = cluster.agent("a-1").expect("the real a-1 is listed");
    assert_eq!(
        entry["link"], "connected",
        "impostors did not displace it: {entry}"
    );
    assert!(cluster.agent("a-9").is_none());
}

#[test]
fn malformed_and_oversized_agent_frames_close_the_connection_and_lose_nothing() {
    let cluster = Cluster::start("agent-frames", &one_agent());
    let running = cluster.submit(ALICE, &[], &["sleep", "1"]);
    let mut garbage = dial(&cluster);
    garbage
        .send(Message::Binary(b"\xff{ not a frame".to_vec().into()))
        .expect("send garbage");
    let messages = read_until_closed(&mut garbage);
    assert!(
        messages
            .iter()
            .all(|message| matches!(message, SupervisorMessage::Rejected { .. })),
        "{messages:?}"
    );

    let mut oversized = dial(&cluster);
    let frame = vec![b' '; faultline_core::runtime::MAX_FRAME_BYTES + 1];
    let _ = oversized.send(Message::Binary(frame.into()));
    let _ = read_until_closed(&mut oversized);

    let entry = cluster.agent("a-1").expect("a-1 listed");
    assert_eq!(entry["link"], "connected", "{entry}");
    assert_eq!(cluster.wait_for_end(ALICE, &running)["status"], "completed");
}
