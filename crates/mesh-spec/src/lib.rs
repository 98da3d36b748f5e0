//! What a training job commits about its data and its model.
//!
//! * [`schema`]: the [`DataSchema`] a node's private data must match to take
//!   part (feature count or image shape, classes or a regression target).
//! * [`model`]: the [`ModelSpec`], a small architecture language of layers
//!   (the built-in models are named presets of it) or the parameter layout of
//!   an external learner process.
//!
//! Both are plain data: the committee stores them in the job, the round engine
//! builds models from them, and nothing here reads a file or a socket.

pub mod model;
pub mod schema;

pub use model::{Layer, LearnerSpec, ModelSpec, ModelSpecError, ParameterInfo, Preset};
pub use schema::{DataSchema, InputShape, Normalization, SchemaError, Task};
