//! The neural networks, as burn modules: logistic regression, MLP and a small CNN.
//!
//! Every network maps a batch of flat feature rows `[batch, features]` to logits
//! `[batch, classes]`; the CNN reshapes rows to `[batch, 1, height, width]` itself,
//! so training code treats all networks alike.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, Relu};
use burn::tensor::{Device, Tensor};

/// A network that turns feature rows into class logits.
pub trait Network: Module + 'static {
    /// Logits `[batch, classes]` for rows `[batch, features]`.
    fn forward(&self, rows: Tensor<2>) -> Tensor<2>;
}

/// Multinomial logistic regression: one linear layer.
#[derive(Module, Debug)]
pub struct Logistic {
    linear: Linear,
}

impl Logistic {
    /// A new model for `features` inputs and `classes` outputs.
    pub fn new(features: usize, classes: usize, device: &Device) -> Self {
        Self {
            linear: LinearConfig::new(features, classes).init(device),
        }
    }
}

impl Network for Logistic {
    fn forward(&self, rows: Tensor<2>) -> Tensor<2> {
        self.linear.forward(rows)
    }
}

/// Multi-layer perceptron with two hidden ReLU layers.
#[derive(Module, Debug)]
pub struct Mlp {
    hidden1: Linear,
    hidden2: Linear,
    output: Linear,
    activation: Relu,
}

impl Mlp {
    /// Width of each hidden layer.
    pub const HIDDEN: usize = 200;

    /// A new model for `features` inputs and `classes` outputs.
    pub fn new(features: usize, classes: usize, device: &Device) -> Self {
        Self {
            hidden1: LinearConfig::new(features, Self::HIDDEN).init(device),
            hidden2: LinearConfig::new(Self::HIDDEN, Self::HIDDEN).init(device),
            output: LinearConfig::new(Self::HIDDEN, classes).init(device),
            activation: Relu::new(),
        }
    }
}

impl Network for Mlp {
    fn forward(&self, rows: Tensor<2>) -> Tensor<2> {
        let x = self.activation.forward(self.hidden1.forward(rows));
        let x = self.activation.forward(self.hidden2.forward(x));
        self.output.forward(x)
    }
}

/// A small CNN: two 5x5 conv layers with max pooling, then two dense layers.
///
/// `[1, 28, 28] -> conv(C1) -> pool -> [C1, 12, 12] -> conv(C2) -> pool -> [C2, 4, 4] -> 64 -> classes`
#[derive(Module, Debug)]
pub struct Cnn {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: MaxPool2d,
    dense: Linear,
    output: Linear,
    activation: Relu,
    height: usize,
    width: usize,
}

impl Cnn {
    /// Output channels of the first convolution.
    pub const CHANNELS1: usize = 16;
    /// Output channels of the second convolution.
    pub const CHANNELS2: usize = 32;
    /// Width of the dense hidden layer.
    pub const DENSE: usize = 128;
    const KERNEL: usize = 5;

    /// A new CNN for single-channel `height x width` images and `classes` outputs.
    pub fn new(height: usize, width: usize, classes: usize, device: &Device) -> Self {
        let (h, w) = Self::flat_size(height, width);
        Self {
            conv1: Conv2dConfig::new([1, Self::CHANNELS1], [Self::KERNEL; 2]).init(device),
            conv2: Conv2dConfig::new([Self::CHANNELS1, Self::CHANNELS2], [Self::KERNEL; 2])
                .init(device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            dense: LinearConfig::new(Self::CHANNELS2 * h * w, Self::DENSE).init(device),
            output: LinearConfig::new(Self::DENSE, classes).init(device),
            activation: Relu::new(),
            height,
            width,
        }
    }

    /// Spatial size after both conv+pool stages.
    fn flat_size(height: usize, width: usize) -> (usize, usize) {
        let stage = |s: usize| (s.saturating_sub(Self::KERNEL - 1)) / 2;
        (stage(stage(height)), stage(stage(width)))
    }
}

impl Network for Cnn {
    fn forward(&self, rows: Tensor<2>) -> Tensor<2> {
        let [batch, _] = rows.dims();
        let x = rows.reshape([batch, 1, self.height, self.width]);
        let x = self
            .pool
            .forward(self.activation.forward(self.conv1.forward(x)));
        let x = self
            .pool
            .forward(self.activation.forward(self.conv2.forward(x)));
        let x: Tensor<2> = x.flatten(1, 3);
        let x = self.activation.forward(self.dense.forward(x));
        self.output.forward(x)
    }
}
