//! Routed blocks in training: mixture of experts, mixture-of-depths, routed
//! layer skip and mixture-of-heads.
//!
//! Routing decisions (which token goes where) are made on the host from the
//! router's probabilities, then applied as constant 0/1 masks on the
//! differentiable gates, so gradients flow through the gate values and the
//! chosen experts (dense-masked: every expert runs on every token here; the
//! routing issue replaces this with gathering). The selection rules live in
//! `routing::select`.

use super::forward::{fingerprint, run_graph, RouteRecord, Run, T2, T3};
use super::kernels::Backend;
use super::program::{Step, StepOp};
use crate::arch::{MoeSpec, RouterKind};
use crate::routing::{route_tokens, top_tokens};
use dfdx::prelude::*;

/// Switch Transformer load-balancing coefficient α (Fedus et al. 2022).
pub const BALANCE_ALPHA: f32 = 0.01;
/// Weight of the layer-skip rate loss (mean gate pulled to the capacity).
pub const SKIP_RATE_WEIGHT: f32 = 0.01;

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
        } => {
            let e = spec.experts;
            let probs = run
                .linear(x.with_empty_tape(), *router, d, e)
                .softmax::<Axis<2>>();
            let r = route_tokens(&probs.as_vec(), b, s, spec);
            run.routes.push(RouteRecord {
                kind: "moe".into(),
                tokens: (b * s) as u32,
                load: r.load.clone(),
                dropped: r.dropped,
                fingerprint: fingerprint(&r.select),
            });
            if spec.balance == crate::arch::Balance::AuxLoss {
                // α·E·Σ f_i·P_i with f_i the fraction of assignments to expert i
                // and P_i its mean router probability (Fedus et al. 2022, eq. 4).
                let total: u32 = r.load.iter().sum::<u32>().max(1);
                let f: Vec<f32> = r.load.iter().map(|&l| l as f32 / total as f32).collect();
                let f = run.dev.tensor_from_vec(f, (e,));
                let p_mean = probs.with_empty_tape().mean::<(usize,), Axes2<0, 1>>();
                run.aux
                    .push((p_mean * f).sum::<(), _>() * (BALANCE_ALPHA * e as f32));
            }
            let mask = run.dev.tensor_from_vec(r.select, (b, s, e));
            let mut gates = probs * mask;
            let renormalise = spec.router == RouterKind::TopP
                || (spec.router == RouterKind::TokenChoice && spec.top_k > 1);
            if renormalise {
                let denom = gates.with_empty_tape().sum::<(usize, usize), Axis<2>>() + 1e-9;
                gates = gates / denom.broadcast_like::<_, Axis<2>>(&(b, s, e));
            }
            let readers = experts.len() + shared.len();
            let mut x = Some(x);
            let mut read = 0;
            let mut next_x = |x: &mut Option<T3<D, T>>| {
                read += 1;
                if read == readers {
                    x.take().expect("x")
                } else {
                    x.as_ref().expect("x").with_empty_tape()
                }
            };
            let mut acc: Option<T3<D, T>> = None;
            let mut gates = Some(gates);
            for (i, g) in experts.iter().enumerate() {
                let gi = if i + 1 == experts.len() {
                    gates.take().expect("gates")
                } else {
                    gates.as_ref().expect("gates").with_empty_tape()
                };
                let gate = run.over_cols(run.column(gi, i, s), s, d);
                let y = run_graph(run, g, next_x(&mut x)) * gate;
                acc = Some(match acc {
                    Some(a) => a + y,
                    None => y,
                });
            }
            for g in shared {
                let y = run_graph(run, g, next_x(&mut x));
                acc = Some(match acc {
                    Some(a) => a + y,
                    None => y,
                });
            }
            acc.expect("at least one expert")
        }
        StepOp::Mod {
            capacity,
            router,
            body,
        } => {
            let score = run
                .linear(x.with_empty_tape(), *router, d, 1)
                .reshape_like(&(b, s));
            let sel = top_tokens(&score.as_vec(), b, s, *capacity);
            let processed = sel.iter().filter(|&&v| v > 0.0).count() as u32;
            run.routes.push(RouteRecord {
                kind: "mod".into(),
                tokens: (b * s) as u32,
                load: vec![processed],
                dropped: 0,
                fingerprint: fingerprint(&sel),
            });
            let sel = run.dev.tensor_from_vec(sel, (b, s));
            // Routed tokens' outputs are scaled by the router weight so the
            // router learns (Raposo et al. 2024, eq. 1); sigmoid keeps it in (0, 1).
            let gate = run.over_cols(score.sigmoid() * sel, s, d);
            let y = run_graph(run, body, x.with_empty_tape());
            x + y * gate
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
            let processed = sel.iter().filter(|&&v| v > 0.0).count() as u32;
            run.routes.push(RouteRecord {
                kind: "layer_skip".into(),
                tokens: (b * s) as u32,
                load: vec![processed],
                dropped: 0,
                fingerprint: fingerprint(&sel),
            });
            let rate = g.with_empty_tape().mean::<(), _>() - *capacity as f32;
            run.aux.push(rate.square() * SKIP_RATE_WEIGHT);
            let sel = run.dev.tensor_from_vec(sel, (b, s));
            let gate = run.over_cols(g * sel, s, d);
            let y = run_graph(run, body, x.with_empty_tape());
            x + y * gate
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
            let mut gate_cols: Vec<Option<T2<D, T>>> = (0..heads.len()).map(|_| None).collect();
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
                let mut r = route_tokens(&probs.as_vec(), b, s, &spec);
                if *active == 0 {
                    r.select.iter_mut().for_each(|v| *v = 0.0);
                    r.load.iter_mut().for_each(|v| *v = 0);
                }
                run.routes.push(RouteRecord {
                    kind: "moh".into(),
                    tokens: (b * s) as u32,
                    load: r.load.clone(),
                    dropped: 0,
                    fingerprint: fingerprint(&r.select),
                });
                let mask = run.dev.tensor_from_vec(r.select, (b, s, routed));
                let gates = probs * mask;
                let denom = gates.with_empty_tape().sum::<(usize, usize), Axis<2>>() + 1e-9;
                let gates = gates / denom.broadcast_like::<_, Axis<2>>(&(b, s, routed));
                let mut gates = Some(gates);
                for h in 0..routed {
                    let gh = if h + 1 == routed {
                        gates.take().expect("gates")
                    } else {
                        gates.as_ref().expect("gates").with_empty_tape()
                    };
                    gate_cols[shared + h] = Some(run.column(gh, h, s));
                }
            }
            run.attention(x, heads, *o, *head_dim, *causal, Some(gate_cols))
        }
        _ => unreachable!("routed::apply only runs routed steps"),
    }
}
