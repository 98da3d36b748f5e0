//! The model language: what a job says about its model.
//!
//! A [`ModelSpec`] is one of
//! * a named [`Preset`] (`logistic`, `mlp`, `cnn`, `small-cnn`), itself a
//!   fixed list of layers;
//! * a list of [`Layer`]s, e.g. in JSON
//!   `{"layers": [{"dense": {"units": 64}}, "relu", {"dropout": {"rate": 0.1}}]}`
//!   or in TOML `layers = [{dense = {units = 64}}, "relu"]`;
//! * an external learner's parameter layout ([`LearnerSpec`]), for models
//!   trained by the user's own code in a separate process.
//!
//! The input shape comes from the job's [`DataSchema`](crate::DataSchema) and
//! the output layer is added for the task: a dense layer named `output` with
//! one unit per class, or one unit for regression. [`ModelSpec::plan`] infers
//! every layer's shapes and names (`dense1`, `conv2`, ...; parameters are
//! `dense1.weight`, `dense1.bias`), refusing what cannot be built with the
//! layer and the reason.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::schema::{DataSchema, InputShape};

/// Most parameters a model may have (400 MB of `f32`).
pub const MAX_PARAMETERS: usize = 100_000_000;
/// Most layers in a layer list.
pub const MAX_LAYERS: usize = 64;

/// A job's model. In JSON or TOML a preset may also be written as its bare
/// name (`"model": "mlp"`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelSpec {
    /// A built-in architecture.
    Preset(Preset),
    /// Hidden layers, in order; the output layer is added for the task.
    Layers(Vec<Layer>),
    /// A model trained by an external learner process; only its parameter
    /// layout is known to the mesh.
    Learner(LearnerSpec),
}

/// [`ModelSpec`]'s tagged form, the only one binary formats carry.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum TaggedSpec {
    Preset(Preset),
    Layers(Vec<Layer>),
    Learner(LearnerSpec),
}

impl From<TaggedSpec> for ModelSpec {
    fn from(t: TaggedSpec) -> Self {
        match t {
            TaggedSpec::Preset(p) => ModelSpec::Preset(p),
            TaggedSpec::Layers(l) => ModelSpec::Layers(l),
            TaggedSpec::Learner(l) => ModelSpec::Learner(l),
        }
    }
}

impl<'de> Deserialize<'de> for ModelSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if !deserializer.is_human_readable() {
            return TaggedSpec::deserialize(deserializer).map(Into::into);
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Name(String),
            Tagged(TaggedSpec),
        }
        match Written::deserialize(deserializer)? {
            Written::Name(name) => name.parse().map_err(serde::de::Error::custom),
            Written::Tagged(t) => Ok(t.into()),
        }
    }
}

/// The built-in architectures, each a fixed list of layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// Multinomial logistic (or linear) regression: the output layer alone.
    Logistic,
    /// Two hidden dense layers of 200 with ReLU.
    Mlp,
    /// Two 5x5 convolutions (16, 32) with 2x2 max pooling, then dense 128
    /// (images of at least 12x12, e.g. MNIST).
    Cnn,
    /// Two 3x3 same-padded convolutions (16, 32) with 2x2 max pooling, then
    /// dense 64 (small images, e.g. 8x8 digits).
    SmallCnn,
}

/// One layer of the model language.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// Fully connected layer (flattens image input first).
    Dense {
        /// Output units.
        units: u32,
    },
    /// 2-D convolution over image input.
    Conv2d {
        /// Output channels.
        filters: u32,
        /// Square kernel side.
        kernel: u32,
        /// Step between kernel positions.
        #[serde(default = "one")]
        stride: u32,
        /// Zero padding on each side.
        #[serde(default)]
        padding: u32,
    },
    /// Max pooling with a square window and the same stride.
    MaxPool2d {
        /// Window side.
        size: u32,
    },
    /// Average pooling with a square window and the same stride.
    AvgPool2d {
        /// Window side.
        size: u32,
    },
    /// Image to flat row.
    Flatten,
    /// Zeroes each value with probability `rate` during training (seeded).
    Dropout {
        /// Drop probability in `[0, 1)`.
        rate: f32,
    },
    /// Layer normalization over a flat row (learned scale and shift).
    LayerNorm,
    /// max(0, x).
    Relu,
    /// Hyperbolic tangent.
    Tanh,
    /// Logistic sigmoid.
    Sigmoid,
    /// Gaussian error linear unit.
    Gelu,
    /// max(0.01 x, x).
    LeakyRelu,
}

