//! Routed blocks in training: mixture of experts, mixture-of-depths, routed
//! layer skip and mixture-of-heads.
//!
//! Routing decisions (which token goes where) are made on the host from the
//! router's probabilities, then applied as constant 0/1 masks on the
//! differentiable gates, so gradients flow through the gate values and the
//! chosen experts (dense-masked: every expert runs on every token here; the
//! routing issue replaces this with gathering). `route_tokens` is the one
//! place the selection rules live.

use super::forward::{fingerprint, run_graph, RouteRecord, Run, T2, T3};
use super::kernels::Backend;
use super::program::{Step, StepOp};
use crate::arch::{MoeSpec, RouterKind};
use dfdx::prelude::*;

/// Switch Transformer load-balancing coefficient α (Fedus et al. 2022).
pub const BALANCE_ALPHA: f32 = 0.01;
/// Weight of the layer-skip rate loss (mean gate pulled to the capacity).
pub const SKIP_RATE_WEIGHT: f32 = 0.01;

/// A routing decision for one batch: 0/1 selections (tokens × experts,
/// row-major per token), load per expert, dropped assignments.
#[derive(Clone, Debug, PartialEq)]
pub struct Routing {
    pub select: Vec<f32>,
    pub load: Vec<u32>,
    pub dropped: u32,
}

fn order_desc(p: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..p.len()).collect();
    // Ties go to the lower index, so decisions are deterministic.
    idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    idx
}

/// Applies a router's rules to probabilities `probs` (batch × seq × experts).
///
/// - token choice: each token's top-k experts (GShard, Lepikhin et al. 2021;
///   Switch, Fedus et al. 2022), per-expert capacity C = ceil(cf·k·T/E)
///   tokens per sequence, overflow dropped in position order;
/// - top-p: experts by decreasing probability until their mass reaches p, at
///   most k (Huang et al. 2024), same capacity rule;
/// - expert choice: each expert takes its ceil(cf·T/E) most probable tokens
///   (Zhou et al. 2022); nothing is dropped, some tokens get no expert.
pub fn route_tokens(probs: &[f32], batch: usize, seq: usize, spec: &MoeSpec) -> Routing {
    let e = spec.experts;
    let mut select = vec![0.0f32; batch * seq * e];
    let mut load = vec![0u32; e];
    let mut dropped = 0;
    let k = spec.top_k.min(e).max(1);
    match spec.router {
        RouterKind::TokenChoice | RouterKind::TopP => {
            let cap = (spec.capacity * k as f64 * seq as f64 / e as f64).ceil() as u32;
            for b in 0..batch {
                let mut used = vec![0u32; e];
                for t in 0..seq {
                    let at = (b * seq + t) * e;
                    let p = &probs[at..at + e];
                    let order = order_desc(p);
                    let chosen: Vec<usize> = if spec.router == RouterKind::TokenChoice {
                        order[..k].to_vec()
                    } else {
                        let mut mass = 0.0;
                        let mut c = Vec::new();
                        for &x in order.iter().take(k) {
                            c.push(x);
                            mass += p[x] as f64;
                            if mass >= spec.top_p {
                                break;
                            }
                        }
                        c
                    };
                    for x in chosen {
                        if used[x] < cap {
                            used[x] += 1;
                            load[x] += 1;
                            select[at + x] = 1.0;
                        } else {
                            dropped += 1;
                        }
                    }
                }
            }
        }
        RouterKind::ExpertChoice => {
            let cap = ((spec.capacity * seq as f64 / e as f64).ceil() as usize).min(seq);
            for b in 0..batch {
                for x in 0..e {
                    let col: Vec<f32> = (0..seq).map(|t| probs[(b * seq + t) * e + x]).collect();
                    for &t in order_desc(&col).iter().take(cap) {
                        select[(b * seq + t) * e + x] = 1.0;
                        load[x] += 1;
                    }
                }
            }
        }
    }
    Routing {
        select,
        load,
        dropped,
    }
}

/// The top ceil(capacity·T) tokens of each sequence by score (mixture-of-depths).
pub fn top_tokens(scores: &[f32], batch: usize, seq: usize, capacity: f64) -> Vec<f32> {
    let keep = ((capacity * seq as f64).ceil() as usize).clamp(1, seq);
    let mut sel = vec![0.0f32; batch * seq];
    for b in 0..batch {
        let row = &scores[b * seq..(b + 1) * seq];
        for &t in order_desc(row).iter().take(keep) {
            sel[b * seq + t] = 1.0;
        }
    }
    sel
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Balance;

    fn spec(router: RouterKind, e: usize, k: usize, cf: f64) -> MoeSpec {
        MoeSpec {
            experts: e,
            top_k: k,
            shared: 0,
            router,
            capacity: cf,
            top_p: 0.5,
            balance: Balance::None,
        }
    }

    #[test]
    fn all_tokens_to_one_expert_drop_beyond_capacity() {
        let (b, s, e) = (1, 8, 4);
        let mut p = vec![0.1f32; b * s * e];
        for t in 0..s {
            p[t * e] = 0.7;
        }
        // C = ceil(1.0 · 1 · 8 / 4) = 2.
        let r = route_tokens(&p, b, s, &spec(RouterKind::TokenChoice, e, 1, 1.0));
        assert_eq!(r.load, vec![2, 0, 0, 0]);
        assert_eq!(r.dropped, 6);
        // The first two positions keep their expert.
        assert_eq!(r.select[0], 1.0);
        assert_eq!(r.select[e], 1.0);
        assert_eq!(r.select[2 * e], 0.0);
    }

    #[test]
    fn expert_choice_loads_are_equal() {
        let (b, s, e) = (2, 16, 4);
        let p: Vec<f32> = (0..b * s * e)
            .map(|i| ((i * 7919) % 97) as f32 / 97.0)
            .collect();
        let r = route_tokens(&p, b, s, &spec(RouterKind::ExpertChoice, e, 1, 1.0));
        assert!(r.load.iter().all(|&l| l == r.load[0]), "{:?}", r.load);
        assert_eq!(r.load[0], 2 * 4);
    }

    #[test]
    fn top_p_near_one_uses_up_to_k_experts() {
        let (b, s, e) = (1, 4, 4);
        let p = vec![0.25f32; b * s * e];
        let mut sp = spec(RouterKind::TopP, e, 4, 100.0);
        sp.top_p = 0.999;
        let r = route_tokens(&p, b, s, &sp);
        assert_eq!(r.load, vec![4, 4, 4, 4]);
    }

    #[test]
    fn mixture_of_depths_keeps_ceil_capacity_tokens() {
        let scores: Vec<f32> = (0..20).map(|i| (i as f32 * 1.7).sin()).collect();
        let sel = top_tokens(&scores, 2, 10, 0.25);
        assert_eq!(sel[..10].iter().sum::<f32>(), 3.0);
        assert_eq!(sel[10..].iter().sum::<f32>(), 3.0);
    }
}
