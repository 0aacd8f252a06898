//! Synthetic routing traces for an architecture that has not been trained:
//! each MoE layer's experts get a Zipf popularity over a seeded random
//! order, and every token samples its experts from it.

use super::trace::LayerTrace;
use crate::arch::ops::{LayerSkip, Mod, Moe};
use crate::arch::{Arch, MoeSpec, Op, RouterKind};
use rand::seq::index::sample as sample_indices;
use rand::seq::SliceRandom;
use rand::Rng;
use std::fmt;

/// Expert popularity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Skew {
    /// p(rank r) ∝ 1/r^s over a random order of the experts (s = 0: uniform).
    Zipf(f64),
}

impl Skew {
    /// `zipf:S` with S ≥ 0, or `uniform` (= `zipf:0`).
    pub fn parse(s: &str) -> Result<Skew, String> {
        let bad = || {
            format!("--skew: expected `zipf:S` with S ≥ 0 (e.g. zipf:1.2) or `uniform`, got `{s}`")
        };
        if s == "uniform" {
            return Ok(Skew::Zipf(0.0));
        }
        let v = s.strip_prefix("zipf:").ok_or_else(bad)?;
        match v.trim().parse::<f64>() {
            Ok(x) if x.is_finite() && x >= 0.0 => Ok(Skew::Zipf(x)),
            _ => Err(bad()),
        }
    }

    /// Popularity of each rank, summing to 1.
    fn weights(self, n: usize) -> Vec<f64> {
        let Skew::Zipf(s) = self;
        let w: Vec<f64> = (1..=n).map(|r| (r as f64).powf(-s)).collect();
        let total: f64 = w.iter().sum();
        w.into_iter().map(|x| x / total).collect()
    }
}

impl fmt::Display for Skew {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Skew::Zipf(s) = self;
        write!(f, "zipf:{s}")
    }
}

/// One MoE op of an architecture, with what the simulator needs of it.
#[derive(Clone, Debug, PartialEq)]
pub struct MoeLayer {
    /// Index among the architecture's routed layers (moe, mod, layer_skip,
    /// moh) in execution order, as in routing traces.
    pub layer: usize,
    pub spec: MoeSpec,
    pub width: usize,
    pub seq: usize,
    /// Forward FLOPs per token of one expert (its body's cost; for an MLP
    /// expert n_m·2·d·d_e with n_m = 3 gated, 2 plain).
    pub expert_flops: f64,
}

/// The routed ops of `arch` in execution order (a routed op before the
/// routed ops of its body): their kinds, and the MoE ones in detail.
pub fn routed_layers(arch: &Arch) -> Vec<(&'static str, Option<MoeLayer>)> {
    let mut out = Vec::new();
    walk(arch, &mut out);
    out
}

/// The MoE layers of `arch` in execution order.
pub fn moe_layers(arch: &Arch) -> Vec<MoeLayer> {
    routed_layers(arch)
        .into_iter()
        .filter_map(|(_, m)| m)
        .collect()
}

