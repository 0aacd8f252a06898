//! Compiling an `Arch` into a `Program`: the live steps in topological
//! order, and for each op kind (one `Compile` impl per kind) the parameters
//! it owns (names, shapes, initialisation) and the `StepOp` that runs it
//! (`forward.rs`). What the kinds compute is documented on their structs in
//! `arch::ops`.

use super::params::{Init, ParamInfo};
use super::program::{CompileError, Graph, Head, Program, Step, StepOp};
use crate::arch::ops::composite::Composite;
use crate::arch::ops::{
    Act, Add, Attention, Concat, Dot, Input, LayerSkip, Linear, Mlp, Mod, Moe, Moh, Mul, Norm,
    Output, PosEnc, Softmax, Split, Transpose,
};
use crate::arch::{Arch, NormKind, Shape};
use petgraph::graph::NodeIndex;
use petgraph::visit::{Dfs, Reversed};
use std::collections::HashMap;

/// Gathers a program's parameters as its steps are compiled.
struct Builder {
    params: Vec<ParamInfo>,
    /// Routed layers so far.
    routed: usize,
}

impl Builder {
    fn param(&mut self, name: String, shape: Vec<usize>, init: Init, decay: bool) -> usize {
        self.params.push(ParamInfo {
            name,
            len: shape.iter().product(),
            shape,
            init,
            decay,
        });
        self.params.len() - 1
    }

    fn matrix(&mut self, name: String, rows: usize, cols: usize) -> usize {
        self.param(name, vec![rows, cols], Init::FanIn(rows), true)
    }

    fn heads(&mut self, at: &str, n: usize, d: usize, hd: usize) -> Vec<Head> {
        (0..n)
            .map(|h| Head {
                q: self.matrix(format!("{at}.h{h}.q"), d, hd),
                k: self.matrix(format!("{at}.h{h}.k"), d, hd),
                v: self.matrix(format!("{at}.h{h}.v"), d, hd),
            })
            .collect()
    }

    fn graph(&mut self, arch: &Arch, prefix: &str) -> Result<Graph, CompileError> {
        // Only steps that reach the output: a dead branch would take a tape
        // that then never reaches the loss.
        let mut live = vec![false; arch.graph.node_count()];
        let rev = Reversed(&arch.graph);
        let mut dfs = Dfs::new(rev, arch.output);
        while let Some(n) = dfs.next(rev) {
            live[n.index()] = true;
        }
        let order: Vec<NodeIndex> = arch
            .topo()
            .into_iter()
            .filter(|n| live[n.index()])
            .collect();
        let index: HashMap<NodeIndex, usize> =
            order.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let mut steps: Vec<Step> = Vec::with_capacity(order.len());
        let mut uses = vec![0usize; order.len()];
        for &n in &order {
            let node = arch.node(n);
            let inputs: Vec<usize> = arch.inputs(n).iter().map(|i| index[i]).collect();
            for &i in &inputs {
                uses[i] += 1;
            }
            let name = format!("n{}", n.index());
            let at = At {
                name: &format!("{prefix}{name}"),
                input: inputs.first().map_or(node.shape, |&i| steps[i].shape),
                out: node.shape,
            };
            let op = crate::with_op!(&node.op, o => o.compile(self, &at))?;
            steps.push(Step {
                name,
                kind: node.op.kind(),
                op,
                inputs,
                shape: node.shape,
            });
        }
        let output = index[&arch.output];
        Ok(Graph {
            steps,
            uses,
            output,
        })
    }
}

impl Program {
    /// Compiles `arch` for a task with `vocab` tokens. Fails (never panics)
    /// on a graph whose shapes do not check.
    pub fn build(arch: &Arch, vocab: usize) -> Result<Program, CompileError> {
        crate::arch::check(arch)?;
        let input = arch.input_shape();
        let output = arch.output_shape();
        if !input.is_seq() || !output.is_seq() || output.rows.size != input.rows.size {
            return Err(CompileError::NotTokensToTokens { input, output });
        }
        let mut b = Builder {
            params: Vec::new(),
            routed: 0,
        };
        let width = input.cols.size;
        let out_width = output.cols.size;
        let embed = b.param("embed".into(), vec![vocab, width], Init::Normal(1.0), false);
        let graph = b.graph(arch, "")?;
        let head_w = b.matrix("head.w".into(), out_width, vocab);
        let head_b = b.param("head.b".into(), vec![vocab], Init::Const(0.0), false);
        Ok(Program {
            vocab,
            seq: input.rows.size,
            width,
            out_width,
            params: b.params,
            embed,
            head_w,
            head_b,
            graph,
            routed_layers: b.routed,
        })
    }
}

