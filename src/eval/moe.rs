//! Mixture-of-experts in training, by gathering: each expert runs only on
//! the tokens routed to it, so compute falls with k/E as in real systems
//! (benches/train_step.rs `moe_topk`). Routing decisions are made on the
//! host from the router's probabilities (rules in `routing::select`); each
//! expert's output rows go back to their tokens scaled by the
//! differentiable gates (`Backend::combine_rows`).

use super::kernels::{Backend, Pick};
use super::program::Graph;
use super::run::{fingerprint, RouteRecord, Run, T3};
use crate::arch::{Balance, MoeSpec, RouterKind};
use crate::routing::{route_with, BalanceScope, LayerTrace, RouteOptions, Routing};
use dfdx::prelude::*;

/// Constant weights w (batch × seq × experts) such that Σ p·w is the Switch
/// load-balancing loss α·E·Σ_i f_i·P_i (Fedus et al. 2022, eq. 4), with f_i
/// the fraction of kept assignments to expert i and P_i the mean router
/// probability, counted per micro-batch (losses averaged) or over the whole
/// batch.
pub fn balance_weights(
    select: &[f32],
    batch: usize,
    seq: usize,
    e: usize,
    alpha: f64,
    scope: BalanceScope,
    micro: usize,
) -> Vec<f32> {
    let group = match scope {
        BalanceScope::Global => batch,
        BalanceScope::Micro => micro.clamp(1, batch.max(1)),
    };
    let groups = batch.div_ceil(group.max(1));
    let mut w = vec![0.0f32; batch * seq * e];
    for g in 0..groups {
        let (b0, b1) = (g * group, ((g + 1) * group).min(batch));
        let mut f = vec![0.0f64; e];
        for v in &select[b0 * seq * e..b1 * seq * e]
            .chunks(e)
            .collect::<Vec<_>>()
        {
            for (i, &x) in v.iter().enumerate() {
                f[i] += x as f64;
            }
        }
        let total: f64 = f.iter().sum::<f64>().max(1.0);
        let tokens = ((b1 - b0) * seq) as f64;
        for t in b0 * seq..b1 * seq {
            for i in 0..e {
                w[t * e + i] = (alpha * e as f64 * (f[i] / total) / tokens / groups as f64) as f32;
            }
        }
    }
    w
}

/// Host-side gates: probabilities of the selected experts, renormalised
/// over them when the router says so.
fn host_gates(probs: &[f32], select: &[f32], e: usize, renormalise: bool) -> Vec<f32> {
    let mut g: Vec<f32> = probs.iter().zip(select).map(|(p, s)| p * s).collect();
    if renormalise {
        for row in g.chunks_mut(e) {
            let m: f32 = row.iter().sum::<f32>() + 1e-9;
            row.iter_mut().for_each(|v| *v /= m);
        }
    }
    g
}

/// A routed layer's trace from its decisions.
#[allow(clippy::too_many_arguments)]
pub fn trace_of(
    kind: &str,
    spec: &MoeSpec,
    probs: &[f32],
    r: &Routing,
    gates: &[f32],
    layer: usize,
    seq: usize,
    width: usize,
) -> LayerTrace {
    let e = spec.experts;
    let mut t = LayerTrace {
        layer,
        kind: kind.into(),
        router: match spec.router {
            RouterKind::TokenChoice => "token_choice",
            RouterKind::ExpertChoice => "expert_choice",
            RouterKind::TopP => "top_p",
        }
        .into(),
        experts: e,
        shared: spec.shared,
        top_k: spec.top_k,
        capacity_factor: spec.capacity,
        seq,
        width,
        ..LayerTrace::default()
    };
    let n = r.select.len() / e.max(1);
    let (mut ent, mut conf) = (0.0f64, 0.0f64);
    for tok in 0..n {
        let row = tok * e..(tok + 1) * e;
        t.push_token(
            row.clone()
                .filter(|&j| r.select[j] > 0.0)
                .map(|j| (j - tok * e, gates[j])),
        );
        let p = &probs[row];
        ent -= p
            .iter()
            .filter(|&&v| v > 0.0)
            .map(|&v| v as f64 * (v as f64).ln())
            .sum::<f64>();
        conf += p.iter().copied().fold(0.0f32, f32::max) as f64;
    }
    t.dropped = r.dropped_at.clone();
    t.router_entropy = ent / n.max(1) as f64;
    t.router_confidence = conf / n.max(1) as f64;
    t
}

