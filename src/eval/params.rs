//! The parameter store: every trainable tensor of one candidate, flat
//! (1-D, reshaped where used), with its name and how it is initialised.
//!
//! dfdx's `nn` modules and optimisers need compile-time shapes; candidates
//! have runtime shapes, so we keep our own list.

use super::kernels::Backend;
use dfdx::prelude::*;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// How a parameter starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Normal(0, 1/sqrt(fan_in)) (LeCun).
    FanIn(usize),
    /// Normal(0, std).
    Normal(f64),
    /// Every element `v` (norm gains 1, biases 0).
    Const(f32),
}

#[derive(Clone, Debug)]
pub struct ParamInfo {
    pub name: String,
    pub len: usize,
    /// Logical shape (matrices `in × out`, used as `x · W`); `len` is its product.
    pub shape: Vec<usize>,
    pub init: Init,
    /// Decoupled weight decay applies (matrices; not gains, biases, tables).
    pub decay: bool,
}

/// Parameter values on a device.
pub struct Params<D: Backend> {
    pub tensors: Vec<Tensor<(usize,), f32, D>>,
}

impl<D: Backend> Params<D> {
    /// Draws initial values from `rng` on the host, in declaration order.
    pub fn init(dev: &D, info: &[ParamInfo], rng: &mut ChaCha8Rng) -> Params<D> {
        Params::from_host(dev, init_host(info, rng))
    }

    pub fn from_host(dev: &D, host: Vec<Vec<f32>>) -> Params<D> {
        let tensors = host
            .into_iter()
            .map(|data| {
                let n = data.len();
                dev.tensor_from_vec(data, (n,))
            })
            .collect();
        Params { tensors }
    }
}

/// Initial values of every parameter, drawn from `rng` in declaration order.
pub fn init_host(info: &[ParamInfo], rng: &mut ChaCha8Rng) -> Vec<Vec<f32>> {
    info.iter()
        .map(|p| match p.init {
            Init::Const(v) => vec![v; p.len],
            Init::FanIn(fan) => normal(rng, 1.0 / (fan.max(1) as f64).sqrt(), p.len),
            Init::Normal(std) => normal(rng, std, p.len),
        })
        .collect()
}

fn normal(rng: &mut ChaCha8Rng, std: f64, n: usize) -> Vec<f32> {
    let d = Normal::new(0.0, std).unwrap_or_else(|_| Normal::new(0.0, 1.0).expect("unit normal"));
    (0..n).map(|_| d.sample(rng) as f32).collect()
}
