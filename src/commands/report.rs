//! The Markdown run report the `export` command writes.

use super::search::status_of;
use super::CliError;
use crate::search::Standing;
use crate::space::Space;
use crate::store::{CandidateRecord, EventKind, Store};
use serde_json::Value;
use std::fmt::Write;

/// A candidate chosen for export, with its stored record and outcome.
pub struct Chosen {
    pub c: CandidateRecord,
    pub o: Value,
    pub standing: Standing,
}

/// The run report: progress, best against evaluations, front, winners.
pub fn markdown(space: &Space, store: &dyn Store, chosen: &[Chosen]) -> Result<String, CliError> {
    let events = store.events()?;
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
    let mut evals = 0;
    let mut best = f64::NEG_INFINITY;
    for e in &events {
        match &e.kind {
            EventKind::RunStarted(r) => evals = r.evaluations,
            EventKind::Evaluated(ev) => evals = ev.evaluations,
            EventKind::Failed(f) => evals = f.evaluations,
            EventKind::RunFinished(r) => evals = r.evaluations,
            EventKind::NewBest(b) if b.score > best => {
                best = b.score;
                let _ = writeln!(s, "| {evals} | {:.4} | #{} |", b.score, b.id);
            }
            _ => {}
        }
    }
    let _ = writeln!(s, "\n## Pareto front (score against active parameters and FLOPs per token)\n\n| id | score | active params | FLOPs/token |\n|---|---|---|---|");
    for p in &st.pareto {
        let _ = writeln!(
            s,
            "| #{} | {:.4} | {} | {} |",
            p.id,
            p.score,
            crate::fmt::fmt_count(p.active_params),
            crate::fmt::fmt_count(p.flops)
        );
    }
    let _ = writeln!(s, "\n## Winners\n");
    for (rank, Chosen { c, o, standing }) in chosen.iter().enumerate() {
        let _ = writeln!(
            s,
            "### {}. #{} — {} {}\n\n{} params, {} active, {} FLOPs/token; origin: {}\n\n```text\n{}\n```\n",
            rank + 1,
            c.id,
            space.metric,
            standing.label(),
            crate::fmt::fmt_count(c.params),
            crate::fmt::fmt_count(c.active_params),
            crate::fmt::fmt_count(c.flops),
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