fn walk(arch: &Arch, out: &mut Vec<(&'static str, Option<MoeLayer>)>) {
    for n in arch.topo() {
        let op = &arch.node(n).op;
        match op {
            Op::Moe(Moe { spec, expert }) => {
                let layer = out.len();
                out.push((
                    "moe",
                    Some(MoeLayer {
                        layer,
                        spec: *spec,
                        width: expert.input_shape().feat().unwrap_or(0),
                        seq: arch.seq_len,
                        expert_flops: expert.cost().flops,
                    }),
                ));
            }
            Op::Mod(Mod { body, .. }) | Op::LayerSkip(LayerSkip { body, .. }) => {
                out.push((op.kind(), None));
                walk(body, out);
            }
            Op::Moh(_) => out.push(("moh", None)),
            _ => {}
        }
    }
}

/// A trace of `tokens` tokens for each layer. Token choice and top-p: each
/// token draws top_k distinct experts without replacement by popularity
/// (top-p is taken at its maximum, top_k), gates are the popularities
/// renormalised over the chosen. Expert choice: each expert takes
/// ⌈cf·T/E⌉ distinct tokens uniformly (its load is fixed by construction).
/// Nothing is dropped here; the simulator applies capacity.
pub fn synthesize(layers: &[MoeLayer], tokens: usize, skew: Skew, seed: u64) -> Vec<LayerTrace> {
    layers
        .iter()
        .map(|l| {
            let mut rng = crate::seed::rng(seed, "simulate-synth", l.layer as u64);
            let e = l.spec.experts.max(1);
            let mut order: Vec<usize> = (0..e).collect();
            order.shuffle(&mut rng);
            let mut pop = vec![0.0; e];
            for (rank, w) in skew.weights(e).into_iter().enumerate() {
                pop[order[rank]] = w;
            }
            let mut t = LayerTrace {
                layer: l.layer,
                kind: "moe".into(),
                router: l.spec.router.name().into(),
                experts: e,
                shared: l.spec.shared,
                top_k: l.spec.top_k,
                capacity_factor: l.spec.capacity,
                seq: l.seq,
                width: l.width,
                offsets: vec![0],
                ..LayerTrace::default()
            };
            if l.spec.router == RouterKind::ExpertChoice {
                let c = ((l.spec.capacity * tokens as f64 / e as f64).ceil() as usize).min(tokens);
                let mut per_token = vec![Vec::new(); tokens];
                for ex in 0..e {
                    for tok in sample_indices(&mut rng, tokens, c) {
                        per_token[tok].push((ex, 1.0 / c as f32));
                    }
                }
                for a in per_token {
                    t.push_token(a);
                }
            } else {
                let k = l.spec.top_k.clamp(1, e);
                for _ in 0..tokens {
                    let chosen = draw_distinct(&pop, k, &mut rng);
                    let mass: f64 = chosen.iter().map(|&x| pop[x]).sum();
                    t.push_token(chosen.iter().map(|&x| (x, (pop[x] / mass) as f32)));
                }
            }
            t.tokens = tokens;
            t
        })
        .collect()
}

/// A trace for a layer whose only record is its per-expert loads (kept
/// assignments over `tokens` tokens), e.g. an outcome's `routes`. Which token
/// went where is not known: the assignments, sorted by expert, are dealt to
/// tokens with stride T (so no token gets an expert twice while every load
/// is ≤ T), and the tokens are shuffled with `seed`. Loads, and so device
/// loads and drops, are exact; the byte matrix is that of random token
/// positions.
pub fn from_loads(
    l: &MoeLayer,
    load: &[u64],
    tokens: usize,
    seed: u64,
) -> Result<LayerTrace, String> {
    let e = l.spec.experts;
    if load.len() != e {
        return Err(format!("{} loads for {e} experts", load.len()));
    }
    if tokens == 0 || load.iter().any(|&c| c as usize > tokens) {
        return Err(format!("loads {load:?} do not fit {tokens} tokens"));
    }
    let items: Vec<usize> = (0..e)
        .flat_map(|x| std::iter::repeat_n(x, load[x] as usize))
        .collect();
    let mut order: Vec<usize> = (0..tokens).collect();
    order.shuffle(&mut crate::seed::rng(
        seed,
        "simulate-loads",
        l.layer as u64,
    ));
    let mut per_token = vec![Vec::new(); tokens];
    for (i, &x) in items.iter().enumerate() {
        per_token[order[i % tokens]].push(x);
    }
    let mut t = LayerTrace {
        layer: l.layer,
        kind: "moe".into(),
        router: l.spec.router.name().into(),
        experts: e,
        shared: l.spec.shared,
        top_k: l.spec.top_k,
        capacity_factor: l.spec.capacity,
        seq: l.seq,
        width: l.width,
        offsets: vec![0],
        ..LayerTrace::default()
    };
    for a in per_token {
        let g = 1.0 / a.len().max(1) as f32;
        t.push_token(a.into_iter().map(|x| (x, g)));
    }
    Ok(t)
}

/// `k` distinct indices drawn one at a time in proportion to `w` among the
/// indices not yet drawn.
fn draw_distinct(w: &[f64], k: usize, rng: &mut impl Rng) -> Vec<usize> {
    let mut taken = vec![false; w.len()];
    let mut out = Vec::with_capacity(k);
    let mut left: f64 = w.iter().sum();
    for _ in 0..k {
        let mut u = rng.gen::<f64>() * left;
        let mut pick = None;
        for (i, &wi) in w.iter().enumerate() {
            if taken[i] {
                continue;
            }
            pick = Some(i);
            if u < wi {
                break;
            }
            u -= wi;
        }
        // Rounding can run past the end: the last free index then.
        let Some(i) = pick else { break };
        taken[i] = true;
        left -= w[i];
        out.push(i);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Balance;

    fn layer(experts: usize, top_k: usize, router: RouterKind) -> MoeLayer {
        MoeLayer {
            layer: 0,
            spec: MoeSpec {
                experts,
                top_k,
                shared: 0,
                router,
                capacity: 1.0,
                top_p: 0.5,
                balance: Balance::None,
            },
            width: 8,
            seq: 16,
            expert_flops: 100.0,
        }
    }

    #[test]
    fn skew_parses_and_rejects() {
        assert_eq!(Skew::parse("zipf:1.2"), Ok(Skew::Zipf(1.2)));
        assert_eq!(Skew::parse("uniform"), Ok(Skew::Zipf(0.0)));
        for bad in ["zipf", "zipf:-1", "zipf:nan", "pareto:1", "zipf:inf", ""] {
            assert!(Skew::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_pick_k_distinct_experts_deterministically() {
        let l = layer(8, 2, RouterKind::TokenChoice);
        let a = synthesize(std::slice::from_ref(&l), 500, Skew::Zipf(1.2), 7);
        assert_eq!(
            a,
            synthesize(std::slice::from_ref(&l), 500, Skew::Zipf(1.2), 7)
        );
        assert_ne!(a, synthesize(&[l], 500, Skew::Zipf(1.2), 8));
        let t = &a[0];
        assert_eq!(t.tokens, 500);
        for tok in 0..t.tokens {
            let mut ex: Vec<usize> = t.of_token(tok).map(|(e, _)| e).collect();
            assert_eq!(ex.len(), 2);
            ex.dedup();
            assert_eq!(ex.len(), 2);
            let g: f32 = t.of_token(tok).map(|(_, g)| g).sum();
            assert!((g - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn skew_shows_in_the_loads() {
        let l = layer(8, 1, RouterKind::TokenChoice);
        let cv = |s: f64| {
            let load = synthesize(std::slice::from_ref(&l), 8000, Skew::Zipf(s), 1)[0].load();
            let m = load.iter().sum::<u64>() as f64 / 8.0;
            let var = load.iter().map(|&c| (c as f64 - m).powi(2)).sum::<f64>() / 8.0;
            (var.sqrt() / m, *load.iter().max().unwrap())
        };
        let (cv0, _) = cv(0.0);
        let (cv2, max2) = cv(2.0);
        assert!(cv0 < 0.1, "uniform cv {cv0}");
        assert!(cv2 > 1.0, "zipf:2 cv {cv2}");
        // Zipf(2) over 8: the top expert has 1/H(8,2) ≈ 65% of the tokens.
        assert!((4800..5600).contains(&max2), "{max2}");
    }

    #[test]
    fn loads_are_reproduced_without_repeats() {
        let l = layer(4, 2, RouterKind::TokenChoice);
        let t = from_loads(&l, &[10, 7, 2, 1], 10, 3).unwrap();
        assert_eq!(t.load(), vec![10, 7, 2, 1]);
        assert_eq!(t.tokens, 10);
        for tok in 0..10 {
            let mut ex: Vec<usize> = t.of_token(tok).map(|(e, _)| e).collect();
            let n = ex.len();
            ex.dedup();
            assert_eq!(ex.len(), n);
        }
        assert!(from_loads(&l, &[11, 0, 0, 0], 10, 3).is_err());
        assert!(from_loads(&l, &[1, 1], 10, 3).is_err());
    }

    #[test]
    fn expert_choice_fills_every_expert() {
        let l = layer(4, 1, RouterKind::ExpertChoice);
        let t = &synthesize(&[l], 100, Skew::Zipf(1.0), 1)[0];
        assert_eq!(t.load(), vec![25; 4]);
    }
}
