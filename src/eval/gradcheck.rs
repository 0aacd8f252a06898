//! Finite-difference gradient checks of every op and block kind the
//! grammars can produce, through the whole program (embedding, graph, head,
//! cross-entropy, auxiliary router losses).

use super::forward::forward;
use super::params::Params;
use super::program::Program;
use super::run::Run;
use super::train::cross_entropy;
use crate::arch::{ArchContext, Network};
use crate::grammar::Derivation;
use crate::tasks::Batch;
use dfdx::prelude::*;

const SEQ: usize = 6;
const WIDTH: usize = 8;
const VOCAB: usize = 5;

fn ctx(causal: bool) -> ArchContext {
    ArchContext {
        seq_len: SEQ,
        width: WIDTH,
        vocab: VOCAB,
        causal,
        allow_noncausal_routing: true,
    }
}

fn batch() -> Batch {
    let inputs: Vec<u32> = (0..2 * SEQ).map(|i| ((i * 7 + 3) % VOCAB) as u32).collect();
    let targets: Vec<i32> = (0..2 * SEQ)
        .map(|i| {
            if i % 5 == 4 {
                -1
            } else {
                ((i * 3 + 1) % VOCAB) as i32
            }
        })
        .collect();
    Batch {
        inputs,
        targets,
        batch: 2,
        seq: SEQ,
        domains: None,
    }
}

/// Loss and the routing loads (to notice a perturbation that flips a
/// discrete routing choice, where the loss is not differentiable).
fn loss_plain(dev: &Cpu, prog: &Program, params: &Params<Cpu>, b: &Batch) -> (f64, Vec<u64>) {
    let mut run: Run<'_, Cpu, NoneTape> = Run::new(dev, params, b.batch);
    // The loss training differentiates, not the inference pass.
    run.training = true;
    let logits = forward(&mut run, prog, &b.inputs);
    let mut loss = cross_entropy(logits, b, prog.vocab);
    for a in std::mem::take(&mut run.aux) {
        loss = loss + a;
    }
    let loads = run.routes.iter().map(|r| r.fingerprint).collect();
    (loss.as_vec()[0] as f64, loads)
}

fn check(text: &str, causal: bool) {
    check_with(text, causal, |_| {});
}

/// [`check`] on the program compiled from `text` and then changed by `edit`.
fn check_with(text: &str, causal: bool, edit: impl FnOnce(&mut Program)) {
    let term = Derivation::parse(text).unwrap();
    let net = Network::build(term, &ctx(causal)).unwrap_or_else(|e| panic!("{text}: {e}"));
    let mut prog = Program::build(&net.arch, VOCAB).unwrap();
    edit(&mut prog);
    let dev = Cpu::seed_from_u64(0);
    let mut rng = crate::seed::rng(1, "gradcheck", 0);
    let mut params = Params::init(&dev, &prog.params, &mut rng);
    let b = batch();

    let mut run: Run<'_, Cpu, OwnedTape<f32, Cpu>> = Run::new(&dev, &params, b.batch);
    let logits = forward(&mut run, &prog, &b.inputs);
    let mut loss = cross_entropy(logits, &b, prog.vocab);
    for a in std::mem::take(&mut run.aux) {
        loss = loss + a;
    }
    let mut grads = loss.backward();
    let analytic: Vec<Vec<f32>> = params
        .tensors
        .iter()
        .map(|t| {
            grads.try_alloc_for(t).unwrap();
            grads.get(t).as_vec()
        })
        .collect();
    let (_, base_loads) = loss_plain(&dev, &prog, &params, &b);

    let eps = 1e-2f32;
    let mut checked = 0;
    let mut nonzero = 0;
    for (pi, info) in prog.params.iter().enumerate() {
        let n = info.len;
        // A few coordinates of every parameter, spread over it.
        for k in 0..n.min(4) {
            let j = (k * 7919 + 13) % n;
            let orig = params.tensors[pi].as_vec();
            let mut v = orig.clone();
            v[j] = orig[j] + eps;
            params.tensors[pi].copy_from(&v);
            let (up, l1) = loss_plain(&dev, &prog, &params, &b);
            v[j] = orig[j] - eps;
            params.tensors[pi].copy_from(&v);
            let (down, l2) = loss_plain(&dev, &prog, &params, &b);
            params.tensors[pi].copy_from(&orig);
            if l1 != base_loads || l2 != base_loads {
                continue; // a discrete routing choice flipped
            }
            let numeric = (up - down) / (2.0 * eps as f64);
            let a = analytic[pi][j] as f64;
            let tol = 2e-2 * a.abs().max(numeric.abs()) + 3e-3;
            assert!(
                (a - numeric).abs() <= tol,
                "{text}: d loss / d {}[{j}] analytic {a:.6} numeric {numeric:.6}",
                info.name
            );
            checked += 1;
            if a.abs() > 1e-6 {
                nonzero += 1;
            }
        }
    }
    assert!(
        checked > prog.params.len(),
        "{text}: too few coordinates checked ({checked})"
    );
    // Every parameter tensor gets some gradient: none of them is cut off the
    // tape. (Routed blocks may leave an unchosen expert without any.)
    let routed = ["moe(", "mod(", "layer_skip(", "moh("]
        .iter()
        .any(|f| text.contains(f));
    for (pi, g) in analytic.iter().enumerate().filter(|_| !routed) {
        assert!(
            g.iter().any(|x| x.abs() > 0.0),
            "{text}: no gradient reaches {}",
            prog.params[pi].name
        );
    }
    assert!(nonzero > 0);
}

