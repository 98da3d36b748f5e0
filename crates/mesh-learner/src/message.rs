//! The messages between a node and its learner, and their encoding: every
//! frame's payload is one safetensors document. Its `__metadata__` holds two
//! strings, `kind` (the message) and `json` (the message's other fields as a
//! JSON object); its tensors are the parameters, `F32`, laid out in the data
//! section in layout order (readers take the order from `data_offsets`).
//! One format for arrays and control, readable with numpy alone.
//!
//! | request (node → learner)        | reply (learner → node)                                  |
//! |---------------------------------|---------------------------------------------------------|
//! | `hello {protocol_version}`      | `hello {protocol_version, learner_name}`                |
//! | `layout {}`                     | `layout {}` + the learner's own parameters              |
//! | `fit {config}` + parameters     | `fit {num_examples, metrics}` + parameters              |
//! | `evaluate {config}` + parameters| `evaluate {loss, num_examples, metrics}`                |
//! | `shutdown {}`                   | (none: the learner exits)                               |
//! | any                             | `error {message}` (the learner's code raised)           |

use std::collections::HashMap;

use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::layout::NamedArray;

/// The protocol version this node speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest text (learner name, error message) kept from a reply, in bytes.
pub const REPLY_TEXT_BYTES_MAX: usize = 8_192;

/// JSON fields a learner sends with its results (`accuracy`, `loss`, ...).
pub type Metrics = Map<String, Value>;

/// A message from the node to the learner.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// The first message: the protocol version the node speaks.
    Hello {
        /// [`PROTOCOL_VERSION`].
        protocol_version: u32,
    },
    /// Asks for the learner's own parameters (names, shapes, initial values).
    Layout,
    /// Train from `parameters`.
    Fit {
        /// The global model, in the job's layout.
        parameters: Vec<NamedArray>,
        /// Training options (epochs, batch size, learning rate, seed, ...).
        config: Map<String, Value>,
    },
    /// Evaluate `parameters` on the learner's held-out data.
    Evaluate {
        /// The model to evaluate.
        parameters: Vec<NamedArray>,
        /// Evaluation options.
        config: Map<String, Value>,
    },
    /// Exit now.
    Shutdown,
}

/// A message from the learner to the node.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// The learner's side of the handshake.
    Hello {
        /// The protocol version the learner speaks.
        protocol_version: u32,
        /// A name for logs.
        learner_name: String,
    },
    /// The learner's own parameters.
    Layout {
        /// Names, shapes and values, in the learner's order.
        parameters: Vec<NamedArray>,
    },
    /// What training produced.
    Fit {
        /// The trained parameters.
        parameters: Vec<NamedArray>,
        /// Samples trained on (the update's weight).
        num_examples: u64,
        /// Free-form metrics.
        metrics: Metrics,
    },
    /// What evaluation found.
    Evaluate {
        /// Mean loss.
        loss: f64,
        /// Samples evaluated.
        num_examples: u64,
        /// Free-form metrics (`accuracy`, ...).
        metrics: Metrics,
    },
    /// The learner's code raised; the learner is still serving.
    Error {
        /// What it said.
        message: String,
    },
}

impl Request {
    /// The message kind, as on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::Layout => "layout",
            Request::Fit { .. } => "fit",
            Request::Evaluate { .. } => "evaluate",
            Request::Shutdown => "shutdown",
        }
    }
}

impl Reply {
    /// The message kind, as on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            Reply::Hello { .. } => "hello",
            Reply::Layout { .. } => "layout",
            Reply::Fit { .. } => "fit",
            Reply::Evaluate { .. } => "evaluate",
            Reply::Error { .. } => "error",
        }
    }
}

