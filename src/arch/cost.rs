//! Parameter counts and forward FLOPs of ops.
//!
//! FLOPs count a multiply-add as 2 and are reported per token (per-sequence
//! work divided by the sequence length). Formulas follow the usual
//! accounting, e.g. Kaplan et al. 2020 (2·N per token for dense layers plus
//! the attention score and value terms).

use super::ops::{CostAt, Op};
use super::shape::Shape;
use serde::{Deserialize, Serialize};
use std::ops::{Add, AddAssign};

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// Trainable parameters.
    pub params: f64,
    /// Parameters one token touches (MoE: router, its k experts, shared experts).
    pub active_params: f64,
    /// Forward FLOPs per token.
    pub flops: f64,
    /// Graph nodes.
    pub nodes: f64,
}

impl Cost {
    pub fn scaled(self, params: f64, active: f64, flops: f64, nodes: f64) -> Cost {
        Cost {
            params: self.params * params,
            active_params: self.active_params * active,
            flops: self.flops * flops,
            nodes: self.nodes * nodes,
        }
    }
}

impl Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost {
            params: self.params + o.params,
            active_params: self.active_params + o.active_params,
            flops: self.flops + o.flops,
            nodes: self.nodes + o.nodes,
        }
    }
}

impl AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        *self = *self + o;
    }
}

/// The token embedding: a vocab × width table, no FLOPs.
pub fn embedding_cost(vocab: usize, width: usize) -> Cost {
    let table = (vocab * width) as f64;
    Cost {
        params: table,
        active_params: table,
        flops: 0.0,
        nodes: 0.0,
    }
}

/// The output head: a linear map width → vocab with bias.
pub fn head_cost(width: usize, vocab: usize) -> Cost {
    let p = (width * vocab + vocab) as f64;
    Cost {
        params: p,
        active_params: p,
        flops: 2.0 * (width * vocab) as f64,
        nodes: 0.0,
    }
}

/// Embedding plus head for a network whose output width equals its input
/// width (see [`super::graph::Arch::total_cost`] for the general case).
pub fn embedding_and_head(vocab: usize, width: usize) -> Cost {
    embedding_cost(vocab, width) + head_cost(width, vocab)
}

/// Cost of one op that has no body, run on a sequence of `seq` tokens.
/// `inputs` are the input shapes in port order; their token axes are taken
/// to have `seq` positions (a depth-routed body runs on fewer tokens than
/// the shapes it was built with). The formula is the op's own
/// ([`super::ops::OpDef::cost`]).
pub fn op_cost(op: &Op, inputs: &[Shape], out: Shape, seq: usize) -> Cost {
    let out = out.with_tokens(seq);
    op.def().cost(&CostAt {
        in0: inputs.first().map_or(out, |s| s.with_tokens(seq)),
        in1: inputs.get(1).map(|s| s.with_tokens(seq)),
        out,
        arity: inputs.len(),
        seq,
    })
}

/// Tokens per sequence a mixture-of-depths body runs on: the top ⌈ρ·S⌉
/// (Raposo et al. 2024), at least one.
pub fn depth_tokens(capacity: f64, seq: usize) -> usize {
    ((capacity * seq as f64).ceil() as usize).clamp(1, seq.max(1))
}

/// The sequence length a routed op's body runs on, for a sequence of `seq`
/// tokens ([`super::ops::Routed::body_seq`]). Experts see every position
/// they are given and mix no tokens, so their per-token cost does not
/// depend on it.
pub fn body_seq(op: &Op, seq: usize) -> usize {
    op.def().routed().map_or(seq, |r| r.body_seq(seq))
}

/// How a routed op on a sequence of `seq` tokens scales the cost of one
/// copy of its body: (copies holding parameters, copies a token touches,
/// FLOP multiplier).
pub fn routed_scales(op: &Op, seq: usize) -> (f64, f64, f64) {
    op.def().routed().map_or((1.0, 1.0, 1.0), |r| r.scales(seq))
}