/// Where a step is compiled: its parameter-name prefix and shapes.
struct At<'a> {
    /// The step's name, the prefix of its parameters' names.
    name: &'a str,
    /// The first input's shape (the output's for the graph's input).
    input: Shape,
    out: Shape,
}

impl At<'_> {
    /// The width of the input's last axis.
    fn last(&self) -> usize {
        self.input.cols.size
    }

    fn param(&self, part: &str) -> String {
        format!("{}.{part}", self.name)
    }
}

/// An op kind's compiled step.
trait Compile {
    fn compile(&self, b: &mut Builder, at: &At) -> Result<StepOp, CompileError>;
}

/// Every composite kind: a vector per learned parameter of its recipe
/// (filled with its initial value, no weight decay, like a norm's gain).
impl<C: Composite> Compile for C {
    fn compile(&self, b: &mut Builder, at: &At) -> Result<StepOp, CompileError> {
        let recipe = self.recipe();
        let params = recipe
            .params()
            .map(|(name, init)| {
                b.param(
                    at.param(name),
                    vec![at.last()],
                    Init::Const(init as f32),
                    false,
                )
            })
            .collect();
        Ok(StepOp::Composite { recipe, params })
    }
}

impl Compile for Input {
    fn compile(&self, _b: &mut Builder, _at: &At) -> Result<StepOp, CompileError> {
        Ok(StepOp::Input)
    }
}

impl Compile for Output {
    fn compile(&self, _b: &mut Builder, _at: &At) -> Result<StepOp, CompileError> {
        Ok(StepOp::Output)
    }
}

impl Compile for Linear {
    fn compile(&self, b: &mut Builder, at: &At) -> Result<StepOp, CompileError> {
        let (last, o) = (at.last(), self.out);
        Ok(StepOp::Linear {
            w: b.matrix(at.param("w"), last, o),
            b: self
                .bias
                .then(|| b.param(at.param("b"), vec![o], Init::Const(0.0), false)),
            inp: last,
            out: o,
            causal_mask: self.token_mixing && self.causal,
        })
    }
}

impl Compile for Norm {
    fn compile(&self, b: &mut Builder, at: &At) -> Result<StepOp, CompileError> {
        let last = at.last();
        Ok(StepOp::Norm {
            kind: self.kind,
            gain: b.param(at.param("g"), vec![last], Init::Const(1.0), false),
            bias: (self.kind == NormKind::Layer)
                .then(|| b.param(at.param("b"), vec![last], Init::Const(0.0), false)),
        })
    }
}

impl Compile for Act {
    fn compile(&self, _b: &mut Builder, _at: &At) -> Result<StepOp, CompileError> {
        Ok(StepOp::Act(self.f))
    }
}

impl Compile for Softmax {
    fn compile(&self, _b: &mut Builder, _at: &At) -> Result<StepOp, CompileError> {
        Ok(StepOp::Softmax {
            causal: self.causal,
        })
    }
}

impl Compile for PosEnc {
    fn compile(&self, b: &mut Builder, at: &At) -> Result<StepOp, CompileError> {
        Ok(StepOp::PosEnc {
            table: b.param(
                at.param("pos"),
                vec![at.out.rows.size, at.out.cols.size],
                Init::Normal(0.02),
                false,
            ),
        })
    }
}

impl Compile for Transpose {
    fn compile(&self, _b: &mut Builder, _at: &At) -> Result<StepOp, CompileError> {
        Ok(StepOp::Transpose)
    }
}

impl Compile for Split {
    fn compile(&self, _b: &mut Builder, at: &At) -> Result<StepOp, CompileError> {
        Ok(StepOp::Split {
            part: self.part,
            parts: self.parts,
            rows: at.input.is_transposed_seq(),
        })
    }
}