/// Why a payload is not a valid message.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// The payload is not a valid safetensors document.
    #[error("not a safetensors document: {0}")]
    Safetensors(String),
    /// `__metadata__` has no `kind`.
    #[error("the message has no kind in its __metadata__")]
    MissingKind,
    /// A kind this protocol does not have (or not in this direction).
    #[error("unknown message kind {0:?}")]
    UnknownKind(String),
    /// The `json` field does not fit the kind.
    #[error("{kind} message: bad fields: {reason}")]
    BadFields {
        /// The kind.
        kind: String,
        /// The parser's message.
        reason: String,
    },
    /// A tensor is not `F32`.
    #[error("tensor {name} is {dtype}; the protocol carries F32")]
    Dtype {
        /// The tensor.
        name: String,
        /// Its dtype.
        dtype: String,
    },
    /// Two tensors with one name.
    #[error("tensor {0} appears twice")]
    DuplicateTensor(String),
    /// A message that does not answer the request (or no request at all).
    #[error("expected {expected}, got {found}")]
    Unexpected {
        /// What the call waits for.
        expected: &'static str,
        /// What came.
        found: String,
    },
}

#[derive(Serialize, Deserialize)]
struct HelloRequest {
    protocol_version: u32,
}

#[derive(Serialize, Deserialize)]
struct HelloReply {
    protocol_version: u32,
    #[serde(default)]
    learner_name: String,
}

#[derive(Serialize, Deserialize)]
struct WithConfig {
    #[serde(default)]
    config: Map<String, Value>,
}

#[derive(Serialize, Deserialize)]
struct FitReply {
    num_examples: u64,
    #[serde(default)]
    metrics: Metrics,
}

#[derive(Serialize, Deserialize)]
struct EvaluateReply {
    loss: f64,
    num_examples: u64,
    #[serde(default)]
    metrics: Metrics,
}

#[derive(Serialize, Deserialize)]
struct ErrorReply {
    message: String,
}

/// Encodes a request as a frame payload.
pub fn encode_request(request: &Request) -> Result<Vec<u8>, MessageError> {
    let kind = request.kind();
    match request {
        Request::Hello { protocol_version } => build(
            kind,
            &HelloRequest {
                protocol_version: *protocol_version,
            },
            &[],
        ),
        Request::Layout | Request::Shutdown => build(kind, &Map::new(), &[]),
        Request::Fit { parameters, config } | Request::Evaluate { parameters, config } => build(
            kind,
            &WithConfig {
                config: config.clone(),
            },
            parameters,
        ),
    }
}

/// Encodes a reply as a frame payload (what a learner does; here for tests and tools).
pub fn encode_reply(reply: &Reply) -> Result<Vec<u8>, MessageError> {
    let kind = reply.kind();
    match reply {
        Reply::Hello {
            protocol_version,
            learner_name,
        } => build(
            kind,
            &HelloReply {
                protocol_version: *protocol_version,
                learner_name: learner_name.clone(),
            },
            &[],
        ),
        Reply::Layout { parameters } => build(kind, &Map::new(), parameters),
        Reply::Fit {
            parameters,
            num_examples,
            metrics,
        } => build(
            kind,
            &FitReply {
                num_examples: *num_examples,
                metrics: metrics.clone(),
            },
            parameters,
        ),
        Reply::Evaluate {
            loss,
            num_examples,
            metrics,
        } => build(
            kind,
            &EvaluateReply {
                loss: *loss,
                num_examples: *num_examples,
                metrics: metrics.clone(),
            },
            &[],
        ),
        Reply::Error { message } => build(
            kind,
            &ErrorReply {
                message: message.clone(),
            },
            &[],
        ),
    }
}

/// Decodes a request payload (what a learner does; here for tests and tools).
pub fn decode_request(payload: &[u8]) -> Result<Request, MessageError> {
    let (kind, fields, arrays) = parse(payload)?;
    let bad = bad_fields(&kind);
    Ok(match kind.as_str() {
        "hello" => {
            let h: HelloRequest = serde_json::from_value(fields).map_err(bad)?;
            Request::Hello {
                protocol_version: h.protocol_version,
            }
        }
        "layout" => Request::Layout,
        "shutdown" => Request::Shutdown,
        "fit" | "evaluate" => {
            let c: WithConfig = serde_json::from_value(fields).map_err(bad)?;
            if kind == "fit" {
                Request::Fit {
                    parameters: arrays,
                    config: c.config,
                }
            } else {
                Request::Evaluate {
                    parameters: arrays,
                    config: c.config,
                }
            }
        }
        _ => return Err(MessageError::UnknownKind(kind.clone())),
    })
}

