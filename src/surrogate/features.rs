//! A fixed-length numeric description of an architecture, computed from the
//! IR alone (no training): sizes, depth, op counts, routing settings, and a
//! bag of Weisfeiler–Lehman subtree labels that sees which ops feed which.
//!
//! The WL bag is the graph-kernel encoding of Shervashidze et al. 2011
//! (subtree labels after h refinement rounds), hashed into a fixed number of
//! buckets so that every architecture has the same feature length; BANANAS
//! (White et al. 2021) found encodings that see paths through the graph to
//! predict accuracy far better than op counts alone.

use crate::arch::ops::{Act, Attention, LayerSkip, Mlp, Mod, Moe, Moh, Norm};
use crate::arch::{Activation, Arch, NormKind, Op, RouterKind};
use petgraph::graph::NodeIndex;
use std::collections::HashMap;
use xxhash_rust::xxh3::xxh3_64;

/// Op kinds counted one by one; any other kind is counted under `other`.
const KINDS: &[&str] = &[
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
];

/// Refinement rounds of the WL bag (round 0 is the op kind alone).
const WL_ROUNDS: usize = 2;
/// Hash buckets per WL round.
const WL_BUCKETS: usize = 16;

/// The scalar features, in vector order (after them: one count per kind in
/// [`KINDS`], `other`, then the WL buckets).
const SCALARS: &[&str] = &[
    "log_params",
    "log_active_params",
    "log_flops",
    "nodes",
    "depth",
    "width",
    "attention_heads",
    "attention_head_dim",
    "mlp_ratio",
    "mlp_gated",
    "moe_experts",
    "moe_top_k",
    "moe_capacity",
    "moe_shared",
    "mod_capacity",
    "mod_causal",
    "skip_capacity",
    "moh_active_share",
    "routed_blocks",
];

/// Names of the features, in the order [`features`] writes them.
pub fn names() -> Vec<String> {
    let mut v: Vec<String> = SCALARS.iter().map(|s| s.to_string()).collect();
    v.extend(KINDS.iter().map(|k| format!("count_{k}")));
    v.push("count_other".into());
    v.extend(RouterKind::NAMES.iter().map(|r| format!("router_{r}")));
    v.extend(NormKind::NAMES.iter().map(|n| format!("norm_{n}")));
    v.extend(Activation::NAMES.iter().map(|a| format!("act_{a}")));
    for r in 1..=WL_ROUNDS {
        v.extend((0..WL_BUCKETS).map(|b| format!("wl{r}_{b}")));
    }
    v
}

/// Running sums for the features averaged over ops of one kind.
#[derive(Default)]
struct Acc {
    v: HashMap<&'static str, (f64, f64)>,
}

impl Acc {
    fn add(&mut self, name: &'static str, x: f64) {
        let e = self.v.entry(name).or_default();
        e.0 += x;
        e.1 += 1.0;
    }
    fn sum(&self, name: &str) -> f64 {
        self.v.get(name).map_or(0.0, |e| e.0)
    }
    fn mean(&self, name: &str) -> f64 {
        self.v.get(name).map_or(0.0, |e| e.0 / e.1)
    }
}

