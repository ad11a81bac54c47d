//! The one codec: JSON inside a versioned [`Envelope`].
//!
//! Used identically by the simulator's network and by the HTTP/WebSocket
//! transport, so a malformed frame takes the same error path everywhere.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::protocol::{Envelope, PROTOCOL_VERSION};
use crate::runtime::MAX_FRAME_BYTES;

/// Why a frame could not be decoded.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum CodecError {
    /// Larger than [`MAX_FRAME_BYTES`].
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Frame size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not valid JSON, or not a message of the expected type.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A message of another protocol version.
    #[error("protocol version {got} is not supported (this build speaks {expected})")]
    Version {
        /// The peer's version.
        got: u32,
        /// Ours.
        expected: u32,
    },
}

/// Encode `body` in an envelope of the current version.
pub fn encode<T: Serialize>(body: &T) -> Vec<u8> {
    let envelope = Envelope {
        version: PROTOCOL_VERSION,
        body,
    };
    serde_json::to_vec(&envelope).expect("protocol types always serialize to JSON")
}

/// Decode a frame into a `T`, checking size and version.
pub fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, CodecError> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(CodecError::TooLarge {
            size: frame.len(),
            limit: MAX_FRAME_BYTES,
        });
    }
    #[derive(serde::Deserialize)]
    struct VersionOnly {
        version: u32,
    }
    let head: VersionOnly =
        serde_json::from_slice(frame).map_err(|error| CodecError::Malformed(error.to_string()))?;
    if head.version != PROTOCOL_VERSION {
        return Err(CodecError::Version {
            got: head.version,
            expected: PROTOCOL_VERSION,
        });
    }
    let envelope: Envelope<T> =
        serde_json::from_slice(frame).map_err(|error| CodecError::Malformed(error.to_string()))?;
    Ok(envelope.body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{AgentMessage, ClientRequest, JobId};

    #[test]
    fn round_trips_a_message() {
        let message = ClientRequest::Cancel {
            job: JobId("j-7".into()),
        };
        let decoded: ClientRequest = decode(&encode(&message)).expect("round trip");
        assert_eq!(decoded, message);
    }

    #[test]
    fn rejects_another_version() {
        let frame = br#"{"version":99,"body":{"type":"heartbeat","seq":1}}"#;
        let error = decode::<AgentMessage>(frame).expect_err("version 99 is refused");
        assert_eq!(
            error,
            CodecError::Version {
                got: 99,
                expected: PROTOCOL_VERSION
            }
        );
    }

    #[test]
    fn rejects_garbage_and_wrong_shapes() {
        assert!(matches!(
            decode::<AgentMessage>(b"\xff{"),
            Err(CodecError::Malformed(_))
        ));
        let frame = br#"{"version":1,"body":{"type":"no_such_message"}}"#;
        assert!(matches!(
            decode::<AgentMessage>(frame),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn rejects_oversized_frames_before_parsing() {
        let frame = vec![b' '; MAX_FRAME_BYTES + 1];
        assert!(matches!(
            decode::<AgentMessage>(&frame),
            Err(CodecError::TooLarge { .. })
        ));
    }
}