/// Decodes a reply payload.
pub fn decode_reply(payload: &[u8]) -> Result<Reply, MessageError> {
    let (kind, fields, arrays) = parse(payload)?;
    let bad = bad_fields(&kind);
    Ok(match kind.as_str() {
        "hello" => {
            let h: HelloReply = serde_json::from_value(fields).map_err(bad)?;
            Reply::Hello {
                protocol_version: h.protocol_version,
                learner_name: bounded_text(h.learner_name),
            }
        }
        "layout" => Reply::Layout { parameters: arrays },
        "fit" => {
            let f: FitReply = serde_json::from_value(fields).map_err(bad)?;
            Reply::Fit {
                parameters: arrays,
                num_examples: f.num_examples,
                metrics: f.metrics,
            }
        }
        "evaluate" => {
            let e: EvaluateReply = serde_json::from_value(fields).map_err(bad)?;
            Reply::Evaluate {
                loss: e.loss,
                num_examples: e.num_examples,
                metrics: e.metrics,
            }
        }
        "error" => {
            let e: ErrorReply = serde_json::from_value(fields).map_err(bad)?;
            Reply::Error {
                message: bounded_text(e.message),
            }
        }
        _ => return Err(MessageError::UnknownKind(kind.clone())),
    })
}

fn bad_fields(kind: &str) -> impl Fn(serde_json::Error) -> MessageError + '_ {
    move |e| MessageError::BadFields {
        kind: kind.to_owned(),
        reason: e.to_string(),
    }
}

/// `text` cut to [`REPLY_TEXT_BYTES_MAX`] bytes (on a character boundary).
fn bounded_text(mut text: String) -> String {
    if text.len() > REPLY_TEXT_BYTES_MAX {
        let mut end = REPLY_TEXT_BYTES_MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

/// Writes a safetensors document with the tensors' data in the given order.
fn build<T: Serialize>(
    kind: &str,
    fields: &T,
    arrays: &[NamedArray],
) -> Result<Vec<u8>, MessageError> {
    let json = serde_json::to_string(fields).map_err(bad_fields(kind))?;
    let mut header = Map::new();
    let mut metadata = Map::new();
    metadata.insert("kind".into(), Value::String(kind.into()));
    metadata.insert("json".into(), Value::String(json));
    let mut entries = vec![("__metadata__".to_owned(), Value::Object(metadata))];
    let mut offset = 0usize;
    for array in arrays {
        let bytes = array.values.len() * 4;
        let info = serde_json::json!({
            "dtype": "F32",
            "shape": array.shape,
            "data_offsets": [offset, offset + bytes],
        });
        if header.insert(array.name.clone(), Value::Null).is_some() || array.name == "__metadata__"
        {
            return Err(MessageError::DuplicateTensor(array.name.clone()));
        }
        entries.push((array.name.clone(), info));
        offset += bytes;
    }
    let mut text = String::from("{");
    for (i, (key, value)) in entries.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&Value::String(key.clone()).to_string());
        text.push(':');
        text.push_str(&value.to_string());
    }
    text.push('}');
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + offset);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    for array in arrays {
        out.extend(array.values.iter().flat_map(|v| v.to_le_bytes()));
    }
    Ok(out)
}

