//! Op kinds written over primitives.
//!
//! A kind that can be computed from a few element-wise primitives (an
//! input, a learned vector over the features, a sum, a product, an
//! activation) says so once, as a [`Recipe`], and implements
//! [`Composite`]. Every backend (the dfdx evaluator, the f64 interpreter,
//! the PyTorch export) runs recipes through one blanket impl, so such a
//! kind needs no backend code of its own. This is the usual split between
//! primitive and composite ops (PyTorch's decompositions, JAX's
//! primitives); a kind that needs its own kernel is a primitive and has an
//! impl in each backend instead (ARCHITECTURE.md, "How to add an op").

use super::{rule, Activation, Add, Broken, CostAt, Mul, OpDef};
use crate::arch::cost::Cost;
use crate::arch::shape::{Axis, Shape};

/// One step of a recipe. Values are numbered by the step that makes them;
/// operands name earlier values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Prim {
    /// The op's input number `i`; each input appears once.
    Input(usize),
    /// A learned vector over the last (feature) axis, broadcast over the
    /// rows, filled with `init` at initialisation. Its parameter is named
    /// `name` after the op's own name (`n3.g`).
    Param { name: &'static str, init: f64 },
    /// The element-wise sum of two values.
    Add(usize, usize),
    /// The element-wise product of two values.
    Mul(usize, usize),
    /// An activation of a value.
    Act(Activation, usize),
}

/// What a composite op computes: its primitives in order; the last value
/// is the op's output, of its inputs' shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Recipe(pub Vec<Prim>);

/// An op kind computed by a recipe; the backends' blanket impls run it.
pub trait Composite {
    fn recipe(&self) -> Recipe;
}

/// The [`OpDef`] methods a composite kind takes from its recipe (output
/// shape, cost, whether it owns weights, the recipe itself), written inside its `impl OpDef`
/// beside `kind` and `encode`.
#[macro_export]
macro_rules! recipe_rules {
    () => {
        fn infer(
            &self,
            ins: &[$crate::arch::Shape],
            _causal: bool,
        ) -> Result<Option<$crate::arch::Shape>, $crate::arch::ops::Broken> {
            $crate::arch::ops::composite::Composite::recipe(self).infer(ins)
        }

        fn cost(&self, at: &$crate::arch::ops::CostAt) -> $crate::arch::Cost {
            $crate::arch::ops::composite::Composite::recipe(self).cost(at)
        }

        fn has_weights(&self) -> bool {
            $crate::arch::ops::composite::Composite::recipe(self)
                .params()
                .next()
                .is_some()
        }

        fn as_recipe(&self) -> Option<$crate::arch::ops::composite::Recipe> {
            Some($crate::arch::ops::composite::Composite::recipe(self))
        }
    };
}

impl Prim {
    /// The earlier values this step reads.
    pub fn operands(&self) -> Vec<usize> {
        match *self {
            Prim::Input(_) | Prim::Param { .. } => Vec::new(),
            Prim::Add(a, b) | Prim::Mul(a, b) => vec![a, b],
            Prim::Act(_, a) => vec![a],
        }
    }
}

impl Recipe {
    /// How many inputs the op takes.
    pub fn arity(&self) -> usize {
        self.0
            .iter()
            .filter(|p| matches!(p, Prim::Input(_)))
            .count()
    }

    /// The learned vectors, in order: (name, initial value).
    pub fn params(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        self.0.iter().filter_map(|p| match *p {
            Prim::Param { name, init } => Some((name, init)),
            _ => None,
        })
    }

    /// How many later steps read each value (the output counts once).
    pub fn uses(&self) -> Vec<usize> {
        let mut uses = vec![0; self.0.len()];
        for p in &self.0 {
            for a in p.operands() {
                uses[a] += 1;
            }
        }
        if let Some(last) = uses.last_mut() {
            *last += 1;
        }
        uses
    }

    /// The recipe's own well-formedness, which every backend relies on:
    /// operands are earlier values, inputs are numbered 0..n once each,
    /// parameter names are distinct, every value but the last is read, and
    /// the output is computed (a recipe is written by a developer, so this
    /// is checked for every kind by `every_composite_recipe_is_well_formed`
    /// in `arch::ops`, not at run time).
    pub fn check(&self) -> Result<(), String> {
        let n = self.0.len();
        let mut inputs = Vec::new();
        let mut names = Vec::new();
        for (i, p) in self.0.iter().enumerate() {
            if let Some(&a) = p.operands().iter().find(|&&a| a >= i) {
                return Err(format!("step {i} reads value {a}, not an earlier one"));
            }
            match *p {
                Prim::Input(k) => inputs.push(k),
                Prim::Param { name, .. } => {
                    if name.is_empty() || names.contains(&name) {
                        return Err(format!("parameter name `{name}` is empty or taken"));
                    }
                    names.push(name);
                }
                _ => {}
            }
        }
        inputs.sort_unstable();
        if inputs.is_empty() || inputs != (0..inputs.len()).collect::<Vec<_>>() {
            return Err(format!("inputs must be 0..n, once each; got {inputs:?}"));
        }
        // With every other value read, every input flows into the output.
        if let Some(i) = self.uses()[..n - 1].iter().position(|&u| u == 0) {
            return Err(format!("value {i} is never read"));
        }
        if matches!(self.0[n - 1], Prim::Input(_) | Prim::Param { .. }) {
            return Err("the output must be computed from the inputs".into());
        }
        Ok(())
    }

