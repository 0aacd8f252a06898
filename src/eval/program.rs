//! A compiled candidate: a flat program of steps in topological order with
//! the parameters each one owns. Compiling it lives in `compile.rs`,
//! running it in `forward.rs`.

use super::params::ParamInfo;
use crate::arch::ops::composite::Recipe;
use crate::arch::{Activation, DotMask, MoeSpec, NormKind, Shape};

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
    /// A composite kind's recipe; `params` are its learned vectors' ids, in
    /// the recipe's order.
    Composite {
        recipe: Recipe,
        params: Vec<usize>,
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
    pub fn param_count(&self) -> usize {
        self.params.iter().map(|p| p.len).sum()
    }
}
