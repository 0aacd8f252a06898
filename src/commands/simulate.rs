//! `simulate`: the expert-parallel cost model over a stored routing trace
//! or synthetic routing for an architecture, as a table or JSON.

use super::{load, parse_arch, CliError};
use crate::cli::{PlacementArg, SimulateArgs};
use crate::routing::simulate::LayerReport;
use crate::routing::synth::{routed_layers, MoeLayer};
use crate::routing::{
    from_loads, simulate as run_model, synthesize, Hardware, LayerTrace, PlacementKind, SimConfig,
    SimReport, Skew,
};
use crate::search::{RunDir, SearchError};
use crate::space::Space;
use crate::store::StoreError;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

const MAX_SPARE_SLOTS: usize = 64;
const MAX_TOKENS: usize = 1 << 22;

/// Routing to simulate, with where it came from.
struct Input {
    traces: Vec<LayerTrace>,
    expert_flops: BTreeMap<usize, f64>,
    source: serde_json::Value,
}

pub fn simulate(a: &SimulateArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let hw = match &a.hw {
        Some(p) => Hardware::load(p)?,
        None => Hardware::default(),
    };
    let devices = a.devices.clone();
    if let Some(cf) = a.capacity_factor {
        if !(cf.is_finite() && cf >= 0.0) {
            return Err(bad(format!(
                "--capacity-factor must be ≥ 0 (0: dropless), got {cf}"
            )));
        }
    }
    if a.spare_slots > MAX_SPARE_SLOTS {
        return Err(bad(format!(
            "--spare-slots must be at most {MAX_SPARE_SLOTS}, got {}",
            a.spare_slots
        )));
    }
    let input = match (&a.trace, &a.arch) {
        (Some(t), _) => from_run(t)?,
        (None, Some(arch)) => synthetic(a, arch)?,
        (None, None) => return Err(bad("give --trace RUN/CANDIDATE or --arch ARCH".into())),
    };
    if !input.traces.iter().any(|t| t.kind == "moe") {
        let kinds: Vec<&str> = input.traces.iter().map(|t| t.kind.as_str()).collect();
        return Err(bad(format!(
            "nothing to simulate: no moe layer (routed layers: {})",
            if kinds.is_empty() {
                "none".to_string()
            } else {
                kinds.join(", ")
            }
        )));
    }
    let mut reports = Vec::new();
    for &d in &devices {
        let cfg = SimConfig {
            devices: d,
            nodes: a.nodes,
            placement: match a.placement {
                PlacementArg::RoundRobin => PlacementKind::RoundRobin,
                PlacementArg::Greedy => PlacementKind::Greedy,
                PlacementArg::ReplicateHot => PlacementKind::ReplicateHot,
            },
            spare_slots: a.spare_slots,
            capacity_factor: a.capacity_factor,
            expert_flops: input.expert_flops.clone(),
        };
        reports.push(
            run_model(&input.traces, &cfg, &hw)
                .map_err(|e| CliError::bad_because("cannot simulate", e))?,
        );
    }
    if a.json {
        let v = if let [r] = reports.as_slice() {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            v["source"] = input.source;
            v
        } else {
            json!({ "source": input.source, "sweep": reports })
        };
        writeln!(out, "{}", serde_json::to_string(&v).unwrap_or_default())?;
        return Ok(());
    }
    writeln!(out, "source    {}", source_line(&input.source))?;
    writeln!(out, "hardware  {}", hw_line(&hw))?;
    if let [r] = reports.as_slice() {
        table(r, out)
    } else {
        sweep(&reports, out)
    }
}

fn bad(m: String) -> CliError {
    CliError::bad(m)
}

/// Synthetic routing for every MoE layer of an architecture.
fn synthetic(a: &SimulateArgs, arch: &str) -> Result<Input, CliError> {
    let space = load(&a.space)?;
    let net = parse_arch(&space, arch)?;
    let skew_text = a.skew.as_deref().unwrap_or("zipf:1.0");
    let skew = Skew::parse(skew_text).map_err(bad)?;
    let tokens = a.tokens.unwrap_or(4096);
    if tokens == 0 || tokens > MAX_TOKENS {
        return Err(bad(format!(
            "--tokens must be in 1..={MAX_TOKENS}, got {tokens}"
        )));
    }
    let seed = a.seed.unwrap_or(0);
    let routed = routed_layers(&net.arch);
    let moe: Vec<_> = routed.iter().filter_map(|(_, m)| m.clone()).collect();
    let mut traces = synthesize(&moe, tokens, skew, seed).into_iter().peekable();
    let mut all = Vec::new();
    let mut expert_flops = BTreeMap::new();
    for (i, (kind, m)) in routed.iter().enumerate() {
        match m {
            Some(m) => {
                expert_flops.insert(i, m.expert_flops);
                all.extend(traces.next());
            }
            None => all.push(LayerTrace {
                layer: i,
                kind: kind.to_string(),
                ..LayerTrace::default()
            }),
        }
    }
    Ok(Input {
        traces: all,
        expert_flops,
        source: json!({
            "kind": "synthetic",
            "arch": net.text(),
            "skew": skew.to_string(),
            "tokens": tokens,
            "seed": seed,
        }),
    })
}

