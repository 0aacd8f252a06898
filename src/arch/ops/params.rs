//! The settings ops take: activations, norm kinds, routers and their
//! balancing, causal masks. Each has a text name (as the grammar spells it)
//! and a fixed hash tag.

use serde::{Deserialize, Serialize};

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

    /// Its fixed number in an op's hashed bytes; never reused.
    pub fn tag(self) -> u8 {
        match self {
            Activation::Relu => 1,
            Activation::Gelu => 2,
            Activation::Silu => 3,
            Activation::LeakyRelu => 4,
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

    /// Its fixed number in an op's hashed bytes; never reused.
    pub fn tag(self) -> u8 {
        match self {
            NormKind::Layer => 1,
            NormKind::Rms => 2,
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

    /// Its fixed number in an op's hashed bytes; never reused.
    pub fn tag(self) -> u8 {
        match self {
            RouterKind::TokenChoice => 1,
            RouterKind::ExpertChoice => 2,
            RouterKind::TopP => 3,
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

    /// Its fixed number in an op's hashed bytes; never reused.
    pub fn tag(self) -> u8 {
        match self {
            Balance::AuxLoss => 1,
            Balance::Bias => 2,
            Balance::None => 3,
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

impl DotMask {
    /// Its fixed number in an op's hashed bytes; never reused.
    pub fn tag(self) -> u8 {
        match self {
            DotMask::None => 1,
            DotMask::Output => 2,
            DotMask::Left => 3,
        }
    }
}
