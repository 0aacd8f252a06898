//! Each op kind's step in a compiled program: the parameters it owns
//! (names, shapes, initialisation) and the `StepOp` that runs it
//! (`forward.rs`). One impl per kind; what the kinds compute is documented
//! on their structs in `arch::ops`.

use super::params::Init;
use super::program::{Builder, CompileError, StepOp};
use crate::arch::ops::{
    Act, Add, Attention, Concat, Dot, Input, LayerSkip, Linear, Mlp, Mod, Moe, Moh, Mul, Norm,
    Output, PosEnc, Softmax, Split, Transpose,
};
use crate::arch::{Axis, NormKind, Shape};

/// Where a step is compiled: its parameter-name prefix and shapes.
pub(super) struct At<'a> {
    /// The step's name, the prefix of its parameters' names.
    pub name: &'a str,
    /// The first input's shape (the output's for the graph's input).
    pub input: Shape,
    pub out: Shape,
}

impl At<'_> {
    /// The width of the input's last axis.
    fn last(&self) -> usize {
        self.input.cols.size
    }

    fn param(&self, part: &str) -> String {
        format!("{}.{part}", self.name)
    }
}

/// An op kind's compiled step.
pub(super) trait Compile {
    fn compile(&self, b: &mut Builder, at: &At) -> Result<StepOp, CompileError>;
}

/// A (features × tokens) tensor: its feature axis is the rows.
fn features_in_rows(s: Shape) -> bool {
    s.rows.axis == Axis::Feat && s.cols.axis == Axis::Tok
}

impl Compile for Input {
    fn compile(&self, _b: &mut Builder, _at: &At) -> Result<StepOp, CompileError> {
        Ok(StepOp::Input)
    }
}

impl Compile for Output {
    fn compile(&self, _b: &mut Builder, _at: &At) -> Result<StepOp, CompileError> {
        Ok(StepOp::Output)
    }
}

impl Compile for Linear {
    fn compile(&self, b: &mut Builder, at: &At) -> Result<StepOp, CompileError> {
        let (last, o) = (at.last(), self.out);
        Ok(StepOp::Linear {
            w: b.matrix(at.param("w"), last, o),
            b: self
                .bias
                .then(|| b.param(at.param("b"), vec![o], Init::Const(0.0), false)),
            inp: last,
            out: o,
            causal_mask: self.token_mixing && self.causal,
        })
    }
}

impl Compile for Norm {
    fn compile(&self, b: &mut Builder, at: &At) -> Result<StepOp, CompileError> {
        let last = at.last();
        Ok(StepOp::Norm {
            kind: self.kind,
            gain: b.param(at.param("g"), vec![last], Init::Const(1.0), false),
            bias: (self.kind == NormKind::Layer)
                .then(|| b.param(at.param("b"), vec![last], Init::Const(0.0), false)),
        })
    }
}

impl Compile for Act {
    fn compile(&self, _b: &mut Builder, _at: &At) -> Result<StepOp, CompileError> {
        Ok(StepOp::Act(self.f))
    }
}

impl Compile for Softmax {
    fn compile(&self, _b: &mut Builder, _at: &At) -> Result<StepOp, CompileError> {
        Ok(StepOp::Softmax {
            causal: self.causal,
        })
    }
}

impl Compile for PosEnc {
    fn compile(&self, b: &mut Builder, at: &At) -> Result<StepOp, CompileError> {
        Ok(StepOp::PosEnc {
            table: b.param(
                at.param("pos"),
                vec![at.out.rows.size, at.out.cols.size],
                Init::Normal(0.02),
                false,
            ),
        })
    }
}

impl Compile for Transpose {
    fn compile(&self, _b: &mut Builder, _at: &At) -> Result<StepOp, CompileError> {
        Ok(StepOp::Transpose)
    }
}

impl Compile for Split {
    fn compile(&self, _b: &mut Builder, at: &At) -> Result<StepOp, CompileError> {
        Ok(StepOp::Split {
            part: self.part,
            parts: self.parts,
            rows: features_in_rows(at.input),
        })
    }
}

