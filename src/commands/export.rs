//! `export`: a run's best architectures as files other tools read.

use super::locate::{OpenRun, RunRef};
use super::report::{self, Chosen};
use super::CliError;
use crate::cli::{ExportFormat, WeightsArg};
use crate::eval::program::Program;
use crate::eval::{train, Weights};
use crate::export::pytorch::{self, Provenance};
use crate::search::pareto::{front, Point};
use crate::search::{score_of, standings, train_config, RunSettings, Standing};
use crate::store::{CandidateBrief, Store};
use crate::tasks::Task;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;

/// Sequences of held-out data in a probe file.
const PROBE_SEQUENCES: usize = 4;

pub fn export(
    run: &RunRef,
    top: Option<usize>,
    pareto: bool,
    format: ExportFormat,
    weights: Option<WeightsArg>,
    out_dir: Option<PathBuf>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    if weights.is_some() && format != ExportFormat::Pytorch {
        return Err(CliError::bad("--weights goes with --format pytorch"));
    }
    let OpenRun {
        store,
        settings,
        space,
    } = run.open()?;
    let chosen = choose(store.as_ref(), &settings, top, pareto)?;
    if chosen.is_empty() {
        return Err(CliError::bad(format!(
            "{}: no evaluated candidates to export yet",
            run.label()
        )));
    }
    let out_dir = match out_dir {
        Some(d) => d,
        None => run.export_dir()?,
    };
    std::fs::create_dir_all(&out_dir).map_err(|e| {
        CliError::runtime_because(format!("cannot create {}", out_dir.display()), e)
    })?;
    let write = |name: String, bytes: &[u8]| -> Result<PathBuf, CliError> {
        let p = out_dir.join(name);
        std::fs::write(&p, bytes)
            .map_err(|e| CliError::runtime_because(format!("cannot write {}", p.display()), e))?;
        Ok(p)
    };
    if format == ExportFormat::Md {
        let p = write(
            "report.md".into(),
            report::markdown(&space, store.as_ref(), &chosen)?.as_bytes(),
        )?;
        writeln!(out, "{}", p.display())?;
        return Ok(());
    }
    let run_name = run.name();
    for (rank, Chosen { c, o, standing }) in chosen.iter().enumerate() {
        let net = space.network(c.derivation.clone()).map_err(|e| {
            CliError::runtime_because(format!("candidate #{} no longer lowers", c.id), e)
        })?;
        let stem = format!("{:02}-id{}", rank + 1, c.id);
        let doc = json!({"id": c.id, "rank": rank + 1, "arch": c.text, "hashes": c.hashes,
                         "origin": c.origin, "parent": c.parent,
                         "score": standing.score(), "score_kind": standing.kind(),
                         "confirmed": standing.confirmed, "outcome": o, "graph": net.arch});
        match format {
            ExportFormat::Json => {
                let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
                let p = write(format!("{stem}.json"), text.as_bytes())?;
                writeln!(out, "{}", p.display())?;
            }
            ExportFormat::Ron => {
                let text = ron::ser::to_string_pretty(&doc, ron::ser::PrettyConfig::default())
                    .map_err(|e| CliError::runtime_because("cannot write RON", e))?;
                let p = write(format!("{stem}.ron"), text.as_bytes())?;
                writeln!(out, "{}", p.display())?;
            }
            ExportFormat::Dot => {
                let text =
                    crate::export::dot::dot(&net, &format!("#{} {}", c.id, standing.label()));
                let p = write(format!("{stem}.dot"), text.as_bytes())?;
                writeln!(out, "{}", p.display())?;
            }
            ExportFormat::Pytorch => {
                let task = space
                    .build_task(space.file.seed)
                    .map_err(|e| CliError::bad_because("the space's task", e))?;
                let prog = Program::build(&net.arch, task.vocab()).map_err(|e| {
                    CliError::runtime(format!("candidate #{} does not compile: {e}", c.id))
                })?;
                let origin = format!(
                    "Run {run_name}, candidate #{}, {} {}.",
                    c.id,
                    o["metric"].as_str().unwrap_or("score"),
                    standing.label()
                );
                let routing = space.file.train.routing;
                let source = pytorch::module_source(
                    &prog,
                    &routing,
                    &Provenance {
                        arch: &c.text,
                        origin: &origin,
                    },
                );
                let p = write(format!("{stem}.py"), source.as_bytes())?;
                writeln!(out, "{}", p.display())?;
                let Some(kind) = weights else { continue };
                let w = match kind {
                    WeightsArg::Init => Weights::init(&prog, settings.seed),
                    WeightsArg::Trained => {
                        let steps = if c.steps > 0 { c.steps } else { settings.steps };
                        // Training is deterministic given the run's seed, so
                        // this retrains exactly the weights the search scored.
                        let cfg = train_config(
                            &space,
                            settings.seed,
                            steps,
                            crate::eval::DeviceKind::Cpu,
                        );
                        let t = train(&prog, task.as_ref(), &cfg).map_err(|e| {
                            CliError::runtime(format!("retraining #{} failed: {e}", c.id))
                        })?;
                        // Scored by the run's rule, as the search scored it.
                        let score = cfg.train.score.of(&t);
                        let recorded = score_of(o);
                        let same = (score - recorded).abs() < 1e-9;
                        writeln!(
                            out,
                            "  retrained #{} for {steps} steps: {} {score:.4} ({})",
                            c.id,
                            cfg.train.score.name(),
                            if same {
                                "as recorded".to_string()
                            } else {
                                format!("the search recorded {recorded:.4}")
                            }
                        )?;
                        t.weights
                    }
                };
                let meta = vec![
                    (
                        "archgram".to_string(),
                        env!("CARGO_PKG_VERSION").to_string(),
                    ),
                    ("arch".to_string(), c.text.clone()),
                    ("weights".to_string(), kind.name().to_string()),
                    ("candidate".to_string(), c.id.to_string()),
                    ("seed".to_string(), settings.seed.to_string()),
                ];
                let bytes = pytorch::weights_file(&prog, &w, meta).map_err(CliError::runtime)?;
                let p = write(format!("{stem}.safetensors"), &bytes)?;
                writeln!(out, "{}", p.display())?;
                let bytes = probe(&prog, &w, &routing, task.as_ref())?;
                let p = write(format!("{stem}.probe.safetensors"), &bytes)?;
                writeln!(out, "{}", p.display())?;
            }
            ExportFormat::Md => unreachable!("handled above"),
        }
    }
    Ok(())
}

