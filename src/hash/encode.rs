//! The bytes a node's label is hashed from: its op kind and parameters and
//! its shape, written field by field in a fixed order. Written by hand so
//! that renaming a field or variant, or changing how an op prints, cannot
//! change a stored hash; changing these bytes on purpose means bumping
//! `ENCODING_VERSION` (which both hash recipes include).

use crate::arch::ops::Fields;
use crate::arch::{Axis, Op, Shape};

/// Version of this encoding. Hashed into every label, so labels written by
/// another encoding never collide with these.
pub const ENCODING_VERSION: u8 = 1;

/// The op's kind and parameters ([`crate::arch::ops::OpDef::encode`]); a
/// routed op's body is not included (the structural hash adds the body's
/// own hash beside it).
pub fn op_bytes(op: &Op) -> Vec<u8> {
    let mut e = Fields(vec![ENCODING_VERSION]);
    op.def().encode(&mut e);
    e.0
}

/// Both axes, each as its kind and size.
pub fn shape_bytes(s: &Shape) -> Vec<u8> {
    let mut e = Fields(vec![ENCODING_VERSION]);
    for d in [s.rows, s.cols] {
        e.tag(match d.axis {
            Axis::Tok => 1,
            Axis::Feat => 2,
        })
        .size(d.size);
    }
    e.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ops::{
        Act, Affine, Attention, Dot, LayerScale, LayerSkip, Linear, Mlp, Mod, Moe, Moh, Norm,
        Softmax, Split,
    };
    use crate::arch::{Activation, Arch, Balance, DotMask, MoeSpec, NormKind, RouterKind};

    /// The bytes are written out here in full, not derived from the op:
    /// a renamed field or a changed `Debug`/`Display` leaves them as they
    /// are, and any change to them fails this test.
    #[test]
    fn bytes_of_known_ops_are_fixed() {
        let linear = Op::Linear(Linear {
            out: 300,
            bias: true,
            token_mixing: false,
            causal: true,
        });
        let mut want = vec![1, 3];
        want.extend_from_slice(&[0x2c, 1, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&[1, 0, 1]);
        assert_eq!(op_bytes(&linear), want);
        assert_eq!(op_bytes(&Op::Add), [1, 10]);
        assert_eq!(
            op_bytes(&Op::Act(Act {
                f: Activation::Gelu
            })),
            [1, 5, 2]
        );
        let moe = Op::Moe(Moe {
            spec: MoeSpec {
                experts: 4,
                top_k: 2,
                shared: 0,
                router: RouterKind::TopP,
                capacity: 1.0,
                top_p: 0.5,
                balance: Balance::Bias,
            },
            expert: Box::new(Arch::start(Shape::seq(4, 8), true)),
        });
        let mut want = vec![1, 16];
        for n in [4u64, 2, 0] {
            want.extend_from_slice(&n.to_le_bytes());
        }
        want.push(3);
        want.extend_from_slice(&0x3ff0_0000_0000_0000u64.to_le_bytes());
        want.extend_from_slice(&0x3fe0_0000_0000_0000u64.to_le_bytes());
        want.push(2);
        assert_eq!(op_bytes(&moe), want);
        let mut want = vec![1, 20];
        want.extend_from_slice(&0x3fe0_0000_0000_0000u64.to_le_bytes());
        assert_eq!(op_bytes(&Op::LayerScale(LayerScale { init: 0.5 })), want);
        assert_eq!(op_bytes(&Op::Affine(Affine)), [1, 21]);
        let mut want = vec![1, 1];
        want.extend_from_slice(&16u64.to_le_bytes());
        want.push(2);
        want.extend_from_slice(&32u64.to_le_bytes());
        assert_eq!(shape_bytes(&Shape::seq(16, 32)), want);
    }

    /// Every op kind gets bytes of its own, and every parameter shows.
    #[test]
    fn different_ops_have_different_bytes() {
        let body = || Box::new(Arch::start(Shape::seq(4, 8), true));
        let spec = MoeSpec {
            experts: 4,
            top_k: 2,
            shared: 0,
            router: RouterKind::TokenChoice,
            capacity: 1.0,
            top_p: 0.5,
            balance: Balance::AuxLoss,
        };
        // One of every kind (the list the compiler keeps complete), then
        // variants that differ in one parameter each.
        let mut ops = crate::arch::ops::tests::one_of_each();
        let variants = vec![
            Op::Input,
            Op::Output,
            Op::Linear(Linear {
                out: 8,
                bias: true,
                token_mixing: false,
                causal: false,
            }),
            Op::Linear(Linear {
                out: 8,
                bias: false,
                token_mixing: false,
                causal: false,
            }),
            Op::Linear(Linear {
                out: 8,
                bias: true,
                token_mixing: true,
                causal: false,
            }),
            Op::Linear(Linear {
                out: 8,
                bias: true,
                token_mixing: true,
                causal: true,
            }),
            Op::Linear(Linear {
                out: 9,
                bias: true,
                token_mixing: false,
                causal: false,
            }),
            Op::Norm(Norm {
                kind: NormKind::Layer,
            }),
            Op::Norm(Norm {
                kind: NormKind::Rms,
            }),
            Op::Act(Act {
                f: Activation::Relu,
            }),
            Op::Act(Act {
                f: Activation::LeakyRelu,
            }),
            Op::Softmax(Softmax { causal: false }),
            Op::Softmax(Softmax { causal: true }),
            Op::PosEnc,
            Op::Transpose,
            Op::Split(Split { part: 0, parts: 2 }),
            Op::Split(Split { part: 1, parts: 2 }),
            Op::Add,
            Op::Mul,
            Op::Concat,
            Op::Dot(Dot {
                scaled: false,
                mask: DotMask::None,
            }),
            Op::Dot(Dot {
                scaled: true,
                mask: DotMask::None,
            }),
            Op::Dot(Dot {
                scaled: true,
                mask: DotMask::Left,
            }),
            Op::Attention(Attention {
                heads: 2,
                head_dim: 8,
                causal: true,
            }),
            Op::Attention(Attention {
                heads: 2,
                head_dim: 8,
                causal: false,
            }),
            Op::Attention(Attention {
                heads: 4,
                head_dim: 8,
                causal: true,
            }),
            Op::Mlp(Mlp {
                hidden: 16,
                act: Activation::Gelu,
                gated: false,
            }),
            Op::Mlp(Mlp {
                hidden: 16,
                act: Activation::Gelu,
                gated: true,
            }),
            Op::Moe(Moe {
                spec,
                expert: body(),
            }),
            Op::Moe(Moe {
                spec: MoeSpec { shared: 1, ..spec },
                expert: body(),
            }),
            Op::Moe(Moe {
                spec: MoeSpec {
                    router: RouterKind::ExpertChoice,
                    ..spec
                },
                expert: body(),
            }),
            Op::Moe(Moe {
                spec: MoeSpec {
                    capacity: 1.5,
                    ..spec
                },
                expert: body(),
            }),
            Op::Moe(Moe {
                spec: MoeSpec { top_p: 0.7, ..spec },
                expert: body(),
            }),
            Op::Moe(Moe {
                spec: MoeSpec {
                    balance: Balance::None,
                    ..spec
                },
                expert: body(),
            }),
            Op::Mod(Mod {
                capacity: 0.5,
                causal: true,
                body: body(),
            }),
            Op::Mod(Mod {
                capacity: 0.5,
                causal: false,
                body: body(),
            }),
            Op::LayerSkip(LayerSkip {
                capacity: 0.5,
                body: body(),
            }),
            Op::Moh(Moh {
                heads: 4,
                active: 2,
                shared: 0,
                head_dim: 8,
                causal: true,
            }),
            Op::Moh(Moh {
                heads: 4,
                active: 2,
                shared: 1,
                head_dim: 8,
                causal: true,
            }),
            Op::LayerScale(LayerScale { init: 0.5 }),
        ];
        for v in variants {
            if !ops.contains(&v) {
                ops.push(v);
            }
        }
        let mut seen = std::collections::HashMap::new();
        for op in &ops {
            if let Some(other) = seen.insert(op_bytes(op), op) {
                panic!("{other:?} and {op:?} encode alike");
            }
        }
        // The body is the structural hash's business, not the label's.
        let with_body = |body| {
            Op::Mod(Mod {
                capacity: 0.5,
                causal: true,
                body,
            })
        };
        assert_eq!(
            op_bytes(&with_body(Box::new(Arch::start(Shape::seq(2, 2), false)))),
            op_bytes(&with_body(body()))
        );
    }

    /// No hash input is made from `Debug` text: the files that build labels,
    /// weight keys and hashes never format with `{:?}` outside their tests.
    #[test]
    fn hash_inputs_do_not_use_debug_formatting() {
        for (name, src) in [
            ("encode.rs", include_str!("encode.rs")),
            ("structural.rs", include_str!("structural.rs")),
            ("keys.rs", include_str!("keys.rs")),
            ("functional.rs", include_str!("functional.rs")),
        ] {
            let code = src.split("#[cfg(test)]").next().unwrap();
            assert!(!code.contains(":?"), "{name} formats something with Debug");
        }
    }
}
