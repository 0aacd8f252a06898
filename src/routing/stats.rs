//! Statistics of routing traces: per layer and overall. Every number is a
//! reduction over the raw assignments in a [`LayerTrace`]; formulas follow
//! the papers cited beside each field.

use super::trace::LayerTrace;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// What one routed layer did over a trace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerStats {
    pub layer: usize,
    pub kind: String,
    /// The router chose using later tokens of the sequence (expert choice,
    /// mixture-of-depths): fine for training a proxy, but the same layer
    /// cannot route that way when decoding one token at a time.
    #[serde(default)]
    pub noncausal: bool,
    pub experts: usize,
    pub tokens: usize,
    /// Tokens processed per expert, c_i.
    pub load: Vec<u64>,
    /// Coefficient of variation std(c)/mean(c) (Shazeer et al. 2017 balance
    /// their importance loss as CV²).
    pub cv: f64,
    /// max_i c_i / c̄.
    pub max_over_mean: f64,
    /// MaxVio = (max_i c_i − c̄)/c̄ (Wang et al. 2024, loss-free balancing).
    pub max_vio: f64,
    /// H(f)/log E with f_i = c_i/Σc: 1 is perfectly even.
    pub load_entropy: f64,
    /// Experts that processed no token (c_i = 0).
    pub dead_experts: usize,
    /// Dropped assignments / assignments the router chose (kept + dropped).
    pub dropped_fraction: f64,
    /// The same by position in the sequence, in four equal buckets
    /// (drop-towards-the-end, OpenMoE; Xue et al. 2024).
    pub dropped_by_position: Vec<f64>,
    /// Histogram of |S_t|, experts per token (index = count).
    pub experts_per_token: Vec<u64>,
    pub mean_experts_per_token: f64,
    /// Tokens that got at least one expert (for mixture-of-depths and layer
    /// skip: the fraction processed).
    pub processed_fraction: f64,
    /// Mean router entropy (nats) and mean top-1 probability.
    pub router_entropy: f64,
    pub router_confidence: f64,
    /// Expert compute per token against the dense equivalent that runs
    /// every expert (or every token): (shared + mean |S_t|)/(shared + E).
    pub compute_vs_dense: f64,
    /// Mutual information (nats) between the task's hidden domain and the
    /// experts chosen, and its mean over domain labels shuffled across
    /// sequences (what chance alone gives); for tasks with domains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_mi: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_mi_shuffled: Option<f64>,
}

/// Statistics of one layer's trace.
pub fn layer_stats(t: &LayerTrace) -> LayerStats {
    let e = t.experts.max(1);
    let load = t.load();
    let total: u64 = load.iter().sum();
    let mean = total as f64 / e as f64;
    let var = load.iter().map(|&c| (c as f64 - mean).powi(2)).sum::<f64>() / e as f64;
    let max = load.iter().copied().max().unwrap_or(0) as f64;
    let (cv, mom) = if mean > 0.0 {
        (var.sqrt() / mean, max / mean)
    } else {
        (0.0, 0.0)
    };
    let entropy = if total > 0 && e > 1 {
        let h: f64 = load
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let f = c as f64 / total as f64;
                -f * f.ln()
            })
            .sum();
        h / (e as f64).ln()
    } else {
        1.0
    };
    let mut per_token = vec![0u64; e + 1];
    let mut processed = 0usize;
    for tok in 0..t.tokens {
        let n = (t.offsets[tok + 1] - t.offsets[tok]) as usize;
        per_token[n.min(e)] += 1;
        processed += (n > 0) as usize;
    }
    let mean_k = t.experts_of.len() as f64 / t.tokens.max(1) as f64;
    let chosen = t.experts_of.len() + t.dropped.len();
    let mut by_pos = [(0u64, 0u64); 4];
    let bucket = |tok: usize| ((tok % t.seq.max(1)) * 4 / t.seq.max(1)).min(3);
    for tok in 0..t.tokens {
        by_pos[bucket(tok)].1 += (t.offsets[tok + 1] - t.offsets[tok]) as u64;
    }
    for &(tok, _) in &t.dropped {
        by_pos[bucket(tok as usize)].0 += 1;
        by_pos[bucket(tok as usize)].1 += 1;
    }
    let scalar = t.kind == "mod" || t.kind == "layer_skip";
    let compute = if scalar {
        processed as f64 / t.tokens.max(1) as f64
    } else {
        (t.shared as f64 + mean_k) / (t.shared + e) as f64
    };
    LayerStats {
        layer: t.layer,
        kind: t.kind.clone(),
        // A causal mixture-of-depths router routes each token by its own
        // logit at inference; the top-k one looks at the whole sequence.
        noncausal: (t.kind == "mod" && t.router != "causal") || t.router == "expert_choice",
        experts: t.experts,
        tokens: t.tokens,
        cv,
        max_over_mean: mom,
        max_vio: if mean > 0.0 { mom - 1.0 } else { 0.0 },
        load_entropy: entropy,
        dead_experts: load.iter().filter(|&&c| c == 0).count(),
        load,
        dropped_fraction: if chosen > 0 {
            t.dropped.len() as f64 / chosen as f64
        } else {
            0.0
        },
        dropped_by_position: by_pos
            .iter()
            .map(|&(d, n)| if n > 0 { d as f64 / n as f64 } else { 0.0 })
            .collect(),
        experts_per_token: per_token,
        mean_experts_per_token: mean_k,
        processed_fraction: processed as f64 / t.tokens.max(1) as f64,
        router_entropy: t.router_entropy,
        router_confidence: t.router_confidence,
        compute_vs_dense: compute,
        domain_mi: None,
        domain_mi_shuffled: None,
    }
}

