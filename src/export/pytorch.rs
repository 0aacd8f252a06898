//! PyTorch export: one self-contained Python file whose `Network` module
//! computes what archgram's evaluator computes (routers included), and a
//! safetensors file of archgram's weights under the module's state-dict
//! names, so `load_state_dict` takes it as is.
//!
//! The file is a fixed runtime (`prelude.py`: one class or function per op
//! kind, mirroring `arch::Op`'s documented semantics) followed by one
//! generated class per graph (the network and each routed body) whose
//! `forward` lists the graph's steps in order.

use crate::arch::ops::composite::Prim;
use crate::arch::DotMask;
use crate::eval::program::{Graph, Program, Step, StepOp};
use crate::eval::Weights;
use crate::routing::{BalanceScope, DropPolicy, RouterSettings};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::collections::BTreeMap;
use std::fmt::Write as _;

const PRELUDE: &str = include_str!("prelude.py");

/// What the generated file says about where it came from.
pub struct Provenance<'a> {
    /// The architecture's one-line text form.
    pub arch: &'a str,
    /// e.g. `run quickstart-1, candidate #47, score 0.528`.
    pub origin: &'a str,
}

/// The Python source of a module computing `prog`.
pub fn module_source(prog: &Program, routing: &RouterSettings, from: &Provenance<'_>) -> String {
    let mut classes = Vec::new();
    graph_class(prog, &prog.graph, "Graph", &mut classes);
    let mut src = String::new();
    let _ = writeln!(
        src,
        "\"\"\"A network exported by archgram {}.\n\n{}\n\nArchitecture:\n    {}\n\nUsage: `python3 {{this file}} [--weights W.safetensors] [--check PROBE.safetensors]`;\nor import it and build `Network()`. Weights load with\n`Network().load_state_dict(load_safetensors(path))`.\n\"\"\"\n",
        env!("CARGO_PKG_VERSION"),
        from.origin,
        wrap(from.arch, 76, "    "),
    );
    src.push_str(PRELUDE);
    let _ = writeln!(src, "\n\n# ---- the searched network ----\n");
    let _ = writeln!(src, "ARCH = {}", py_str(from.arch));
    let _ = writeln!(
        src,
        "VOCAB, SEQ, WIDTH, OUT_WIDTH = {}, {}, {}, {}",
        prog.vocab, prog.seq, prog.width, prog.out_width
    );
    let _ = writeln!(src, "ROUTING = {}", routing_dict(routing));
    for c in classes {
        src.push_str("\n\n");
        src.push_str(&c);
    }
    src.push_str("\n\nif __name__ == \"__main__\":\n    main()\n");
    src
}

