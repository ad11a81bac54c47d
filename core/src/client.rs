//! One client call over [`Net`]: the simulator's clients (and any tool that
//! speaks to a supervisor's client port) use it.
//!
//! A call opens a connection, sends one [`ClientCall`] frame, reads one
//! [`ClientResponse`] frame and closes. Dropping the future at any await
//! abandons the call; the supervisor may or may not have acted on it (use an
//! idempotency key to retry a submit safely).

use crate::codec::{self, CodecError};
use crate::protocol::{ClientCall, ClientRequest, ClientResponse};
use crate::runtime::{Net, NetError};

/// Why a call got no answer.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection could not be opened or broke before the answer.
    #[error("network: {0}")]
    Net(#[from] NetError),
    /// The answer did not decode.
    #[error("undecodable answer: {0}")]
    Codec(#[from] CodecError),
}

/// Send `request` with `token` to the supervisor at `addr` and return its
/// answer.
pub async fn call(
    net: &dyn Net,
    addr: &str,
    token: &str,
    request: ClientRequest,
) -> Result<ClientResponse, ClientError> {
    let mut connection = net.connect(addr).await?;
    let call = ClientCall {
        token: token.to_owned(),
        request,
    };
    connection.sender.send(codec::encode(&call))?;
    let frame = connection.receiver.recv().await;
    connection.sender.close();
    Ok(codec::decode(&frame?)?)
}
