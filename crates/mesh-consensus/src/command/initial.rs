//! Starting weights a job fine-tunes from: a safetensors file the mesh holds
//! by hash, and the nodes that held it when the job was submitted.
//!
//! The file itself never enters the log (it may be megabytes; a log entry
//! is kilobytes). Each node that needs it fetches it by hash from the named
//! holders or from any round-0 participant that already has it, and checks
//! the bytes against the hash on arrival.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{ModelHash, NodeId, NAME_BYTES_MAX};

/// Most holders a job may name for its starting weights.
pub const INITIAL_MODEL_HOLDERS_MAX: usize = 16;

/// A job's starting weights.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitialModel {
    /// BLAKE3 hash of the safetensors file, as 64 hex digits in JSON.
    #[serde(serialize_with = "hash_to_hex", deserialize_with = "hash_from_hex")]
    pub hash: ModelHash,
    /// Nodes that held the file when the job was submitted (the node it was
    /// uploaded to, `POST /v1/models`).
    pub holders: Vec<NodeId>,
}

impl InitialModel {
    /// The hash as 64 hex digits.
    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash)
    }

    /// Why these holders cannot be committed, if they cannot.
    pub fn holders_problem(&self) -> Option<String> {
        let n = self.holders.len();
        if n == 0 || n > INITIAL_MODEL_HOLDERS_MAX {
            return Some(format!(
                "{n} holders; name 1 to {INITIAL_MODEL_HOLDERS_MAX} nodes that hold the file"
            ));
        }
        self.holders
            .iter()
            .find(|h| h.0.is_empty() || h.0.len() > NAME_BYTES_MAX)
            .map(|h| {
                format!(
                    "holder name {:?} is empty or over {NAME_BYTES_MAX} bytes",
                    h.0
                )
            })
    }
}

/// Parses 64 hex digits into a hash.
pub fn parse_model_hash(text: &str) -> Result<ModelHash, String> {
    let bytes = hex::decode(text.trim()).map_err(|e| format!("{text:?} is not hex: {e}"))?;
    <ModelHash>::try_from(bytes.as_slice())
        .map_err(|_| format!("{text:?} is {} bytes, a hash is 32", bytes.len()))
}

fn hash_to_hex<S: Serializer>(hash: &ModelHash, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&hex::encode(hash))
}

fn hash_from_hex<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ModelHash, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_model_hash(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_travels_as_hex_in_json_and_round_trips_in_the_log() {
        let model = InitialModel {
            hash: [0xab; 32],
            holders: vec![NodeId("n1".into())],
        };
        let json = serde_json::to_string(&model).unwrap();
        assert!(json.contains(&"ab".repeat(32)), "{json}");
        assert_eq!(serde_json::from_str::<InitialModel>(&json).unwrap(), model);
        let bytes = postcard::to_allocvec(&model).unwrap();
        assert_eq!(postcard::from_bytes::<InitialModel>(&bytes).unwrap(), model);
    }

    #[test]
    fn bad_hashes_and_holder_lists_are_named() {
        assert!(parse_model_hash("zz").unwrap_err().contains("not hex"));
        assert!(parse_model_hash("abcd").unwrap_err().contains("2 bytes"));
        let none = InitialModel {
            hash: [0; 32],
            holders: vec![],
        };
        assert!(none.holders_problem().unwrap().contains("0 holders"));
    }
}