/// Appends the class for graph `g` (and first, those of its routed bodies).
fn graph_class(prog: &Program, g: &Graph, name: &str, out: &mut Vec<String>) {
    let mut init = String::new();
    let mut body = String::new();
    for (i, step) in g.steps.iter().enumerate() {
        let var = &step.name;
        let ins: Vec<&str> = step
            .inputs
            .iter()
            .map(|&j| g.steps[j].name.as_str())
            .collect();
        let x = ins.first().copied().unwrap_or("x");
        let child = format!("{name}_{var}");
        let (module, expr) = match &step.op {
            StepOp::Input => (None, "x".to_string()),
            StepOp::Output => (None, x.to_string()),
            StepOp::Linear {
                b,
                inp,
                out,
                causal_mask,
                ..
            } => (
                Some(format!(
                    "Linear({inp}, {out}, bias={}, causal={})",
                    py_bool(b.is_some()),
                    py_bool(*causal_mask)
                )),
                format!("self.{var}({x})"),
            ),
            StepOp::Norm { kind, gain, .. } => (
                Some(format!(
                    "Norm({}, {})",
                    py_str(kind.name()),
                    prog.params[*gain].len
                )),
                format!("self.{var}({x})"),
            ),
            StepOp::Act(f) => (None, format!("activation({x}, {})", py_str(f.name()))),
            StepOp::Softmax { causal } => {
                (None, format!("softmax({x}, causal={})", py_bool(*causal)))
            }
            StepOp::PosEnc { table } => {
                let s = &prog.params[*table].shape;
                (
                    Some(format!("PosEnc({}, {})", s[0], s[1])),
                    format!("self.{var}({x})"),
                )
            }
            StepOp::Transpose => (None, format!("{x}.transpose(1, 2)")),
            StepOp::Split { part, parts, rows } => (
                None,
                format!("split({x}, {part}, {parts}, rows={})", py_bool(*rows)),
            ),
            StepOp::Add => (None, ins.join(" + ")),
            StepOp::Mul => (None, ins.join(" * ")),
            StepOp::Concat { rows } => (
                None,
                format!("torch.cat([{}], dim={})", ins.join(", "), if *rows { 1 } else { 2 }),
            ),
            StepOp::Dot { scaled, mask } => (
                None,
                format!(
                    "dot({}, {}, scaled={}, mask={})",
                    ins[0],
                    ins.get(1).copied().unwrap_or(ins[0]),
                    py_bool(*scaled),
                    py_str(match mask {
                        DotMask::None => "none",
                        DotMask::Left => "left",
                        DotMask::Output => "output",
                    })
                ),
            ),
            StepOp::Attention {
                heads,
                o,
                head_dim,
                causal,
            } => (
                Some(format!(
                    "Attention({}, {}, {head_dim}, causal={})",
                    prog.params[*o].shape[1],
                    heads.len(),
                    py_bool(*causal)
                )),
                format!("self.{var}({x})"),
            ),
            StepOp::Mlp {
                w1,
                w3,
                act,
                hidden,
                ..
            } => (
                Some(format!(
                    "Mlp({}, {hidden}, {}, gated={})",
                    prog.params[*w1].shape[0],
                    py_str(act.name()),
                    py_bool(w3.is_some())
                )),
                format!("self.{var}({x})"),
            ),
            StepOp::Moe {
                spec,
                router,
                experts,
                shared,
            } => {
                // Every expert (routed and shared) is a copy of one body.
                if let Some(first) = experts.first().or(shared.first()) {
                    graph_class(prog, first, &child, out);
                }
                (
                    Some(format!(
                        "MixtureOfExperts({}, [{child}() for _ in range({})], [{child}() for _ in range({})], {}, {}, {}, {}, {}, ROUTING)",
                        prog.params[*router].shape[0],
                        experts.len(),
                        shared.len(),
                        py_str(spec.router.name()),
                        spec.top_k,
                        py_float(spec.capacity),
                        py_float(spec.top_p),
                        py_str(spec.balance.name()),
                    )),
                    format!("self.{var}({x})"),
                )
            }
            StepOp::Mod {
                capacity,
                router,
                body,
                ..
            }
            | StepOp::Skip {
                capacity,
                router,
                body,
                ..
            } => {
                graph_class(prog, body, &child, out);
                let (class, extra) = match step.op {
                    StepOp::Mod { causal: true, .. } => ("MixtureOfDepths", ", causal=True"),
                    StepOp::Mod { .. } => ("MixtureOfDepths", ""),
                    _ => ("LayerSkip", ""),
                };
                (
                    Some(format!(
                        "{class}({}, {}, {child}(){extra})",
                        prog.params[*router].shape[0],
                        py_float(*capacity)
                    )),
                    format!("self.{var}({x})"),
                )
            }
            StepOp::Moh {
                heads,
                o,
                active,
                shared,
                head_dim,
                causal,
                ..
            } => (
                Some(format!(
                    "MixtureOfHeads({}, {}, {active}, {shared}, {head_dim}, causal={}, routing=ROUTING)",
                    prog.params[*o].shape[1],
                    heads.len(),
                    py_bool(*causal)
                )),
                format!("self.{var}({x})"),
            ),
            StepOp::Composite { recipe, .. } => {
                // One line per computed value; operands are always names.
                let width = step.shape.cols.size;
                let vectors: Vec<String> = recipe
                    .params()
                    .map(|(n, init)| format!("{n}=({width}, {})", py_float(init)))
                    .collect();
                let mut vals: Vec<String> = Vec::new();
                for (k, p) in recipe.0.iter().enumerate() {
                    let e = match *p {
                        Prim::Input(i) => ins.get(i).copied().unwrap_or(x).to_string(),
                        Prim::Param { name, .. } => format!("self.{var}.{name}"),
                        Prim::Add(a, b) => format!("{} + {}", vals[a], vals[b]),
                        Prim::Mul(a, b) => format!("{} * {}", vals[a], vals[b]),
                        Prim::Act(f, a) => {
                            format!("activation({}, {})", vals[a], py_str(f.name()))
                        }
                    };
                    let computed = !matches!(p, Prim::Input(_) | Prim::Param { .. });
                    if computed && k + 1 < recipe.0.len() {
                        let _ = writeln!(body, "        {var}_{k} = {e}");
                        vals.push(format!("{var}_{k}"));
                    } else {
                        vals.push(e);
                    }
                }
                (
                    (!vectors.is_empty()).then(|| format!("Vectors({})", vectors.join(", "))),
                    vals.pop().unwrap_or_default(),
                )
            }
        };
        if let Some(m) = module {
            let _ = writeln!(init, "        self.{var} = {m}");
        }
        let _ = writeln!(body, "        {var} = {expr}  # {}", label(step));
        if i == g.output {
            let _ = writeln!(body, "        return {var}");
        }
    }
    if init.is_empty() {
        init.push_str("        pass\n");
    }
    out.push(format!(
        "class {name}(nn.Module):\n    def __init__(self):\n        super().__init__()\n{init}\n    def forward(self, x):\n{body}"
    ));
}

fn label(step: &Step) -> String {
    format!(
        "{}, {}×{}",
        step.kind, step.shape.rows.size, step.shape.cols.size
    )
}

fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

fn py_float(v: f64) -> String {
    if v.is_finite() {
        format!("{v:?}")
    } else if v > 0.0 {
        "math.inf".into()
    } else {
        "-math.inf".into()
    }
}