/// MI between per-sequence labels (repeated per token) and experts, and the
/// mean MI over `rounds` shuffles of the labels across sequences.
pub fn domain_mi(t: &LayerTrace, labels: &[usize], rounds: usize) -> (f64, f64) {
    use rand::seq::SliceRandom;
    let mi = mutual_information(t, labels);
    let seq = t.seq.max(1);
    let per_seq: Vec<usize> = labels.iter().step_by(seq).copied().collect();
    let mut rng = crate::seed::rng(0, "mi-shuffle", t.layer as u64);
    let mut shuffled = 0.0;
    for _ in 0..rounds {
        let mut p = per_seq.clone();
        p.shuffle(&mut rng);
        let lab: Vec<usize> = p
            .iter()
            .flat_map(|&x| std::iter::repeat_n(x, seq))
            .collect();
        shuffled += mutual_information(t, &lab);
    }
    (mi, shuffled / rounds.max(1) as f64)
}

/// How much routing changed between two traces of one layer on the same
/// tokens (StableMoE's "routing fluctuation", Dai et al. 2022): mean Jaccard
/// overlap of the expert sets and the fraction of tokens whose top-1
/// expert changed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Consistency {
    pub layer: usize,
    pub from_step: usize,
    pub to_step: usize,
    pub jaccard: f64,
    pub top1_changed: f64,
}

pub fn consistency(
    a: &LayerTrace,
    b: &LayerTrace,
    from_step: usize,
    to_step: usize,
) -> Consistency {
    let n = a.tokens.min(b.tokens);
    let mut jac = 0.0;
    let mut changed = 0usize;
    for t in 0..n {
        let sa: BTreeSet<usize> = a.of_token(t).map(|x| x.0).collect();
        let sb: BTreeSet<usize> = b.of_token(t).map(|x| x.0).collect();
        let union = sa.union(&sb).count();
        jac += if union == 0 {
            1.0
        } else {
            sa.intersection(&sb).count() as f64 / union as f64
        };
        let top = |tr: &LayerTrace| {
            tr.of_token(t)
                .max_by(|x, y| x.1.total_cmp(&y.1))
                .map(|x| x.0)
        };
        changed += (top(a) != top(b)) as usize;
    }
    Consistency {
        layer: a.layer,
        from_step,
        to_step,
        jaccard: jac / n.max(1) as f64,
        top1_changed: changed as f64 / n.max(1) as f64,
    }
}

/// Mutual information (nats) between a per-token label (e.g. the hidden
/// domain of a mixture task) and the experts a token was sent to, counting
/// each (token, expert) assignment once.
pub fn mutual_information(t: &LayerTrace, labels: &[usize]) -> f64 {
    let n_lab = labels.iter().copied().max().map_or(0, |m| m + 1);
    let e = t.experts.max(1);
    let mut joint = vec![0.0f64; n_lab * e];
    let mut total = 0.0;
    for (tok, &lab) in labels.iter().enumerate().take(t.tokens) {
        for (x, _) in t.of_token(tok) {
            joint[lab * e + x] += 1.0;
            total += 1.0;
        }
    }
    if total == 0.0 {
        return 0.0;
    }
    let pl: Vec<f64> = (0..n_lab)
        .map(|l| (0..e).map(|x| joint[l * e + x]).sum::<f64>() / total)
        .collect();
    let pe: Vec<f64> = (0..e)
        .map(|x| (0..n_lab).map(|l| joint[l * e + x]).sum::<f64>() / total)
        .collect();
    let mut mi = 0.0;
    for l in 0..n_lab {
        for x in 0..e {
            let p = joint[l * e + x] / total;
            if p > 0.0 {
                mi += p * (p / (pl[l] * pe[x])).ln();
            }
        }
    }
    mi
}

