//! Export renderers: Graphviz and the Markdown report.

use super::search::status_of;
use super::CliError;
use crate::arch::{Arch, Network};
use crate::search::RunDir;
use crate::space::Space;
use crate::store::{read_events, SledStore};
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

/// The run report: progress, best against evaluations, front, winners.
pub fn markdown(
    dir: &RunDir,
    space: &Space,
    _store: &SledStore,
    chosen: &[super::export::Chosen],
) -> Result<String, CliError> {
    let events = read_events(&dir.events_path()).map_err(|e| CliError::Runtime(e.to_string()))?;
    let st = status_of(&events);
    let mut s = String::new();
    let _ = writeln!(s, "# archgram run `{}`\n", st.name);
    let _ = writeln!(
        s,
        "Space `{}` (task {}, metric {}), {} strategy, {}/{} evaluated, {} failed, {:.0}s. Cache: {} structural and {} functional hits saved {:.1}s of training.\n",
        space.name(),
        space.task_name,
        space.metric,
        st.strategy,
        st.evaluations,
        st.budget,
        st.failed,
        st.elapsed_secs,
        st.structural_hits,
        st.functional_hits,
        st.seconds_saved
    );
    let _ = writeln!(s, "## Best so far against evaluations\n\n| evaluations | best {} | candidate |\n|---|---|---|", space.metric);
    let mut evals = 0u64;
    let mut best = f64::NEG_INFINITY;
    for e in &events {
        if let Some(n) = e.get("evaluations").and_then(|v| v.as_u64()) {
            evals = n;
        }
        if e.event == "new_best" {
            let sc = e.get("score").and_then(|v| v.as_f64()).unwrap_or(0.0);
            if sc > best {
                best = sc;
                let _ = writeln!(
                    s,
                    "| {evals} | {sc:.4} | #{} |",
                    e.get("id").unwrap_or(&serde_json::json!(0))
                );
            }
        }
    }
    let _ = writeln!(s, "\n## Pareto front (score against active parameters and FLOPs per token)\n\n| id | score | active params | FLOPs/token |\n|---|---|---|---|");
    for p in &st.pareto {
        let _ = writeln!(
            s,
            "| #{} | {:.4} | {} | {} |",
            p.id,
            p.score,
            crate::arch::fmt_count(p.active_params),
            crate::arch::fmt_count(p.flops)
        );
    }
    let _ = writeln!(s, "\n## Winners\n");
    for (rank, super::export::Chosen { c, o, standing }) in chosen.iter().enumerate() {
        let _ = writeln!(
            s,
            "### {}. #{} — {} {}\n\n{} params, {} active, {} FLOPs/token; origin: {}\n\n```text\n{}\n```\n",
            rank + 1,
            c.id,
            space.metric,
            standing.label(),
            crate::arch::fmt_count(c.params),
            crate::arch::fmt_count(c.active_params),
            crate::arch::fmt_count(c.flops),
            c.origin,
            c.text
        );
        if let Some(routes) = o["routes"].as_array().filter(|r| !r.is_empty()) {
            let _ = writeln!(
                s,
                "| routed layer | kind | tokens | load | dropped |\n|---|---|---|---|---|"
            );
            for (i, r) in routes.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "| {i} | {} | {} | {} | {} |",
                    r["kind"].as_str().unwrap_or(""),
                    r["tokens"],
                    r["load"],
                    r["dropped"]
                );
            }
            s.push('\n');
        }
    }
    Ok(s)
}
