//! The certificate exchange (`/agent-mesh/cert/1`): the first thing two
//! connected nodes do. The dialer sends its mesh name and certificate as a
//! request; the listener answers with its own. Each side feeds what it
//! receives to [`crate::admission::Admission`].
//!
//! ```text
//!   message = u16 mesh_len | mesh name (UTF-8, <= 256 bytes) | certificate DER (rest, <= 16 KiB)
//! ```

use libp2p::StreamProtocol;

use crate::admission::CERT_BYTES_MAX;
use crate::codec::{FrameCodec, NAME_BYTES_MAX};

/// The protocol id of the certificate exchange.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/agent-mesh/cert/1");
/// The request name the exchange uses inside its frames.
pub const REQUEST_NAME: &str = "cert";
/// Largest encoded certificate message.
pub const MESSAGE_BYTES_MAX: usize = 2 + NAME_BYTES_MAX + CERT_BYTES_MAX;

/// The codec of the exchange: small limits, so a peer cannot make the node
/// read more than a certificate before it is admitted.
pub const CODEC: FrameCodec = FrameCodec {
    request_bytes_max: MESSAGE_BYTES_MAX,
    response_bytes_max: MESSAGE_BYTES_MAX,
};

/// A node's credentials as sent to a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertMessage {
    /// The mesh the sender belongs to.
    pub mesh_id: String,
    /// The sender's certificate (DER).
    pub cert_der: Vec<u8>,
}

/// Why a certificate message could not be decoded. Not retryable: the bytes are wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertMessageError {
    /// Shorter than its own length fields.
    #[error("certificate message truncated")]
    Truncated,
    /// The mesh name is too long or not UTF-8.
    #[error("certificate message has an invalid mesh name")]
    BadMeshName,
    /// Larger than [`MESSAGE_BYTES_MAX`].
    #[error("certificate message of {0} bytes exceeds {MESSAGE_BYTES_MAX}")]
    TooLarge(usize),
}

impl CertMessage {
    /// The wire bytes. Fails if the mesh name or certificate exceed their limits.
    pub fn encode(&self) -> Result<Vec<u8>, CertMessageError> {
        let name = self.mesh_id.as_bytes();
        let name_len = u16::try_from(name.len())
            .ok()
            .filter(|&n| usize::from(n) <= NAME_BYTES_MAX)
            .ok_or(CertMessageError::BadMeshName)?;
        let len = 2 + name.len() + self.cert_der.len();
        if len > MESSAGE_BYTES_MAX {
            return Err(CertMessageError::TooLarge(len));
        }
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&name_len.to_be_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&self.cert_der);
        Ok(out)
    }

    /// Parses wire bytes; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, CertMessageError> {
        if bytes.len() > MESSAGE_BYTES_MAX {
            return Err(CertMessageError::TooLarge(bytes.len()));
        }
        let (len, rest) = bytes
            .split_at_checked(2)
            .ok_or(CertMessageError::Truncated)?;
        let name_len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if name_len > NAME_BYTES_MAX {
            return Err(CertMessageError::BadMeshName);
        }
        let (name, cert) = rest
            .split_at_checked(name_len)
            .ok_or(CertMessageError::Truncated)?;
        let mesh_id =
            String::from_utf8(name.to_vec()).map_err(|_| CertMessageError::BadMeshName)?;
        Ok(Self {
            mesh_id,
            cert_der: cert.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn round_trips() {
        let message = CertMessage {
            mesh_id: "mesh-a".into(),
            cert_der: vec![0x30, 0x82, 1, 2, 3],
        };
        assert_eq!(
            CertMessage::decode(&message.encode().unwrap()).unwrap(),
            message
        );
    }

    #[test]
    fn oversized_parts_are_refused() {
        let long_name = CertMessage {
            mesh_id: "m".repeat(NAME_BYTES_MAX + 1),
            cert_der: Vec::new(),
        };
        assert_eq!(long_name.encode(), Err(CertMessageError::BadMeshName));
        let big_cert = CertMessage {
            mesh_id: "m".into(),
            cert_der: vec![0; CERT_BYTES_MAX + NAME_BYTES_MAX],
        };
        assert!(matches!(
            big_cert.encode(),
            Err(CertMessageError::TooLarge(_))
        ));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = CertMessage::decode(&bytes);
        }
    }
}
