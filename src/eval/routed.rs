//! Routed blocks in training: mixture of experts, mixture-of-depths, routed
//! layer skip and mixture-of-heads.
//!
//! Routing decisions (which token goes where) are made on the host from the
//! router's scores, then applied as constant 0/1 masks on the
//! differentiable gates, so gradients flow through the gate values. Mixture
//! of experts gathers each expert's tokens (`eval::moe`); the depth routers
//! gather each sequence's routed tokens, in order, into a shorter sequence
//! that the body runs on (its attention sees only them, as in Raposo et al.
//! 2024), so their compute falls with the capacity. Head routing masks head
//! outputs. The selection rules live in `routing::select`.

use super::kernels::composite::concat_cols;
use super::kernels::{Backend, Pick};
use super::program::{Graph, Step, StepOp};
use super::run::{fingerprint, RouteRecord, Run, T2, T3};
use crate::arch::{MoeSpec, RouterKind};
use crate::routing::{route_tokens, top_tokens, LayerTrace};
use dfdx::prelude::*;

/// Weight of the layer-skip rate loss (mean gate pulled to the capacity).
pub const SKIP_RATE_WEIGHT: f32 = 0.01;

/// Weight of a causal mixture-of-depths router's loss: binary cross-entropy
/// of its logits against membership of the top-k it routes by in training.
pub const MOD_PREDICT_WEIGHT: f32 = 0.1;

/// Runs `body` on the tokens `sel` marks (batch × seq, 0/1), each sequence's
/// tokens gathered in order into a shorter sequence; sequences routing the
/// same number of tokens run together. Returns (batch, seq, width) with the
/// body's outputs at the routed positions and 0 elsewhere, or `None` when
/// no token is routed.
fn on_routed_tokens<D: Backend, T: Tape<f32, D>>(
    run: &mut Run<'_, D, T>,
    body: &Graph,
    x: T3<D, T>,
    sel: &[f32],
) -> Option<T3<D, T>> {
    let (b, s, d) = *x.shape();
    let routed: Vec<Vec<usize>> = (0..b)
        .map(|r| (0..s).filter(|&t| sel[r * s + t] > 0.0).collect())
        .collect();
    let mut counts: Vec<usize> = routed.iter().map(Vec::len).filter(|&m| m > 0).collect();
    counts.sort_unstable();
    counts.dedup();
    if counts.is_empty() {
        return None;
    }
    let flat = x.reshape_like(&(b * s, d));
    let mut flat = Some(flat);
    let mut outs = Vec::with_capacity(counts.len());
    let mut picks = Vec::new();
    let saved_batch = run.batch;
    for (part, &m) in counts.iter().enumerate() {
        let group: Vec<usize> = (0..b).filter(|&r| routed[r].len() == m).collect();
        let idx: Vec<usize> = group
            .iter()
            .flat_map(|&r| routed[r].iter().map(move |&t| r * s + t))
            .collect();
        picks.extend(idx.iter().enumerate().map(|(row, &p)| Pick {
            out: p,
            part,
            row,
            gate: 0,
        }));
        let src = if part + 1 == counts.len() {
            flat.take().expect("x")
        } else {
            flat.as_ref().expect("x").with_empty_tape()
        };
        let n = idx.len();
        let xg = D::gather_rows(src, &idx).reshape_like(&(group.len(), m, d));
        run.batch = group.len();
        let y = run.body(body, xg);
        run.batch = saved_batch;
        outs.push(y.reshape_like(&(n, d)));
    }
    Some(D::combine_rows(outs, &picks, b * s, None).reshape_like(&(b, s, d)))
}

/// A depth router's shared tail: records the route (and trace), runs `body`
/// on the tokens `sel` marks and returns x + gate·body there, x elsewhere.
#[allow(clippy::too_many_arguments)]
fn depth_routed<D: Backend, T: Tape<f32, D>>(
    run: &mut Run<'_, D, T>,
    kind: &str,
    router: &str,
    capacity: f64,
    body: &Graph,
    x: T3<D, T>,
    sel: Vec<f32>,
    gate: T2<D, T>,
) -> T3<D, T> {
    let (b, s, d) = *x.shape();
    let processed = sel.iter().filter(|&&v| v > 0.0).count() as u32;
    if run.trace {
        let gv = gate.as_vec();
        let mut t = scalar_trace(run.routes.len(), kind, capacity, s, d, &sel, &gv);
        t.router = router.into();
        run.traces.push(t);
    }
    run.routes.push(RouteRecord {
        kind: kind.into(),
        tokens: (b * s) as u32,
        load: vec![processed],
        dropped: 0,
        fingerprint: fingerprint(&sel),
    });
    let y = on_routed_tokens(run, body, x.with_empty_tape(), &sel);
    let sel = run.dev.tensor_from_vec(sel, (b, s));
    let gate = run.over_cols(gate * sel, s, d);
    match y {
        Some(y) => x + y * gate,
        // Nothing routed: keep the gate's tape so the router still trains
        // through the rate loss's graph.
        None => x + gate * 0.0,
    }
}

