//! PyTorch export: the generated module computes archgram's forward pass.
//!
//! Every op kind and router variant is exported with weights and a probe,
//! then (when `python3` can import torch) each file's own `--check` runs and
//! a training-mode pass shows gradients reach every router. A last check
//! records which kinds of network `torch.onnx.export` converts. Without
//! torch (and onnx) the Python half is reported as skipped; `.ci/run`
//! installs them so CI always runs it.

use archgram::arch::ops::Moe;
use archgram::arch::{ArchContext, Network};
use archgram::eval::program::Program;
use archgram::eval::{train, TrainConfig, TrainSettings, Weights};
use archgram::export::pytorch::{self, Provenance};
use archgram::grammar::Derivation;
use archgram::routing::{DropPolicy, RouterSettings};
use archgram::space::Space;
use archgram::tasks::{build, Task, TaskSpec};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Routed blocks in every variant, on a causal mixture task.
const ROUTED: &[&str] = &[
    "seq(block(attention(heads=4)), block(moe(experts=4, top_k=2, capacity=1.0, mlp(ratio=2))))",
    "seq(block(moe(experts=4, top_k=1, capacity=0.5, balance=bias, mlp(ratio=2, gated=true, act=silu))))",
    "seq(block(moe(experts=4, router=expert_choice, capacity=1.0, mlp(ratio=2))))",
    "seq(block(moe(experts=6, router=top_p, top_p=0.7, capacity=2.0, shared=1, mlp(ratio=1))))",
    "seq(block(moe(experts=4, top_k=2, shared=2, balance=none, capacity=1.25, mlp(ratio=1, act=relu))))",
    "seq(mod(capacity=0.25, block(norm=pre, residual=false, attention(heads=2))), block(mlp(ratio=2)))",
    // A causal router: trained on top-k with a predictor loss, routed by
    // its own logit in eval mode.
    "seq(mod(capacity=0.25, causal=true, block(norm=pre, residual=false, attention(heads=2))), block(mlp(ratio=2)))",
    "seq(layer_skip(capacity=0.5, block(norm=pre, residual=false, mlp(ratio=2))))",
    // Sequences route different numbers of tokens: the body runs per group.
    "seq(layer_skip(capacity=0.6, block(norm=pre, residual=false, attention(heads=2))), block(mlp(ratio=1)))",
    "seq(block(norm=post, moh(heads=4, active=2, shared=1)), block(norm=peri, norm_kind=rms, mlp(ratio=2)))",
    "seq(block(norm=none, moh(heads=4, active=1, head_dim=16)))",
    // A routed layer inside a routed layer's body.
    "seq(mod(capacity=0.5, block(norm=pre, residual=false, moe(experts=4, top_k=1, balance=bias, capacity=1.0, mlp(ratio=1)))))",
];

/// Fundamental ops: token mixing, dot products with each mask, splits.
const FUNDAMENTAL: &[&str] = &[
    "seq(posenc, route(pre=transpose, post=transpose, linear(width=same)), act(fn=leaky_relu))",
    "branch(split=clone, factor=2, merge=dot, seq(branch(split=clone, factor=2, merge=scaled_dot, linear(width=16), route(pre=identity, post=transpose, linear(width=16))), softmax), linear(width=model))",
    "seq(branch(split=group, factor=4, merge=concat, linear(width=same), norm(kind=rms), act(fn=relu), identity), branch(split=clone, factor=2, merge=mul, linear(width=model, bias=false), act(fn=gelu)))",
    // Kinds written over primitives, also on an expert's routed tokens.
    "seq(affine, block(norm=none, seq(mlp(ratio=2), layer_scale(init=0.5))), block(moe(experts=4, top_k=1, capacity=1.0, seq(mlp(ratio=1), affine, layer_scale))))",
];

fn ctx(task: &dyn Task, width: usize) -> ArchContext {
    ArchContext {
        seq_len: task.seq_len(),
        width,
        vocab: task.vocab(),
        causal: task.causal(),
        allow_noncausal_routing: true,
    }
}