fn one() -> u32 {
    1
}

/// The parameter layout of a model trained by an external learner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnerSpec {
    /// Every parameter tensor, in flat-vector order.
    pub parameters: Vec<ParameterInfo>,
}

/// Most tensors in a learner's layout.
pub const MAX_LEARNER_TENSORS: usize = 4096;
/// Longest parameter name.
pub const MAX_NAME_BYTES: usize = 256;

impl LearnerSpec {
    /// Checks the layout: 1..=[`MAX_LEARNER_TENSORS`] tensors with distinct,
    /// non-empty names of at most [`MAX_NAME_BYTES`], no zero dimension, and
    /// at most [`MAX_PARAMETERS`] values in all.
    pub fn check_bounds(&self) -> Result<(), ModelSpecError> {
        let refuse = |m: String| Err(ModelSpecError::Model(m));
        let n = self.parameters.len();
        if n == 0 || n > MAX_LEARNER_TENSORS {
            return refuse(format!(
                "a learner layout needs 1..={MAX_LEARNER_TENSORS} tensors, got {n}"
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        let mut total = 0usize;
        for p in &self.parameters {
            if p.name.is_empty() || p.name.len() > MAX_NAME_BYTES || !names.insert(&p.name) {
                return refuse(format!(
                    "tensor name {:?} is empty, too long or repeated",
                    p.name
                ));
            }
            let count = p.shape.iter().try_fold(1usize, |acc, &d| {
                (d > 0).then(|| acc.checked_mul(d)).flatten()
            });
            match count {
                Some(c) if c <= MAX_PARAMETERS => total = total.saturating_add(c),
                _ => {
                    return refuse(format!(
                        "tensor {:?} has a zero or oversized shape {:?}",
                        p.name, p.shape
                    ))
                }
            }
        }
        if total > MAX_PARAMETERS {
            return refuse(format!("{total} parameters, at most {MAX_PARAMETERS}"));
        }
        Ok(())
    }

    /// Values in all tensors.
    pub fn parameter_count(&self) -> usize {
        self.parameters
            .iter()
            .map(|p| p.shape.iter().product::<usize>())
            .sum()
    }
}

/// One parameter tensor of a model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParameterInfo {
    /// Name, e.g. `conv1.weight`.
    pub name: String,
    /// Tensor shape.
    pub shape: Vec<usize>,
}

/// The shape of the values between two layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A flat row of this many values.
    Flat(usize),
    /// `[channels, height, width]`.
    Image([usize; 3]),
}

impl Shape {
    /// Values per row.
    pub fn len(&self) -> usize {
        match *self {
            Shape::Flat(n) => n,
            Shape::Image([c, h, w]) => c * h * w,
        }
    }

    /// True for a row of no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Flat(n) => write!(f, "{n} values"),
            Shape::Image([c, h, w]) => write!(f, "{c}x{h}x{w}"),
        }
    }
}

/// A layer with its name and the shapes it takes and gives.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedLayer {
    /// `dense1`, `conv2`, `relu1`, ..., and `output` for the last.
    pub name: String,
    /// The layer.
    pub layer: Layer,
    /// Shape of its input.
    pub input: Shape,
    /// Shape of its output.
    pub output: Shape,
}

