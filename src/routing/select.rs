//! Router selection rules: which tokens go to which experts (or are
//! processed at all), from router probabilities or scores. Shared by the
//! evaluator and the functional hash, so both route identically.

use crate::arch::{MoeSpec, RouterKind};

/// A routing decision for one batch: 0/1 selections (tokens × experts,
/// row-major per token), load per expert, dropped assignments.
#[derive(Clone, Debug, PartialEq)]
pub struct Routing {
    pub select: Vec<f32>,
    pub load: Vec<u32>,
    pub dropped: u32,
    /// (token, expert) of each dropped assignment, token = b·seq + t.
    pub dropped_at: Vec<(u32, u16)>,
}

/// Which assignments a full expert drops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropPolicy {
    /// Slots fill in sequence order; late tokens drop first (GShard, Switch;
    /// "drop-towards-the-end", OpenMoE).
    #[default]
    Position,
    /// Slots fill by decreasing gate; the least confident assignments drop
    /// (batch-prioritized routing, Riquelme et al. 2021, V-MoE).
    Score,
}

/// Per-call routing options beyond the architecture's `MoeSpec`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RouteOptions<'a> {
    pub drop: DropPolicy,
    /// Per-expert selection bias (DeepSeek-V3's auxiliary-loss-free
    /// balancing): experts are chosen by p + b, gates stay p.
    pub bias: Option<&'a [f32]>,
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
    route_with(probs, batch, seq, spec, RouteOptions::default())
}

/// [`route_tokens`] with a drop policy and a selection bias.
pub fn route_with(
    probs: &[f32],
    batch: usize,
    seq: usize,
    spec: &MoeSpec,
    opts: RouteOptions<'_>,
) -> Routing {
    let e = spec.experts;
    let mut select = vec![0.0f32; batch * seq * e];
    let mut load = vec![0u32; e];
    let mut dropped = 0;
    let mut dropped_at = Vec::new();
    let k = spec.top_k.min(e).max(1);
    match spec.router {
        RouterKind::TokenChoice | RouterKind::TopP => {
            let cap = (spec.capacity * k as f64 * seq as f64 / e as f64).ceil() as u32;
            for b in 0..batch {
                // Each token's wanted experts, then slots filled in the
                // policy's order.
                let mut wants: Vec<(usize, usize, f32)> = Vec::new();
                for t in 0..seq {
                    let at = (b * seq + t) * e;
                    let p = &probs[at..at + e];
                    let order = match opts.bias {
                        Some(bias) => {
                            let biased: Vec<f32> = p.iter().zip(bias).map(|(a, b)| a + b).collect();
                            order_desc(&biased)
                        }
                        None => order_desc(p),
                    };
                    if spec.router == RouterKind::TokenChoice {
                        wants.extend(order[..k].iter().map(|&x| (t, x, p[x])));
                    } else {
                        let mut mass = 0.0;
                        for &x in order.iter().take(k) {
                            wants.push((t, x, p[x]));
                            mass += p[x] as f64;
                            if mass >= spec.top_p {
                                break;
                            }
                        }
                    }
                }
                if opts.drop == DropPolicy::Score {
                    // Stable: equal gates keep position order.
                    wants.sort_by(|a, b| b.2.total_cmp(&a.2));
                }
                let mut used = vec![0u32; e];
                for (t, x, _) in wants {
                    if used[x] < cap {
                        used[x] += 1;
                        load[x] += 1;
                        select[(b * seq + t) * e + x] = 1.0;
                    } else {
                        dropped += 1;
                        dropped_at.push(((b * seq + t) as u32, x as u16));
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
        dropped_at,
    }
}

/// The top ceil(capacity·T) tokens of each sequence by score (mixture-of-depths).
pub fn top_tokens(scores: &[f32], batch: usize, seq: usize, capacity: f64) -> Vec<f32> {
    let keep = crate::arch::cost::depth_tokens(capacity, seq);
    let mut sel = vec![0.0f32; batch * seq];
    for b in 0..batch {
        let row = &scores[b * seq..(b + 1) * seq];
        for &t in order_desc(row).iter().take(keep) {
            sel[b * seq + t] = 1.0;
        }
    }
    sel
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
    fn score_policy_drops_the_least_confident() {
        let (b, s, e) = (1, 4, 2);
        // Everyone wants expert 0; C = ceil(1·1·4/2) = 2.
        let p = vec![0.6f32, 0.4, 0.7, 0.3, 0.9, 0.1, 0.8, 0.2];
        let sp = spec(RouterKind::TokenChoice, e, 1, 1.0);
        let pos = route_with(&p, b, s, &sp, RouteOptions::default());
        assert_eq!(pos.select, vec![1., 0., 1., 0., 0., 0., 0., 0.]);
        let score = route_with(
            &p,
            b,
            s,
            &sp,
            RouteOptions {
                drop: DropPolicy::Score,
                bias: None,
            },
        );
        assert_eq!(score.select, vec![0., 0., 0., 0., 1., 0., 1., 0.]);
        assert_eq!((pos.dropped, score.dropped), (2, 2));
    }

    #[test]
    fn bias_changes_choice_not_gates() {
        let p = vec![0.6f32, 0.4];
        let sp = spec(RouterKind::TokenChoice, 2, 1, 4.0);
        let r = route_with(
            &p,
            1,
            1,
            &sp,
            RouteOptions {
                drop: DropPolicy::Position,
                bias: Some(&[0.0, 0.3]),
            },
        );
        assert_eq!(r.select, vec![0.0, 1.0]);
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
