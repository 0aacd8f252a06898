//! Structural hash: prune what cannot reach the output, undo transposes
//! applied twice, then colour refinement (directed Weisfeiler–Lehman, as in
//! NAS-Bench-101's `hash_module`, Ying et al. 2019) with op parameters and
//! shapes in the initial colours, commutative inputs as multisets and
//! ordered inputs by port. Isomorphic graphs hash equal.

use crate::arch::{Arch, Op};
use petgraph::graph::NodeIndex;
use petgraph::visit::{Dfs, Reversed};
use std::collections::HashMap;
use xxhash_rust::xxh3::xxh3_128;

/// Bumped whenever a hash recipe changes, so stored hashes from another
/// recipe never match.
pub const HASH_RECIPE_VERSION: u32 = 1;

/// The graph as the hashes see it: live nodes only, rewrites applied, in a
/// topological order, inputs by port.
#[derive(Clone, Debug)]
pub struct Canon<'a> {
    pub arch: &'a Arch,
    /// Live nodes of `arch` in topological order.
    pub nodes: Vec<NodeIndex>,
    /// Per node (index into `nodes`): its inputs (indices into `nodes`).
    pub inputs: Vec<Vec<usize>>,
    /// Index of the output node.
    pub output: usize,
    /// Final colour of each node.
    pub colour: Vec<u128>,
    /// Structural hashes of routed bodies, per node (0 when none).
    pub body_hash: Vec<u128>,
    /// Hash of each node's cone (the node and everything it reads): what
    /// it computes, independent of who reads it.
    pub cone: Vec<u128>,
    /// The key of each parametric node's weights (0 for the others); see
    /// [`weight_keys`].
    pub param_cone: Vec<u128>,
}

fn h(parts: &[&[u8]]) -> u128 {
    let mut buf = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for p in parts {
        buf.extend_from_slice(&(p.len() as u32).to_le_bytes());
        buf.extend_from_slice(p);
    }
    xxh3_128(&buf)
}

/// The op's label: kind and every parameter, bodies excluded.
fn op_label(op: &Op) -> String {
    match op {
        // Display drops the body; the rest of the variant is its parameters.
        Op::Moe { spec, .. } => format!("moe{spec:?}"),
        other => format!("{other:?}"),
    }
}

impl<'a> Canon<'a> {
    pub fn new(arch: &'a Arch) -> Canon<'a> {
        // Live nodes: those the output depends on.
        let n = arch.graph.node_count();
        let mut live = vec![false; n];
        let rev = Reversed(&arch.graph);
        let mut dfs = Dfs::new(rev, arch.output);
        while let Some(x) = dfs.next(rev) {
            live[x.index()] = true;
        }
        // Transpose of a transpose reads the inner transpose's input.
        let resolve = |mut x: NodeIndex| -> NodeIndex {
            loop {
                if !matches!(arch.node(x).op, Op::Transpose) {
                    return x;
                }
                let inner = arch.inputs(x)[0];
                if !matches!(arch.node(inner).op, Op::Transpose) {
                    return x;
                }
                x = arch.inputs(inner)[0];
            }
        };
        // Rebuild the live graph with rewritten edges, dropping nodes no
        // longer read.
        let order: Vec<NodeIndex> = arch
            .topo()
            .into_iter()
            .filter(|x| live[x.index()])
            .collect();
        let mut raw_inputs: HashMap<NodeIndex, Vec<NodeIndex>> = HashMap::new();
        for &x in &order {
            raw_inputs.insert(x, arch.inputs(x).into_iter().map(resolve).collect());
        }
        let mut keep = vec![false; n];
        let mut stack = vec![arch.output];
        while let Some(x) = stack.pop() {
            if keep[x.index()] {
                continue;
            }
            keep[x.index()] = true;
            stack.extend(raw_inputs[&x].iter().copied());
        }
        let nodes: Vec<NodeIndex> = order.into_iter().filter(|x| keep[x.index()]).collect();
        let pos: HashMap<NodeIndex, usize> =
            nodes.iter().enumerate().map(|(i, x)| (*x, i)).collect();
        let inputs: Vec<Vec<usize>> = nodes
            .iter()
            .map(|x| raw_inputs[x].iter().map(|i| pos[i]).collect())
            .collect();
        let output = pos[&arch.output];
        let body_hash: Vec<u128> = nodes
            .iter()
            .map(|&x| arch.node(x).op.body().map_or(0, structural_hash))
            .collect();

        // Consumers of each node, with the port they read it on.
        let mut outs: Vec<Vec<(usize, u32)>> = vec![Vec::new(); nodes.len()];
        for (j, ins) in inputs.iter().enumerate() {
            for (port, &i) in ins.iter().enumerate() {
                outs[i].push((j, port as u32));
            }
        }
        let commutative: Vec<bool> = nodes
            .iter()
            .map(|&x| arch.node(x).op.is_commutative())
            .collect();
        let mut colour: Vec<u128> = nodes
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let node = arch.node(x);
                h(&[
                    op_label(&node.op).as_bytes(),
                    format!("{:?}", node.shape).as_bytes(),
                    &body_hash[i].to_le_bytes(),
                    &(inputs[i].len() as u32).to_le_bytes(),
                    &(outs[i].len() as u32).to_le_bytes(),
                    &[(i == output) as u8],
                ])
            })
            .collect();
        let classes = |c: &[u128]| {
            let mut v = c.to_vec();
            v.sort_unstable();
            v.dedup();
            v.len()
        };
        let mut count = classes(&colour);
        for _ in 0..nodes.len() {
            let next: Vec<u128> = (0..nodes.len())
                .map(|i| {
                    let mut ins: Vec<u128> = inputs[i].iter().map(|&j| colour[j]).collect();
                    if commutative[i] {
                        ins.sort_unstable();
                    }
                    let mut cons: Vec<(u128, u32)> = outs[i]
                        .iter()
                        .map(|&(j, port)| (colour[j], if commutative[j] { 0 } else { port }))
                        .collect();
                    cons.sort_unstable();
                    let ins_b: Vec<u8> = ins.iter().flat_map(|c| c.to_le_bytes()).collect();
                    let cons_b: Vec<u8> = cons
                        .iter()
                        .flat_map(|(c, p)| c.to_le_bytes().into_iter().chain(p.to_le_bytes()))
                        .collect();
                    h(&[&colour[i].to_le_bytes(), &ins_b, &cons_b])
                })
                .collect();
            colour = next;
            let c = classes(&colour);
            if c == count {
                break;
            }
            count = c;
        }
        let mut cone: Vec<u128> = Vec::with_capacity(nodes.len());
        for (i, &x) in nodes.iter().enumerate() {
            let node = arch.node(x);
            let mut ins: Vec<u128> = inputs[i].iter().map(|&j| cone[j]).collect();
            if commutative[i] {
                ins.sort_unstable();
            }
            let ins_b: Vec<u8> = ins.iter().flat_map(|c| c.to_le_bytes()).collect();
            cone.push(h(&[
                op_label(&node.op).as_bytes(),
                format!("{:?}", node.shape).as_bytes(),
                &body_hash[i].to_le_bytes(),
                &ins_b,
            ]));
        }
        let param_cone = weight_keys(arch, &nodes, &inputs, &body_hash, &cone, &colour);
        Canon {
            arch,
            nodes,
            inputs,
            output,
            colour,
            body_hash,
            cone,
            param_cone,
        }
    }
}