/// Runs a routed step on `x`.
pub fn apply<D: Backend, T: Tape<f32, D>>(
    run: &mut Run<'_, D, T>,
    step: &Step,
    x: T3<D, T>,
) -> T3<D, T> {
    let (b, s, d) = *x.shape();
    match &step.op {
        StepOp::Moe {
            spec,
            router,
            experts,
            shared,
        } => super::moe::apply(run, spec, *router, experts, shared, x),
        StepOp::Mod {
            capacity,
            causal,
            router,
            body,
        } => {
            let score = run
                .linear(x.with_empty_tape(), *router, d, 1)
                .reshape_like(&(b, s));
            let logits = score.as_vec();
            let top = top_tokens(&logits, b, s, *capacity);
            let sel = if !*causal || run.training {
                top
            } else {
                // Inference of a causal router: each token by its own logit.
                logits
                    .iter()
                    .map(|&z| if z > 0.0 { 1.0 } else { 0.0 })
                    .collect()
            };
            if *causal && run.training {
                let target = run.dev.tensor_from_vec(sel.clone(), (b, s));
                let bce = score.with_empty_tape().bce_with_logits(target).mean();
                run.aux.push(bce * MOD_PREDICT_WEIGHT);
            }
            // Routed tokens' outputs are scaled by the router weight so the
            // router learns (Raposo et al. 2024, eq. 1); sigmoid keeps it in (0, 1).
            let router = if *causal { "causal" } else { "top_k" };
            depth_routed(run, "mod", router, *capacity, body, x, sel, score.sigmoid())
        }
        StepOp::Skip {
            capacity,
            router,
            bias,
            body,
        } => {
            let logit = run
                .linear(x.with_empty_tape(), *router, d, 1)
                .reshape_like(&(b, s))
                + run
                    .vector(*bias)
                    .reshape_like(&())
                    .broadcast_like::<_, Axes2<0, 1>>(&(b, s));
            let g = logit.sigmoid();
            let gv = g.as_vec();
            let sel: Vec<f32> = gv
                .iter()
                .map(|&v| if v >= 0.5 { 1.0 } else { 0.0 })
                .collect();
            let rate = g.with_empty_tape().mean::<(), _>() - *capacity as f32;
            run.aux.push(rate.square() * SKIP_RATE_WEIGHT);
            depth_routed(run, "layer_skip", "threshold", *capacity, body, x, sel, g)
        }
        StepOp::Moh {
            heads,
            o,
            router,
            active,
            shared,
            head_dim,
            causal,
        } => {
            let routed = heads.len() - shared;
            let mut gates = None;
            if routed > 0 {
                let probs = run
                    .linear(x.with_empty_tape(), *router, d, routed)
                    .softmax::<Axis<2>>();
                let spec = MoeSpec {
                    experts: routed,
                    top_k: (*active).max(1),
                    shared: 0,
                    router: RouterKind::TokenChoice,
                    capacity: f64::INFINITY,
                    top_p: 1.0,
                    balance: crate::arch::Balance::None,
                };
                let pv = probs.as_vec();
                let mut r = route_tokens(&pv, b, s, &spec);
                if *active == 0 {
                    r.select.iter_mut().for_each(|v| *v = 0.0);
                    r.load.iter_mut().for_each(|v| *v = 0);
                }
                let layer = run.routes.len();
                if run.trace {
                    let mut g: Vec<f32> = pv.iter().zip(&r.select).map(|(p, s)| p * s).collect();
                    for row in g.chunks_mut(routed) {
                        let m: f32 = row.iter().sum::<f32>() + 1e-9;
                        row.iter_mut().for_each(|v| *v /= m);
                    }
                    let mut t = super::moe::trace_of("moh", &spec, &pv, &r, &g, layer, s, d);
                    t.shared = *shared;
                    t.capacity_factor = 0.0;
                    run.traces.push(t);
                }
                if run.routing.aux_alpha > 0.0 && *active > 0 {
                    // Switch-style balance over routed heads (Jin et al. 2024).
                    let w = super::moe::balance_weights(
                        &r.select,
                        b,
                        s,
                        routed,
                        run.routing.aux_alpha,
                        run.routing.balance_scope,
                        run.routing.micro_batch,
                    );
                    let w = run.dev.tensor_from_vec(w, (b, s, routed));
                    run.aux.push((probs.with_empty_tape() * w).sum::<(), _>());
                }
                run.routes.push(RouteRecord {
                    kind: "moh".into(),
                    tokens: (b * s) as u32,
                    load: r.load.clone(),
                    dropped: 0,
                    fingerprint: fingerprint(&r.select),
                });
                let mask = run.dev.tensor_from_vec(r.select, (b, s, routed));
                let picked = probs * mask;
                let denom = picked.with_empty_tape().sum::<(usize, usize), Axis<2>>() + 1e-9;
                let routed_gates = picked / denom.broadcast_like::<_, Axis<2>>(&(b, s, routed));
                // Shared heads, first, always run at full weight.
                gates = Some(if *shared > 0 {
                    let ones = run.dev.ones_like(&(b, s, *shared)).retaped::<T>();
                    concat_cols(vec![ones, routed_gates])
                } else {
                    routed_gates
                });
            }
            run.attention(x, heads, *o, *head_dim, *causal, gates)
        }
        _ => unreachable!("routed::apply only runs routed steps"),
    }
}

/// Trace of a scalar router: token t was processed (gate g_t) or skipped.
fn scalar_trace(
    layer: usize,
    kind: &str,
    capacity: f64,
    seq: usize,
    width: usize,
    sel: &[f32],
    gates: &[f32],
) -> LayerTrace {
    let mut t = LayerTrace {
        layer,
        kind: kind.into(),
        router: "scalar".into(),
        experts: 1,
        top_k: 1,
        capacity_factor: capacity,
        seq,
        width,
        ..LayerTrace::default()
    };
    let mut conf = 0.0;
    for (&s, &g) in sel.iter().zip(gates) {
        if s > 0.0 {
            t.push_token([(0, g)]);
            conf += g as f64;
        } else {
            t.push_token([]);
        }
    }
    let processed = t.experts_of.len().max(1);
    t.router_confidence = conf / processed as f64;
    t
}