/// Reads kind, fields and tensors (in data order) from a document.
fn parse(payload: &[u8]) -> Result<(String, Value, Vec<NamedArray>), MessageError> {
    let document =
        SafeTensors::deserialize(payload).map_err(|e| MessageError::Safetensors(e.to_string()))?;
    let (_, metadata) = SafeTensors::read_metadata(payload)
        .map_err(|e| MessageError::Safetensors(e.to_string()))?;
    let empty = HashMap::new();
    let meta = metadata.metadata().as_ref().unwrap_or(&empty);
    let kind = meta.get("kind").ok_or(MessageError::MissingKind)?.clone();
    let fields = match meta.get("json") {
        Some(json) => serde_json::from_str(json).map_err(bad_fields(&kind))?,
        None => Value::Object(Map::new()),
    };
    let mut arrays = Vec::new();
    for name in metadata.offset_keys() {
        let view = document
            .tensor(&name)
            .map_err(|e| MessageError::Safetensors(e.to_string()))?;
        if view.dtype() != Dtype::F32 {
            return Err(MessageError::Dtype {
                name,
                dtype: format!("{:?}", view.dtype()),
            });
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        arrays.push(NamedArray {
            name,
            shape: view.shape().to_vec(),
            values,
        });
    }
    Ok((kind, fields, arrays))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arrays() -> Vec<NamedArray> {
        vec![
            NamedArray {
                name: "z.weight".into(),
                shape: vec![2, 2],
                values: vec![1.0, -2.0, 3.5, 0.0],
            },
            NamedArray {
                name: "a.bias".into(),
                shape: vec![2],
                values: vec![0.25, 9.0],
            },
        ]
    }

    #[test]
    fn requests_round_trip_and_keep_the_tensor_order() {
        let mut config = Map::new();
        config.insert("epochs".into(), 3.into());
        for request in [
            Request::Hello {
                protocol_version: 1,
            },
            Request::Layout,
            Request::Shutdown,
            Request::Fit {
                parameters: arrays(),
                config: config.clone(),
            },
            Request::Evaluate {
                parameters: arrays(),
                config,
            },
        ] {
            let bytes = encode_request(&request).unwrap();
            assert_eq!(decode_request(&bytes).unwrap(), request);
        }
    }

    #[test]
    fn replies_round_trip() {
        let mut metrics = Map::new();
        metrics.insert("accuracy".into(), 0.5.into());
        for reply in [
            Reply::Hello {
                protocol_version: 1,
                learner_name: "softmax".into(),
            },
            Reply::Layout {
                parameters: arrays(),
            },
            Reply::Fit {
                parameters: arrays(),
                num_examples: 12,
                metrics: metrics.clone(),
            },
            Reply::Evaluate {
                loss: 0.75,
                num_examples: 4,
                metrics,
            },
            Reply::Error {
                message: "boom".into(),
            },
        ] {
            let bytes = encode_reply(&reply).unwrap();
            assert_eq!(decode_reply(&bytes).unwrap(), reply);
        }
    }

    #[test]
    fn the_document_is_plain_safetensors() {
        let bytes = encode_request(&Request::Fit {
            parameters: arrays(),
            config: Map::new(),
        })
        .unwrap();
        let doc = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(doc.tensor("a.bias").unwrap().shape(), &[2]);
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        assert_eq!(header_len % 8, 0, "data starts 8-byte aligned");
    }

    #[test]
    fn a_non_f32_tensor_is_refused_by_name() {
        let data = [0u8; 16];
        let view = safetensors::tensor::TensorView::new(Dtype::F64, vec![2], &data).unwrap();
        let mut meta = HashMap::new();
        meta.insert("kind".to_string(), "layout".to_string());
        let bytes = safetensors::serialize([("w", view)], Some(meta)).unwrap();
        let err = decode_reply(&bytes).unwrap_err();
        assert_eq!(err.to_string(), "tensor w is F64; the protocol carries F32");
    }

    #[test]
    fn missing_kind_unknown_kind_and_bad_fields_are_errors() {
        let bytes = safetensors::serialize(
            Vec::<(&str, safetensors::tensor::TensorView<'_>)>::new(),
            None,
        )
        .unwrap();
        assert!(matches!(
            decode_reply(&bytes),
            Err(MessageError::MissingKind)
        ));
        let shutdown = encode_request(&Request::Shutdown).unwrap();
        assert!(matches!(
            decode_reply(&shutdown),
            Err(MessageError::UnknownKind(k)) if k == "shutdown"
        ));
        let fit = encode_request(&Request::Fit {
            parameters: vec![],
            config: Map::new(),
        })
        .unwrap();
        let err = decode_reply(&fit).unwrap_err();
        assert!(err.to_string().contains("num_examples"), "{err}");
    }

    proptest! {
        #[test]
        fn arbitrary_payloads_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_reply(&bytes);
            let _ = decode_request(&bytes);
        }

        #[test]
        fn a_corrupted_message_is_an_error_or_a_message_never_a_panic(
            index in 0usize..200, byte in any::<u8>()
        ) {
            let mut bytes = encode_reply(&Reply::Fit {
                parameters: arrays(),
                num_examples: 3,
                metrics: Map::new(),
            }).unwrap();
            let i = index % bytes.len();
            bytes[i] = byte;
            let _ = decode_reply(&bytes);
        }
    }
}