fn mixture() -> Box<dyn Task> {
    let spec = TaskSpec::new("moe_mixture")
        .with("domains", 4.0)
        .with("vocab", 24.0)
        .with("seq_len", 16.0)
        .with("tagged", 1.0);
    build(&spec, 3).unwrap()
}

/// One exported candidate on disk.
struct Exported {
    py: PathBuf,
    kinds: BTreeSet<&'static str>,
    routers: BTreeSet<&'static str>,
}

fn kinds_of(net: &Network) -> (BTreeSet<&'static str>, BTreeSet<&'static str>) {
    fn walk(
        arch: &archgram::arch::Arch,
        kinds: &mut BTreeSet<&'static str>,
        routers: &mut BTreeSet<&'static str>,
    ) {
        for i in arch.topo() {
            let op = &arch.node(i).op;
            kinds.insert(op.kind());
            if let archgram::arch::Op::Moe(Moe { spec, .. }) = op {
                routers.insert(spec.router.name());
            }
            if let Some(body) = op.body() {
                walk(body, kinds, routers);
            }
        }
    }
    let (mut k, mut r) = (BTreeSet::new(), BTreeSet::new());
    walk(&net.arch, &mut k, &mut r);
    (k, r)
}

/// Writes `NAME.py`, `NAME.safetensors` and `NAME.probe.safetensors`.
fn export(
    dir: &Path,
    name: &str,
    net: &Network,
    task: &dyn Task,
    routing: &RouterSettings,
    weights: impl FnOnce(&Program) -> Weights,
) -> Exported {
    let prog = Program::build(&net.arch, task.vocab()).unwrap();
    let w = weights(&prog);
    let text = net.text();
    let source = pytorch::module_source(
        &prog,
        routing,
        &Provenance {
            arch: &text,
            origin: name,
        },
    );
    let py = dir.join(format!("{name}.py"));
    std::fs::write(&py, source).unwrap();
    let bytes = pytorch::weights_file(&prog, &w, vec![]).unwrap();
    std::fs::write(py.with_extension("safetensors"), bytes).unwrap();
    let batch = task.test_batches(3).into_iter().next().unwrap();
    let logits = w.logits(&prog, routing, &batch);
    let probe = pytorch::probe_file(&batch.inputs, batch.batch, batch.seq, &logits).unwrap();
    std::fs::write(py.with_extension("probe.safetensors"), probe).unwrap();
    let (kinds, routers) = kinds_of(net);
    Exported { py, kinds, routers }
}

/// A short training run, so routers, biases and norms are no longer at
/// their initial values.
fn trained(prog: &Program, task: &dyn Task, routing: &RouterSettings) -> Weights {
    let cfg = TrainConfig {
        train: TrainSettings {
            steps: 30,
            batch_size: 8,
            lr: 1e-2,
            warmup_steps: 5,
            routing: *routing,
            ..TrainSettings::default()
        },
        seed: 9,
        ..TrainConfig::default()
    };
    train(prog, task, &cfg).unwrap().weights
}

mod common;
use common::skip;

/// Runs every file's `--check` and a training-mode backward pass in one
/// Python process (importing torch once).
const DRIVER: &str = r#"
import math, runpy, sys, warnings
warnings.filterwarnings("ignore")
import torch
bad = []
files = sys.argv[1:]
for f in files:
    sys.argv = [f, "--check", "--tol", "1e-4"]
    try:
        runpy.run_path(f, run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code or 0
    if code != 0:
        bad.append(f"{f}: --check failed")
        continue
    ns = runpy.run_path(f)
    m = ns["Network"]()
    m.load_state_dict(ns["load_safetensors"](f[:-3] + ".safetensors"))
    m.train()
    tokens = torch.randint(0, ns["VOCAB"], (3, ns["SEQ"]))
    logits = m(tokens)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten()) + m.aux_loss
    loss.backward()
    m.update_router_bias()
    for name, p in m.named_parameters():
        if "router" in name and (p.grad is None or not torch.isfinite(p.grad).all()):
            bad.append(f"{f}: no gradient reaches {name}")
    if not math.isfinite(loss.item()):
        bad.append(f"{f}: training loss {loss.item()}")