impl Compile for Add {
    fn compile(&self, _b: &mut Builder, _at: &At) -> Result<StepOp, CompileError> {
        Ok(StepOp::Add)
    }
}

impl Compile for Mul {
    fn compile(&self, _b: &mut Builder, _at: &At) -> Result<StepOp, CompileError> {
        Ok(StepOp::Mul)
    }
}

impl Compile for Concat {
    fn compile(&self, _b: &mut Builder, at: &At) -> Result<StepOp, CompileError> {
        Ok(StepOp::Concat {
            rows: at.out.is_transposed_seq(),
        })
    }
}

impl Compile for Dot {
    fn compile(&self, _b: &mut Builder, _at: &At) -> Result<StepOp, CompileError> {
        Ok(StepOp::Dot {
            scaled: self.scaled,
            mask: self.mask,
        })
    }
}

impl Compile for Attention {
    fn compile(&self, b: &mut Builder, at: &At) -> Result<StepOp, CompileError> {
        let last = at.last();
        Ok(StepOp::Attention {
            heads: b.heads(at.name, self.heads, last, self.head_dim),
            o: b.matrix(at.param("o"), self.heads * self.head_dim, last),
            head_dim: self.head_dim,
            causal: self.causal,
        })
    }
}

impl Compile for Mlp {
    fn compile(&self, b: &mut Builder, at: &At) -> Result<StepOp, CompileError> {
        let (last, hidden) = (at.last(), self.hidden);
        Ok(StepOp::Mlp {
            w1: b.matrix(at.param("w1"), last, hidden),
            w3: self.gated.then(|| b.matrix(at.param("w3"), last, hidden)),
            w2: b.matrix(at.param("w2"), hidden, last),
            act: self.act,
            hidden,
        })
    }
}

impl Compile for Moe {
    fn compile(&self, b: &mut Builder, at: &At) -> Result<StepOp, CompileError> {
        b.routed += 1;
        let spec = self.spec;
        let router = b.matrix(at.param("router"), at.last(), spec.experts);
        let experts = (0..spec.experts)
            .map(|e| b.graph(&self.expert, &format!("{}.e{e}.", at.name)))
            .collect::<Result<Vec<_>, _>>()?;
        let shared = (0..spec.shared)
            .map(|e| b.graph(&self.expert, &format!("{}.s{e}.", at.name)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(StepOp::Moe {
            spec,
            router,
            experts,
            shared,
        })
    }
}

impl Compile for Mod {
    fn compile(&self, b: &mut Builder, at: &At) -> Result<StepOp, CompileError> {
        b.routed += 1;
        Ok(StepOp::Mod {
            capacity: self.capacity,
            causal: self.causal,
            router: b.matrix(at.param("router"), at.last(), 1),
            body: Box::new(b.graph(&self.body, &format!("{}.body.", at.name))?),
        })
    }
}

impl Compile for LayerSkip {
    fn compile(&self, b: &mut Builder, at: &At) -> Result<StepOp, CompileError> {
        b.routed += 1;
        let c = self.capacity.clamp(1e-3, 1.0 - 1e-3);
        Ok(StepOp::Skip {
            capacity: self.capacity,
            router: b.matrix(at.param("router"), at.last(), 1),
            // Start at the target rate: sigmoid(b) = capacity.
            bias: b.param(
                at.param("router_b"),
                vec![1],
                Init::Const((c / (1.0 - c)).ln() as f32),
                false,
            ),
            body: Box::new(b.graph(&self.body, &format!("{}.body.", at.name))?),
        })
    }
}

impl Compile for Moh {
    fn compile(&self, b: &mut Builder, at: &At) -> Result<StepOp, CompileError> {
        b.routed += 1;
        let last = at.last();
        let routed = self.heads - self.shared;
        Ok(StepOp::Moh {
            heads: b.heads(at.name, self.heads, last, self.head_dim),
            o: b.matrix(at.param("o"), self.heads * self.head_dim, last),
            router: b.matrix(at.param("router"), last, routed.max(1)),
            active: self.active,
            shared: self.shared,
            head_dim: self.head_dim,
            causal: self.causal,
        })
    }
}
