//! Mixture of experts.

use super::{rule, Broken, CostAt, Fields, MoeSpec, OpDef, Routed, RouterKind};
use crate::arch::cost::Cost;
use crate::arch::graph::Arch;
use crate::arch::shape::Shape;
use serde::{Deserialize, Serialize};
use std::fmt;

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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Moe {
    pub spec: MoeSpec,
    pub expert: Box<Arch>,
}

impl OpDef for Moe {
    fn kind(&self) -> &'static str {
        "moe"
    }

    fn encode(&self, e: &mut Fields) {
        let s = &self.spec;
        e.tag(16)
            .size(s.experts)
            .size(s.top_k)
            .size(s.shared)
            .tag(s.router.tag())
            .real(s.capacity)
            .real(s.top_p)
            .tag(s.balance.tag());
    }

    fn infer(&self, ins: &[Shape], _causal: bool) -> Result<Option<Shape>, Broken> {
        rule::token_wise(ins)
    }

    fn cost(&self, _at: &CostAt) -> Cost {
        Cost::default()
    }

    fn has_weights(&self) -> bool {
        true
    }

    fn routed(&self) -> Option<&dyn Routed> {
        Some(self)
    }
}

impl Routed for Moe {
    fn body(&self) -> &Arch {
        &self.expert
    }

    fn is_noncausal(&self) -> bool {
        self.spec.router == RouterKind::ExpertChoice
    }

    fn scales(&self, _seq: usize) -> (f64, f64, f64) {
        let spec = &self.spec;
        let per_token = match spec.router {
            RouterKind::TokenChoice | RouterKind::TopP => spec.top_k as f64,
            // Each expert takes cf·T/E tokens: cf experts per token on average.
            RouterKind::ExpertChoice => spec.capacity,
        };
        let copies = (spec.experts + spec.shared) as f64;
        // Expert choice has no top_k: a token touches cf experts on average.
        let touched = per_token.min(spec.experts as f64) + spec.shared as f64;
        (copies, touched, per_token + spec.shared as f64)
    }

    fn router(&self, d: usize) -> (f64, f64) {
        let d = d as f64;
        let e = self.spec.experts as f64;
        (d * e, 2.0 * d * e)
    }
}

impl fmt::Display for Moe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let spec = &self.spec;
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
}