print("\n".join(bad) if bad else f"all {len(files)} ok")
sys.exit(1 if bad else 0)
"#;

/// Whether `python3` can import `modules` (`"torch, onnx"`); if not, the
/// check is reported as skipped (a failure where every check is required).
fn python_with(check: &str, modules: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip(check, &format!("python3 cannot import {modules}"));
    }
    ok
}

/// Runs the Python `driver` on `files`; its success and its output.
fn run_driver(driver: &str, files: &[PathBuf]) -> (bool, String) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(driver)
        .args(files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    (out.status.success(), text)
}

fn run_python(files: &[PathBuf]) {
    if !python_with("the exported modules' Python half", "torch") {
        return;
    }
    let (ok, text) = run_driver(DRIVER, files);
    assert!(ok, "{text}");
    // Each `--check` printed its largest difference.
    assert_eq!(text.matches("within 0.0001").count(), files.len(), "{text}");
}

#[test]
fn pytorch_module_matches_archgram_for_every_op_and_router() {
    let dir = tempfile::tempdir().unwrap();
    let task = mixture();
    let mut routing = RouterSettings {
        bias_rate: 0.05,
        ..RouterSettings::default()
    };
    let mut done = Vec::new();
    for (i, text) in ROUTED.iter().chain(FUNDAMENTAL).enumerate() {
        let net = Network::build(Derivation::parse(text).unwrap(), &ctx(task.as_ref(), 32))
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        // Alternate drop policies so both are exported.
        routing.drop = if i % 2 == 0 {
            DropPolicy::Position
        } else {
            DropPolicy::Score
        };
        let t = task.as_ref();
        done.push(export(
            dir.path(),
            &format!("hand{i}"),
            &net,
            t,
            &routing,
            |p| trained(p, t, &routing),
        ));
    }
    // Samples of every shipped space, at initial weights.
    for name in ["quickstart", "moe-heavy", "einspace"] {
        let space = Space::load(Path::new(&format!("spaces/{name}.ron"))).unwrap();
        let task = space.build_task(space.file.seed).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for i in 0..6 {
            let net = space.sample(&mut rng).unwrap();
            let routing = space.file.train.routing;
            let stem = format!("{name}{i}");
            done.push(export(
                dir.path(),
                &stem,
                &net,
                task.as_ref(),
                &routing,
                |p| Weights::init(p, i as u64),
            ));
        }
    }
    let kinds: BTreeSet<_> = done.iter().flat_map(|e| e.kinds.clone()).collect();
    let routers: BTreeSet<_> = done.iter().flat_map(|e| e.routers.clone()).collect();
    for k in [
        "linear",
        "norm",
        "act",
        "softmax",
        "posenc",
        "transpose",
        "split",
        "add",
        "mul",
        "concat",
        "dot",
        "attention",
        "mlp",
        "moe",
        "mod",
        "layer_skip",
        "moh",
        "layer_scale",
        "affine",
    ] {
        assert!(kinds.contains(k), "no exported candidate has {k}");
    }
    assert_eq!(routers.len(), 3, "{routers:?}");
    let files: Vec<PathBuf> = done.into_iter().map(|e| e.py).collect();
    run_python(&files);
}

