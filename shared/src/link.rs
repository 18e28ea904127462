//! The QUIC batch protocol between edges and aggregators, as bytes: one
//! bidirectional stream per batch. The edge writes an authentication head,
//! then the batch frame, and finishes its side; the aggregator answers with
//! a status byte and, on success, the acknowledgement frame. Both ends and
//! their tests share these definitions; the sockets live in the hosts.
//!
//! Request head: `0` (authenticated by the client certificate the handshake
//! verified) or `1`, a u16 length (little endian) and a pre-shared token.
//! Response status: `0` then the ack frame; `1` unauthorized; `2` bad
//! request and a message; `3` busy and a u32 retry-after in milliseconds;
//! `4` failed and a message.

use crate::wire::{Batch, BatchAck, WireError, WireLimits};

/// The ALPN protocol of batch ingest.
pub const ALPN: &[u8] = b"sluice/1";

/// The largest UDP payload either end announces and searches for with path MTU
/// discovery. Links start at QUIC's 1,200 bytes and grow to what the path
/// carries, up to this: 1,452 on Ethernet, all of it on jumbo frames and on
/// loopback, where a batch then goes in a fifth of the packets (each an
/// encryption, a share of a system call and, in time, an ACK). Not more: quinn
/// sends up to ten packets in one segmentation-offload write, whose total the
/// kernel caps at 64 KiB, and a write over it fails and loses its packets.
pub const MAX_UDP_PAYLOAD: u16 = 6_500;

/// Response status bytes.
pub mod status {
    /// The acknowledgement frame follows.
    pub const OK: u8 = 0;
    /// Neither a verified client certificate nor the right token.
    pub const UNAUTHORIZED: u8 = 1;
    /// The request does not decode; a message follows.
    pub const BAD_REQUEST: u8 = 2;
    /// The sink is busy; a u32 retry-after in milliseconds follows.
    pub const BUSY: u8 = 3;
    /// The batch was not handled; a message follows.
    pub const FAILED: u8 = 4;
}

/// The head of a batch request: by certificate, or with `token`.
pub fn request_head(token: Option<&str>) -> Result<Vec<u8>, LinkError> {
    let Some(token) = token else {
        return Ok(vec![0]);
    };
    let len = u16::try_from(token.len()).map_err(|_| LinkError::TokenTooLong(token.len()))?;
    let mut head = Vec::with_capacity(3 + token.len());
    head.push(1);
    head.extend_from_slice(&len.to_le_bytes());
    head.extend_from_slice(token.as_bytes());
    Ok(head)
}

/// How a request says who sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestAuth<'r> {
    /// By the client certificate the handshake verified.
    Certificate,
    /// By this token, which the host compares with its own.
    Token(&'r [u8]),
}

/// Splits a request into its authentication and the batch frame after it;
/// `None` when its head is not one of the two kinds.
pub fn split_request(request: &[u8]) -> Option<(RequestAuth<'_>, &[u8])> {
    match request.split_first()? {
        (0, frame) => Some((RequestAuth::Certificate, frame)),
        (1, [a, b, rest @ ..]) => {
            let len = usize::from(u16::from_le_bytes([*a, *b]));
            (rest.len() >= len).then(|| (RequestAuth::Token(&rest[..len]), &rest[len..]))
        }
        _ => None,
    }
}

/// A response with `status` and `body`.
pub fn response(status: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(status);
    out.extend_from_slice(body);
    out
}

/// The answer to one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkReply {
    /// Acknowledged.
    Ack(BatchAck),
    /// Refused: neither certificate nor token.
    Unauthorized,
    /// Refused: the frame does not decode.
    BadRequest(String),
    /// The sink is busy: retry after this many milliseconds.
    Busy(u32),
    /// Not handled.
    Failed(String),
}

/// A request or response that cannot be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Tokens travel behind a u16 length.
    #[error("the edge token is {0} bytes; at most 65535 fit")]
    TokenTooLong(usize),
    /// The acknowledgement frame is bad.
    #[error("the aggregator's acknowledgement does not decode: {0}")]
    Ack(#[from] WireError),
}

impl LinkReply {
    /// Reads the aggregator's `answer` to `batch`.
    pub fn decode(answer: &[u8], batch: &Batch, limits: &WireLimits) -> Result<Self, LinkError> {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Ok(match answer.split_first() {
            Some((&status::OK, frame)) => {
                LinkReply::Ack(BatchAck::decode_for(frame, batch, limits)?)
            }
            Some((&status::UNAUTHORIZED, _)) => LinkReply::Unauthorized,
            Some((&status::BAD_REQUEST, m)) => LinkReply::BadRequest(text(m)),
            Some((&status::BUSY, [a, b, c, d, ..])) => {
                LinkReply::Busy(u32::from_le_bytes([*a, *b, *c, *d]))
            }
            Some((_, m)) => LinkReply::Failed(text(m)),
            None => LinkReply::Failed("the aggregator closed the stream without an answer".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_answers_round_trip() {
        assert_eq!(request_head(None).unwrap(), vec![0]);
        assert_eq!(request_head(Some("ab")).unwrap(), vec![1, 2, 0, b'a', b'b']);
        let mut request = request_head(Some("ab")).unwrap();
        request.extend_from_slice(b"frame");
        assert_eq!(
            split_request(&request),
            Some((RequestAuth::Token(b"ab"), &b"frame"[..]))
        );
        assert_eq!(
            split_request(&[0, 9]),
            Some((RequestAuth::Certificate, &[9u8][..]))
        );
        for bad in [&[][..], &[2, 0], &[1, 5, 0, b'a'], &[1, 1]] {
            assert_eq!(split_request(bad), None, "{bad:?}");
        }
        assert!(matches!(
            request_head(Some(&"x".repeat(70_000))),
            Err(LinkError::TokenTooLong(70_000))
        ));
        let batch = Batch {
            id: [7; 16],
            events: Vec::new(),
            errors: Vec::new(),
        };
        let limits = WireLimits::default();
        let ack = BatchAck {
            batch_id: [7; 16],
            verdicts: Vec::new(),
        };
        assert_eq!(
            LinkReply::decode(&response(status::OK, &ack.encode()), &batch, &limits).unwrap(),
            LinkReply::Ack(ack)
        );
        assert_eq!(
            LinkReply::decode(
                &response(status::BUSY, &250u32.to_le_bytes()),
                &batch,
                &limits
            )
            .unwrap(),
            LinkReply::Busy(250)
        );
        assert_eq!(
            LinkReply::decode(&response(status::FAILED, b"disk"), &batch, &limits).unwrap(),
            LinkReply::Failed("disk".into())
        );
        assert!(matches!(
            LinkReply::decode(&[], &batch, &limits).unwrap(),
            LinkReply::Failed(_)
        ));
        // An ack for another batch is refused.
        let other = BatchAck {
            batch_id: [8; 16],
            verdicts: Vec::new(),
        };
        assert!(
            LinkReply::decode(&response(status::OK, &other.encode()), &batch, &limits).is_err()
        );
    }
}
