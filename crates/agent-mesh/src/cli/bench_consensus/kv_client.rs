//! A minimal HTTP/1.1 keep-alive client for the consensus benchmark's
//! `POST /v1/kv` writes.
//!
//! The benchmark times one durable write per request, so the client should
//! add as little as it can to that time: one connection per client, one
//! `write` for the request and a read straight into a reusable buffer, in
//! the calling task. A general client (URL parsing, header maps, a pool and
//! a connection task it hands every request to) cost the single-client
//! level tens of microseconds per request on top of the commit. Only what the
//! node's API answers is understood: a response with `content-length`;
//! anything else is an error, never a guess.

use std::io::Write;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response (head and body) the client accepts.
const RESPONSE_BYTES_MAX: usize = 64 * 1024;
/// Most header lines parsed in a response.
const HEADERS_MAX: usize = 32;

/// What went wrong with one request.
#[derive(Debug, thiserror::Error)]
pub enum KvClientError {
    /// The connection failed or closed; reconnecting may help.
    #[error("connection to the node failed: {0}")]
    Io(#[from] std::io::Error),
    /// The node's answer was not a response this client understands.
    #[error("malformed response from the node: {0}")]
    Malformed(String),
}

/// One keep-alive connection that sends `POST /v1/kv` with a bearer token.
pub struct KvClient {
    stream: TcpStream,
    /// Everything of the request up to and including `content-length: `.
    head_prefix: Vec<u8>,
    request: Vec<u8>,
    response: Vec<u8>,
}

impl KvClient {
    /// Connects to the node's API at `addr`, authenticating with `token`.
    pub async fn connect(addr: SocketAddr, token: &str) -> Result<Self, KvClientError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let head_prefix = format!(
            "POST /v1/kv HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\
             content-type: application/json\r\ncontent-length: "
        )
        .into_bytes();
        Ok(Self {
            stream,
            head_prefix,
            request: Vec::new(),
            response: Vec::with_capacity(4096),
        })
    }

    /// Sends one write with the JSON `body` and returns the response status.
    pub async fn put(&mut self, body: &[u8]) -> Result<u16, KvClientError> {
        self.request.clear();
        self.request.extend_from_slice(&self.head_prefix);
        write!(self.request, "{}\r\n\r\n", body.len())?;
        self.request.extend_from_slice(body);
        self.stream.write_all(&self.request).await?;
        self.read_response().await
    }

    /// Reads one whole response and returns its status (the node sends
    /// nothing after it: one request is in flight at a time).
    async fn read_response(&mut self) -> Result<u16, KvClientError> {
        self.response.clear();
        loop {
            if let Some((status, total)) = parse_head(&self.response)? {
                while self.response.len() < total {
                    self.read_more().await?;
                }
                return Ok(status);
            }
            self.read_more().await?;
        }
    }

    async fn read_more(&mut self) -> Result<(), KvClientError> {
        if self.response.len() >= RESPONSE_BYTES_MAX {
            return Err(KvClientError::Malformed(format!(
                "response over {RESPONSE_BYTES_MAX} bytes"
            )));
        }
        if self.response.capacity() == self.response.len() {
            self.response.reserve(4096);
        }
        let n = self.stream.read_buf(&mut self.response).await?;
        if n == 0 {
            return Err(KvClientError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the node closed the connection",
            )));
        }
        Ok(())
    }
}

/// The status and total length (head and body) of the response at the start
/// of `bytes`, or `None` while its head is incomplete.
fn parse_head(bytes: &[u8]) -> Result<Option<(u16, usize)>, KvClientError> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(KvClientError::Malformed(e.to_string())),
    };
    let status = response
        .code
        .ok_or_else(|| KvClientError::Malformed("no status code".into()))?;
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .ok_or_else(|| KvClientError::Malformed("no content-length".into()))?;
    let body_len: usize = std::str::from_utf8(length.value)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| KvClientError::Malformed("bad content-length".into()))?;
    let total = head_len.saturating_add(body_len);
    if total > RESPONSE_BYTES_MAX {
        return Err(KvClientError::Malformed(format!(
            "response of {total} bytes, over {RESPONSE_BYTES_MAX}"
        )));
    }
    Ok(Some((status, total)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_complete_head_gives_status_and_length() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        let (status, total) = parse_head(r).unwrap().unwrap();
        assert_eq!(status, 200);
        assert_eq!(total, r.len());
    }

    #[test]
    fn a_partial_head_waits_for_more() {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-le")
            .unwrap()
            .is_none());
    }

    #[test]
    fn responses_without_length_or_too_large_are_refused() {
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(matches!(
            parse_head(chunked),
            Err(KvClientError::Malformed(_))
        ));
        let huge = b"HTTP/1.1 200 OK\r\ncontent-length: 999999999\r\n\r\n";
        assert!(matches!(parse_head(huge), Err(KvClientError::Malformed(_))));
        assert!(matches!(
            parse_head(b"NOT HTTP\r\n\r\n"),
            Err(KvClientError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn puts_over_one_connection_read_each_response() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            for status in ["200 OK", "503 Service Unavailable"] {
                let mut buf = [0u8; 4096];
                // One request per read is enough for this test's small writes.
                let n = s.read(&mut buf).await.unwrap();
                seen.push(String::from_utf8_lossy(&buf[..n]).to_string());
                let body = "{\"ok\":1}";
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(reply.as_bytes()).await.unwrap();
            }
            seen
        });
        let mut client = KvClient::connect(addr, "tok").await.unwrap();
        assert_eq!(client.put(br#"{"key":"a"}"#).await.unwrap(), 200);
        assert_eq!(client.put(br#"{"key":"b"}"#).await.unwrap(), 503);
        let seen = server.await.unwrap();
        assert!(seen[0].starts_with("POST /v1/kv HTTP/1.1\r\n"));
        assert!(seen[0].contains("authorization: Bearer tok\r\n"));
        assert!(seen[1].ends_with("content-length: 11\r\n\r\n{\"key\":\"b\"}"));
        assert!(
            client.put(b"{}").await.is_err(),
            "closed connection is an error"
        );
    }
}