/// Runs a mixture-of-experts step on `x` (batch × seq × width).
pub fn apply<D: Backend, T: Tape<f32, D>>(
    run: &mut Run<'_, D, T>,
    spec: &MoeSpec,
    router: usize,
    experts: &[Graph],
    shared: &[Graph],
    x: T3<D, T>,
) -> T3<D, T> {
    let (b, s, d) = *x.shape();
    let (e, n) = (spec.experts, b * s);
    let layer = run.routes.len();
    let logits = run.linear(x.with_empty_tape(), router, d, e);
    if run.routing.z_loss > 0.0 {
        // c_z·mean_t logsumexp(z_t)² (Zoph et al. 2022, ST-MoE eq. 5).
        let lse = logits
            .with_empty_tape()
            .logsumexp::<(usize, usize), Axis<2>>();
        run.aux
            .push(lse.square().mean::<(), _>() * run.routing.z_loss as f32);
    }
    let probs = logits.softmax::<Axis<2>>();
    let pv = probs.as_vec();
    let bias = (spec.balance == Balance::Bias)
        .then(|| run.bias.get(layer).filter(|v| v.len() == e))
        .flatten()
        .cloned();
    let r = route_with(
        &pv,
        b,
        s,
        spec,
        RouteOptions {
            drop: run.routing.drop,
            bias: bias.as_deref(),
        },
    );
    let renormalise = spec.router == RouterKind::TopP
        || (spec.router == RouterKind::TokenChoice && spec.top_k > 1);
    if run.trace {
        let g = host_gates(&pv, &r.select, e, renormalise);
        run.traces
            .push(trace_of("moe", spec, &pv, &r, &g, layer, s, d));
    }
    run.routes.push(RouteRecord {
        kind: "moe".into(),
        tokens: n as u32,
        load: r.load.clone(),
        dropped: r.dropped,
        fingerprint: fingerprint(&r.select),
    });
    if spec.balance == Balance::AuxLoss && run.routing.aux_alpha > 0.0 {
        let w = balance_weights(
            &r.select,
            b,
            s,
            e,
            run.routing.aux_alpha,
            run.routing.balance_scope,
            run.routing.micro_batch,
        );
        let w = run.dev.tensor_from_vec(w, (b, s, e));
        run.aux.push((probs.with_empty_tape() * w).sum::<(), _>());
    }
    let mask = run.dev.tensor_from_vec(r.select.clone(), (b, s, e));
    let mut gates = probs * mask;
    if renormalise {
        let denom = gates.with_empty_tape().sum::<(usize, usize), Axis<2>>() + 1e-9;
        gates = gates / denom.broadcast_like::<_, Axis<2>>(&(b, s, e));
    }
    // Tokens of each expert, in token order.
    let mut tokens_of: Vec<Vec<usize>> = vec![Vec::new(); e];
    for tok in 0..n {
        for (i, list) in tokens_of.iter_mut().enumerate() {
            if r.select[tok * e + i] > 0.0 {
                list.push(tok);
            }
        }
    }
    let active: Vec<usize> = (0..e).filter(|&i| !tokens_of[i].is_empty()).collect();
    let readers = active.len() + shared.len();
    if readers == 0 {
        // Nothing routed and no shared expert: the layer outputs zeros, but
        // the router's tape must still reach the loss.
        let g = gates.sum::<(usize, usize), Axis<2>>();
        return x * 0.0 + g.broadcast_like::<_, Axis<2>>(&(b, s, d)) * 0.0;
    }
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
    let mut outs = Vec::with_capacity(active.len());
    let mut picks = Vec::with_capacity(n * spec.top_k.max(1));
    let saved_batch = run.batch;
    for (part, &i) in active.iter().enumerate() {
        let idx = &tokens_of[i];
        let m = idx.len();
        let xi = D::gather_rows(next_x(&mut x).reshape_like(&(n, d)), idx);
        // Expert bodies are token-wise, so running them on the gathered
        // tokens as one sequence computes exactly what they would in place.
        run.batch = 1;
        let y = run.body(&experts[i], xi.reshape_like(&(1, m, d)));
        run.batch = saved_batch;
        outs.push(y.reshape_like(&(m, d)));
        picks.extend(idx.iter().enumerate().map(|(row, &tok)| Pick {
            out: tok,
            part,
            row,
            gate: tok * e + i,
        }));
    }
    let mut acc: Option<T3<D, T>> = (!outs.is_empty()).then(|| {
        let gates = gates.reshape_like(&(n * e,));
        D::combine_rows(outs, &picks, n, Some(gates)).reshape_like(&(b, s, d))
    });
    for g in shared {
        let y = run.body(g, next_x(&mut x));
        acc = Some(match acc {
            Some(a) => a + y,
            None => y,
        });
    }
    acc.expect("at least one reader")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balance_weights_give_alpha_at_perfect_balance() {
        // 2 sequences × 2 tokens, 2 experts, each expert gets half: f = ½;
        // with uniform p = ½, α·E·Σ f·P = α·2·(¼+¼) = α.
        let select = vec![1., 0., 0., 1., 1., 0., 0., 1.];
        let p = [0.5f32; 8];
        for scope in [BalanceScope::Global, BalanceScope::Micro] {
            let w = balance_weights(&select, 2, 2, 2, 0.01, scope, 1);
            let loss: f32 = w.iter().zip(p).map(|(a, b)| a * b).sum();
            assert!((loss - 0.01).abs() < 1e-7, "{scope:?} {loss}");
        }
    }

    #[test]
    fn micro_scope_sees_per_sequence_imbalance() {
        // Sequence 0 all on expert 0, sequence 1 all on expert 1: balanced
        // over the batch, fully imbalanced per sequence.
        let select = vec![1., 0., 1., 0., 0., 1., 0., 1.];
        let p = [0.5f32; 8];
        let global: f32 = balance_weights(&select, 2, 2, 2, 1.0, BalanceScope::Global, 1)
            .iter()
            .zip(p)
            .map(|(a, b)| a * b)
            .sum();
        let micro: f32 = balance_weights(&select, 2, 2, 2, 1.0, BalanceScope::Micro, 1)
            .iter()
            .zip(p)
            .map(|(a, b)| a * b)
            .sum();
        assert!((global - 1.0).abs() < 1e-6);
        assert!((micro - 1.0).abs() < 1e-6);
        // The gradient differs: per-sequence weights put all mass on the
        // expert each sequence used.
        let wm = balance_weights(&select, 2, 2, 2, 1.0, BalanceScope::Micro, 1);
        let wg = balance_weights(&select, 2, 2, 2, 1.0, BalanceScope::Global, 1);
        assert_eq!(wm[1], 0.0);
        assert!(wg[1] > 0.0);
    }
}
