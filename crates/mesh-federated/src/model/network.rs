//! The one network behind every model: a planned layer list as a burn module.
//!
//! [`LayerNet`] runs the layers of a [`mesh_spec::model::PlannedLayer`] list
//! in order. Layers with parameters (dense, conv, layer norm) are burn modules
//! in one `Vec`, so burn visits their parameters in layer order, the order of
//! [`mesh_spec::model::parameter_layout`]. Rows arrive flat `[batch, features]`
//! and are reshaped to `[batch, channels, height, width]` when the input is an
//! image. Dropout draws its masks from a seeded generator the caller passes,
//! so training stays deterministic when many models train at once (burn's own
//! dropout draws from one process-wide generator).

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::{gelu, leaky_relu, relu, sigmoid, tanh};
use burn::tensor::{Device, Tensor, TensorData};
use mesh_spec::model::{Layer, PlannedLayer, Shape};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Slope of the leaky ReLU for negative input.
const LEAKY_SLOPE: f64 = 0.01;

/// A layer that holds parameters.
#[derive(Module, Debug)]
pub enum ParamLayer {
    /// Fully connected.
    Dense(Linear),
    /// 2-D convolution.
    Conv(Conv2d),
    /// Layer normalization.
    Norm(LayerNorm),
}

/// One step of the forward pass.
#[derive(Clone, Debug)]
enum Step {
    /// The parameter layer at this index of `LayerNet::layers`.
    Param(usize),
    MaxPool(MaxPool2d),
    AvgPool(AvgPool2d),
    Flatten,
    Dropout(f32),
    Relu,
    Tanh,
    Sigmoid,
    Gelu,
    LeakyRelu,
}

/// Values between two steps: flat rows or images.
enum Activations {
    Flat(Tensor<2>),
    Image(Tensor<4>),
}

impl Activations {
    fn flat(self) -> Tensor<2> {
        match self {
            Activations::Flat(x) => x,
            Activations::Image(x) => x.flatten(1, 3),
        }
    }

    fn map(
        self,
        f2: impl FnOnce(Tensor<2>) -> Tensor<2>,
        f4: impl FnOnce(Tensor<4>) -> Tensor<4>,
    ) -> Self {
        match self {
            Activations::Flat(x) => Activations::Flat(f2(x)),
            Activations::Image(x) => Activations::Image(f4(x)),
        }
    }
}

/// A planned layer list as a burn module.
#[derive(Module, Debug)]
pub struct LayerNet {
    layers: Vec<ParamLayer>,
    #[module(skip)]
    steps: Vec<Step>,
    #[module(skip)]
    input_image: Option<[usize; 3]>,
}

impl LayerNet {
    /// Builds the planned layers on `device`; `input_image` is the input's
    /// `[channels, height, width]` when rows are images.
    pub fn new(plan: &[PlannedLayer], input_image: Option<[usize; 3]>, device: &Device) -> Self {
        let mut layers = Vec::new();
        let mut steps = Vec::with_capacity(plan.len());
        for p in plan {
            let mut param = |layer: ParamLayer| {
                layers.push(layer);
                Step::Param(layers.len() - 1)
            };
            let step = match p.layer {
                Layer::Dense { units } => param(ParamLayer::Dense(
                    LinearConfig::new(p.input.len(), units as usize).init(device),
                )),
                Layer::Conv2d {
                    filters,
                    kernel,
                    stride,
                    padding,
                } => {
                    let channels = match p.input {
                        Shape::Image([c, _, _]) => c,
                        Shape::Flat(_) => 1,
                    };
                    let (k, s, pad) = (kernel as usize, stride as usize, padding as usize);
                    let padding = match pad {
                        0 => PaddingConfig2d::Valid,
                        pad => PaddingConfig2d::Explicit(pad, pad, pad, pad),
                    };
                    param(ParamLayer::Conv(
                        Conv2dConfig::new([channels, filters as usize], [k, k])
                            .with_stride([s, s])
                            .with_padding(padding)
                            .init(device),
                    ))
                }
                Layer::LayerNorm => param(ParamLayer::Norm(
                    LayerNormConfig::new(p.input.len()).init(device),
                )),
                Layer::MaxPool2d { size } => {
                    Step::MaxPool(MaxPool2dConfig::new([size as usize; 2]).init())
                }
                Layer::AvgPool2d { size } => {
                    Step::AvgPool(AvgPool2dConfig::new([size as usize; 2]).init())
                }
                Layer::Flatten => Step::Flatten,
                Layer::Dropout { rate } => Step::Dropout(rate),
                Layer::Relu => Step::Relu,
                Layer::Tanh => Step::Tanh,
                Layer::Sigmoid => Step::Sigmoid,
                Layer::Gelu => Step::Gelu,
                Layer::LeakyRelu => Step::LeakyRelu,
            };
            steps.push(step);
        }
        Self {
            layers,
            steps,
            input_image,
        }
    }