    /// Output shape: inputs of one shape, kept; a recipe with learned
    /// vectors needs features on the last axis (a vector over tokens would
    /// weight positions, not features).
    pub fn infer(&self, ins: &[Shape]) -> Result<Option<Shape>, Broken> {
        rule::arity(ins, self.arity())?;
        if ins.iter().any(|s| *s != ins[0]) {
            return Err("needs inputs of one shape".into());
        }
        if self.params().next().is_some() && ins[0].cols.axis != Axis::Feat {
            return Err("needs features on the last axis".into());
        }
        Ok(Some(ins[0]))
    }

    /// Parameters (a vector over the last axis each) and FLOPs, the sum of
    /// the primitive kinds' own costs.
    pub fn cost(&self, at: &CostAt) -> Cost {
        let binary = CostAt {
            in1: Some(at.in0),
            arity: 2,
            ..*at
        };
        let mut c = Cost {
            params: 0.0,
            active_params: 0.0,
            flops: 0.0,
            nodes: 1.0,
        };
        for p in &self.0 {
            let (params, flops) = match *p {
                Prim::Input(_) => (0.0, 0.0),
                Prim::Param { .. } => (at.out.cols.size as f64, 0.0),
                Prim::Add(..) => (0.0, Add.cost(&binary).flops),
                Prim::Mul(..) => (0.0, Mul.cost(&binary).flops),
                Prim::Act(f, _) => (0.0, super::Act { f }.cost(at).flops),
            };
            c.params += params;
            c.active_params += params;
            c.flops += flops;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(name: &'static str) -> Prim {
        Prim::Param { name, init: 1.0 }
    }

    #[test]
    fn a_recipe_that_breaks_a_rule_is_refused() {
        use Prim::*;
        let bad: [(&[Prim], &str); 6] = [
            (&[Input(0), Mul(0, 2), param("g")], "earlier"),
            (&[Input(1), param("g"), Mul(0, 1)], "inputs"),
            (&[Input(0), Input(0), Add(0, 1)], "inputs"),
            (&[Input(0), param("g"), param("g"), Mul(0, 1)], "taken"),
            (
                &[Input(0), param("g"), Act(Activation::Relu, 0)],
                "never read",
            ),
            (&[Input(0)], "computed"),
        ];
        for (prims, why) in bad {
            let err = Recipe(prims.to_vec()).check().unwrap_err();
            assert!(err.contains(why), "{prims:?}: {err}");
        }
        let swish = Recipe(vec![
            Input(0),
            param("beta"),
            Mul(0, 1),
            Act(Activation::Silu, 2),
            Add(3, 0),
        ]);
        assert_eq!(swish.check(), Ok(()));
        assert_eq!(swish.uses(), [2, 1, 1, 1, 1]);
        assert_eq!(swish.arity(), 1);
    }

    #[test]
    fn shapes_and_costs_follow_the_primitives() {
        use Prim::*;
        let r = Recipe(vec![Input(0), param("g"), Mul(0, 1), Input(1), Add(2, 3)]);
        let seq = Shape::seq(4, 8);
        assert_eq!(r.infer(&[seq, seq]), Ok(Some(seq)));
        assert!(r.infer(&[seq]).is_err());
        assert!(r.infer(&[seq, seq.transposed()]).is_err());
        // A learned vector over tokens is refused; without one, any axis.
        assert!(r.infer(&[seq.transposed(), seq.transposed()]).is_err());
        let plain = Recipe(vec![Input(0), Input(1), Mul(0, 1)]);
        let t = seq.transposed();
        assert_eq!(plain.infer(&[t, t]), Ok(Some(t)));
        let at = CostAt {
            in0: seq,
            in1: Some(seq),
            out: seq,
            arity: 2,
            seq: 4,
        };
        let c = r.cost(&at);
        // One vector of 8; a product and a sum over 4 × 8 elements per
        // sequence, 16 per token.
        assert_eq!((c.params, c.active_params, c.flops), (8.0, 8.0, 16.0));
    }
}