/// The feature vector of `arch` on a task with `vocab` tokens; its length
/// is `names().len()` for every architecture.
pub fn features(arch: &Arch, vocab: usize) -> Vec<f64> {
    let cost = arch.total_cost(vocab);
    let width = arch.input_shape().cols.size as f64;
    let mut acc = Acc::default();
    let mut kinds = vec![0.0; KINDS.len() + 1];
    let mut routers = vec![0.0; RouterKind::NAMES.len()];
    let mut norms = vec![0.0; NormKind::NAMES.len()];
    let mut acts = vec![0.0; Activation::NAMES.len()];
    let mut routed = 0.0;
    walk(arch, &mut |op| {
        let k = KINDS.iter().position(|k| *k == op.kind());
        kinds[k.unwrap_or(KINDS.len())] += 1.0;
        match op {
            Op::Attention(Attention {
                heads, head_dim, ..
            }) => {
                acc.add("attention_heads", *heads as f64);
                acc.add("attention_head_dim", *head_dim as f64);
            }
            Op::Mlp(Mlp { hidden, gated, act }) => {
                acc.add("mlp_ratio", *hidden as f64 / width);
                acc.add("mlp_gated", f64::from(u8::from(*gated)));
                bump(&mut acts, Activation::NAMES, act.name());
            }
            Op::Act(Act { f }) => bump(&mut acts, Activation::NAMES, f.name()),
            Op::Norm(Norm { kind }) => bump(&mut norms, NormKind::NAMES, kind.name()),
            Op::Moe(Moe { spec, .. }) => {
                routed += 1.0;
                acc.add("moe_experts", spec.experts as f64);
                acc.add("moe_top_k", spec.top_k as f64);
                acc.add("moe_capacity", spec.capacity);
                acc.add("moe_shared", spec.shared as f64);
                bump(&mut routers, RouterKind::NAMES, spec.router.name());
            }
            Op::Mod(Mod {
                capacity, causal, ..
            }) => {
                routed += 1.0;
                acc.add("mod_capacity", *capacity);
                acc.add("mod_causal", f64::from(u8::from(*causal)));
            }
            Op::LayerSkip(LayerSkip { capacity, .. }) => {
                routed += 1.0;
                acc.add("skip_capacity", *capacity);
            }
            Op::Moh(Moh { heads, active, .. }) => {
                routed += 1.0;
                acc.add("moh_active_share", *active as f64 / (*heads).max(1) as f64);
            }
            _ => {}
        }
    });
    let mut v = vec![
        cost.params.max(1.0).ln(),
        cost.active_params.max(1.0).ln(),
        cost.flops.max(1.0).ln(),
        cost.nodes,
        depth(arch) as f64,
        width,
        acc.sum("attention_heads"),
        acc.mean("attention_head_dim"),
        acc.mean("mlp_ratio"),
        acc.mean("mlp_gated"),
        acc.mean("moe_experts"),
        acc.mean("moe_top_k"),
        acc.mean("moe_capacity"),
        acc.mean("moe_shared"),
        acc.mean("mod_capacity"),
        acc.mean("mod_causal"),
        acc.mean("skip_capacity"),
        acc.mean("moh_active_share"),
        routed,
    ];
    debug_assert_eq!(v.len(), SCALARS.len());
    v.extend(kinds);
    v.extend(routers);
    v.extend(norms);
    v.extend(acts);
    v.extend(wl_bag(arch));
    v
}

fn bump(counts: &mut [f64], names: &[&str], name: &str) {
    if let Some(i) = names.iter().position(|n| *n == name) {
        counts[i] += 1.0;
    }
}

/// Calls `f` on every op, routed bodies included.
fn walk(a: &Arch, f: &mut dyn FnMut(&Op)) {
    for node in a.graph.node_weights() {
        f(&node.op);
        if let Some(body) = node.op.body() {
            walk(body, f);
        }
    }
}

/// Ops that do arithmetic on their own (not plumbing such as adds, splits
/// or transposes) along the longest input-to-output path, a routed op
/// counting its body's depth.
fn depth(a: &Arch) -> usize {
    let mut at: HashMap<NodeIndex, usize> = HashMap::new();
    for n in a.topo() {
        let op = &a.graph[n].op;
        let own = match op {
            Op::Input
            | Op::Output
            | Op::Add
            | Op::Mul
            | Op::Concat
            | Op::Split(_)
            | Op::Transpose => 0,
            _ => 1 + op.body().map_or(0, depth),
        };
        let before = a.inputs(n).iter().map(|i| at[i]).max().unwrap_or(0);
        at.insert(n, before + own);
    }
    at.get(&a.output).copied().unwrap_or(0)
}

/// Counts of WL subtree labels after rounds 1..=WL_ROUNDS, hashed into
/// buckets. Labels start as op kinds (a routed body's ops prefixed with the
/// router's kind, so an MLP inside an expert differs from a dense one);
/// each round appends the sorted labels of a node's inputs. Parameters are
/// left out on purpose: the scalar features carry them, and a bag keyed on
/// exact settings would rarely repeat across candidates.
fn wl_bag(arch: &Arch) -> Vec<f64> {
    let mut bag = vec![0.0; WL_ROUNDS * WL_BUCKETS];
    wl_into(arch, "", &mut bag);
    bag
}

