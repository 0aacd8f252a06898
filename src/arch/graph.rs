//! The architecture graph: a petgraph DAG of typed ops with output shapes.

use super::cost::{body_seq, embedding_cost, head_cost, op_cost, routed_scales, router_cost, Cost};
use super::ops::Op;
use super::shape::Shape;
use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use serde::{Deserialize, Serialize};

/// One op and the shape of the tensor it produces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArchNode {
    pub op: Op,
    pub shape: Shape,
}

/// A computation graph from one `Input` node to one `Output` node. Edges
/// carry the input port of their target. Routed ops (MoE, mixture-of-depths,
/// layer skip) hold their body as a nested `Arch` whose `Input`/`Output`
/// nodes stand for the routed tokens going in and out.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Arch {
    pub graph: DiGraph<ArchNode, u32>,
    pub input: NodeIndex,
    pub output: NodeIndex,
    /// Sequence length the shapes were computed for.
    pub seq_len: usize,
    /// Whether position t may only see positions ≤ t.
    pub causal: bool,
}

impl PartialEq for Arch {
    fn eq(&self, o: &Arch) -> bool {
        let edges = |a: &Arch| {
            a.graph
                .edge_references()
                .map(|e| (e.source(), e.target(), *e.weight()))
                .collect::<Vec<_>>()
        };
        self.input == o.input
            && self.output == o.output
            && self.seq_len == o.seq_len
            && self.causal == o.causal
            && self.graph.node_weights().eq(o.graph.node_weights())
            && edges(self) == edges(o)
    }
}

impl Arch {
    /// A graph holding only its input node.
    pub fn start(shape: Shape, causal: bool) -> Arch {
        let mut graph = DiGraph::new();
        let input = graph.add_node(ArchNode {
            op: Op::Input,
            shape,
        });
        Arch {
            graph,
            input,
            output: input,
            seq_len: shape.rows.size,
            causal,
        }
    }

    /// Adds `op` fed by `inputs` (in port order) and returns the new node.
    pub fn add(&mut self, op: Op, shape: Shape, inputs: &[NodeIndex]) -> NodeIndex {
        let n = self.graph.add_node(ArchNode { op, shape });
        for (port, &i) in inputs.iter().enumerate() {
            self.graph.add_edge(i, n, port as u32);
        }
        n
    }

    /// Adds the `Output` marker after `last`; the graph is complete.
    pub fn finish(&mut self, last: NodeIndex) {
        let shape = self.graph[last].shape;
        self.output = self.add(Op::Output, shape, &[last]);
    }

    pub fn node(&self, n: NodeIndex) -> &ArchNode {
        &self.graph[n]
    }

    /// Inputs of `n` in port order.
    pub fn inputs(&self, n: NodeIndex) -> Vec<NodeIndex> {
        let mut v: Vec<(u32, NodeIndex)> = self
            .graph
            .edges_directed(n, Direction::Incoming)
            .map(|e| (*e.weight(), e.source()))
            .collect();
        v.sort();
        v.into_iter().map(|(_, s)| s).collect()
    }

    /// Nodes in a topological order (inputs before users). Graphs built by
    /// lowering are acyclic; a cyclic graph (only possible from hand-edited
    /// JSON) yields the nodes in index order.
    pub fn topo(&self) -> Vec<NodeIndex> {
        toposort(&self.graph, None).unwrap_or_else(|_| self.graph.node_indices().collect())
    }

    pub fn input_shape(&self) -> Shape {
        self.graph[self.input].shape
    }

    pub fn output_shape(&self) -> Shape {
        self.graph[self.output].shape
    }

    /// Nodes counted recursively (routed bodies once per copy they hold).
    pub fn node_count(&self) -> usize {
        self.graph
            .node_weights()
            .map(|n| 1 + n.op.body().map_or(0, Arch::node_count))
            .sum()
    }

    /// Parameters, active parameters and forward FLOPs per token of the
    /// graph's ops, without the token embedding and output head.
    pub fn cost(&self) -> Cost {
        self.cost_at(self.seq_len)
    }

    /// [`Arch::cost`] when the graph runs on sequences of `seq` tokens.
    pub fn cost_at(&self, seq: usize) -> Cost {
        let mut total = Cost::default();
        for n in self.graph.node_indices() {
            let node = &self.graph[n];
            let c = match node.op.body() {
                Some(body) => {
                    let (copies, touched, flops) = routed_scales(&node.op, seq);
                    let d = self.graph[self.inputs(n)[0]].shape.cols.size;
                    body.cost_at(body_seq(&node.op, seq))
                        .scaled(copies, touched, flops, 1.0)
                        + router_cost(&node.op, d)
                }
                None => {
                    let ins: Vec<Shape> = self
                        .inputs(n)
                        .iter()
                        .map(|&i| self.graph[i].shape)
                        .collect();
                    op_cost(&node.op, &ins, node.shape, seq)
                }
            };
            total += c;
        }
        total
    }

    /// The whole network's cost: embedding, graph and output head.
    pub fn total_cost(&self, vocab: usize) -> Cost {
        let in_w = self.input_shape().cols.size;
        let out_w = self.output_shape().cols.size;
        embedding_cost(vocab, in_w) + self.cost() + head_cost(out_w, vocab)
    }
}