#[test]
fn weights_hold_every_parameter_under_its_state_dict_name() {
    let task = mixture();
    let net = Network::build(
        Derivation::parse(ROUTED[3]).unwrap(),
        &ctx(task.as_ref(), 32),
    )
    .unwrap();
    let prog = Program::build(&net.arch, task.vocab()).unwrap();
    let w = Weights::init(&prog, 1);
    let dict = pytorch::state_dict(&prog, &w);
    let count: usize = dict
        .iter()
        .filter(|(k, _)| !k.ends_with("sel_bias"))
        .map(|(_, (_, v))| v.len())
        .sum();
    assert_eq!(count, prog.param_count());
    assert!(dict.contains_key("embed"));
    assert!(dict.contains_key("head.w") && dict.contains_key("head.b"));
    assert_eq!(dict.keys().filter(|k| k.ends_with("sel_bias")).count(), 1);
    for (k, (shape, v)) in &dict {
        assert_eq!(shape.iter().product::<usize>(), v.len(), "{k}");
    }
    // The file is the dictionary: same names, shapes and little-endian f32s.
    let bytes = pytorch::weights_file(&prog, &w, vec![]).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), dict.len());
    for (k, (shape, v)) in &dict {
        let t = st.tensor(k).unwrap();
        assert_eq!(t.shape(), shape.as_slice());
        let back: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(&back, v, "{k}");
    }
}

/// `--check` is not vacuous: a probe whose logits differ by 1e-3 somewhere
/// fails it, and a matching probe passes.
#[test]
fn check_fails_when_logits_differ() {
    if !python_with("check_fails_when_logits_differ", "torch") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let task = mixture();
    let routing = RouterSettings::default();
    let net = Network::build(
        Derivation::parse(ROUTED[0]).unwrap(),
        &ctx(task.as_ref(), 32),
    )
    .unwrap();
    let e = export(dir.path(), "c", &net, task.as_ref(), &routing, |p| {
        Weights::init(p, 3)
    });
    let prog = Program::build(&net.arch, task.vocab()).unwrap();
    let batch = task.test_batches(3).into_iter().next().unwrap();
    let mut logits = Weights::init(&prog, 3).logits(&prog, &routing, &batch);
    let run = |probe: &Path| {
        let out = Command::new("python3")
            .arg(&e.py)
            .arg("--check")
            .arg(probe)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let same = run(&e.py.with_extension("probe.safetensors"));
    assert_eq!(same.0, Some(0), "{}", same.1);
    logits[17] += 1e-3;
    let bad = dir.path().join("bad.safetensors");
    let bytes = pytorch::probe_file(&batch.inputs, batch.batch, batch.seq, &logits).unwrap();
    std::fs::write(&bad, bytes).unwrap();
    let (code, text) = run(&bad);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("OVER"), "{text}");
}

/// Exports each file's `Network` (eval mode) with both of `torch.onnx`'s
/// exporters and runs the ONNX graph on *other* tokens than it was exported
/// with (`onnx`'s reference evaluator), against PyTorch's own logits. One
/// line per file and exporter, `RESULT stem exporter status (detail)`:
/// `ok` (within 1e-4), `no-export` (the exporter refused), or `wrong` (it
/// exported a graph that fails or differs on other input: the routing of
/// the example was traced into constants).
const ONNX_DRIVER: &str = r#"
import io, runpy, sys, warnings, contextlib, os
warnings.filterwarnings("ignore")
import torch, onnx
from onnx.reference import ReferenceEvaluator
def first_line(e):
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"
for f in sys.argv[1:]:
    stem = os.path.basename(f)[:-3]
    ns = runpy.run_path(f)
    m = ns["Network"]()
    m.load_state_dict(ns["load_safetensors"](f[:-3] + ".safetensors"))
    m.eval()
    g = torch.Generator().manual_seed(5)
    example = torch.randint(0, ns["VOCAB"], (2, ns["SEQ"]), generator=g)
    other = torch.randint(0, ns["VOCAB"], (2, ns["SEQ"]), generator=g)
    with torch.no_grad():
        want = m(other).numpy()
    for name, dynamo in (("dynamo", True), ("torchscript", False)):
        buf = io.BytesIO()
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                torch.onnx.export(m, (example,), buf, dynamo=dynamo, input_names=["tokens"], output_names=["logits"])
        except Exception as e:
            print(f"RESULT {stem} {name} no-export ({first_line(e)})")
            continue
        try:
            got = ReferenceEvaluator(onnx.load_from_string(buf.getvalue())).run(None, {"tokens": other.numpy()})[0]
            diff = float(abs(got - want).max())
            status = "ok" if diff <= 1e-4 else "wrong"
            print(f"RESULT {stem} {name} {status} (max difference {diff:.3g})")
        except Exception as e:
            print(f"RESULT {stem} {name} wrong (on other tokens: {first_line(e)})")
