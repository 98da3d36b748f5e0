//! The wire format of request-response: length-prefixed frames with explicit
//! size limits, read in chunks so that a peer declaring a huge length cannot
//! make the node allocate more than about twice what it actually sent (and
//! never more than the declared length, itself at most the limit).
//!
//! ```text
//!   request  = u16 name_len | name (UTF-8, <= 256 bytes) | u64 len | payload
//!   response = u8 status (0 ok, 1 error) | u64 len | body   (error body: UTF-8, <= 1 KiB)
//! ```
//!
//! All integers are big-endian. A length above the limit is refused before
//! any of the payload is read; the stream is then dropped, which the sender
//! sees as a failed request. The same codec serves the certificate exchange
//! (small limits) and direct transfers (large limits).

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

/// Longest protocol name carried in a request, in bytes.
pub const NAME_BYTES_MAX: usize = 256;
/// Longest error text carried in a response, in bytes.
pub const ERROR_BYTES_MAX: usize = 1024;
/// Bytes read (and allocated) at a time while receiving a payload.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// A request: the application protocol name and its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireRequest {
    /// Application protocol name (for example `"model/fetch"`).
    pub protocol: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

/// A response: the payload, or the remote's error text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireResponse(pub Result<Vec<u8>, String>);

/// Request-response codec with explicit request and response size limits.
#[derive(Clone, Copy, Debug)]
pub struct FrameCodec {
    /// Largest request payload accepted.
    pub request_bytes_max: usize,
    /// Largest response body accepted.
    pub response_bytes_max: usize,
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Reads exactly `len` bytes, growing the buffer one chunk at a time.
async fn read_body<T: AsyncRead + Unpin>(io: &mut T, len: usize) -> io::Result<Vec<u8>> {
    let mut body = Vec::with_capacity(len.min(CHUNK_BYTES));
    while body.len() < len {
        let start = body.len();
        let step = (len - start).min(CHUNK_BYTES);
        if body.capacity() < start + step {
            // Double (amortised copies) but never past the declared length.
            let target = body.capacity().saturating_mul(2).clamp(start + step, len);
            body.reserve_exact(target - start);
        }
        body.resize(start + step, 0);
        io.read_exact(&mut body[start..]).await?;
    }
    debug_assert_eq!(body.len(), len);
    Ok(body)
}

async fn read_u64<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    io.read_exact(&mut bytes).await?;
    Ok(u64::from_be_bytes(bytes))
}

/// Reads a length and checks it against `max` before anything else is read.
async fn read_len<T: AsyncRead + Unpin>(io: &mut T, max: usize, what: &str) -> io::Result<usize> {
    let len = read_u64(io).await?;
    match usize::try_from(len) {
        Ok(len) if len <= max => Ok(len),
        _ => Err(invalid(format!(
            "{what} of {len} bytes exceeds the limit of {max}"
        ))),
    }
}

fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

impl FrameCodec {
    /// Reads one request.
    pub async fn read_request_from<T: AsyncRead + Unpin>(
        &self,
        io: &mut T,
    ) -> io::Result<WireRequest> {
        let mut name_len = [0u8; 2];
        io.read_exact(&mut name_len).await?;
        let name_len = usize::from(u16::from_be_bytes(name_len));
        if name_len > NAME_BYTES_MAX {
            return Err(invalid(format!(
                "protocol name of {name_len} bytes exceeds {NAME_BYTES_MAX}"
            )));
        }
        let name = read_body(io, name_len).await?;
        let protocol =
            String::from_utf8(name).map_err(|_| invalid("protocol name is not UTF-8".into()))?;
        let len = read_len(io, self.request_bytes_max, "request").await?;
        let payload = read_body(io, len).await?;
        Ok(WireRequest { protocol, payload })
    }

    /// Reads one response.
    pub async fn read_response_from<T: AsyncRead + Unpin>(
        &self,
        io: &mut T,
    ) -> io::Result<WireResponse> {
        let mut status = [0u8; 1];
        io.read_exact(&mut status).await?;
        match status[0] {
            0 => {
                let len = read_len(io, self.response_bytes_max, "response").await?;
                Ok(WireResponse(Ok(read_body(io, len).await?)))
            }
            1 => {
                let len = read_len(io, ERROR_BYTES_MAX, "error text").await?;
                let text = read_body(io, len).await?;
                Ok(WireResponse(Err(
                    String::from_utf8_lossy(&text).into_owned()
                )))
            }
            other => Err(invalid(format!("unknown response status {other}"))),
        }
    }

