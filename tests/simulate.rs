//! `archgram simulate` end to end: synthetic routing for an MoE
//! architecture, a stored trace read back from a run, bad input exits 2.

use archgram::hash::Hashes;
use archgram::routing::{Hardware, LayerTrace};
use archgram::space::Space;
use archgram::store::{CandidateRecord, SledStore, Store};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn archgram(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_archgram"))
        .args(args)
        .output()
        .expect("run archgram")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn switch_arch() -> String {
    let space = std::fs::read_to_string("spaces/moe-heavy.ron").unwrap();
    space
        .split("\"switch\": \"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn synthetic_routing_for_an_moe_arch_as_table_and_json() {
    let arch = switch_arch();
    let base = [
        "simulate",
        "--arch",
        &arch,
        "--space",
        "spaces/moe-heavy.ron",
        "--skew",
        "zipf:1.2",
        "--tokens",
        "512",
    ];
    let o = archgram(&[&base[..], &["--devices", "4"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("layer 0: moe token_choice, 8 experts, top-1"),
        "{text}"
    );
    assert!(
        text.contains("imbalance") && text.contains("all-to-all"),
        "{text}"
    );
    assert!(text.contains("total     2 MoE layer(s)"), "{text}");

    let o = archgram(&[&base[..], &["--devices", "4", "--json"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    assert_eq!(v["devices"], 4);
    assert_eq!(v["source"]["kind"], "synthetic");
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    for l in layers {
        let m = l["dispatch_bytes"].as_array().unwrap();
        assert_eq!(m.len(), 4);
        let total: f64 = m
            .iter()
            .flat_map(|r| r.as_array().unwrap())
            .map(|x| x.as_f64().unwrap())
            .sum();
        // Every kept assignment moves width × 2 bytes (bf16), local or not.
        let kept = l["routed"].as_u64().unwrap() - l["dropped"].as_u64().unwrap();
        assert_eq!(total, kept as f64 * 48.0 * 2.0);
        assert_eq!(l["flops_assumed"], false);
        // ratio-2 MLP expert on width 48: 2 · 2 · 48 · 96 FLOPs per token.
        assert_eq!(l["expert_flops"], 18432.0);
    }
    // Same seed, same bytes.
    let again = archgram(&[&base[..], &["--devices", "4", "--json"]].concat());
    assert_eq!(o.stdout, again.stdout);

    // A sweep: one row per device count, one report each in JSON.
    let o = archgram(&[&base[..], &["--devices", "2,4,8,16"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let rows = text.lines().filter(|l| l.trim_end().ends_with('×'));
    assert_eq!(rows.count(), 4, "{text}");
    let o = archgram(&[&base[..], &["--devices", "2,16", "--json"]].concat());
    let v: Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    assert_eq!(v["sweep"][1]["devices"], 16);
    assert_eq!(v["sweep"][1]["nodes"], 2);
}

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    let arch = switch_arch();
    let dir = tempfile::tempdir().unwrap();
    let hw = dir.path().join("hw.ron");
    std::fs::write(&hw, "Hardware(\n    mfu: 0.4,\n    peak_tflop: 900,\n)\n").unwrap();
    let hw_s = hw.to_str().unwrap();
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["--hw", hw_s], format!("{}:3:", hw.display())),
        (vec!["--skew", "zipf:-1"], "--skew".into()),
        (vec!["--skew", "lognormal"], "zipf:S".into()),
        (vec!["--devices", "8,x"], "--devices".into()),
        (vec!["--devices", "0"], "--devices".into()),
        (vec!["--devices", "6", "--nodes", "4"], "--nodes 4".into()),
        (vec!["--tokens", "0"], "--tokens".into()),
        (vec!["--spare-slots", "100000"], "--spare-slots".into()),
        (vec!["--devices", "5000"], "--devices".into()),
        (vec!["--devices", ""], "--devices".into()),
        (vec!["--devices", "8,,16"], "--devices".into()),
        (vec!["--capacity-factor", "NaN"], "--capacity-factor".into()),
    ];
    for (extra, want) in cases {
        let mut args = vec![
            "simulate",
            "--arch",
            &arch,
            "--space",
            "spaces/moe-heavy.ron",
        ];
        args.extend(extra.iter().copied());
        let o = archgram(&args);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(&want), "{extra:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
    // The located error names the unknown field.
    let o = archgram(&[
        "simulate",
        "--arch",
        &arch,
        "--space",
        "spaces/moe-heavy.ron",
        "--hw",
        hw_s,
    ]);
    assert!(stderr(&o).contains("peak_tflop`"), "{}", stderr(&o));

    // An architecture without MoE layers has nothing to simulate.
    let dense =
        "repeat(n=1, seq(block(norm=pre, norm_kind=layer, mlp(act=gelu, gated=false, ratio=4))))";
    let o = archgram(&[
        "simulate",
        "--arch",
        dense,
        "--space",
        "spaces/quickstart.ron",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no moe layer"), "{}", stderr(&o));
    // Neither --trace nor --arch; both.
    assert_eq!(archgram(&["simulate"]).status.code(), Some(2));
    let o = archgram(&["simulate", "--arch", dense, "--trace", "runs/x/1"]);
    assert_eq!(o.status.code(), Some(2));
}

/// A run folder whose store holds candidate 3 (the switch baseline) with
/// the given outcome.
fn run_with_outcome(dir: &Path, outcome: &Value) -> PathBuf {
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let grammar = std::fs::canonicalize("grammars/blocks.ron").unwrap();
    let space_text = std::fs::read_to_string("spaces/moe-heavy.ron")
        .unwrap()
        .replace("../grammars/blocks.ron", grammar.to_str().unwrap());
    std::fs::write(run.join("space.ron"), space_text).unwrap();
    let space = Space::load(&run.join("space.ron")).unwrap();
    let net = space.parse_arch(&switch_arch()).unwrap();
    let hashes = Hashes::of(&net.arch);
    let store = SledStore::open(&run.join("store")).unwrap();
    let record = CandidateRecord {
        id: 3,
        derivation: net.term.clone(),
        text: net.text(),
        hashes,
        parent: None,
        origin: "baseline: switch".into(),
        duplicate_of: None,
        params: net.cost.params,
        active_params: net.cost.active_params,
        flops: net.cost.flops,
        steps: 10,
    };
    store.put_candidate(&record).unwrap();
    store.put_outcome(3, &hashes, outcome).unwrap();
    store.flush().unwrap();
    run
}

/// 8 tokens, top-1, 8 experts of which 0–3 are used, width 48.
fn small_trace(layer: usize) -> LayerTrace {
    let mut t = LayerTrace {
        layer,
        kind: "moe".into(),
        router: "token_choice".into(),
        experts: 8,
        top_k: 1,
        capacity_factor: 1.25,
        seq: 8,
        width: 48,
        ..LayerTrace::default()
    };
    for e in [0, 0, 1, 2, 0, 3, 0, 1] {
        t.push_token([(e, 1.0)]);
    }
    t
}

#[test]
fn a_stored_trace_reproduces_the_hand_computed_volumes() {
    let dir = tempfile::tempdir().unwrap();
    let skip = LayerTrace {
        layer: 0,
        kind: "mod".into(),
        ..LayerTrace::default()
    };
    let outcome = json!({"score": 0.5, "routing": {"final": [skip, small_trace(1)]}});
    let run = run_with_outcome(dir.path(), &outcome);
    let arg = run.join("3");
    let o = archgram(&[
        "simulate",
        "--trace",
        arg.to_str().unwrap(),
        "--devices",
        "2",
        "--capacity-factor",
        "0",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["source"]["candidate"], 3);
    assert_eq!(v["skipped"][0]["kind"], "mod");
    let l = &v["layers"][0];
    // Tokens 0–3 on device 0, 4–7 on device 1; experts 0, 2 on device 0 and
    // 1, 3 on device 1 (round-robin). Loads 5 and 3.
    assert_eq!(l["device_load"], json!([5.0, 3.0]));
    assert_eq!(l["imbalance"], 1.25);
    // Assignments [[3, 1], [2, 2]] × 48 × 2 bytes.
    assert_eq!(l["dispatch_bytes"], json!([[288.0, 96.0], [192.0, 192.0]]));
    assert_eq!(l["combine_bytes"], json!([[288.0, 192.0], [96.0, 192.0]]));
    assert_eq!(l["remote_bytes"], 288.0);
    // Default hardware: α 5 µs, 300 GB/s; the busiest device moves 192 B.
    let a2a = l["time"]["a2a"].as_f64().unwrap();
    assert!((a2a - (5e-6 + 192.0 / 300e9)).abs() < 1e-15, "{a2a}");
    // The expert FLOPs come from the candidate's architecture (layer 1 is its
    // second MoE).
    assert_eq!(l["flops_assumed"], false);

    // At the layer's own cf 1.25: C = ⌈1.25 · 8 / 8⌉ = 2, expert 0 drops 2.
    let o = archgram(&[
        "simulate",
        "--trace",
        arg.to_str().unwrap(),
        "--devices",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("dropped 2 of 8 (25.0%)"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn trace_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_with_outcome(dir.path(), &json!({"score": 0.5}));
    let arg = run.join("3");
    let arg = arg.to_str().unwrap();
    // No routing recorded: exit 2, and say what to do instead.
    let o = archgram(&["simulate", "--trace", arg]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no routing trace"), "{}", stderr(&o));
    assert!(stderr(&o).contains("--arch"), "{}", stderr(&o));
    // Unknown candidate, not a RUN/CANDIDATE path, not a run.
    let o = archgram(&["simulate", "--trace", run.join("99").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no candidate 99"), "{}", stderr(&o));
    let o = archgram(&["simulate", "--trace", run.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("RUN/CANDIDATE"), "{}", stderr(&o));
    let o = archgram(&["simulate", "--trace", "no/such/run/1"]);
    assert_eq!(o.status.code(), Some(2));
    // A store held by another process (a running search).
    let _held = SledStore::open(&run.join("store")).unwrap();
    let o = archgram(&["simulate", "--trace", arg]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("another archgram process"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_readme_hardware_example_loads_and_runs() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let block = readme
        .split("```ron\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .find(|b| b.starts_with("Hardware("))
        .expect("a Hardware example in the README");
    let hw = Hardware::parse(block).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hw, Hardware::default(), "the README lists the defaults");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h100.ron");
    std::fs::write(&path, "(peak_tflops: 989, inter_gbps: 50)").unwrap();
    let o = archgram(&[
        "simulate",
        "--arch",
        &switch_arch(),
        "--tokens",
        "256",
        "--hw",
        path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("989 TFLOP/s"), "{}", stdout(&o));
}

#[test]
fn recorded_loads_stand_in_for_a_missing_token_trace() {
    let dir = tempfile::tempdir().unwrap();
    let route = |load: Vec<u64>| json!({"kind": "moe", "tokens": 8, "load": load, "dropped": 0});
    let outcome = json!({"score": 0.5, "routes": [
        route(vec![4, 2, 1, 1, 0, 0, 0, 0]),
        route(vec![1, 1, 1, 1, 1, 1, 1, 1]),
    ]});
    let run = run_with_outcome(dir.path(), &outcome);
    let arg = run.join("3");
    let args = [
        "simulate",
        "--trace",
        arg.to_str().unwrap(),
        "--devices",
        "2",
    ];
    let o = archgram(&[&args[..], &["--capacity-factor", "0", "--json"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["source"]["kind"], "loads");
    assert_eq!(
        v["layers"][0]["expert_load"],
        json!([4, 2, 1, 1, 0, 0, 0, 0])
    );
    // Round-robin: experts 0, 2 (5 tokens) on device 0, 1, 3 (3) on device 1.
    assert_eq!(v["layers"][0]["device_load"], json!([5.0, 3.0]));
    assert_eq!(v["layers"][1]["imbalance"], 1.0);
    let o = archgram(&args);
    assert!(
        stdout(&o).contains("recorded per-expert loads"),
        "{}",
        stdout(&o)
    );

    // Loads that do not fit the architecture are bad input.
    let run = run_with_outcome(
        &dir.path().join("b"),
        &json!({"routes": [{"kind": "moe", "tokens": 8, "load": [1, 2], "dropped": 0}]}),
    );
    let o = archgram(&["simulate", "--trace", run.join("3").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("2 loads for 8 experts"),
        "{}",
        stderr(&o)
    );
}