fn wl_into(a: &Arch, prefix: &str, bag: &mut [f64]) {
    let order = a.topo();
    let mut label: HashMap<NodeIndex, u64> = order
        .iter()
        .map(|&n| {
            let kind = a.graph[n].op.kind();
            (n, xxh3_64(format!("{prefix}{kind}").as_bytes()))
        })
        .collect();
    for round in 0..WL_ROUNDS {
        let mut next = HashMap::with_capacity(label.len());
        for &n in &order {
            let mut ins: Vec<u64> = a.inputs(n).iter().map(|i| label[i]).collect();
            // Ordered inputs keep their port order; commutative ones are a multiset.
            if a.graph[n].op.is_commutative() {
                ins.sort_unstable();
            }
            let mut bytes = label[&n].to_le_bytes().to_vec();
            for i in ins {
                bytes.extend(i.to_le_bytes());
            }
            let l = xxh3_64(&bytes);
            next.insert(n, l);
            bag[round * WL_BUCKETS + (l % WL_BUCKETS as u64) as usize] += 1.0;
        }
        label = next;
    }
    for &n in &order {
        let op = &a.graph[n].op;
        if let Some(body) = op.body() {
            wl_into(body, &format!("{prefix}{}/", op.kind()), bag);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ops::{Attention, Mlp};
    use crate::arch::{Op, Shape};

    fn chain(ops: Vec<Op>) -> Arch {
        let shape = Shape::seq(8, 16);
        let mut a = Arch::start(shape, true);
        let mut last = a.input;
        for op in ops {
            let x = a.add(op, shape, &[last]);
            last = a.add(Op::Add, shape, &[last, x]);
        }
        a.finish(last);
        a
    }

    fn attention() -> Op {
        Op::Attention(Attention {
            heads: 2,
            head_dim: 8,
            causal: true,
        })
    }

    fn mlp(hidden: usize) -> Op {
        Op::Mlp(Mlp {
            hidden,
            act: Activation::Gelu,
            gated: false,
        })
    }

    fn get(v: &[f64], name: &str) -> f64 {
        v[names().iter().position(|n| n == name).unwrap()]
    }

    #[test]
    fn every_architecture_gets_one_value_per_name() {
        for a in [chain(vec![]), chain(vec![attention(), mlp(32)])] {
            let v = features(&a, 10);
            assert_eq!(v.len(), names().len());
            assert!(v.iter().all(|x| x.is_finite()));
        }
    }

    #[test]
    fn counts_depth_and_ratios_follow_the_graph() {
        let a = chain(vec![attention(), mlp(32), attention(), mlp(64)]);
        let v = features(&a, 10);
        assert_eq!(get(&v, "count_attention"), 2.0);
        assert_eq!(get(&v, "count_mlp"), 2.0);
        assert_eq!(get(&v, "count_add"), 4.0);
        // Residual adds are plumbing: four layers deep.
        assert_eq!(get(&v, "depth"), 4.0);
        assert_eq!(get(&v, "attention_heads"), 4.0);
        assert_eq!(get(&v, "mlp_ratio"), 3.0);
        assert_eq!(get(&v, "act_gelu"), 2.0);
        let cost = a.total_cost(10);
        assert_eq!(get(&v, "log_params"), cost.params.ln());
    }

    #[test]
    fn the_wl_bag_tells_apart_the_same_ops_in_another_order() {
        let ab = features(&chain(vec![attention(), mlp(32)]), 10);
        let ba = features(&chain(vec![mlp(32), attention()]), 10);
        let first_wl = names().iter().position(|n| n.starts_with("wl")).unwrap();
        assert_eq!(ab[..first_wl], ba[..first_wl], "same ops, same counts");
        assert_ne!(ab[first_wl..], ba[first_wl..], "order shows in the bag");
    }
}