/// Weight keys: a parametric node's label and shape, the keys of the
/// nearest parametric ops it reads (through parameter-free ops, so moving an
/// activation across transposes or re-associating a sum upstream keeps the
/// weights), and its rank among nodes with the same of all that. The rank
/// keeps identical siblings apart (d₁(x) + d₂(x) must not hash like 2·d(x),
/// functional-hashing notes §4.6); ties are ordered by full cone, WL colour,
/// then position, and since keys are built level by level, a replicated
/// subtree's copies keep consistent weights however the graph is numbered.
fn weight_keys(
    arch: &Arch,
    nodes: &[NodeIndex],
    inputs: &[Vec<usize>],
    body_hash: &[u128],
    cone: &[u128],
    colour: &[u128],
) -> Vec<u128> {
    let n = nodes.len();
    let parametric: Vec<bool> = nodes
        .iter()
        .map(|&x| has_params(&arch.node(x).op))
        .collect();
    // Nearest parametric ancestors (node indices) read by each node.
    let mut reads: Vec<Vec<usize>> = Vec::with_capacity(n);
    let mut frontier: Vec<Vec<usize>> = Vec::with_capacity(n);
    for i in 0..n {
        let mut ups: Vec<usize> = inputs[i]
            .iter()
            .flat_map(|&j| frontier[j].iter().copied())
            .collect();
        ups.sort_unstable();
        ups.dedup();
        frontier.push(if parametric[i] { vec![i] } else { ups.clone() });
        reads.push(ups);
    }
    let mut key: Vec<Option<u128>> = (0..n).map(|i| (!parametric[i]).then_some(0)).collect();
    loop {
        let ready: Vec<usize> = (0..n)
            .filter(|&i| key[i].is_none() && reads[i].iter().all(|&j| key[j].is_some()))
            .collect();
        if ready.is_empty() {
            break;
        }
        let base: Vec<(usize, u128)> = ready
            .iter()
            .map(|&i| {
                let mut ups: Vec<u128> = reads[i].iter().map(|&j| key[j].unwrap_or(0)).collect();
                ups.sort_unstable();
                let ups_b: Vec<u8> = ups.iter().flat_map(|c| c.to_le_bytes()).collect();
                let node = arch.node(nodes[i]);
                let b = h(&[
                    op_label(&node.op).as_bytes(),
                    format!("{:?}", node.shape).as_bytes(),
                    &body_hash[i].to_le_bytes(),
                    &ups_b,
                ]);
                (i, b)
            })
            .collect();
        let mut order = base.clone();
        order.sort_by_key(|&(i, b)| (b, cone[i], colour[i], i));
        let mut rank = 0u32;
        for w in 0..order.len() {
            if w > 0 && order[w].1 != order[w - 1].1 {
                rank = 0;
            }
            let (i, b) = order[w];
            key[i] = Some(h(&[&b.to_le_bytes(), &rank.to_le_bytes()]));
            rank += 1;
        }
    }
    key.into_iter().map(|k| k.unwrap_or(0)).collect()
}

/// Ops that own weights.
fn has_params(op: &Op) -> bool {
    !matches!(
        op,
        Op::Input
            | Op::Output
            | Op::Act { .. }
            | Op::Softmax { .. }
            | Op::Transpose
            | Op::Split { .. }
            | Op::Add
            | Op::Mul
            | Op::Concat
            | Op::Dot { .. }
    )
}

/// 128-bit structural hash of `arch`.
pub fn structural_hash(arch: &Arch) -> u128 {
    let c = Canon::new(arch);
    let mut all = c.colour.clone();
    all.sort_unstable();
    let all_b: Vec<u8> = all.iter().flat_map(|x| x.to_le_bytes()).collect();
    h(&[
        b"structural",
        &HASH_RECIPE_VERSION.to_le_bytes(),
        &[arch.causal as u8],
        &all_b,
        &c.colour[c.output].to_le_bytes(),
    ])
}
