//! The expert-parallel cost model (docs/simulator.md): from routing
//! traces, a device count, a placement and hardware numbers, the per-device
//! load, dropped tokens, all-to-all bytes and the time of each MoE layer.
//!
//! Model, per MoE layer over the trace's T tokens (one micro-batch):
//! - Tokens are data-parallel: token t lives on device ⌊t·D/T⌋.
//! - Capacity (GShard, Lepikhin et al. 2020; Switch, Fedus et al. 2021):
//!   C = ⌈cf·k·T/E⌉ per expert over the whole micro-batch; each expert keeps
//!   the first C tokens that chose it in position order and drops the rest
//!   (Megatron-Core's "position" drop policy). cf = 0 is dropless
//!   (MegaBlocks). The trace's own choices are its kept *and* dropped
//!   assignments, so a trace can be re-simulated at another cf. Training
//!   applies capacity per sequence, so at the trace's own cf this drops no
//!   more than training did. Expert-choice traces are taken as they are.
//! - Placement: see [`super::placement`]; a replicated expert's tokens are
//!   split evenly over its replicas.
//! - Dispatch bytes `V[s][r]` = b·d·(assignments from tokens on s to experts
//!   on r); r ≠ s is traffic, the diagonal stays local. Combine is Vᵀ.
//! - All-to-all time, one node (flat): α(D−1) + max_s max(send_s, recv_s)/β_intra.
//!   Several nodes of G devices (two-level): max over devices of
//!   max(inter_d/β_inter, intra_d/β_intra) + α((G−1) + (N−1)), where
//!   inter_d (intra_d) is the larger of the device's sent and received
//!   bytes to other nodes (its own node); the latency term is that of a
//!   hierarchical all-to-all (Tutel, Hwang et al. 2023).
//! - Compute: the busiest device's expert FLOPs / (peak·mfu). Shared experts
//!   run on every device for its own tokens.
//! - Forward layer time t_c + 2·t_a2a (dispatch + combine), or
//!   max(t_c, 2·t_a2a) with overlap; a training step ≈ 3·t_c + 4·t_a2a.
//! - Perfect balance: every device gets the mean compute, and all-to-all
//!   volume is the uniform-routing estimate (T/D)·k̄·d·b·(D−1)/D per device.

use super::hardware::Hardware;
use super::placement::{place, PlacementKind};
use super::trace::LayerTrace;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    pub devices: usize,
    /// Nodes; `None`: nodes of `gpus_per_node` devices (one node when D ≤ that).
    pub nodes: Option<usize>,
    pub placement: PlacementKind,
    /// Extra slots per device for `replicate-hot` replicas.
    pub spare_slots: usize,
    /// Overrides each layer's capacity factor; 0 = dropless.
    pub capacity_factor: Option<f64>,
    /// Forward FLOPs per token of one expert, by trace layer index. A layer
    /// without an entry is assumed to have an MLP expert of ratio 4, not
    /// gated: 2·2·d·4d FLOPs per token.
    pub expert_flops: BTreeMap<usize, f64>,
}