fn py_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn routing_dict(r: &RouterSettings) -> String {
    let micro = match r.balance_scope {
        BalanceScope::Global => 0,
        BalanceScope::Micro => r.micro_batch.max(1),
    };
    let drop = match r.drop {
        DropPolicy::Position => "position",
        DropPolicy::Score => "score",
    };
    format!(
        "{{\"aux_alpha\": {}, \"micro_batch\": {micro}, \"z_loss\": {}, \"bias_rate\": {}, \"drop\": {}}}",
        py_float(r.aux_alpha),
        py_float(r.z_loss),
        py_float(r.bias_rate),
        py_str(drop)
    )
}

fn wrap(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line = 0;
    for word in text.split(' ') {
        if line > 0 && line + 1 + word.len() > width {
            out.push('\n');
            out.push_str(indent);
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += word.len();
    }
    out
}

/// State-dict name of archgram parameter `name`.
pub fn state_name(name: &str) -> String {
    if name == "embed" || name.starts_with("head.") {
        name.to_string()
    } else {
        format!("graph.{name}")
    }
}

/// Every tensor of the exported module's state dict: archgram's weights
/// under their state-dict names, with their shapes, and each MoE layer's
/// selection bias.
pub fn state_dict(prog: &Program, w: &Weights) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut out = BTreeMap::new();
    for (info, v) in prog.params.iter().zip(&w.params) {
        out.insert(state_name(&info.name), (info.shape.clone(), v.clone()));
    }
    let mut layer = 0;
    moe_bias(prog, &prog.graph, w, &mut layer, &mut out);
    out
}

/// Selection-bias buffers, by routed layer in the order the evaluator runs
/// them (a routed step, then the routed layers inside its bodies).
fn moe_bias(
    prog: &Program,
    g: &Graph,
    w: &Weights,
    layer: &mut usize,
    out: &mut BTreeMap<String, (Vec<usize>, Vec<f32>)>,
) {
    for step in &g.steps {
        match &step.op {
            StepOp::Moe {
                router,
                experts,
                shared,
                ..
            } => {
                let e = experts.len();
                let bias = w
                    .bias
                    .get(*layer)
                    .filter(|b| b.len() == e)
                    .cloned()
                    .unwrap_or_else(|| vec![0.0; e]);
                let at = prog.params[*router]
                    .name
                    .strip_suffix(".router")
                    .unwrap_or(&prog.params[*router].name)
                    .to_string();
                out.insert(state_name(&format!("{at}.sel_bias")), (vec![e], bias));
                *layer += 1;
                for body in experts.iter().chain(shared) {
                    moe_bias(prog, body, w, layer, out);
                }
            }
            StepOp::Mod { body, .. } | StepOp::Skip { body, .. } => {
                *layer += 1;
                moe_bias(prog, body, w, layer, out);
            }
            StepOp::Moh { .. } => *layer += 1,
            _ => {}
        }
    }
}

/// A tensor to write: its dtype, shape and little-endian bytes.
pub struct RawTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl RawTensor {
    pub fn f32(shape: Vec<usize>, v: &[f32]) -> RawTensor {
        RawTensor {
            dtype: Dtype::F32,
            shape,
            bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    pub fn i64(shape: Vec<usize>, v: &[i64]) -> RawTensor {
        RawTensor {
            dtype: Dtype::I64,
            shape,
            bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// A safetensors file of `tensors`, with string metadata.
pub fn safetensors_bytes(
    tensors: &BTreeMap<String, RawTensor>,
    metadata: Vec<(String, String)>,
) -> Result<Vec<u8>, String> {
    let views = tensors
        .iter()
        .map(|(name, t)| {
            TensorView::new(t.dtype, t.shape.clone(), &t.bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| format!("tensor {name}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let meta = (!metadata.is_empty()).then(|| metadata.into_iter().collect());
    safetensors::serialize(views, meta).map_err(|e| e.to_string())
}

/// The weights file of `prog` with weights `w`.
pub fn weights_file(
    prog: &Program,
    w: &Weights,
    metadata: Vec<(String, String)>,
) -> Result<Vec<u8>, String> {
    let tensors = state_dict(prog, w)
        .into_iter()
        .map(|(k, (shape, v))| (k, RawTensor::f32(shape, &v)))
        .collect();
    safetensors_bytes(&tensors, metadata)
}

/// A probe file: token ids (batch × seq) and archgram's logits for them,
/// which the exported module's `--check` compares against.
pub fn probe_file(
    tokens: &[u32],
    batch: usize,
    seq: usize,
    logits: &[f32],
) -> Result<Vec<u8>, String> {
    let vocab = logits.len() / (batch * seq).max(1);
    let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
    let mut t = BTreeMap::new();
    t.insert("tokens".to_string(), RawTensor::i64(vec![batch, seq], &ids));
    t.insert(
        "logits".to_string(),
        RawTensor::f32(vec![batch, seq, vocab], logits),
    );
    safetensors_bytes(&t, Vec::new())
}
