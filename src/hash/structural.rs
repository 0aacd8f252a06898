//! Structural hash: prune what cannot reach the output, undo transposes
//! applied twice, then colour refinement (directed Weisfeiler–Lehman, as in
//! NAS-Bench-101's `hash_module`, Ying et al. 2019) with op parameters and
//! shapes in the initial colours, commutative inputs as multisets and
//! ordered inputs by port. Isomorphic graphs hash equal.

use super::encode::{op_bytes, shape_bytes};
use crate::arch::{Arch, Op};
use petgraph::graph::NodeIndex;
use petgraph::visit::{Dfs, Reversed};
use std::collections::HashMap;
use xxhash_rust::xxh3::xxh3_128;

/// Bumped whenever the structural recipe changes, so stored hashes from
/// another recipe never match. 2: labels from the explicit encoding
/// (`encode`) instead of the ops' `Debug` text.
pub const HASH_RECIPE_VERSION: u32 = 2;

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
    /// Hash of each node's op (kind and parameters), shape and body.
    pub label: Vec<u128>,
}

pub(super) fn h(parts: &[&[u8]]) -> u128 {
    let mut buf = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for p in parts {
        buf.extend_from_slice(&(p.len() as u32).to_le_bytes());
        buf.extend_from_slice(p);
    }
    xxh3_128(&buf)
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
        // Each node's op and shape in the explicit encoding (never their
        // `Debug` text, which a renamed field would change).
        let encoded: Vec<(Vec<u8>, Vec<u8>)> = nodes
            .iter()
            .map(|&x| {
                let node = arch.node(x);
                (op_bytes(&node.op), shape_bytes(&node.shape))
            })
            .collect();
        let label: Vec<u128> = (0..nodes.len())
            .map(|i| h(&[&encoded[i].0, &encoded[i].1, &body_hash[i].to_le_bytes()]))
            .collect();
        let mut colour: Vec<u128> = (0..nodes.len())
            .map(|i| {
                h(&[
                    &encoded[i].0,
                    &encoded[i].1,
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
        for i in 0..nodes.len() {
            let mut ins: Vec<u128> = inputs[i].iter().map(|&j| cone[j]).collect();
            if commutative[i] {
                ins.sort_unstable();
            }
            let ins_b: Vec<u8> = ins.iter().flat_map(|c| c.to_le_bytes()).collect();
            cone.push(h(&[&label[i].to_le_bytes(), &ins_b]));
        }
        Canon {
            arch,
            nodes,
            inputs,
            output,
            colour,
            body_hash,
            cone,
            label,
        }
    }
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
