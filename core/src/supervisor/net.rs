//! Accept loops over [`Net`]: agents on one port, clients on another (the
//! simulator's topology; the tokio shell serves HTTP and WebSocket itself
//! and calls [`Supervisor::serve_agent`] and [`Supervisor::handle_client`]).
//!
//! A client connection carries exactly one call: one [`ClientCall`] frame
//! in, one [`ClientResponse`] frame out. A frame that does not decode is
//! answered `BadRequest` (or `TooLarge`), an unknown token `Unauthorized`;
//! the connection is closed after the answer either way. A client that
//! closes its connection before the answer drops the request's handler at
//! its current await, as an HTTP server does.

use std::sync::Arc;

use futures::FutureExt;

use super::Supervisor;
use crate::codec::{self, CodecError};
use crate::protocol::{ClientCall, ClientRequest, ClientResponse, ErrorCode};
use crate::runtime::{Connection, FrameReceiver, Net};

/// Releases a client connection's place when its task ends or is dropped.
struct ClientSlot {
    supervisor: Supervisor,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let mut state = self.supervisor.lock();
        state.client_connections = state.client_connections.saturating_sub(1);
    }
}

impl Supervisor {
    /// Listen for agents on `agent_port` and clients on `client_port` until
    /// the supervisor shuts down. Each connection is served by its own task
    /// (`agent-conn <peer>`, `client-conn <peer>`).
    pub async fn serve_net(&self, net: Arc<dyn Net>, agent_port: u16, client_port: u16) {
        let listeners = net
            .listen(agent_port)
            .and_then(|agents| Ok((agents, net.listen(client_port)?)));
        let (mut agents, mut clients) = match listeners {
            Ok(listeners) => listeners,
            Err(error) => {
                tracing::error!(%error, agent_port, client_port, "cannot listen");
                return;
            }
        };
        tracing::info!(agent_port, client_port, "listening");
        loop {
            let stopped = self.inner.stopped.notified().fuse();
            if self.lock().shutting_down {
                return;
            }
            let agent = agents.accept().fuse();
            let client = clients.accept().fuse();
            futures::pin_mut!(stopped, agent, client);
            let (is_agent, accepted) = futures::select_biased! {
                () = stopped => return,
                connection = agent => (true, connection),
                connection = client => (false, connection),
            };
            let connection = match accepted {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::error!(%error, is_agent, "accept failed; no longer listening");
                    return;
                }
            };
            let supervisor = self.clone();
            let peer = connection.peer.clone();
            if is_agent {
                let future = async move { supervisor.serve_agent(connection).await };
                drop(self.spawn(&format!("agent-conn {peer}"), Box::pin(future)));
            } else {
                let future = async move { supervisor.serve_client_connection(connection).await };
                drop(self.spawn(&format!("client-conn {peer}"), Box::pin(future)));
            }
        }
    }

    /// Answer the one call a client connection carries.
    async fn serve_client_connection(&self, connection: Connection) {
        let Connection {
            sender,
            mut receiver,
            peer,
        } = connection;
        let admitted = {
            let mut state = self.lock();
            let admitted = state.client_connections < self.inner.config.max_client_connections;
            if admitted {
                state.client_connections += 1;
            }
            admitted
        };
        if !admitted {
            let busy = ClientResponse::Error {
                code: ErrorCode::Unavailable,
                message: "too many client connections".to_owned(),
            };
            if sender.send(codec::encode(&busy)).is_err() {
                tracing::debug!(%peer, "client left before the refusal");
            }
            return sender.close();
        }
        let _slot = ClientSlot {
            supervisor: self.clone(),
        };
        let timeout = self.inner.config.agent_hello_timeout;
        let frame = {
            let sleep = self.runtime().sleep(timeout).fuse();
            let frame = receiver.recv().fuse();
            futures::pin_mut!(sleep, frame);
            futures::select_biased! {
                frame = frame => frame,
                () = sleep => {
                    tracing::info!(%peer, "client sent no call in time");
                    return sender.close();
                }
            }
        };
        let Ok(frame) = frame else {
            return;
        };
        let response = match codec::decode::<ClientCall>(&frame) {
            Ok(call) => match self.authenticate_user(&call.token) {
                Some(user) => match self
                    .answer_unless_left(&user, call.request, &mut receiver)
                    .await
                {
                    Some(response) => response,
                    None => return,
                },
                None => refusal(ErrorCode::Unauthorized, "no valid token".to_owned()),
            },
            Err(error @ CodecError::TooLarge { .. }) => {
                refusal(ErrorCode::TooLarge, error.to_string())
            }
            Err(error) => {
                tracing::info!(%peer, %error, "malformed client call");
                refusal(ErrorCode::BadRequest, error.to_string())
            }
        };
        if let Err(error) = sender.send(codec::encode(&response)) {
            tracing::info!(%peer, %error, "client left before the answer");
        }
        sender.close();
    }
}

impl Supervisor {
    /// Serve `request`, unless the client goes away first: then the
    /// handler's future is dropped at whatever await it is suspended, as an
    /// HTTP server drops the handler of a request whose client disconnected.
    /// `None` if it was dropped.
    async fn answer_unless_left(
        &self,
        user: &str,
        request: ClientRequest,
        receiver: &mut FrameReceiver,
    ) -> Option<ClientResponse> {
        let submit = matches!(request, ClientRequest::Submit(_));
        let handler = self.handle_client(user, request).fuse();
        let left = client_gone(receiver).fuse();
        futures::pin_mut!(handler, left);
        futures::select_biased! {
            response = handler => Some(response),
            _ = left => {
                let probe = if submit {
                    "submit-dropped-mid-await"
                } else {
                    "request-dropped-mid-await"
                };
                tracing::info!(probe, user, "client left mid-request: handler dropped");
                None
            }
        }
    }
}

/// Completes when the client's connection ends. Frames after the call (a
/// duplicated frame) are ignored, up to a bound past which the client is
/// treated as gone.
async fn client_gone(receiver: &mut FrameReceiver) {
    const EXTRA_FRAMES_MAX: u32 = 16;
    for _ in 0..EXTRA_FRAMES_MAX {
        if receiver.recv().await.is_err() {
            return;
        }
        tracing::debug!("extra frame after the call ignored");
    }
}

fn refusal(code: ErrorCode, message: String) -> ClientResponse {
    ClientResponse::Error { code, message }
}