/// The final routing trace of candidate `RUN/ID`, with expert FLOPs from its
/// architecture when the run's space can rebuild it.
fn from_run(arg: &Path) -> Result<Input, CliError> {
    let usage = || {
        bad(format!(
            "--trace {}: expected RUN/CANDIDATE, e.g. runs/q1/17",
            arg.display()
        ))
    };
    let id: u64 = arg
        .file_name()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .ok_or_else(usage)?;
    let run_path = arg
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(usage)?;
    let run = RunDir::open(run_path)?;
    let store = run.store().map_err(|e| match e {
        SearchError::Store(held @ StoreError::Held { .. }) => CliError::runtime_because(
            "`simulate` reads the run's store, so run it after the search ends or is stopped",
            held,
        ),
        other => other.into(),
    })?;
    let record = store
        .candidate(id)?
        .ok_or_else(|| bad(format!("run {} has no candidate {id}", run_path.display())))?;
    let mut outcome = store.outcome(id)?;
    if outcome.is_none() {
        if let Some(orig) = record.duplicate_of {
            outcome = store.outcome(orig)?;
        }
    }
    let outcome = outcome.ok_or_else(|| {
        bad(format!(
            "candidate {id} of {} has not been evaluated yet",
            run_path.display()
        ))
    })?;
    // The architecture, for expert FLOPs (and for the loads fallback).
    let routed = Space::load(&run.space_path())
        .ok()
        .and_then(|space| space.parse_arch(&record.text).ok())
        .map(|net| routed_layers(&net.arch));
    let mut kind = "trace";
    let mut traces = final_trace(&outcome).map_err(|e| {
        CliError::runtime_because(
            format!(
                "candidate {id} of {}: its stored routing trace cannot be read; the store is damaged",
                run_path.display()
            ),
            e,
        )
    })?;
    if traces.is_empty() {
        if let Some(routed) = &routed {
            traces = from_recorded_loads(&outcome, routed).map_err(|m| {
                bad(format!(
                    "candidate {id} of {}: recorded routes: {m}",
                    run_path.display()
                ))
            })?;
            kind = "loads";
        }
    }
    if traces.is_empty() {
        return Err(bad(format!(
            "candidate {id} of {} has no routing trace (no `routing.final` or `routes` in its outcome: no routed layers, or evaluated by a build that did not record them); simulate its architecture instead: archgram simulate --arch '{}' --space {}",
            run_path.display(),
            record.text,
            run.space_path().display()
        )));
    }
    // Expert FLOPs from the architecture; a layer that does not match keeps
    // the simulator's ratio-4 assumption (and says so).
    let mut expert_flops = BTreeMap::new();
    for t in &traces {
        if let Some((_, Some(m))) = routed.as_ref().and_then(|r| r.get(t.layer)) {
            if m.spec.experts == t.experts && m.width == t.width {
                expert_flops.insert(t.layer, m.expert_flops);
            }
        }
    }
    Ok(Input {
        traces,
        expert_flops,
        source: json!({
            "kind": kind,
            "run": run_path.display().to_string(),
            "candidate": id,
            "arch": record.text,
        }),
    })
}

/// The token-level traces of an outcome's final evaluation (its
/// `routing.final`); empty for an outcome without them (no routed layers,
/// or recorded by a build that kept only loads). A trace that is there but
/// cannot be read means a damaged record, which is an error, not "none".
fn final_trace(outcome: &Value) -> Result<Vec<LayerTrace>, serde_json::Error> {
    match outcome.get("routing").and_then(|r| r.get("final")) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v) => serde_json::from_value(v.clone()),
    }
}