/// The router's own cost for a routed op on width `d`.
pub fn router_cost(op: &Op, d: usize) -> Cost {
    let (p, f) = op.def().routed().map_or((0.0, 0.0), |r| r.router(d));
    Cost {
        params: p,
        active_params: p,
        flops: f,
        nodes: 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::graph::Arch;
    use crate::arch::ops::{
        Activation, Attention, Balance, Linear, Mlp, Mod, Moe, MoeSpec, Moh, Norm, NormKind,
        RouterKind,
    };

    const S: usize = 4;
    const D: usize = 16;

    fn x() -> Shape {
        Shape::seq(S, D)
    }

    /// Per-token cost of `op` on a (4 tokens × 16 features) input.
    fn cost(op: Op, out: Shape) -> Cost {
        op_cost(&op, &[x()], out, S)
    }

    #[test]
    fn dense_ops_follow_the_documented_formulas() {
        // Linear 16 → 8 with bias: 16·8 + 8 parameters, 2·S·16·8 FLOPs per sequence.
        let lin = Op::Linear(Linear {
            out: 8,
            bias: true,
            token_mixing: false,
            causal: false,
        });
        let c = cost(lin, x().with_feat(8));
        assert_eq!((c.params, c.active_params, c.flops), (136.0, 136.0, 256.0));
        // Attention, 2 heads of 8: 4·d·inner parameters; per sequence
        // 2·S·params + 4·S·S̄·inner, S̄ = (S+1)/2 under the causal mask.
        let att = |causal| {
            Op::Attention(Attention {
                heads: 2,
                head_dim: 8,
                causal,
            })
        };
        let c = cost(att(true), x());
        assert_eq!(c.params, 1024.0);
        assert_eq!(c.flops, (2.0 * 4.0 * 1024.0 + 4.0 * 4.0 * 2.5 * 16.0) / 4.0);
        let full = cost(att(false), x());
        assert_eq!(
            full.flops - c.flops,
            4.0 * 1.5 * 16.0,
            "S̄ = S without the mask"
        );
        // Gated MLP: three matrices d × hidden.
        let mlp = Op::Mlp(Mlp {
            hidden: 32,
            act: Activation::Silu,
            gated: true,
        });
        let c = cost(mlp, x());
        assert_eq!((c.params, c.flops), (1536.0, 3072.0));
        // Norms: 2·d (layer) or d (RMS) parameters, 5 FLOPs per element.
        let c = cost(
            Op::Norm(Norm {
                kind: NormKind::Rms,
            }),
            x(),
        );
        assert_eq!((c.params, c.flops), (16.0, 5.0 * 16.0));
        assert_eq!(
            embedding_and_head(10, D).params,
            10.0 * 16.0 + 16.0 * 10.0 + 10.0
        );
    }

    #[test]
    fn mixture_of_heads_pays_keys_and_values_of_every_head() {
        let moh = Op::Moh(Moh {
            heads: 4,
            active: 1,
            shared: 1,
            head_dim: 4,
            causal: false,
        });
        let c = cost(moh, x());
        let router = 16.0 * 3.0;
        assert_eq!(c.params, 4.0 * 16.0 * 4.0 * 4.0 + router);
        // Q and O for the 2 heads a token uses, K and V for all 4.
        let active = (2.0 * 2.0 + 2.0 * 4.0) * 16.0 * 4.0 + router;
        assert_eq!(c.active_params, active);
        assert_eq!(c.flops, 2.0 * active + 4.0 * 4.0 * 4.0 * 2.0);
    }

    fn moe(router: RouterKind, top_k: usize, capacity: f64) -> Op {
        Op::Moe(Moe {
            spec: MoeSpec {
                experts: 4,
                top_k,
                shared: 1,
                router,
                capacity,
                top_p: 0.5,
                balance: Balance::None,
            },
            expert: Box::new(Arch::start(x(), false)),
        })
    }

    #[test]
    fn routed_ops_scale_their_body() {
        // Token choice: 4 + 1 copies hold parameters; a token touches k + shared.
        assert_eq!(
            routed_scales(&moe(RouterKind::TokenChoice, 2, 1.25), S),
            (5.0, 3.0, 3.0)
        );
        assert_eq!(
            routed_scales(&moe(RouterKind::TopP, 3, 1.25), S),
            (5.0, 4.0, 4.0)
        );
        // Expert choice: cf experts per token on average, at most E.
        assert_eq!(
            routed_scales(&moe(RouterKind::ExpertChoice, 1, 1.5), S),
            (5.0, 2.5, 2.5)
        );
        assert_eq!(
            routed_scales(&moe(RouterKind::ExpertChoice, 1, 8.0), S).1,
            5.0
        );
        let r = router_cost(&moe(RouterKind::TokenChoice, 2, 1.25), D);
        assert_eq!((r.params, r.flops), (64.0, 128.0));
        // Depth routing runs the body on ⌈ρ·S⌉ tokens, at least one.
        let body = Box::new(Arch::start(x(), false));
        let m = Op::Mod(Mod {
            capacity: 0.25,
            causal: false,
            body,
        });
        assert_eq!(body_seq(&m, 10), 3);
        assert_eq!(routed_scales(&m, 10), (1.0, 1.0, 0.3));
        assert_eq!(depth_tokens(1e-9, 10), 1);
        assert_eq!(depth_tokens(1.0, 10), 10);
        assert_eq!(router_cost(&m, D).params, 16.0);
    }
}