impl Compile for Add {
    fn compile(&self, _b: &mut Builder, _at: &At) -> Result<StepOp, CompileError> {
        Ok(StepOp::Add)
    }
}

impl Compile for Mul {
    fn compile(&self, _b: &mut Builder, _at: &At) -> Result<StepOp, CompileError> {
        Ok(StepOp::Mul)
    }
}

impl Compile for Concat {
    fn compile(&self, _b: &mut Builder, at: &At) -> Result<StepOp, CompileError> {
        Ok(StepOp::Concat {
            rows: features_in_rows(at.out),
        })
    }
}

impl Compile for Dot {
    fn compile(&self, _b: &mut Builder, _at: &At) -> Result<StepOp, CompileError> {
        Ok(StepOp::Dot {
            scaled: self.scaled,
            mask: self.mask,
        })
    }
}

impl Compile for Attention {
    fn compile(&self, b: &mut Builder, at: &At) -> Result<StepOp, CompileError> {
        let last = at.last();
        Ok(StepOp::Attention {
            heads: b.heads(at.name, self.heads, last, self.head_dim),
            o: b.matrix(at.param("o"), self.heads * self.head_dim, last),
            head_dim: self.head_dim,
            causal: self.causal,
        })
    }
}

impl Compile for Mlp {
    fn compile(&self, b: &mut Builder, at: &At) -> Result<StepOp, CompileError> {
        let (last, hidden) = (at.last(), self.hidden);
        Ok(StepOp::Mlp {
            w1: b.matrix(at.param("w1"), last, hidden),
            w3: self.gated.then(|| b.matrix(at.param("w3"), last, hidden)),
            w2: b.matrix(at.param("w2"), hidden, last),
            act: self.act,
            hidden,
        })
    }
}

impl Compile for Moe {
    fn compile(&self, b: &mut Builder, at: &At) -> Result<StepOp, CompileError> {
        b.routed += 1;
        let spec = self.spec;
        let router = b.matrix(at.param("router"), at.last(), spec.experts);
        let experts = (0..spec.experts)
            .map(|e| b.graph(&self.expert, &format!("{}.e{e}.", at.name)))
            .collect::<Result<Vec<_>, _>>()?;
        let shared = (0..spec.shared)
            .map(|e| b.graph(&self.expert, &format!("{}.s{e}.", at.name)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(StepOp::Moe {
            spec,
            router,
            experts,
            shared,
        })
    }
}

impl Compile for Mod {
    fn compile(&self, b: &mut Builder, at: &At) -> Result<StepOp, CompileError> {
        b.routed += 1;
        Ok(StepOp::Mod {
            capacity: self.capacity,
            causal: self.causal,
            router: b.matrix(at.param("router"), at.last(), 1),
            body: Box::new(b.graph(&self.body, &format!("{}.body.", at.name))?),
        })
    }
}

impl Compile for LayerSkip {
    fn compile(&self, b: &mut Builder, at: &At) -> Result<StepOp, CompileError> {
        b.routed += 1;
        let c = self.capacity.clamp(1e-3, 1.0 - 1e-3);
        Ok(StepOp::Skip {
            capacity: self.capacity,
            router: b.matrix(at.param("router"), at.last(), 1),
            // Start at the target rate: sigmoid(b) = capacity.
            bias: b.param(
                at.param("router_b"),
                vec![1],
                Init::Const((c / (1.0 - c)).ln() as f32),
                false,
            ),
            body: Box::new(b.graph(&self.body, &format!("{}.body.", at.name))?),
        })
    }
}

impl Compile for Moh {
    fn compile(&self, b: &mut Builder, at: &At) -> Result<StepOp, CompileError> {
        b.routed += 1;
        let last = at.last();
        let routed = self.heads - self.shared;
        Ok(StepOp::Moh {
            heads: b.heads(at.name, self.heads, last, self.head_dim),
            o: b.matrix(at.param("o"), self.heads * self.head_dim, last),
            router: b.matrix(at.param("router"), last, routed.max(1)),
            active: self.active,
            shared: self.shared,
            head_dim: self.head_dim,
            causal: self.causal,
        })
    }
}
