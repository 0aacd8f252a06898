//! Graphviz: a network as a digraph, routed bodies as dashed clusters.

use crate::arch::{Arch, Network};
use std::fmt::Write;

/// A Graphviz digraph of the network; routed bodies are clusters.
pub fn dot(net: &Network, title: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "digraph archgram {{\n  label=\"{}\";\n  rankdir=TB;\n  node [shape=box, fontname=\"Helvetica\"];", escape(title));
    dot_body(&net.arch, "n", &mut s, 1);
    s.push_str("}\n");
    s
}

fn escape(t: &str) -> String {
    t.replace('\\', "\\\\").replace('"', "\\\"")
}

fn dot_body(a: &Arch, prefix: &str, s: &mut String, depth: usize) {
    let pad = "  ".repeat(depth);
    for n in a.topo() {
        let node = a.node(n);
        let id = format!("{prefix}{}", n.index());
        let _ = writeln!(
            s,
            "{pad}{id} [label=\"{}\\n{}\"];",
            escape(&node.op.to_string()),
            node.shape
        );
        if let Some(body) = node.op.body() {
            let sub = format!("{id}_");
            let _ = writeln!(
                s,
                "{pad}subgraph cluster_{id} {{\n{pad}  label=\"{} body\"; style=dashed;",
                node.op.kind()
            );
            dot_body(body, &sub, s, depth + 1);
            let _ = writeln!(s, "{pad}}}");
            let _ = writeln!(
                s,
                "{pad}{id} -> {sub}{} [style=dotted];",
                body.input.index()
            );
        }
        for (port, i) in a.inputs(n).iter().enumerate() {
            let label = if a.inputs(n).len() > 1 && !node.op.is_commutative() {
                format!(" [label=\"{port}\"]")
            } else {
                String::new()
            };
            let _ = writeln!(s, "{pad}{prefix}{} -> {id}{label};", i.index());
        }
    }
}
