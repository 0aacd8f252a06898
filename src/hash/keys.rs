//! Weight keys of the functional hash: the byte key each parametric node
//! draws its random weights from. A key is the node's label (op, shape,
//! body), the keys of the nearest parametric ops it reads (through
//! parameter-free ops, so moving an activation across transposes or
//! re-associating a sum upstream keeps the weights) and a rank that keeps
//! nodes with all of that equal apart: d₁(x) + d₂(x) must not hash like
//! 2·d(x). Who gets which rank is the caller's choice (`order`), since a
//! choice made from structure alone changes under rewrites that keep the
//! function.

use super::structural::{h, Canon};
use crate::arch::Op;

/// Ops that own weights.
pub(super) fn has_params(op: &Op) -> bool {
    op.def().has_weights()
}

/// Ranks a group of nodes given the keys assigned so far (see [`weight_keys`]).
pub(super) type Rank<'r> = dyn FnMut(&[usize], &[u128]) -> Vec<usize> + 'r;

/// Keys of every live node of `c` (0 for parameter-free ones), assigned
/// level by level: a node once every parametric node it reads has its key.
/// `order` gets each group of two or more nodes ready together with equal
/// label and upstream keys, in structural order (cone, WL colour,
/// position), with the keys assigned so far, and returns the group in rank
/// order; a replicated subtree's copies then keep consistent weights.
pub(super) fn weight_keys(c: &Canon, order: &mut Rank) -> Vec<u128> {
    let n = c.nodes.len();
    let parametric: Vec<bool> = c
        .nodes
        .iter()
        .map(|&x| has_params(&c.arch.node(x).op))
        .collect();
    // Nearest parametric ancestors (node indices) read by each node.
    let mut reads: Vec<Vec<usize>> = Vec::with_capacity(n);
    let mut frontier: Vec<Vec<usize>> = Vec::with_capacity(n);
    for (i, (ins, &own)) in c.inputs.iter().zip(&parametric).enumerate() {
        let mut ups: Vec<usize> = ins
            .iter()
            .flat_map(|&j| frontier[j].iter().copied())
            .collect();
        ups.sort_unstable();
        ups.dedup();
        frontier.push(if own { vec![i] } else { ups.clone() });
        reads.push(ups);
    }
    let mut key = vec![0u128; n];
    let mut done: Vec<bool> = parametric.iter().map(|p| !p).collect();
    loop {
        let ready: Vec<usize> = (0..n)
            .filter(|&i| !done[i] && reads[i].iter().all(|&j| done[j]))
            .collect();
        if ready.is_empty() {
            break;
        }
        let mut base: Vec<(u128, usize)> = ready
            .iter()
            .map(|&i| {
                let mut ups: Vec<u128> = reads[i].iter().map(|&j| key[j]).collect();
                ups.sort_unstable();
                let ups_b: Vec<u8> = ups.iter().flat_map(|c| c.to_le_bytes()).collect();
                (h(&[&c.label[i].to_le_bytes(), &ups_b]), i)
            })
            .collect();
        base.sort_by_key(|&(b, i)| (b, c.cone[i], c.colour[i], i));
        let mut at = 0;
        while at < base.len() {
            let b = base[at].0;
            let end = at + base[at..].iter().take_while(|x| x.0 == b).count();
            let group: Vec<usize> = base[at..end].iter().map(|x| x.1).collect();
            let ranked = if group.len() > 1 {
                order(&group, &key)
            } else {
                group
            };
            for (rank, &i) in ranked.iter().enumerate() {
                key[i] = h(&[&b.to_le_bytes(), &(rank as u32).to_le_bytes()]);
                done[i] = true;
            }
            at = end;
        }
    }
    key
}