impl SimConfig {
    pub fn new(devices: usize) -> SimConfig {
        SimConfig {
            devices,
            nodes: None,
            placement: PlacementKind::RoundRobin,
            spare_slots: 1,
            capacity_factor: None,
            expert_flops: BTreeMap::new(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SimError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Hardware(#[from] super::hardware::BadField),
    #[error("routing trace of layer {layer}: {msg}")]
    Trace { layer: usize, msg: String },
}

/// Times in seconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LayerTimes {
    pub compute: f64,
    pub a2a: f64,
    pub forward: f64,
    pub forward_overlap: f64,
    pub step: f64,
    pub step_overlap: f64,
    pub ideal_compute: f64,
    pub ideal_a2a: f64,
    pub ideal_step: f64,
    /// step / ideal_step.
    pub inflation: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerReport {
    pub layer: usize,
    pub kind: String,
    pub router: String,
    pub experts: usize,
    pub shared: usize,
    pub top_k: usize,
    pub tokens: usize,
    pub width: usize,
    /// Capacity factor applied (0: dropless).
    pub capacity_factor: f64,
    /// Per-expert capacity C, `None` when dropless.
    pub capacity: Option<u64>,
    /// Assignments the router chose.
    pub routed: u64,
    pub dropped: u64,
    pub drop_fraction: f64,
    /// Dropped assignments by the device their token lives on.
    pub dropped_by_device: Vec<u64>,
    /// Kept assignments per expert.
    pub expert_load: Vec<u64>,
    /// Coefficient of variation of `expert_load`.
    pub expert_cv: f64,
    /// Devices holding each expert (one per replica).
    pub placement: Vec<Vec<usize>>,
    /// Assignments processed per device.
    pub device_load: Vec<f64>,
    /// max / mean of `device_load`.
    pub imbalance: f64,
    /// Largest number of routed tokens a device processes (buffer size).
    pub peak_tokens: f64,
    /// Dispatch bytes from device s (row) to device r (column), diagonal local.
    pub dispatch_bytes: Vec<Vec<f64>>,
    /// The combine all-to-all: the transpose of `dispatch_bytes`.
    pub combine_bytes: Vec<Vec<f64>>,
    /// Remote dispatch bytes sent / received per device.
    pub send_bytes: Vec<f64>,
    pub recv_bytes: Vec<f64>,
    pub remote_bytes: f64,
    pub inter_node_bytes: f64,
    /// Local bytes / all dispatched bytes.
    pub local_share: f64,
    /// Remote dispatch bytes per token of the trace.
    pub bytes_per_token: f64,
    pub expert_flops: f64,
    /// True when `expert_flops` is the ratio-4 assumption, not the arch's.
    pub flops_assumed: bool,
    pub time: LayerTimes,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Skipped {
    pub layer: usize,
    pub kind: String,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Totals {
    pub forward: f64,
    pub forward_overlap: f64,
    pub step: f64,
    pub step_overlap: f64,
    pub ideal_step: f64,
    pub inflation: f64,
    pub routed: u64,
    pub dropped: u64,
    pub drop_fraction: f64,
    pub max_imbalance: f64,
    pub peak_tokens: f64,
    pub remote_bytes: f64,
    pub inter_node_bytes: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimReport {
    pub devices: usize,
    pub nodes: usize,
    pub devices_per_node: usize,
    pub placement: &'static str,
    pub hardware: Hardware,
    pub layers: Vec<LayerReport>,
    pub skipped: Vec<Skipped>,
    pub totals: Totals,
}

/// Devices per node and node count for `cfg` on `hw`.
pub fn topology(cfg: &SimConfig, hw: &Hardware) -> Result<(usize, usize), SimError> {
    let d = cfg.devices;
    if d == 0 {
        return Err(SimError::Config("--devices must be at least 1".into()));
    }
    match cfg.nodes {
        Some(n) if n == 0 || n > d || d % n != 0 => Err(SimError::Config(format!(
            "--nodes {n} must divide --devices {d} (equal nodes of D/N devices)"
        ))),
        Some(n) => Ok((d / n, n)),
        None => {
            let g = d.min(hw.gpus_per_node.max(1));
            Ok((g, d.div_ceil(g)))
        }
    }
}

/// Simulates every `moe` layer of `traces`; other routed layers are listed
/// as skipped.
pub fn simulate(
    traces: &[LayerTrace],
    cfg: &SimConfig,
    hw: &Hardware,
) -> Result<SimReport, SimError> {
    let (g, nodes) = topology(cfg, hw)?;
    hw.validate()?;
    let mut layers = Vec::new();
    let mut skipped = Vec::new();
    for t in traces {
        if t.kind != "moe" {
            let reason = match t.kind.as_str() {
                "moh" => "routed heads are not sharded over devices by expert parallelism",
                _ => "not an expert layer (nothing is sent between devices)",
            };
            skipped.push(Skipped {
                layer: t.layer,
                kind: t.kind.clone(),
                reason: reason.into(),
            });
            continue;
        }
        layers.push(simulate_layer(t, cfg, hw, g)?);
    }
    let mut tot = Totals::default();
    for l in &layers {
        tot.forward += l.time.forward;
        tot.forward_overlap += l.time.forward_overlap;
        tot.step += l.time.step;
        tot.step_overlap += l.time.step_overlap;
        tot.ideal_step += l.time.ideal_step;
        tot.routed += l.routed;
        tot.dropped += l.dropped;
        tot.max_imbalance = tot.max_imbalance.max(l.imbalance);
        tot.peak_tokens = tot.peak_tokens.max(l.peak_tokens);
        tot.remote_bytes += l.remote_bytes;
        tot.inter_node_bytes += l.inter_node_bytes;
    }
    tot.inflation = ratio(tot.step, tot.ideal_step);
    tot.drop_fraction = frac(tot.dropped as f64, tot.routed as f64);
    Ok(SimReport {
        devices: cfg.devices,
        nodes,
        devices_per_node: g,
        placement: cfg.placement.name(),
        hardware: hw.clone(),
        layers,
        skipped,
        totals: tot,
    })
}

/// a / b, or 1 when b is 0 (an empty layer is balanced).
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        1.0
    }
}

/// a / b, or 0 when b is 0.
fn frac(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// Per expert, the tokens that chose it (kept and dropped in the trace),
/// in position order. Checks the trace's indices on the way.
fn choices(t: &LayerTrace) -> Result<Vec<Vec<u32>>, SimError> {
    let bad = |msg: String| SimError::Trace {
        layer: t.layer,
        msg,
    };
    if t.experts == 0 || t.experts > u16::MAX as usize + 1 {
        return Err(bad(format!("{} experts", t.experts)));
    }
    let n = t.offsets.len().saturating_sub(1);
    if n != t.tokens || t.offsets.first().is_some_and(|&o| o != 0) {
        return Err(bad(format!(
            "{} offsets for {} tokens",
            t.offsets.len(),
            t.tokens
        )));
    }
    if t.offsets.windows(2).any(|w| w[0] > w[1])
        || t.offsets.last().map_or(0, |&o| o as usize) != t.experts_of.len()
    {
        return Err(bad("offsets are not a valid CSR index".into()));
    }
    let mut per = vec![Vec::new(); t.experts];
    for tok in 0..t.tokens {
        for &e in &t.experts_of[t.offsets[tok] as usize..t.offsets[tok + 1] as usize] {
            per.get_mut(e as usize)
                .ok_or_else(|| bad(format!("expert {e} of {}", t.experts)))?
                .push(tok as u32);
        }
    }
    for &(tok, e) in &t.dropped {
        if tok as usize >= t.tokens {
            return Err(bad(format!("dropped token {tok} of {}", t.tokens)));
        }
        per.get_mut(e as usize)
            .ok_or_else(|| bad(format!("expert {e} of {}", t.experts)))?
            .push(tok);
    }
    for p in &mut per {
        p.sort_unstable();
    }
    Ok(per)
}

fn simulate_layer(
    t: &LayerTrace,
    cfg: &SimConfig,
    hw: &Hardware,
    g: usize,
) -> Result<LayerReport, SimError> {
    let d = cfg.devices;
    let e_count = t.experts;
    let per = choices(t)?;
    let cf = cfg.capacity_factor.unwrap_or(t.capacity_factor);
    if !cf.is_finite() || cf < 0.0 {
        return Err(SimError::Config(format!(
            "capacity factor must be ≥ 0 (0: dropless), got {cf}"
        )));
    }
    let dropless = cf == 0.0 || t.router == "expert_choice";
    let k = t.top_k.max(1) as f64;
    let capacity = (!dropless).then(|| {
        (cf * k * t.tokens as f64 / e_count as f64 - 1e-9)
            .ceil()
            .max(0.0) as u64
    });
    let dev_of = |tok: u32| (tok as usize * d) / t.tokens.max(1);

    // Kept assignments by (source device, expert); drops by source device.
    let mut a = vec![vec![0u64; e_count]; d];
    let mut dropped_by_device = vec![0u64; d];
    let mut expert_load = vec![0u64; e_count];
    let mut routed = 0u64;
    for (e, toks) in per.iter().enumerate() {
        routed += toks.len() as u64;
        for (i, &tok) in toks.iter().enumerate() {
            let s = dev_of(tok);
            if capacity.is_some_and(|c| i as u64 >= c) {
                dropped_by_device[s] += 1;
            } else {
                a[s][e] += 1;
                expert_load[e] += 1;
            }
        }
    }
    let kept: u64 = expert_load.iter().sum();
    let dropped = routed - kept;

    let load_f: Vec<f64> = expert_load.iter().map(|&c| c as f64).collect();
    let placement = place(cfg.placement, &load_f, d, cfg.spare_slots);
    let device_load = placement.device_loads(&load_f, d);

    // Dispatch matrix in bytes.
    let bytes_per_assign = t.width as f64 * hw.bytes_per_elem;
    let mut v = vec![vec![0.0f64; d]; d];
    for (s, row) in a.iter().enumerate() {
        for (e, &c) in row.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let reps = &placement.replicas[e];
            let share = c as f64 / reps.len() as f64 * bytes_per_assign;
            for &r in reps {
                v[s][r] += share;
            }
        }
    }
    let node = |x: usize| x / g;
    let (mut send, mut recv) = (vec![0.0; d], vec![0.0; d]);
    let (mut intra_s, mut intra_r) = (vec![0.0; d], vec![0.0; d]);
    let (mut inter_s, mut inter_r) = (vec![0.0; d], vec![0.0; d]);
    let mut local = 0.0;
    for s in 0..d {
        for r in 0..d {
            let b = v[s][r];
            if s == r {
                local += b;
                continue;
            }
            send[s] += b;
            recv[r] += b;
            if node(s) == node(r) {
                intra_s[s] += b;
                intra_r[r] += b;
            } else {
                inter_s[s] += b;
                inter_r[r] += b;
            }
        }
    }
    let remote: f64 = send.iter().sum();
    let inter_total: f64 = inter_s.iter().sum();
    let nodes = d.div_ceil(g);
    let flat = nodes == 1;
    let a2a = if d == 1 {
        0.0
    } else if flat {
        let worst = (0..d).map(|x| send[x].max(recv[x])).fold(0.0, f64::max);
        hw.alpha_s() * (d - 1) as f64 + worst / hw.intra_bytes_per_s()
    } else {
        let worst = (0..d)
            .map(|x| {
                (inter_s[x].max(inter_r[x]) / hw.inter_bytes_per_s())
                    .max(intra_s[x].max(intra_r[x]) / hw.intra_bytes_per_s())
            })
            .fold(0.0, f64::max);
        worst + hw.alpha_s() * ((g - 1) + (nodes - 1)) as f64
    };

    // Compute.
    let (expert_flops, flops_assumed) = match cfg.expert_flops.get(&t.layer) {
        Some(&f) => (f, false),
        None => (16.0 * (t.width * t.width) as f64, true),
    };
    let tokens_on = |x: usize| {
        // Tokens t with ⌊t·D/T⌋ = x: t in [⌈x·T/D⌉, ⌈(x+1)·T/D⌉).
        ((x + 1) * t.tokens).div_ceil(d) - (x * t.tokens).div_ceil(d)
    };
    let dev_flops: Vec<f64> = (0..d)
        .map(|x| (device_load[x] + (t.shared * tokens_on(x)) as f64) * expert_flops)
        .collect();
    let rate = hw.flops_per_s();
    let compute = dev_flops.iter().copied().fold(0.0, f64::max) / rate;
    let ideal_compute = dev_flops.iter().sum::<f64>() / d as f64 / rate;

    // Uniform routing: each device sends (kept/D)·b·d, a fraction (D−1)/D remote.
    let per_dev = kept as f64 / d as f64 * bytes_per_assign;
    let ideal_a2a = if d == 1 {
        0.0
    } else if flat {
        hw.alpha_s() * (d - 1) as f64 + per_dev * (d - 1) as f64 / d as f64 / hw.intra_bytes_per_s()
    } else {
        let intra = per_dev * (g - 1) as f64 / d as f64 / hw.intra_bytes_per_s();
        let inter = per_dev * (d - g) as f64 / d as f64 / hw.inter_bytes_per_s();
        intra.max(inter) + hw.alpha_s() * ((g - 1) + (nodes - 1)) as f64
    };
    let step = 3.0 * compute + 4.0 * a2a;
    let ideal_step = 3.0 * ideal_compute + 4.0 * ideal_a2a;
    let time = LayerTimes {
        compute,
        a2a,
        forward: compute + 2.0 * a2a,
        forward_overlap: compute.max(2.0 * a2a),
        step,
        step_overlap: (3.0 * compute).max(4.0 * a2a),
        ideal_compute,
        ideal_a2a,
        ideal_step,
        inflation: ratio(step, ideal_step),
    };

    let mean_load = device_load.iter().sum::<f64>() / d as f64;
    let max_load = device_load.iter().copied().fold(0.0, f64::max);
    let mean_e = kept as f64 / e_count as f64;
    let var_e = load_f.iter().map(|&c| (c - mean_e).powi(2)).sum::<f64>() / e_count as f64;
    let combine = (0..d).map(|r| (0..d).map(|s| v[s][r]).collect()).collect();
    Ok(LayerReport {
        layer: t.layer,
        kind: t.kind.clone(),
        router: t.router.clone(),
        experts: e_count,
        shared: t.shared,
        top_k: t.top_k,
        tokens: t.tokens,
        width: t.width,
        capacity_factor: if dropless { 0.0 } else { cf },
        capacity,
        routed,
        dropped,
        drop_fraction: frac(dropped as f64, routed as f64),
        dropped_by_device,
        expert_load,
        expert_cv: if mean_e > 0.0 {
            var_e.sqrt() / mean_e
        } else {
            0.0
        },
        placement: placement.replicas,
        imbalance: ratio(max_load, mean_load),
        peak_tokens: max_load,
        device_load,
        dispatch_bytes: v,
        combine_bytes: combine,
        send_bytes: send,
        recv_bytes: recv,
        remote_bytes: remote,
        inter_node_bytes: inter_total,
        local_share: frac(local, local + remote),
        bytes_per_token: remote / t.tokens.max(1) as f64,
        expert_flops,
        flops_assumed,
        time,
    })
}

#[cfg(test)]
#[path = "simulate_tests.rs"]
mod tests;