    /// Writes one request; refuses one over the limit before writing anything.
    pub async fn write_request_to<T: AsyncWrite + Unpin>(
        &self,
        io: &mut T,
        request: &WireRequest,
    ) -> io::Result<()> {
        let name = request.protocol.as_bytes();
        let name_len = u16::try_from(name.len())
            .ok()
            .filter(|&n| usize::from(n) <= NAME_BYTES_MAX)
            .ok_or_else(|| invalid(format!("protocol name exceeds {NAME_BYTES_MAX} bytes")))?;
        if request.payload.len() > self.request_bytes_max {
            return Err(invalid(format!(
                "request of {} bytes exceeds the limit of {}",
                request.payload.len(),
                self.request_bytes_max
            )));
        }
        io.write_all(&name_len.to_be_bytes()).await?;
        io.write_all(name).await?;
        io.write_all(&len_u64(request.payload.len()).to_be_bytes())
            .await?;
        io.write_all(&request.payload).await?;
        io.flush().await
    }

    /// Writes one response; a body over the limit is replaced by an error.
    pub async fn write_response_to<T: AsyncWrite + Unpin>(
        &self,
        io: &mut T,
        response: &WireResponse,
    ) -> io::Result<()> {
        let too_large;
        let (status, body): (u8, &[u8]) = match &response.0 {
            Ok(body) if body.len() <= self.response_bytes_max => (0, body),
            Ok(body) => {
                too_large = format!(
                    "response of {} bytes exceeds the limit of {}",
                    body.len(),
                    self.response_bytes_max
                );
                (1, too_large.as_bytes())
            }
            Err(text) => (1, truncate_utf8(text, ERROR_BYTES_MAX).as_bytes()),
        };
        io.write_all(&[status]).await?;
        io.write_all(&len_u64(body.len()).to_be_bytes()).await?;
        io.write_all(body).await?;
        io.flush().await
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub fn truncate_utf8(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl libp2p::request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = WireRequest;
    type Response = WireResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<WireRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.read_request_from(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<WireResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.read_response_from(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: WireRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.write_request_to(io, &request).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: WireResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.write_response_to(io, &response).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use futures::executor::block_on;
    use futures::io::Cursor;

    use super::*;

    const CODEC: FrameCodec = FrameCodec {
        request_bytes_max: 1_000_000,
        response_bytes_max: 1_000_000,
    };

    #[test]
    fn requests_and_responses_round_trip() {
        let request = WireRequest {
            protocol: "model/fetch".into(),
            payload: (0..600_000u32).map(|i| i as u8).collect(),
        };
        let mut wire = Cursor::new(Vec::new());
        block_on(CODEC.write_request_to(&mut wire, &request)).unwrap();
        wire.set_position(0);
        assert_eq!(
            block_on(CODEC.read_request_from(&mut wire)).unwrap(),
            request
        );
        for response in [
            WireResponse(Ok(vec![1, 2, 3])),
            WireResponse(Err("no".into())),
        ] {
            let mut wire = Cursor::new(Vec::new());
            block_on(CODEC.write_response_to(&mut wire, &response)).unwrap();
            wire.set_position(0);
            assert_eq!(
                block_on(CODEC.read_response_from(&mut wire)).unwrap(),
                response
            );
        }
    }

    #[test]
    fn a_declared_length_over_the_limit_is_refused_before_reading() {
        let mut bytes = vec![0, 1, b'x'];
        bytes.extend_from_slice(&u64::MAX.to_be_bytes());
        let error = block_on(CODEC.read_request_from(&mut Cursor::new(bytes))).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_truncated_body_is_an_error_not_a_hang() {
        let mut bytes = vec![0, 0];
        bytes.extend_from_slice(&500_000u64.to_be_bytes());
        bytes.extend_from_slice(&[7; 1000]);
        let error = block_on(CODEC.read_request_from(&mut Cursor::new(bytes))).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn an_oversized_request_is_not_written() {
        let request = WireRequest {
            protocol: "x".into(),
            payload: vec![0; 1_000_001],
        };
        let mut wire = Cursor::new(Vec::new());
        assert!(block_on(CODEC.write_request_to(&mut wire, &request)).is_err());
        assert!(wire.get_ref().is_empty());
    }

    #[test]
    fn error_text_is_cut_on_a_character_boundary() {
        let text = "é".repeat(ERROR_BYTES_MAX);
        assert!(truncate_utf8(&text, ERROR_BYTES_MAX).len() <= ERROR_BYTES_MAX);
        assert_eq!(truncate_utf8("abc", 2), "ab");
    }
}
