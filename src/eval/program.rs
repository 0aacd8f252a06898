//! Compiling an `Arch` into a flat program: steps in topological order with
//! the parameters each one owns. Running it lives in `forward.rs`.

use super::compile::{At, Compile};
use super::params::{Init, ParamInfo};
use crate::arch::{Activation, Arch, DotMask, MoeSpec, NormKind, Shape};
use petgraph::graph::NodeIndex;
use petgraph::visit::{Dfs, Reversed};
use std::collections::HashMap;

/// One attention head's projections.
#[derive(Clone, Debug)]
pub struct Head {
    pub q: usize,
    pub k: usize,
    pub v: usize,
}

#[derive(Clone, Debug)]
pub enum StepOp {
    Input,
    Output,
    Linear {
        w: usize,
        b: Option<usize>,
        inp: usize,
        out: usize,
        causal_mask: bool,
    },
    Norm {
        kind: NormKind,
        gain: usize,
        bias: Option<usize>,
    },
    Act(Activation),
    Softmax {
        causal: bool,
    },
    PosEnc {
        table: usize,
    },
    Transpose,
    Split {
        part: usize,
        parts: usize,
        rows: bool,
    },
    Add,
    Mul,
    Concat {
        rows: bool,
    },
    Dot {
        scaled: bool,
        mask: DotMask,
    },
    Attention {
        heads: Vec<Head>,
        o: usize,
        head_dim: usize,
        causal: bool,
    },
    Mlp {
        w1: usize,
        w2: usize,
        w3: Option<usize>,
        act: Activation,
        hidden: usize,
    },
    Moe {
        spec: MoeSpec,
        router: usize,
        experts: Vec<Graph>,
        shared: Vec<Graph>,
    },
    Mod {
        capacity: f64,
        causal: bool,
        router: usize,
        body: Box<Graph>,
    },
    Skip {
        capacity: f64,
        router: usize,
        bias: usize,
        body: Box<Graph>,
    },
    Moh {
        heads: Vec<Head>,
        o: usize,
        router: usize,
        active: usize,
        shared: usize,
        head_dim: usize,
        causal: bool,
    },
}

#[derive(Clone, Debug)]
pub struct Step {
    /// Local name (`n<node>`), the prefix of the step's parameter names.
    pub name: String,
    /// The arch op's kind (`Op::kind`), for labels.
    pub kind: &'static str,
    pub op: StepOp,
    pub inputs: Vec<usize>,
    pub shape: Shape,
}

/// A graph's live steps (those that reach its output) in topological order.
#[derive(Clone, Debug)]
pub struct Graph {
    pub steps: Vec<Step>,
    /// How many later steps read each step.
    pub uses: Vec<usize>,
    pub output: usize,
}

/// A compiled candidate: embedding → graph → head.
#[derive(Clone, Debug)]
pub struct Program {
    pub vocab: usize,
    pub seq: usize,
    pub width: usize,
    pub out_width: usize,
    pub params: Vec<ParamInfo>,
    pub embed: usize,
    pub head_w: usize,
    pub head_b: usize,
    pub graph: Graph,
    /// Routed layers in execution order (MoE, MoD, skip, MoH).
    pub routed_layers: usize,
}

/// Gathers a program's parameters as its steps are compiled.
pub(super) struct Builder {
    params: Vec<ParamInfo>,
    /// Routed layers so far.
    pub(super) routed: usize,
}

impl Builder {
    pub(super) fn param(
        &mut self,
        name: String,
        shape: Vec<usize>,
        init: Init,
        decay: bool,
    ) -> usize {
        self.params.push(ParamInfo {
            name,
            len: shape.iter().product(),
            shape,
            init,
            decay,
        });
        self.params.len() - 1
    }

    pub(super) fn matrix(&mut self, name: String, rows: usize, cols: usize) -> usize {
        self.param(name, vec![rows, cols], Init::FanIn(rows), true)
    }

    pub(super) fn heads(&mut self, at: &str, n: usize, d: usize, hd: usize) -> Vec<Head> {
        (0..n)
            .map(|h| Head {
                q: self.matrix(format!("{at}.h{h}.q"), d, hd),
                k: self.matrix(format!("{at}.h{h}.k"), d, hd),
                v: self.matrix(format!("{at}.h{h}.v"), d, hd),
            })
            .collect()
    }

    pub(super) fn graph(&mut self, arch: &Arch, prefix: &str) -> Result<Graph, CompileError> {
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

/// Why a graph does not compile to a program.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Graph(#[from] crate::arch::GraphError),
    #[error(
        "the network must map (tokens × features) to (tokens × features); got {input} → {output}"
    )]
    NotTokensToTokens { input: Shape, output: Shape },
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

    pub fn param_count(&self) -> usize {
        self.params.iter().map(|p| p.len).sum()
    }
}