/// Archgram's logits on the first held-out sequences, for `--check`.
fn probe(
    prog: &Program,
    w: &Weights,
    routing: &crate::routing::RouterSettings,
    task: &dyn Task,
) -> Result<Vec<u8>, CliError> {
    let batch = task
        .test_batches(PROBE_SEQUENCES)
        .into_iter()
        .next()
        .ok_or_else(|| CliError::runtime("the task has no held-out data"))?;
    let logits = w.logits(prog, routing, &batch);
    pytorch::probe_file(&batch.inputs, batch.batch, batch.seq, &logits).map_err(CliError::runtime)
}

/// The evaluated, non-duplicate architectures to export in the run's final
/// order (confirmed finalists first).
fn choose(
    store: &dyn Store,
    settings: &RunSettings,
    top: Option<usize>,
    pareto: bool,
) -> Result<Vec<Chosen>, CliError> {
    let standings = standings(store, settings)?;
    // Full records and outcomes (a routed candidate's runs to hundreds of
    // kilobytes) are read for the chosen only.
    let full = |standing: Standing| -> Result<Option<Chosen>, CliError> {
        let id = standing.ranked.id;
        Ok(match (store.candidate(id)?, store.outcome(id)?) {
            (Some(c), Some(o)) => Some(Chosen { c, o, standing }),
            _ => None,
        })
    };
    let mut rows = Vec::new();
    if pareto {
        let records: HashMap<u64, CandidateBrief> = store
            .candidate_briefs()?
            .into_iter()
            .map(|c| (c.id, c))
            .collect();
        let pts: Vec<Point> = standings
            .iter()
            .filter_map(|s| {
                let c = records.get(&s.ranked.id)?;
                Some(Point {
                    id: c.id,
                    score: s.score(),
                    active_params: c.active_params,
                    flops: c.flops,
                })
            })
            .collect();
        let ids: HashSet<u64> = front(&pts).iter().map(|p| p.id).collect();
        for s in standings.into_iter().filter(|s| ids.contains(&s.ranked.id)) {
            rows.extend(full(s)?);
        }
    } else {
        let want = top.unwrap_or(1);
        for s in standings {
            if rows.len() == want {
                break;
            }
            rows.extend(full(s)?);
        }
    }
    Ok(rows)
}