/// A routing trace at a training checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub step: usize,
    pub layers: Vec<LayerTrace>,
}

/// Everything an outcome keeps about routing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoutingReport {
    /// Traces of the final evaluation (first held-out batch).
    #[serde(rename = "final")]
    pub final_trace: Vec<LayerTrace>,
    /// Traces on a fixed probe batch during training.
    pub checkpoints: Vec<Checkpoint>,
    pub stats: Vec<LayerStats>,
    /// Between successive checkpoints, per layer.
    pub consistency: Vec<Consistency>,
}

impl RoutingReport {
    pub fn build(
        final_trace: Vec<LayerTrace>,
        checkpoints: Vec<Checkpoint>,
        labels: Option<&[usize]>,
    ) -> RoutingReport {
        let stats = final_trace
            .iter()
            .map(|t| {
                let mut s = layer_stats(t);
                if let Some(l) = labels.filter(|l| l.len() >= t.tokens && t.experts > 1) {
                    let (mi, base) = domain_mi(t, &l[..t.tokens], 8);
                    s.domain_mi = Some(mi);
                    s.domain_mi_shuffled = Some(base);
                }
                s
            })
            .collect();
        let mut cons = Vec::new();
        for w in checkpoints.windows(2) {
            for (a, b) in w[0].layers.iter().zip(&w[1].layers) {
                cons.push(consistency(a, b, w[0].step, w[1].step));
            }
        }
        RoutingReport {
            final_trace,
            checkpoints,
            stats,
            consistency: cons,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(experts: usize, seq: usize, assign: &[Vec<usize>]) -> LayerTrace {
        let mut t = LayerTrace {
            kind: "moe".into(),
            experts,
            seq,
            ..LayerTrace::default()
        };
        for a in assign {
            t.push_token(a.iter().map(|&x| (x, 1.0 / a.len() as f32)));
        }
        t
    }

    #[test]
    fn uniform_routing_has_zero_cv_and_no_drops() {
        let assign: Vec<Vec<usize>> = (0..16).map(|t| vec![t % 4]).collect();
        let s = layer_stats(&trace(4, 16, &assign));
        assert!(s.cv.abs() < 1e-12);
        assert_eq!(s.max_vio, 0.0);
        assert_eq!(s.dropped_fraction, 0.0);
        assert!((s.load_entropy - 1.0).abs() < 1e-12);
        assert_eq!(s.dead_experts, 0);
    }

    #[test]
    fn all_to_one_expert_gives_max_vio_e_minus_1() {
        let (e, seq, cap) = (4, 8, 2);
        let mut t = trace(e, seq, &[]);
        for tok in 0..seq {
            if tok < cap {
                t.push_token([(0, 1.0)]);
            } else {
                t.push_token([]);
                t.dropped.push((tok as u32, 0));
            }
        }
        let s = layer_stats(&t);
        assert_eq!(s.max_vio, (e - 1) as f64);
        assert_eq!(s.dead_experts, 3);
        assert_eq!(s.dropped_fraction, 6.0 / 8.0);
        // Positions 0–1 kept, 2–7 dropped: buckets of two positions each.
        assert_eq!(s.dropped_by_position, vec![0.0, 1.0, 1.0, 1.0]);
        assert_eq!(s.experts_per_token, vec![6, 2, 0, 0, 0]);
    }

    #[test]
    fn consistency_and_mutual_information() {
        let a = trace(2, 4, &[vec![0], vec![0], vec![1], vec![1]]);
        let b = trace(2, 4, &[vec![0], vec![1], vec![1], vec![1]]);
        let c = consistency(&a, &b, 10, 20);
        assert_eq!(c.top1_changed, 0.25);
        assert_eq!(c.jaccard, 0.75);
        // Labels that match the experts exactly: MI = H(label) = ln 2.
        assert!((mutual_information(&a, &[0, 0, 1, 1]) - 2f64.ln()).abs() < 1e-12);
        // Labels independent of the experts: MI = 0.
        assert!(mutual_information(&a, &[0, 1, 0, 1]).abs() < 1e-12);
    }
}