/// A model spec that cannot be built for the job's data. Not retryable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelSpecError {
    /// A layer cannot take its input, or a value is out of range.
    #[error("layer {index} ({name}): {reason}")]
    Layer {
        /// Position in the list, from 1.
        index: usize,
        /// The layer's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The model as a whole is out of range.
    #[error("model: {0}")]
    Model(String),
    /// A preset name that is not built in.
    #[error("unknown model {0:?}; expected one of logistic, mlp, cnn, small-cnn, or a layer list")]
    UnknownPreset(String),
}

impl Preset {
    /// Every preset, by name.
    pub const NAMES: [&'static str; 4] = ["logistic", "mlp", "cnn", "small-cnn"];

    /// The preset's hidden layers.
    pub fn layers(self) -> Vec<Layer> {
        use Layer::{Conv2d, Dense, Flatten, MaxPool2d, Relu};
        let conv = |filters, kernel, padding| Conv2d {
            filters,
            kernel,
            stride: 1,
            padding,
        };
        match self {
            Preset::Logistic => vec![],
            Preset::Mlp => vec![Dense { units: 200 }, Relu, Dense { units: 200 }, Relu],
            Preset::Cnn => vec![
                conv(16, 5, 0),
                Relu,
                MaxPool2d { size: 2 },
                conv(32, 5, 0),
                Relu,
                MaxPool2d { size: 2 },
                Flatten,
                Dense { units: 128 },
                Relu,
            ],
            Preset::SmallCnn => vec![
                conv(16, 3, 1),
                Relu,
                MaxPool2d { size: 2 },
                conv(32, 3, 1),
                Relu,
                MaxPool2d { size: 2 },
                Flatten,
                Dense { units: 64 },
                Relu,
            ],
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Preset::Logistic => "logistic",
            Preset::Mlp => "mlp",
            Preset::Cnn => "cnn",
            Preset::SmallCnn => "small-cnn",
        })
    }
}

impl FromStr for Preset {
    type Err = ModelSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "logistic" | "logreg" | "linear" => Ok(Preset::Logistic),
            "mlp" => Ok(Preset::Mlp),
            "cnn" => Ok(Preset::Cnn),
            "small-cnn" => Ok(Preset::SmallCnn),
            other => Err(ModelSpecError::UnknownPreset(other.to_string())),
        }
    }
}

impl FromStr for ModelSpec {
    type Err = ModelSpecError;

    /// A preset name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(ModelSpec::Preset)
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSpec::Preset(p) => write!(f, "{p}"),
            ModelSpec::Layers(layers) => write!(f, "layers({})", layers.len()),
            ModelSpec::Learner(spec) => write!(f, "learner({} tensors)", spec.parameters.len()),
        }
    }
}

impl Default for ModelSpec {
    fn default() -> Self {
        ModelSpec::Preset(Preset::Mlp)
    }
}

impl ModelSpec {
    /// The sensible default for a kind of input: an MLP for tables, a CNN for
    /// images (the small one below 12x12).
    pub fn default_for(input: &InputShape) -> ModelSpec {
        match input.image() {
            None => ModelSpec::Preset(Preset::Mlp),
            Some([_, h, w]) if h >= 12 && w >= 12 => ModelSpec::Preset(Preset::Cnn),
            Some(_) => ModelSpec::Preset(Preset::SmallCnn),
        }
    }

    /// Checks sizes a committed job may carry, without a schema: layer count,
    /// and for a learner the tensor count, names and parameter total.
    pub fn check_bounds(&self) -> Result<(), ModelSpecError> {
        let refuse = |m: String| Err(ModelSpecError::Model(m));
        match self {
            ModelSpec::Preset(_) => Ok(()),
            ModelSpec::Layers(layers) if layers.len() > MAX_LAYERS => {
                refuse(format!("{} layers, at most {MAX_LAYERS}", layers.len()))
            }
            ModelSpec::Layers(_) => Ok(()),
            ModelSpec::Learner(spec) => spec.check_bounds(),
        }
    }

