//! Parameter vectors as content-addressed blobs: a magic tag, the count and
//! little-endian `f32`s. The BLAKE3 hash of the blob is the model hash the
//! committee commits.

use mesh_consensus::command::ModelHash;

const MAGIC: &[u8; 4] = b"AMP1";

/// Why bytes are not a parameter blob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    /// Wrong tag or length.
    #[error("not a parameter blob: {0}")]
    Malformed(&'static str),
    /// A value is NaN or infinite.
    #[error("parameter blob holds a non-finite value")]
    NonFinite,
}

/// Encodes parameters as a blob.
pub fn encode_params(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + values.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(values.len() as u32).to_le_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Decodes a blob; every value must be finite.
pub fn decode_params(bytes: &[u8]) -> Result<Vec<f32>, BlobError> {
    let (head, body) = bytes
        .split_at_checked(8)
        .ok_or(BlobError::Malformed("shorter than its header"))?;
    if &head[..4] != MAGIC {
        return Err(BlobError::Malformed("wrong tag"));
    }
    let mut count = [0u8; 4];
    count.copy_from_slice(&head[4..]);
    if body.len() != u32::from_le_bytes(count) as usize * 4 {
        return Err(BlobError::Malformed("length does not match the count"));
    }
    let values: Vec<f32> = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if values.iter().any(|v| !v.is_finite()) {
        return Err(BlobError::NonFinite);
    }
    Ok(values)
}

/// The hash a blob is addressed by.
pub fn blob_hash(bytes: &[u8]) -> ModelHash {
    *blake3::hash(bytes).as_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn params_round_trip_and_corruption_is_caught() {
        let values = vec![1.0, -2.5, 0.0];
        let blob = encode_params(&values);
        assert_eq!(decode_params(&blob).unwrap(), values);
        assert!(decode_params(&blob[..blob.len() - 1]).is_err());
        assert!(decode_params(b"nope").is_err());
        let nan = encode_params(&[f32::NAN]);
        assert_eq!(decode_params(&nan), Err(BlobError::NonFinite));
    }
}
