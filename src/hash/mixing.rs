//! Whether a network can use context: does its output at one position
//! depend on the input at another? Measured on the f64 interpreter with
//! seeded weights, by perturbing one token and watching the others, so it
//! holds for any composition of ops (attention, token-axis linears,
//! transposed norms, dot products) without a list of "mixing" ops.

use super::interp::{Mat, Plan, Weights};
use super::watch::Watch;
use crate::arch::Arch;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// What a network does with its context, on random weights and inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    /// Some position's output depends on another position's input.
    Mixes,
    /// Each position's output depends on its own input only: on a task
    /// whose targets need earlier tokens it cannot beat chance.
    TokenWise,
    /// The output does not depend on the input at all.
    IgnoresInput,
}

/// Relative change below which an output is taken as unchanged (far above
/// f64 rounding through a network, far below what a real dependence gives).
const TOLERANCE: f64 = 1e-9;

fn changed(a: &Mat, b: &Mat, rows: impl Iterator<Item = usize>) -> bool {
    let scale = a.v.iter().map(|x| x.abs()).fold(0.0, f64::max).max(1e-300);
    rows.into_iter().any(|r| {
        let (s, e) = (r * a.cols, (r + 1) * a.cols);
        a.v[s..e]
            .iter()
            .zip(&b.v[s..e])
            .any(|(x, y)| (x - y).abs() > TOLERANCE * scale)
    })
}

/// How `arch` uses its context. The perturbed token is the first one, so
/// a causal network that mixes shows it at every later position.
pub fn context_use(arch: &Arch) -> Context {
    let plan = Plan::new(arch);
    let shape = arch.input_shape();
    let (rows, cols) = (shape.rows.size, shape.cols.size);
    let mut rng = ChaCha8Rng::seed_from_u64(0x6d69_7869_6e67);
    let mut draw = |n: usize| -> Vec<f64> {
        (0..n)
            .map(|_| Distribution::<f64>::sample(&StandardNormal, &mut rng))
            .collect()
    };
    let x = Mat {
        rows,
        cols,
        v: draw(rows * cols),
    };
    let w = Weights::new(0x006d_6978);
    let run = |m: &Mat| plan.run(m, &w, b"mixing", &mut Watch::default());
    let base = run(&x);
    let out_rows = base.rows;
    let mut one = x.clone();
    // The input is (tokens × features): perturb every feature of token 0.
    let fresh = draw(cols);
    one.v[..cols].copy_from_slice(&fresh);
    let moved = run(&one);
    if out_rows == rows && changed(&base, &moved, 1..out_rows) {
        return Context::Mixes;
    }
    let all = Mat {
        rows,
        cols,
        v: draw(rows * cols),
    };
    if changed(&base, &run(&all), 0..out_rows) {
        Context::TokenWise
    } else {
        Context::IgnoresInput
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{ArchContext, Network};
    use crate::grammar::Derivation;

    fn arch(text: &str, causal: bool) -> Arch {
        let ctx = ArchContext {
            seq_len: 8,
            width: 8,
            vocab: 12,
            causal,
            allow_noncausal_routing: true,
        };
        Network::build(Derivation::parse(text).unwrap(), &ctx)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .arch
    }

    #[test]
    fn attention_and_token_linears_mix_token_wise_ops_do_not() {
        for causal in [false, true] {
            for text in [
                "block(attention(heads=2))",
                "route(pre=transpose, post=transpose, linear(width=same))",
                // Attention from fundamental ops: dot products of token-wise
                // branches contract over tokens.
                "branch(factor=2, merge=dot, split=clone, seq(branch(factor=2, merge=scaled_dot, split=clone, linear(width=8), route(post=transpose, pre=identity, linear(width=8))), softmax), linear(width=model))",
                "seq(block(mlp(ratio=2)), block(attention(heads=1)))",
            ] {
                assert_eq!(context_use(&arch(text, causal)), Context::Mixes, "{text}");
            }
            for text in [
                "block(mlp(ratio=2))",
                "seq(norm(kind=layer), act(fn=gelu), linear(width=model))",
                "branch(split=clone, factor=2, merge=mul, linear(width=model), act(fn=relu))",
            ] {
                assert_eq!(
                    context_use(&arch(text, causal)),
                    Context::TokenWise,
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn a_network_of_its_own_input_ignored_is_told_apart() {
        // A softmax over a single feature is 1 whatever the input.
        let a = arch("seq(linear(width=1), softmax, linear(width=model))", false);
        assert_eq!(context_use(&a), Context::IgnoresInput);
    }
}