    /// The hidden layers (a preset's own), or `None` for an external learner.
    pub fn hidden_layers(&self) -> Option<Vec<Layer>> {
        match self {
            ModelSpec::Preset(p) => Some(p.layers()),
            ModelSpec::Layers(layers) => Some(layers.clone()),
            ModelSpec::Learner(_) => None,
        }
    }

    /// The parameter tensors (names and shapes, in flat order) of this model
    /// for data of `schema`: a learner's declared layout needs no schema;
    /// a layer model needs one to size its input and output layers.
    pub fn layout(
        &self,
        schema: Option<&DataSchema>,
    ) -> Result<Vec<ParameterInfo>, ModelSpecError> {
        if let ModelSpec::Learner(spec) = self {
            return Ok(spec.parameters.clone());
        }
        let schema = schema.ok_or_else(|| {
            ModelSpecError::Model(
                "the model's shapes depend on the data; give the job a schema".into(),
            )
        })?;
        let planned = self.plan(&schema.input, schema.task.outputs())?;
        Ok(parameter_layout(&planned))
    }

    /// Every layer with its name and shapes, the output layer of `outputs`
    /// units last, for input of shape `input`.
    pub fn plan(
        &self,
        input: &InputShape,
        outputs: usize,
    ) -> Result<Vec<PlannedLayer>, ModelSpecError> {
        let hidden = self.hidden_layers().ok_or_else(|| {
            ModelSpecError::Model("an external learner's model has no layers to plan".into())
        })?;
        if hidden.len() > MAX_LAYERS {
            return Err(ModelSpecError::Model(format!(
                "{} layers, at most {MAX_LAYERS}",
                hidden.len()
            )));
        }
        let mut shape = match input.image() {
            Some(image) => Shape::Image(image),
            None => Shape::Flat(input.feature_count()),
        };
        let mut counts = std::collections::HashMap::new();
        let mut planned = Vec::with_capacity(hidden.len() + 1);
        let output = Layer::Dense {
            units: u32::try_from(outputs).unwrap_or(u32::MAX),
        };
        let last = hidden.len();
        for (i, layer) in hidden.into_iter().chain([output]).enumerate() {
            let name = if i == last {
                "output".to_string()
            } else {
                let count = counts.entry(layer.kind()).or_insert(0usize);
                *count += 1;
                format!("{}{count}", layer.kind())
            };
            let error = |reason: String| ModelSpecError::Layer {
                index: i + 1,
                name: name.clone(),
                reason,
            };
            let out = layer.output_shape(shape).map_err(error)?;
            planned.push(PlannedLayer {
                name,
                layer,
                input: shape,
                output: out,
            });
            shape = out;
        }
        let total: usize = parameter_layout(&planned)
            .iter()
            .map(|p| p.shape.iter().product::<usize>())
            .sum();
        if total > MAX_PARAMETERS {
            return Err(ModelSpecError::Model(format!(
                "{total} parameters, at most {MAX_PARAMETERS}"
            )));
        }
        Ok(planned)
    }
}

/// The parameter tensors of planned layers, in flat-vector order. Dense
/// weights are `[inputs, outputs]`, convolution weights `[filters, channels,
/// kernel, kernel]`.
pub fn parameter_layout(planned: &[PlannedLayer]) -> Vec<ParameterInfo> {
    let mut out = Vec::new();
    let mut push = |name: &str, part: &str, shape: Vec<usize>| {
        out.push(ParameterInfo {
            name: format!("{name}.{part}"),
            shape,
        })
    };
    for p in planned {
        match p.layer {
            Layer::Dense { units } => {
                push(&p.name, "weight", vec![p.input.len(), units as usize]);
                push(&p.name, "bias", vec![units as usize]);
            }
            Layer::Conv2d {
                filters, kernel, ..
            } => {
                let channels = match p.input {
                    Shape::Image([c, _, _]) => c,
                    Shape::Flat(_) => 0,
                };
                let (f, k) = (filters as usize, kernel as usize);
                push(&p.name, "weight", vec![f, channels, k, k]);
                push(&p.name, "bias", vec![f]);
            }
            Layer::LayerNorm => {
                push(&p.name, "gamma", vec![p.input.len()]);
                push(&p.name, "beta", vec![p.input.len()]);
            }
            _ => {}
        }
    }
    out
}

