//! A whole candidate: its derivation (the text form users read and write),
//! the lowered graph, and its cost.

use super::context::{ArchContext, Limits};
use super::cost::Cost;
use super::graph::Arch;
use super::lower::lower;
use super::semantics::ArchSemantics;
use crate::fmt::fmt_count;
use crate::grammar::{Derivation, Reject};
use serde::{Deserialize, Serialize};
use std::fmt::Write;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Network {
    /// The tree of choices; its `Display` is the one-line text form.
    pub term: Derivation,
    pub arch: Arch,
    /// Embedding, graph and head together.
    pub cost: Cost,
}

impl Network {
    /// Lowers `term` for `ctx`. The term should already have passed the
    /// semantics (sampled, or replayed by the space); lowering re-checks
    /// shapes. Parameters with no effect are canonicalised first, so one
    /// network has one text form whichever spelling (or older run) it came
    /// from.
    pub fn build(mut term: Derivation, ctx: &ArchContext) -> Result<Network, Reject> {
        let sem = ArchSemantics::new(*ctx, Limits::default());
        crate::grammar::canonicalise(&sem, &mut term);
        let arch = lower(&term, ctx)?;
        let cost = arch.total_cost(ctx.vocab);
        Ok(Network { term, arch, cost })
    }

    /// The one-line text form (parses back with `Derivation::parse`).
    pub fn text(&self) -> String {
        self.term.to_string()
    }

    /// Properties a user should know about before trusting a score.
    pub fn flags(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.arch.causal {
            let mut noncausal = 0;
            visit_ops(&self.arch, &mut |op| {
                if op.is_noncausal_router() {
                    noncausal += 1;
                }
            });
            if noncausal > 0 {
                out.push(format!(
                    "{noncausal} router(s) choose tokens by looking at the whole sequence (non-causal in a decoder task)"
                ));
            }
        }
        out
    }

    /// One summary line: `params 1.23M  active 0.98M  flops/token 2.1M  nodes 23`.
    pub fn summary(&self) -> String {
        format!(
            "params {}  active {}  flops/token {}  nodes {}",
            fmt_count(self.cost.params),
            fmt_count(self.cost.active_params),
            fmt_count(self.cost.flops),
            self.cost.nodes
        )
    }

    /// The derivation as an indented tree.
    pub fn tree(&self) -> String {
        let mut s = String::new();
        tree_into(&self.term, 0, &mut s);
        s
    }

    /// The graph's ops in topological order with their output shapes.
    pub fn listing(&self) -> String {
        let mut s = String::new();
        listing_into(&self.arch, 0, &mut s);
        s
    }
}

fn tree_into(d: &Derivation, depth: usize, out: &mut String) {
    let params: Vec<String> = d.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = write!(out, "{:indent$}{}", "", d.form, indent = depth * 2);
    if !params.is_empty() {
        let _ = write!(out, "({})", params.join(", "));
    }
    if let Some(sym) = &d.symbol {
        let _ = write!(out, "    [{sym}]");
    }
    out.push('\n');
    for c in &d.children {
        tree_into(c, depth + 1, out);
    }
}

fn listing_into(a: &Arch, depth: usize, out: &mut String) {
    for n in a.topo() {
        let node = a.node(n);
        let ins: Vec<String> = a
            .inputs(n)
            .iter()
            .map(|i| format!("%{}", i.index()))
            .collect();
        let _ = writeln!(
            out,
            "{:indent$}%{:<3} {:<44} {:>10}  <- {}",
            "",
            n.index(),
            node.op.to_string(),
            node.shape.to_string(),
            if ins.is_empty() {
                "-".into()
            } else {
                ins.join(", ")
            },
            indent = depth * 4
        );
        if let Some(body) = node.op.body() {
            listing_into(body, depth + 1, out);
        }
    }
}

/// Calls `f` on every op, bodies included.
pub fn visit_ops(a: &Arch, f: &mut dyn FnMut(&super::ops::Op)) {
    for node in a.graph.node_weights() {
        f(&node.op);
        if let Some(body) = node.op.body() {
            visit_ops(body, f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ops::Attention;
    use crate::arch::ops::Op;
    use crate::arch::shape::Shape;

    fn ctx(causal: bool) -> ArchContext {
        ArchContext {
            seq_len: 8,
            width: 16,
            vocab: 10,
            causal,
            allow_noncausal_routing: true,
        }
    }

    fn build(text: &str, causal: bool) -> Network {
        Network::build(Derivation::parse(text).unwrap(), &ctx(causal))
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn kinds(a: &Arch) -> Vec<&'static str> {
        a.topo().into_iter().map(|n| a.node(n).op.kind()).collect()
    }

    #[test]
    fn a_pre_norm_block_lowers_to_norm_op_and_residual() {
        let n = build("block(norm=pre, mlp(ratio=2))", true);
        assert_eq!(kinds(&n.arch), ["input", "norm", "mlp", "add", "output"]);
        assert_eq!(n.arch.output_shape(), Shape::seq(8, 16));
        assert_eq!(crate::arch::check(&n.arch), Ok(()));
        // The text form prints back as it parses, with defaults filled in.
        let again = build(&n.text(), true);
        assert_eq!(again.text(), n.text());
        assert_eq!(again.cost, n.cost);
        // Cost: norm (2·16) + mlp (2·16·32), plus embedding and head.
        let body = 2.0 * 16.0 + 2.0 * 16.0 * 32.0;
        assert_eq!(n.cost.params, body + (10.0 * 16.0 + 16.0 * 10.0 + 10.0));
    }

    #[test]
    fn a_causal_task_masks_attention_and_a_routed_body_is_a_graph() {
        let n = build("block(attention(heads=2))", true);
        let att = n
            .arch
            .topo()
            .into_iter()
            .map(|i| &n.arch.node(i).op)
            .find(|op| op.kind() == "attention");
        assert_eq!(
            att,
            Some(&Op::Attention(Attention {
                heads: 2,
                head_dim: 8,
                causal: true
            }))
        );
        let m = build("block(moe(experts=4, top_k=1, mlp(ratio=1)))", false);
        let moe = m
            .arch
            .topo()
            .into_iter()
            .find(|&i| m.arch.node(i).op.kind() == "moe")
            .unwrap();
        let body = m.arch.node(moe).op.body().expect("an expert graph");
        assert_eq!(kinds(body), ["input", "mlp", "output"]);
        // Four experts' parameters, one expert's per token.
        let expert = 2.0 * 16.0 * 16.0;
        let router = 16.0 * 4.0;
        let rest = m.cost.params - 4.0 * expert - router;
        assert_eq!(m.cost.active_params, rest + expert + router);
    }

    #[test]
    fn forms_that_break_the_rules_are_rejected_with_a_reason() {
        // Heads must divide the width when head_dim is auto.
        let e = Network::build(Derivation::parse("attention(heads=3)").unwrap(), &ctx(true))
            .unwrap_err();
        assert!(!e.to_string().is_empty());
        // An expert body must be token-wise.
        let e = Network::build(
            Derivation::parse("moe(experts=2, attention(heads=2))").unwrap(),
            &ctx(false),
        )
        .unwrap_err();
        assert!(e.to_string().contains("token"), "{e}");
    }
}