    /// Outputs `[batch, outputs]` for rows `[batch, features]`. With `dropout`
    /// (training), dropout layers draw their masks from it; without, they pass
    /// values through.
    pub fn forward(&self, rows: Tensor<2>, mut dropout: Option<&mut ChaCha8Rng>) -> Tensor<2> {
        let mut x = match self.input_image {
            Some([c, h, w]) => {
                let [batch, _] = rows.dims();
                Activations::Image(rows.reshape([batch, c, h, w]))
            }
            None => Activations::Flat(rows),
        };
        for step in &self.steps {
            x = match step {
                Step::Param(i) => self.apply(&self.layers[*i], x),
                Step::MaxPool(pool) => Activations::Image(pool.forward(image(x))),
                Step::AvgPool(pool) => Activations::Image(pool.forward(image(x))),
                Step::Flatten => Activations::Flat(x.flat()),
                Step::Dropout(rate) => match dropout.as_deref_mut() {
                    Some(rng) => drop_out(x, *rate, rng),
                    None => x,
                },
                Step::Relu => x.map(relu, relu),
                Step::Tanh => x.map(tanh, tanh),
                Step::Sigmoid => x.map(sigmoid, sigmoid),
                Step::Gelu => x.map(gelu, gelu),
                Step::LeakyRelu => x.map(
                    |t| leaky_relu(t, LEAKY_SLOPE),
                    |t| leaky_relu(t, LEAKY_SLOPE),
                ),
            };
        }
        x.flat()
    }

    fn apply(&self, layer: &ParamLayer, x: Activations) -> Activations {
        match layer {
            ParamLayer::Dense(linear) => Activations::Flat(linear.forward(x.flat())),
            ParamLayer::Conv(conv) => Activations::Image(conv.forward(image(x))),
            ParamLayer::Norm(norm) => Activations::Flat(norm.forward(x.flat())),
        }
    }
}

/// The planner only puts image layers after image-shaped values; a flat row
/// reaching one is treated as a single-row, single-channel image.
fn image(x: Activations) -> Tensor<4> {
    match x {
        Activations::Image(x) => x,
        Activations::Flat(x) => {
            let [batch, n] = x.dims();
            x.reshape([batch, 1, 1, n])
        }
    }
}

/// Inverted dropout with a mask drawn from `rng`.
fn drop_out(x: Activations, rate: f32, rng: &mut ChaCha8Rng) -> Activations {
    if rate <= 0.0 {
        return x;
    }
    let keep = 1.0 - rate;
    let mut masked = |dims: Vec<usize>, device: &Device| {
        let n: usize = dims.iter().product();
        let mask: Vec<f32> = (0..n)
            .map(|_| {
                if rng.random::<f32>() < keep {
                    1.0 / keep
                } else {
                    0.0
                }
            })
            .collect();
        (TensorData::new(mask, dims), device.clone())
    };
    match x {
        Activations::Flat(t) => {
            let (data, device) = masked(t.dims().to_vec(), &t.device());
            Activations::Flat(t * Tensor::from_data(data, &device))
        }
        Activations::Image(t) => {
            let (data, device) = masked(t.dims().to_vec(), &t.device());
            Activations::Image(t * Tensor::from_data(data, &device))
        }
    }
}
