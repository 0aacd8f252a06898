//! The typed ops of the IR.

use super::graph::Arch;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Activation {
    Relu,
    Gelu,
    Silu,
    LeakyRelu,
}

impl Activation {
    pub const NAMES: &'static [&'static str] = &["relu", "gelu", "silu", "leaky_relu"];

    pub fn parse(s: &str) -> Option<Activation> {
        Some(match s {
            "relu" => Activation::Relu,
            "gelu" => Activation::Gelu,
            "silu" => Activation::Silu,
            "leaky_relu" => Activation::LeakyRelu,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Gelu => "gelu",
            Activation::Silu => "silu",
            Activation::LeakyRelu => "leaky_relu",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NormKind {
    Layer,
    Rms,
}

impl NormKind {
    pub const NAMES: &'static [&'static str] = &["layer", "rms"];

    pub fn parse(s: &str) -> Option<NormKind> {
        match s {
            "layer" => Some(NormKind::Layer),
            "rms" => Some(NormKind::Rms),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            NormKind::Layer => "layer",
            NormKind::Rms => "rms",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RouterKind {
    /// Each token picks its top-k experts (GShard / Switch).
    TokenChoice,
    /// Each expert picks its top tokens (Zhou et al. 2022); non-causal.
    ExpertChoice,
    /// Each token takes experts until their probability mass reaches p (Huang et al. 2024).
    TopP,
}

impl RouterKind {
    pub const NAMES: &'static [&'static str] = &["token_choice", "expert_choice", "top_p"];

    pub fn parse(s: &str) -> Option<RouterKind> {
        Some(match s {
            "token_choice" => RouterKind::TokenChoice,
            "expert_choice" => RouterKind::ExpertChoice,
            "top_p" => RouterKind::TopP,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            RouterKind::TokenChoice => "token_choice",
            RouterKind::ExpertChoice => "expert_choice",
            RouterKind::TopP => "top_p",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Balance {
    /// Switch-style auxiliary load-balancing loss.
    AuxLoss,
    /// DeepSeek-V3 auxiliary-loss-free per-expert selection bias.
    Bias,
    None,
}

impl Balance {
    pub const NAMES: &'static [&'static str] = &["aux_loss", "bias", "none"];

    pub fn parse(s: &str) -> Option<Balance> {
        Some(match s {
            "aux_loss" => Balance::AuxLoss,
            "bias" => Balance::Bias,
            "none" => Balance::None,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Balance::AuxLoss => "aux_loss",
            Balance::Bias => "bias",
            Balance::None => "none",
        }
    }
}

/// Everything a mixture-of-experts layer's router needs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MoeSpec {
    /// Routed experts.
    pub experts: usize,
    pub top_k: usize,
    /// Always-on shared experts (DeepSeekMoE).
    pub shared: usize,
    pub router: RouterKind,
    /// Capacity factor cf: C = ceil(cf · k · T / E); for expert choice, the
    /// average number of experts per token.
    pub capacity: f64,
    /// Probability mass threshold of the top-p router.
    pub top_p: f64,
    pub balance: Balance,
}

impl MoeSpec {
    /// Default `top_p`, also the value it takes where it has no effect.
    pub const TOP_P: f64 = 0.5;

    /// The same router with every setting that cannot change what it
    /// computes or how it trains fixed to one value, so that equal layers
    /// are spelled alike (and hash alike):
    /// - `top_p` only matters to a top-p router choosing among more than
    ///   one expert; elsewhere it is [`MoeSpec::TOP_P`];
    /// - a token-choice or top-p router whose capacity (C = ⌈cf·k·T/E⌉)
    ///   reaches the sequence length never drops a token (an expert is
    ///   wanted at most once per token): cf is fixed to E/k; an expert-choice
    ///   router with cf ≥ E takes every token: cf is fixed to E;
    /// - expert choice ignores `top_k` (fixed to 1) and has nothing to
    ///   balance (every expert takes the same number of tokens), as does a
    ///   token-choice router sending every token to every expert (k = E):
    ///   `balance` is fixed to `none` (the selection bias is never used and
    ///   the Switch loss would be the constant α, moving no weight).
    pub fn canonical(self) -> MoeSpec {
        let mut c = self;
        let e = c.experts.max(1) as f64;
        match c.router {
            RouterKind::ExpertChoice => {
                c.top_k = 1;
                c.top_p = Self::TOP_P;
                c.balance = Balance::None;
                if c.capacity >= e {
                    c.capacity = e;
                }
            }
            RouterKind::TokenChoice | RouterKind::TopP => {
                let k = c.top_k.clamp(1, c.experts.max(1));
                if c.router == RouterKind::TokenChoice || k == 1 {
                    c.top_p = Self::TOP_P;
                }
                if c.capacity * k as f64 >= e {
                    c.capacity = e / k as f64;
                }
                if c.router == RouterKind::TokenChoice && k == c.experts {
                    c.balance = Balance::None;
                }
            }
        }
        c
    }
}

/// How a matrix product is masked for causality.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DotMask {
    None,
    /// The (token × token) result is zeroed above the diagonal.
    Output,
    /// The (token × token) left operand is zeroed above the diagonal before
    /// contracting over tokens.
    Left,
}

/// An op of the IR. Tensors are per sequence and two-dimensional (the batch
/// axis is implicit); each axis is a token or a feature axis (see
/// [`super::shape`]). "Last axis" means the columns. This enum is the
/// reference for what every backend (the dfdx evaluator, the f64 functional
/// hash, the PyTorch export) computes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Token embeddings, (tokens, width). Inside a routed body: the tokens
    /// given to the body.
    Input,
    /// Identity marker on the graph's result. At the top level the evaluator
    /// maps it to the vocabulary with a linear head (with bias).
    Output,
    /// `y = x·W (+ b)` over the last axis, `W: in × out`. With
    /// `token_mixing` the last axis is a token axis (in = out = S) and, when
    /// `causal`, `W[j][i] = 0` for `j > i` (output position i reads inputs
    /// j ≤ i only).
    Linear {
        out: usize,
        bias: bool,
        token_mixing: bool,
        causal: bool,
    },
    /// Over the last axis, eps 1e-5: layer = (x−mean)/sqrt(var+eps)·g + b;
    /// rms = x/sqrt(mean(x²)+eps)·g.
    Norm {
        kind: NormKind,
    },
    /// Elementwise: relu, gelu (tanh approximation), silu = x·sigmoid(x),
    /// leaky_relu with slope 0.01.
    Act {
        f: Activation,
    },
    /// Softmax over the last axis; `causal` (only on a token×token tensor)
    /// gives entry (i, j > i) probability 0.
    Softmax {
        causal: bool,
    },
    /// Learnable positional encoding: a table of the input's shape, added.
    PosEnc,
    Transpose,
    /// Part `part` (0-based) of `parts` equal slices along the feature axis
    /// (rows or columns, whichever is the feature axis).
    Split {
        part: usize,
        parts: usize,
    },
    Add,
    Mul,
    /// Concatenation along the feature axis, inputs in port order. `Add` and
    /// `Mul` take two or more inputs of one shape.
    Concat,
    /// Matrix product of port 0 `(a×k)` and port 1 `(k×c)`, scaled by
    /// 1/sqrt(k) when `scaled`. `Output` zeroes result entries (i, j > i);
    /// `Left` zeroes port 0's entries (i, j > i) before the product.
    Dot {
        scaled: bool,
        mask: DotMask,
    },
    /// Multi-head self-attention without biases: Q, K, V = x·Wq, x·Wk, x·Wv
    /// (width → heads·head_dim), per head softmax(Q·Kᵀ/sqrt(head_dim)) (causal
    /// mask if set) · V, heads concatenated, then ·Wo back to the width.
    Attention {
        heads: usize,
        head_dim: usize,
        causal: bool,
    },
    /// Without biases: act(x·W1)·W2, or gated (GLU, Shazeer 2020)
    /// (act(x·W1) ⊙ x·W3)·W2; W1, W3: width → hidden, W2: hidden → width.
    Mlp {
        hidden: usize,
        act: Activation,
        gated: bool,
    },
    /// Mixture of experts; every expert (routed and shared) is a copy of
    /// `expert` (a token-wise body: no token mixing) with its own weights.
    /// Router logits x·Wr (width → experts, no bias), probabilities by
    /// softmax. Token choice: each token's top-k experts, gates renormalised
    /// over the k when k > 1, per-expert capacity ceil(capacity·k·T/E)
    /// tokens per sequence, overflow dropped in position order. Expert
    /// choice: each expert takes its ceil(capacity·T/E) highest-probability
    /// tokens, gate = probability. Top-p: experts in decreasing probability
    /// until their mass reaches `top_p`, at most `top_k`, gates renormalised.
    /// Output = Σ gate·expert(x) + Σ shared(x). A dropped token outputs 0
    /// here (the enclosing residual carries it).
    Moe {
        spec: MoeSpec,
        expert: Box<Arch>,
    },
    /// Mixture-of-depths (Raposo et al. 2024): router score r = x·w (width →
    /// 1); the ceil(capacity·T) highest-scoring tokens of each sequence,
    /// gathered in order, form the shorter sequence `body` runs on (its
    /// attention sees only them), and get x + sigmoid(r)·body; the rest pass
    /// through unchanged. `body` is the residual branch (it does not add x
    /// itself) and may not depend on positions. The top-k is over the whole
    /// sequence, so it is non-causal, unless `causal`: then training also
    /// teaches the router, by a binary cross-entropy loss, to predict from
    /// x alone whether a token is in the top-k, and at inference a token is
    /// routed when r > 0 (Raposo et al. 2024, §3.5, first method).
    Mod {
        capacity: f64,
        causal: bool,
        body: Box<Arch>,
    },
    /// Routed layer skip, decided by each token alone (causal): g =
    /// sigmoid(x·w + b); the tokens with g ≥ 0.5, gathered in order, form
    /// the sequence `body` runs on and get x + g·body, the others keep x.
    /// No routed layer may nest inside `body`.
    /// `capacity` is the target fraction of tokens that run `body` (the bias
    /// starts at logit(capacity); a routing loss holds the rate there).
    LayerSkip {
        capacity: f64,
        body: Box<Arch>,
    },
    /// Mixture-of-heads attention (Jin et al. 2024, arXiv 2410.11842):
    /// attention as above with `heads` heads; `shared` heads always on, and
    /// per token the top `active` of the other heads by router softmax
    /// (x·Wr, width → heads − shared); head outputs are weighted by their gate
    /// (shared: 1, routed: renormalised probability) before Wo.
    Moh {
        heads: usize,
        active: usize,
        shared: usize,
        head_dim: usize,
        causal: bool,
    },
}

impl Op {
    /// Inputs may be reordered without changing the result.
    pub fn is_commutative(&self) -> bool {
        matches!(self, Op::Add | Op::Mul)
    }

    /// Short kind name (for hashing labels, tables and graph files).
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Output => "output",
            Op::Linear { .. } => "linear",
            Op::Norm { .. } => "norm",
            Op::Act { .. } => "act",
            Op::Softmax { .. } => "softmax",
            Op::PosEnc => "posenc",
            Op::Transpose => "transpose",
            Op::Split { .. } => "split",
            Op::Add => "add",
            Op::Mul => "mul",
            Op::Concat => "concat",
            Op::Dot { .. } => "dot",
            Op::Attention { .. } => "attention",
            Op::Mlp { .. } => "mlp",
            Op::Moe { .. } => "moe",
            Op::Mod { .. } => "mod",
            Op::LayerSkip { .. } => "layer_skip",
            Op::Moh { .. } => "moh",
        }
    }

    /// Nested body, for routed ops.
    pub fn body(&self) -> Option<&Arch> {
        match self {
            Op::Moe { expert, .. } => Some(expert),
            Op::Mod { body, .. } | Op::LayerSkip { body, .. } => Some(body),
            _ => None,
        }
    }

    /// Routers whose choice of tokens depends on later tokens of the sequence.
    pub fn is_noncausal_router(&self) -> bool {
        matches!(
            self,
            Op::Moe {
                spec: MoeSpec {
                    router: RouterKind::ExpertChoice,
                    ..
                },
                ..
            } | Op::Mod { causal: false, .. }
        )
    }
}

impl fmt::Display for Op {
    /// One-line label with the op's parameters (bodies not included).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Linear {
                out,
                bias,
                token_mixing,
                causal,
            } => {
                write!(f, "linear({out}")?;
                if *token_mixing {
                    f.write_str(", tokens")?;
                }
                if *causal {
                    f.write_str(", causal")?;
                }
                if !bias {
                    f.write_str(", no bias")?;
                }
                f.write_str(")")
            }
            Op::Norm { kind } => write!(f, "norm({})", kind.name()),
            Op::Act { f: a } => write!(f, "{}", a.name()),
            Op::Softmax { causal } => write!(f, "softmax{}", if *causal { "(causal)" } else { "" }),
            Op::Split { part, parts } => write!(f, "split({part}/{parts})"),
            Op::Dot { scaled, mask } => {
                write!(f, "{}", if *scaled { "scaled_dot" } else { "dot" })?;
                match mask {
                    DotMask::None => Ok(()),
                    DotMask::Output => f.write_str("(causal out)"),
                    DotMask::Left => f.write_str("(causal left)"),
                }
            }
            Op::Attention {
                heads,
                head_dim,
                causal,
            } => write!(
                f,
                "attention(heads={heads}, head_dim={head_dim}{})",
                if *causal { ", causal" } else { "" }
            ),
            Op::Mlp { hidden, act, gated } => write!(
                f,
                "mlp(hidden={hidden}, {}{})",
                act.name(),
                if *gated { ", gated" } else { "" }
            ),
            Op::Moe { spec, .. } => {
                write!(
                    f,
                    "moe(experts={}, top_k={}, shared={}, {}, capacity={}",
                    spec.experts,
                    spec.top_k,
                    spec.shared,
                    spec.router.name(),
                    spec.capacity
                )?;
                if spec.router == RouterKind::TopP {
                    write!(f, ", p={}", spec.top_p)?;
                }
                write!(f, ", {})", spec.balance.name())
            }
            Op::Mod {
                capacity,
                causal: false,
                ..
            } => write!(f, "mod(capacity={capacity})"),
            Op::Mod {
                capacity,
                causal: true,
                ..
            } => write!(f, "mod(capacity={capacity}, causal)"),
            Op::LayerSkip { capacity, .. } => write!(f, "layer_skip(capacity={capacity})"),
            Op::Moh {
                heads,
                active,
                shared,
                head_dim,
                causal,
            } => write!(
                f,
                "moh(heads={heads}, active={active}, shared={shared}, head_dim={head_dim}{})",
                if *causal { ", causal" } else { "" }
            ),
            other => f.write_str(other.kind()),
        }
    }
}