#[test]
fn linear_norms_activations_posenc() {
    check(
        "seq(linear(width=12), norm(kind=layer), act(fn=relu), linear(width=model, bias=false))",
        true,
    );
    check(
        "seq(norm(kind=rms), act(fn=gelu), posenc, linear(width=8))",
        true,
    );
    check(
        "seq(act(fn=silu), linear(width=8), act(fn=leaky_relu))",
        true,
    );
    check("seq(linear(width=8), softmax, linear(width=8))", true);
}

#[test]
fn composite_kinds() {
    check(
        "seq(linear(width=8), affine, act(fn=gelu), layer_scale(init=0.5))",
        true,
    );
    check(
        "block(norm=pre, seq(mlp(ratio=2), layer_scale(init=0.1)))",
        false,
    );
    // A recipe using every primitive, reading values twice and one value
    // as both operands: 2 · (x ⊙ g ⊙ silu(x ⊙ g) ⊙ x), in LayerScale's
    // place (same one learned vector).
    use crate::arch::ops::composite::{Prim, Recipe};
    use crate::arch::Activation;
    let recipe = Recipe(vec![
        Prim::Input(0),
        Prim::Param {
            name: "g",
            init: 1.0,
        },
        Prim::Mul(0, 1),
        Prim::Act(Activation::Silu, 2),
        Prim::Mul(3, 2),
        Prim::Mul(4, 0),
        Prim::Add(5, 5),
    ]);
    assert_eq!(recipe.check(), Ok(()));
    check_with(
        "seq(linear(width=8), layer_scale(init=0.5), linear(width=8))",
        true,
        |prog| {
            let step = prog
                .graph
                .steps
                .iter_mut()
                .find(|s| s.kind == "layer_scale");
            match &mut step.expect("a layer_scale step").op {
                super::program::StepOp::Composite { recipe: r, .. } => *r = recipe,
                other => panic!("layer_scale compiled to {other:?}"),
            }
        },
    );
}

#[test]
fn token_mixing_linear_causal_and_dense() {
    check(
        "route(pre=transpose, post=transpose, linear(width=same))",
        true,
    );
    check(
        "route(pre=transpose, post=transpose, seq(linear(width=same), act(fn=gelu)))",
        false,
    );
}

#[test]
fn branches_split_concat_and_nary_merges() {
    check(
        "branch(split=group, factor=2, merge=concat, linear(width=4), act(fn=gelu))",
        true,
    );
    check(
        "branch(split=clone, factor=4, merge=add, linear(width=8))",
        true,
    );
    check(
        "branch(split=clone, factor=4, merge=mul, seq(linear(width=8), act(fn=gelu)))",
        true,
    );
    // The same value read twice by one op (x + x, x · x).
    check(
        "branch(split=clone, factor=2, merge=add, identity, identity)",
        true,
    );
    check(
        "branch(split=clone, factor=2, merge=mul, identity, linear(width=8))",
        true,
    );
    // A group split along the feature axis of a transposed tensor.
    check("route(pre=transpose, post=transpose, branch(split=group, factor=2, merge=concat, act(fn=relu), act(fn=gelu)))", false);
}

#[test]
fn dot_products_with_every_mask() {
    let attn = "branch(split=clone, factor=2, merge=dot, seq(branch(split=clone, factor=2, merge=scaled_dot, linear(width=8), route(pre=identity, post=transpose, linear(width=8))), softmax), linear(width=8))";
    check(attn, true); // Output and Left masks, causal softmax
    check(attn, false); // no masks
                        // x · xᵀ (a value and its own transpose), then · x.
    let gram = "branch(split=clone, factor=2, merge=dot, branch(split=clone, factor=2, merge=dot, identity, route(pre=identity, post=transpose, identity)), identity)";
    check(gram, false);
    check(gram, true);
}

#[test]
fn attention_and_mlp_blocks() {
    check("seq(block(norm=pre, attention(heads=2)), block(norm=post, mlp(ratio=2, gated=true, act=silu)))", true);
    check(
        "block(norm=peri, norm_kind=rms, attention(heads=2, head_dim=3))",
        false,
    );
    check(
        "block(norm=none, residual=false, mlp(ratio=1, act=relu))",
        true,
    );
}

#[test]
fn routed_blocks() {
    check(
        "block(moe(experts=4, top_k=2, shared=1, router=token_choice, capacity=2.0, mlp(ratio=1)))",
        true,
    );
    check("block(moe(experts=3, top_k=1, router=token_choice, capacity=1.0, balance=none, mlp(ratio=1)))", true);
    check(
        "block(moe(experts=4, top_k=2, router=top_p, top_p=0.6, capacity=2.0, mlp(ratio=1)))",
        true,
    );
    check("block(moe(experts=4, router=expert_choice, capacity=1.0, seq(linear(width=6, bias=false), act(fn=gelu), linear(width=model))))", false);
    check(
        "mod(capacity=0.5, block(norm=pre, residual=false, attention(heads=2)))",
        true,
    );
    // The predictor loss's gradient reaches the router too.
    check(
        "mod(capacity=0.5, causal=true, block(norm=pre, residual=false, attention(heads=2)))",
        true,
    );
    check(
        "layer_skip(capacity=0.75, block(norm=pre, residual=false, mlp(ratio=2)))",
        true,
    );
    check("block(moh(heads=4, active=2, shared=1, head_dim=4))", true);
}