impl Layer {
    /// The layer's kind, the stem of its default name.
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Dense { .. } => "dense",
            Layer::Conv2d { .. } => "conv",
            Layer::MaxPool2d { .. } => "maxpool",
            Layer::AvgPool2d { .. } => "avgpool",
            Layer::Flatten => "flatten",
            Layer::Dropout { .. } => "dropout",
            Layer::LayerNorm => "norm",
            Layer::Relu => "relu",
            Layer::Tanh => "tanh",
            Layer::Sigmoid => "sigmoid",
            Layer::Gelu => "gelu",
            Layer::LeakyRelu => "leaky_relu",
        }
    }

    /// The shape this layer gives for input `input`, or why it cannot take it.
    pub fn output_shape(&self, input: Shape) -> Result<Shape, String> {
        match (self, input) {
            (Layer::Dense { units }, _) => {
                if *units == 0 || *units as usize > MAX_PARAMETERS {
                    return Err(format!("units must be in 1..={MAX_PARAMETERS}"));
                }
                Ok(Shape::Flat(*units as usize))
            }
            (Layer::Conv2d { .. }, Shape::Flat(n)) => Err(format!(
                "needs image input, got a flat row of {n} values (is the data a table?)"
            )),
            (
                Layer::Conv2d {
                    filters,
                    kernel,
                    stride,
                    padding,
                },
                Shape::Image([_, h, w]),
            ) => {
                if *filters == 0 || *filters > 4096 || *kernel == 0 || *stride == 0 {
                    return Err("filters must be in 1..=4096, kernel and stride at least 1".into());
                }
                let side = |s: usize| {
                    let padded = s + 2 * *padding as usize;
                    (padded >= *kernel as usize)
                        .then(|| (padded - *kernel as usize) / *stride as usize + 1)
                };
                match (side(h), side(w)) {
                    (Some(oh), Some(ow)) => Ok(Shape::Image([*filters as usize, oh, ow])),
                    _ => Err(format!(
                        "input {h}x{w} is smaller than the kernel {kernel}x{kernel}"
                    )),
                }
            }
            (Layer::MaxPool2d { size } | Layer::AvgPool2d { size }, Shape::Image([c, h, w])) => {
                let s = *size as usize;
                if s == 0 || s > h || s > w {
                    return Err(format!("window {s} does not fit input {h}x{w}"));
                }
                Ok(Shape::Image([c, h / s, w / s]))
            }
            (Layer::MaxPool2d { .. } | Layer::AvgPool2d { .. }, Shape::Flat(n)) => {
                Err(format!("needs image input, got a flat row of {n} values"))
            }
            (Layer::Flatten, shape) => Ok(Shape::Flat(shape.len())),
            (Layer::Dropout { rate }, shape) => {
                if !(0.0..1.0).contains(rate) {
                    return Err(format!("rate must be in [0, 1), got {rate}"));
                }
                Ok(shape)
            }
            (Layer::LayerNorm, Shape::Image(_)) => {
                Err("normalizes flat rows; put a flatten or dense layer before it".into())
            }
            (Layer::LayerNorm, shape) => Ok(shape),
            (
                Layer::Relu | Layer::Tanh | Layer::Sigmoid | Layer::Gelu | Layer::LeakyRelu,
                shape,
            ) => Ok(shape),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MNIST: InputShape = InputShape::Image {
        channels: 1,
        height: 28,
        width: 28,
    };

    fn count(layout: &[ParameterInfo]) -> usize {
        layout
            .iter()
            .map(|p| p.shape.iter().product::<usize>())
            .sum()
    }

    #[test]
    fn presets_plan_with_the_expected_parameter_counts() {
        let plan = ModelSpec::Preset(Preset::Cnn).plan(&MNIST, 10).unwrap();
        let layout = parameter_layout(&plan);
        let names: Vec<_> = layout.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "conv1.weight",
                "conv1.bias",
                "conv2.weight",
                "conv2.bias",
                "dense1.weight",
                "dense1.bias",
                "output.weight",
                "output.bias"
            ]
        );
        assert_eq!(plan[6].input, Shape::Image([32, 4, 4]));
        let table = InputShape::Table { features: 784 };
        let mlp = ModelSpec::Preset(Preset::Mlp).plan(&table, 10).unwrap();
        assert_eq!(
            count(&parameter_layout(&mlp)),
            784 * 200 + 200 + 200 * 200 + 200 + 2010
        );
        let small = InputShape::Image {
            channels: 1,
            height: 8,
            width: 8,
        };
        let plan = ModelSpec::Preset(Preset::SmallCnn)
            .plan(&small, 10)
            .unwrap();
        assert_eq!(plan[6].input, Shape::Image([32, 2, 2]));
    }

    #[test]
    fn impossible_layers_are_refused_with_the_layer_and_reason() {
        let digits = InputShape::Image {
            channels: 1,
            height: 8,
            width: 8,
        };
        let err = ModelSpec::Preset(Preset::Cnn)
            .plan(&digits, 10)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "layer 4 (conv2): input 2x2 is smaller than the kernel 5x5"
        );
        let table = InputShape::Table { features: 30 };
        let err = ModelSpec::Preset(Preset::Cnn).plan(&table, 2).unwrap_err();
        assert!(err.to_string().contains("needs image input"), "{err}");
        let bad = ModelSpec::Layers(vec![Layer::Dropout { rate: 1.5 }]);
        assert!(bad.plan(&table, 2).is_err());
        let huge = ModelSpec::Layers(vec![Layer::Dense { units: 1_000_000 }]);
        assert!(matches!(
            huge.plan(&MNIST, 10),
            Err(ModelSpecError::Model(_))
        ));
    }

    #[test]
    fn the_layer_language_reads_from_json_and_toml() {
        let json = r#"{"layers": [{"dense": {"units": 64}}, "relu",
            {"dropout": {"rate": 0.1}}, "layer_norm"]}"#;
        let spec: ModelSpec = serde_json::from_str(json).unwrap();
        let toml_text =
            r#"layers = [{dense = {units = 64}}, "relu", {dropout = {rate = 0.1}}, "layer_norm"]"#;
        let from_toml: ModelSpec = toml::from_str(toml_text).unwrap();
        assert_eq!(spec, from_toml);
        let plan = spec.plan(&InputShape::Table { features: 30 }, 2).unwrap();
        let names: Vec<_> = plan.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["dense1", "relu1", "dropout1", "norm1", "output"]);
        let bytes = postcard::to_allocvec(&spec).unwrap();
        assert_eq!(postcard::from_bytes::<ModelSpec>(&bytes).unwrap(), spec);
        assert!("resnet".parse::<ModelSpec>().is_err());
        let bare: ModelSpec = serde_json::from_str("\"cnn\"").unwrap();
        assert_eq!(bare, ModelSpec::Preset(Preset::Cnn));
        let tagged: ModelSpec = serde_json::from_str(r#"{"preset": "cnn"}"#).unwrap();
        assert_eq!(tagged, bare);
        let err = serde_json::from_str::<ModelSpec>("\"resnet\"").unwrap_err();
        assert!(err.to_string().contains("unknown model"), "{err}");
        assert_eq!(
            "small-cnn".parse::<ModelSpec>().unwrap().to_string(),
            "small-cnn"
        );
    }
}