"#;

/// What `torch.onnx.export` does with the generated modules, per routed
/// layer kind, measured with PyTorch 2.15, onnx 1.23 and onnxscript 0.7
/// (what `.ci/run` installs today). A dense network exports with the
/// TorchScript exporter (`dynamo=False`); the dynamo exporter stops at the
/// generated `Network`'s submodule named `graph`, which clashes with
/// torch.fx's own `graph` attribute. Routed layers do not export: routing
/// sorts with `stable=True`, which the TorchScript exporter refuses, and
/// torch.export cannot follow the data-dependent number of tokens per
/// expert; depth routers without a sort export a graph that holds the
/// example's routing as constants, so it is wrong on other input. The
/// README's ONNX section says the same; a torch release that changes a row
/// fails here, so the table and the README are updated together.
const ONNX_EXPECTED: &[(&str, &str, &str, &str)] = &[
    // (stem, arch, dynamo, torchscript)
    ("dense", "seq(block(attention(heads=4)), block(mlp(ratio=2)))", "no-export", "ok"),
    ("token_choice", "seq(block(moe(experts=4, top_k=2, capacity=1.0, mlp(ratio=2))))", "no-export", "no-export"),
    ("token_choice_bias", "seq(block(moe(experts=4, top_k=1, capacity=0.5, balance=bias, mlp(ratio=2))))", "no-export", "no-export"),
    ("expert_choice", "seq(block(moe(experts=4, router=expert_choice, capacity=1.0, mlp(ratio=2))))", "no-export", "no-export"),
    ("top_p", "seq(block(moe(experts=6, router=top_p, top_p=0.7, capacity=2.0, shared=1, mlp(ratio=1))))", "no-export", "no-export"),
    ("mod", "seq(mod(capacity=0.25, block(norm=pre, residual=false, attention(heads=2))), block(mlp(ratio=2)))", "no-export", "no-export"),
    ("mod_causal", "seq(mod(capacity=0.25, causal=true, block(norm=pre, residual=false, attention(heads=2))), block(mlp(ratio=2)))", "no-export", "wrong"),
    ("layer_skip", "seq(layer_skip(capacity=0.5, block(norm=pre, residual=false, mlp(ratio=2))))", "no-export", "wrong"),
    ("moh", "seq(block(moh(heads=4, active=2, shared=1)))", "no-export", "no-export"),
];

#[test]
fn onnx_export_of_each_router_kind_is_as_recorded() {
    let check = "onnx_export_of_each_router_kind_is_as_recorded";
    if !python_with(check, "torch, onnx, onnxscript") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let task = mixture();
    let routing = RouterSettings::default();
    let mut files = Vec::new();
    for (stem, text, _, _) in ONNX_EXPECTED {
        let net = Network::build(Derivation::parse(text).unwrap(), &ctx(task.as_ref(), 32))
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        let e = export(dir.path(), stem, &net, task.as_ref(), &routing, |p| {
            Weights::init(p, 2)
        });
        files.push(e.py);
    }
    let (ok, text) = run_driver(ONNX_DRIVER, &files);
    assert!(ok, "{text}");
    let mut wrong = Vec::new();
    for (stem, _, dynamo, torchscript) in ONNX_EXPECTED {
        for (exporter, want) in [("dynamo", dynamo), ("torchscript", torchscript)] {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("RESULT {stem} {exporter} ")))
                .unwrap_or_else(|| panic!("no result for {stem} {exporter}:\n{text}"));
            let got = line.split(' ').nth(3).unwrap();
            if got != *want {
                wrong.push(format!("{stem} {exporter}: recorded {want}, now {line}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
