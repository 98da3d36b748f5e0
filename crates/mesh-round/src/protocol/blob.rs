//! Parameter vectors as content-addressed blobs. The BLAKE3 hash of the blob is
//! the model hash the committee commits.
//!
//! ```text
//!   AMP1 | count u32 | count x f32                  parameters (updates, group means,
//!                                                   global models without server state)
//!   AMS1 | 4 x (count u32 | count x f32)            a global model with server state:
//!          params, first moment, second moment,     what any final aggregator needs to
//!          centered-clipping centre                 take the next step where the last left off
//! ```
//!
//! All integers and floats are little-endian. Participants read only the
//! parameters of either form ([`decode_params`]).

use mesh_consensus::command::ModelHash;

const MAGIC: &[u8; 4] = b"AMP1";
const MAGIC_STATE: &[u8; 4] = b"AMS1";

/// Server-side state carried from round to round inside the global model blob:
/// the server optimizer's moments and the centered-clipping centre. Empty
/// vectors mean "none" (plain SGD, or a rule without a centre).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerState {
    /// First moment of FedAdam / FedYogi.
    pub first_moment: Vec<f32>,
    /// Second moment of FedAdam / FedYogi.
    pub second_moment: Vec<f32>,
    /// Centre of centered clipping (the previous aggregate).
    pub center: Vec<f32>,
}

impl ServerState {
    /// Whether there is no state to carry.
    pub fn is_empty(&self) -> bool {
        self.first_moment.is_empty() && self.second_moment.is_empty() && self.center.is_empty()
    }
}

/// A global model: its parameters and the server state the next step resumes from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GlobalModel {
    /// Model parameters.
    pub params: Vec<f32>,
    /// Server optimizer and rule state.
    pub server: ServerState,
}

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
    push_section(&mut out, values);
    out
}

/// Encodes a global model: the plain parameter form when it has no server state.
pub fn encode_model(model: &GlobalModel) -> Vec<u8> {
    if model.server.is_empty() {
        return encode_params(&model.params);
    }
    let s = &model.server;
    let sections = [&model.params, &s.first_moment, &s.second_moment, &s.center];
    let values: usize = sections.iter().map(|v| v.len()).sum();
    let mut out = Vec::with_capacity(4 + 16 + values * 4);
    out.extend_from_slice(MAGIC_STATE);
    for section in sections {
        push_section(&mut out, section);
    }
    out
}

fn push_section(out: &mut Vec<u8>, values: &[f32]) {
    out.extend_from_slice(&(values.len() as u32).to_le_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Decodes the parameters of either blob form; every value must be finite.
pub fn decode_params(bytes: &[u8]) -> Result<Vec<f32>, BlobError> {
    decode_model(bytes).map(|m| m.params)
}

/// The parameter count of a blob of either form (its first section's count;
/// 0 when the header is short).
pub fn model_dimension(bytes: &[u8]) -> usize {
    bytes
        .get(4..8)
        .map_or(0, |c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize)
}

/// Decodes a global model of either blob form; every value must be finite.
pub fn decode_model(bytes: &[u8]) -> Result<GlobalModel, BlobError> {
    let (tag, mut rest) = bytes
        .split_at_checked(4)
        .ok_or(BlobError::Malformed("shorter than its header"))?;
    let sections = match tag {
        t if t == MAGIC => 1,
        t if t == MAGIC_STATE => 4,
        _ => return Err(BlobError::Malformed("wrong tag")),
    };
    let mut out = Vec::with_capacity(sections);
    for _ in 0..sections {
        let (values, tail) = take_section(rest)?;
        out.push(values);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(BlobError::Malformed("length does not match the count"));
    }
    let mut out = out.into_iter();
    let mut next = || out.next().unwrap_or_default();
    Ok(GlobalModel {
        params: next(),
        server: ServerState {
            first_moment: next(),
            second_moment: next(),
            center: next(),
        },
    })
}

fn take_section(bytes: &[u8]) -> Result<(Vec<f32>, &[u8]), BlobError> {
    let (head, body) = bytes
        .split_at_checked(4)
        .ok_or(BlobError::Malformed("shorter than its header"))?;
    let count = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let (values, rest) = count
        .checked_mul(4)
        .and_then(|len| body.split_at_checked(len))
        .ok_or(BlobError::Malformed("length does not match the count"))?;
    let values: Vec<f32> = values
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if values.iter().any(|v| !v.is_finite()) {
        return Err(BlobError::NonFinite);
    }
    Ok((values, rest))
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
        let mut trailing = blob.clone();
        trailing.extend_from_slice(&[0; 4]);
        assert!(decode_params(&trailing).is_err());
    }

    #[test]
    fn a_model_with_server_state_round_trips_and_participants_read_its_params() {
        let model = GlobalModel {
            params: vec![1.0, 2.0],
            server: ServerState {
                first_moment: vec![0.1, 0.2],
                second_moment: vec![0.3, 0.4],
                center: Vec::new(),
            },
        };
        let blob = encode_model(&model);
        assert_eq!(&blob[..4], MAGIC_STATE);
        assert_eq!(decode_model(&blob).unwrap(), model);
        assert_eq!(decode_params(&blob).unwrap(), model.params);
        assert!(decode_model(&blob[..blob.len() - 2]).is_err());
        let plain = GlobalModel {
            params: vec![3.0],
            server: ServerState::default(),
        };
        assert_eq!(encode_model(&plain), encode_params(&[3.0]));
    }

    #[test]
    fn a_huge_declared_count_is_refused_without_allocating() {
        let mut blob = MAGIC_STATE.to_vec();
        blob.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_model(&blob).is_err());
    }
}