/// Traces rebuilt from an outcome's `routes` (per routed layer, in execution
/// order: kind, tokens, per-expert load) when token-level routing was not
/// recorded; see [`from_loads`].
fn from_recorded_loads(
    outcome: &serde_json::Value,
    routed: &[(&'static str, Option<MoeLayer>)],
) -> Result<Vec<LayerTrace>, String> {
    let Some(routes) = outcome.get("routes").and_then(|r| r.as_array()) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (i, r) in routes.iter().enumerate() {
        let kind = r["kind"].as_str().unwrap_or("");
        match routed.get(i) {
            Some((k, Some(m))) if *k == kind => {
                let tokens = r["tokens"].as_u64().unwrap_or(0) as usize;
                let load: Vec<u64> = r["load"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
                    .unwrap_or_default();
                out.push(from_loads(m, &load, tokens, 0).map_err(|e| format!("layer {i}: {e}"))?);
            }
            Some((k, _)) if *k == kind => out.push(LayerTrace {
                layer: i,
                kind: kind.to_string(),
                ..LayerTrace::default()
            }),
            _ => {
                return Err(format!(
                    "layer {i} is `{kind}` but the architecture's routed layer {i} is not"
                ))
            }
        }
    }
    Ok(out)
}

fn source_line(s: &serde_json::Value) -> String {
    if s["kind"] == "trace" {
        format!(
            "routing trace of candidate {} in {}",
            s["candidate"],
            s["run"].as_str().unwrap_or("")
        )
    } else if s["kind"] == "loads" {
        format!(
            "recorded per-expert loads of candidate {} in {} (token positions random: no token-level trace)",
            s["candidate"],
            s["run"].as_str().unwrap_or("")
        )
    } else {
        format!(
            "synthetic routing, {}, {} tokens, seed {}",
            s["skew"].as_str().unwrap_or(""),
            s["tokens"],
            s["seed"]
        )
    }
}

fn hw_line(hw: &Hardware) -> String {
    format!(
        "{} TFLOP/s × mfu {}, α {} µs, intra-node {} GB/s, inter-node {} GB/s, {} devices/node, {} B/element",
        hw.peak_tflops,
        hw.mfu,
        hw.alpha_us,
        hw.intra_gbps,
        hw.inter_gbps,
        hw.gpus_per_node,
        hw.bytes_per_elem
    )
}

pub fn fmt_time(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else if s >= 1e-6 {
        format!("{:.1} µs", s * 1e6)
    } else {
        format!("{:.0} ns", s * 1e9)
    }
}

pub fn fmt_bytes(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.2} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{b:.0} B")
    }
}

fn table(r: &SimReport, out: &mut dyn Write) -> Result<(), CliError> {
    writeln!(
        out,
        "cluster   {} devices ({} node{} of {}), placement {}",
        r.devices,
        r.nodes,
        if r.nodes == 1 { "" } else { "s" },
        r.devices_per_node,
        r.placement
    )?;
    for l in &r.layers {
        writeln!(out)?;
        layer_table(l, r.devices, out)?;
    }
    for s in &r.skipped {
        writeln!(
            out,
            "\nlayer {} ({}) skipped: {}",
            s.layer, s.kind, s.reason
        )?;
    }
    let t = &r.totals;
    writeln!(out)?;
    writeln!(
        out,
        "total     {} MoE layer(s): forward {} (overlapped {}), training step {} (overlapped {}), perfect balance {} (×{:.2})",
        r.layers.len(),
        fmt_time(t.forward),
        fmt_time(t.forward_overlap),
        fmt_time(t.step),
        fmt_time(t.step_overlap),
        fmt_time(t.ideal_step),
        t.inflation
    )?;
    writeln!(
        out,
        "          dropped {} of {} assignments ({:.1}%), max imbalance {:.2}, peak {:.0} tokens/device, {} remote ({} between nodes)",
        t.dropped,
        t.routed,
        100.0 * t.drop_fraction,
        t.max_imbalance,
        t.peak_tokens,
        fmt_bytes(t.remote_bytes),
        fmt_bytes(t.inter_node_bytes)
    )?;
    Ok(())
}

fn layer_table(l: &LayerReport, d: usize, out: &mut dyn Write) -> Result<(), CliError> {
    let cap = match l.capacity {
        Some(c) => format!("cf {} (C = {c})", l.capacity_factor),
        None => "dropless".into(),
    };
    writeln!(
        out,
        "layer {}: moe {}, {} experts, top-{}, {} shared; {} tokens × {}; {cap}",
        l.layer, l.router, l.experts, l.top_k, l.shared, l.tokens, l.width
    )?;
    if d <= 16 {
        writeln!(
            out,
            "  {:>6}  {:>9}  {:>10}  {:>10}  {:>8}  experts",
            "device", "load", "sent", "received", "dropped"
        )?;
        for x in 0..d {
            let experts: Vec<String> = l
                .placement
                .iter()
                .enumerate()
                .filter(|(_, devs)| devs.contains(&x))
                .map(|(e, _)| e.to_string())
                .collect();
            writeln!(
                out,
                "  {:>6}  {:>9.1}  {:>10}  {:>10}  {:>8}  {}",
                x,
                l.device_load[x],
                fmt_bytes(l.send_bytes[x]),
                fmt_bytes(l.recv_bytes[x]),
                l.dropped_by_device[x],
                experts.join(" ")
            )?;
        }
    } else {
        let stats = |v: &[f64]| {
            let max = v.iter().copied().fold(0.0, f64::max);
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            (min, v.iter().sum::<f64>() / v.len() as f64, max)
        };
        let (lmin, lmean, lmax) = stats(&l.device_load);
        let (_, smean, smax) = stats(&l.send_bytes);
        writeln!(
            out,
            "  load/device min {lmin:.1} mean {lmean:.1} max {lmax:.1}; sent/device mean {} max {}",
            fmt_bytes(smean),
            fmt_bytes(smax)
        )?;
    }
    writeln!(
        out,
        "  imbalance {:.2} (max/mean), expert CV {:.2}, dropped {} of {} ({:.1}%), peak {:.0} tokens/device",
        l.imbalance,
        l.expert_cv,
        l.dropped,
        l.routed,
        100.0 * l.drop_fraction,
        l.peak_tokens
    )?;
    writeln!(
        out,
        "  dispatch {} remote ({:.0} B/token, {:.0}% stays local, {} between nodes); combine the same, reversed",
        fmt_bytes(l.remote_bytes),
        l.bytes_per_token,
        100.0 * l.local_share,
        fmt_bytes(l.inter_node_bytes)
    )?;
    let tm = &l.time;
    writeln!(
        out,
        "  time: all-to-all {}  compute {}{}  forward {} (overlapped {})  training step {}  perfect balance {} (×{:.2})",
        fmt_time(tm.a2a),
        fmt_time(tm.compute),
        if l.flops_assumed {
            " (assumed MLP ratio 4)"
        } else {
            ""
        },
        fmt_time(tm.forward),
        fmt_time(tm.forward_overlap),
        fmt_time(tm.step),
        fmt_time(tm.ideal_step),
        tm.inflation
    )?;
    Ok(())
}

fn sweep(reports: &[SimReport], out: &mut dyn Write) -> Result<(), CliError> {
    writeln!(out, "placement {}", reports[0].placement)?;
    writeln!(
        out,
        "{:>7} {:>5} {:>9} {:>8} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "devices",
        "nodes",
        "imbalance",
        "dropped",
        "peak tok",
        "B/token",
        "max sent",
        "a2a",
        "compute",
        "step",
        "ideal",
        "inflation"
    )?;
    for r in reports {
        let t = &r.totals;
        let tokens = r.layers.first().map_or(1, |l| l.tokens.max(1));
        let a2a: f64 = r.layers.iter().map(|l| l.time.a2a).sum();
        let compute: f64 = r.layers.iter().map(|l| l.time.compute).sum();
        let max_sent = r
            .layers
            .iter()
            .flat_map(|l| l.send_bytes.iter().copied())
            .fold(0.0, f64::max);
        writeln!(
            out,
            "{:>7} {:>5} {:>9.2} {:>7.1}% {:>9.0} {:>9.0} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8.2}×",
            r.devices,
            r.nodes,
            t.max_imbalance,
            100.0 * t.drop_fraction,
            t.peak_tokens,
            t.remote_bytes / tokens as f64,
            fmt_bytes(max_sent),
            fmt_time(a2a),
            fmt_time(compute),
            fmt_time(t.step),
            fmt_time(t.ideal_step),
            t.inflation
        )?;
    }
    writeln!(
        out,
        "(times per training step summed over {} MoE layer(s), a2a and compute per layer summed; imbalance, peak tokens and max sent: worst layer and device; B/token: remote dispatch bytes per token over all layers)",
        reports[0].layers.len()
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_trace_reads_a_stored_trace_and_refuses_a_damaged_one() {
        let mut t = LayerTrace {
            kind: "moe".into(),
            experts: 3,
            ..LayerTrace::default()
        };
        t.push_token([(0, 0.7), (2, 0.3)]);
        let stored = json!({"routing": {"final": [t.clone()]}});
        assert_eq!(final_trace(&stored).unwrap(), vec![t]);
        assert_eq!(final_trace(&json!({"score": 0.5})).unwrap(), vec![]);
        assert_eq!(final_trace(&json!({"routing": null})).unwrap(), vec![]);
        let damaged = json!({"routing": {"final": [{"kind": 3}]}});
        assert!(final_trace(&damaged).is_err());
    }
}
