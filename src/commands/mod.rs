//! The commands behind the CLI. Each writes its report to `out` and returns
//! a typed error whose kind decides the exit code.

#[cfg(feature = "cuda")]
mod cuda_kernels;
mod export;
mod fidelity;
pub mod locate;
mod report;
mod search;
mod shared;
mod simulate;

pub use search::status_of;

use crate::arch::{Limits, Network};
use crate::cli::{Command, SampleFormat};
use crate::eval::{self, DeviceKind};
use crate::fmt::fmt_count;
use crate::grammar::{Derivation, SourceError};
use crate::search::SearchError;
use crate::seed;
use crate::space::{ArchError, Space};
use crate::store::StoreError;
use crate::tasks;
use serde_json::json;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A cause kept under a command's error and printed after its message.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a command failed. The variant decides the exit code; each keeps its
/// cause, which `report` prints after the message.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A user file is wrong, at file:line:col where known: exit 2.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The user's input is wrong (a flag, a path, an architecture): exit 2.
    #[error("{what}")]
    BadInput {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
    /// Something failed while running: exit 1.
    #[error("{what}")]
    Runtime {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
    /// Writing the command's report to stdout failed: exit 1, or a quiet
    /// success when the reader went away (`archgram sample … | head`).
    #[error("cannot write output")]
    Output(#[source] io::Error),
    /// A run or its store failed; bad input or runtime by the error's kind.
    #[error(transparent)]
    Search(#[from] SearchError),
    /// A run failed after finishing some work, which it keeps: the error,
    /// and the run folder to resume.
    #[error("{error}")]
    Resumable { error: Box<CliError>, run: PathBuf },
    /// Stopped by a signal; the run can be resumed: exit 130.
    #[error("interrupted")]
    Interrupted,
}

impl CliError {
    pub fn bad(what: impl Into<String>) -> Self {
        CliError::BadInput {
            what: what.into(),
            cause: None,
        }
    }

    pub fn bad_because(what: impl Into<String>, cause: impl Into<Cause>) -> Self {
        CliError::BadInput {
            what: what.into(),
            cause: Some(cause.into()),
        }
    }

    pub fn runtime(what: impl Into<String>) -> Self {
        CliError::Runtime {
            what: what.into(),
            cause: None,
        }
    }

    pub fn runtime_because(what: impl Into<String>, cause: impl Into<Cause>) -> Self {
        CliError::Runtime {
            what: what.into(),
            cause: Some(cause.into()),
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Source(_) | CliError::BadInput { .. } => 2,
            CliError::Search(SearchError::BadInput { .. }) => 2,
            CliError::Runtime { .. } | CliError::Output(_) | CliError::Search(_) => 1,
            CliError::Resumable { error, .. } => error.exit_code(),
            CliError::Interrupted => 130,
        }
    }

    /// The reader of stdout went away: not a failure of the command.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }

    /// The message and every cause under it, `what: cause: cause`, then
    /// what to do about it where there is something to do.
    pub fn report(&self) -> String {
        if let CliError::Resumable { error, run } = self {
            return format!(
                "{}\nthe run keeps every finished evaluation: once the cause is fixed, continue with `archgram resume {}`",
                error.report(),
                run.display()
            );
        }
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        text
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        CliError::Search(SearchError::Store(e))
    }
}

impl From<io::Error> for CliError {
    fn from(e: io::Error) -> Self {
        CliError::Output(e)
    }
}

pub fn run(cmd: Command, out: &mut dyn Write) -> Result<(), CliError> {
    match cmd {
        Command::Sample {
            space,
            n,
            seed,
            format,
        } => sample(&space, n, seed, format, out),
        Command::Check { space, samples } => check(&space, samples, out),
        Command::Show { arch, space, json } => show(&arch, &space, json, out),
        Command::Tasks { json } => list_tasks(json, out),
        Command::Hash { archs, space } => hash(&archs, space.as_deref(), out),
        Command::Search {
            space,
            flags,
            no_tui,
            runs,
            shared: crate::cli::SharedFlags { db, lease },
        } => match db {
            // `--db` without a URL: the address is in ARCHGRAM_DB.
            Some(url) => {
                let url = Some(url).filter(|u| !u.is_empty());
                let (target, _) = locate::required_database(url, "search --db")?;
                shared::search(&space, flags, &target, lease, no_tui, out)
            }
            None => search::search(&space, flags, no_tui, &runs, out),
        },
        Command::Worker {
            db,
            run,
            workers,
            device,
            lease,
        } => {
            let (target, _) = locate::required_database(db, "worker")?;
            shared::worker(&target, run.as_deref(), workers, &device, lease, out)
        }
        Command::Resume {
            run,
            db,
            time,
            no_tui,
        } => match locate::database(&crate::cli::DbFlag { db })? {
            Some((target, _)) => shared::resume(&run.to_string_lossy(), &target, time, no_tui, out),
            None => search::resume(&run, time, no_tui, out),
        },
        Command::Watch { run, db } => search::watch(&locate::locate(&run, &db)?),
        Command::Fidelity { run, db, flags } => {
            fidelity::fidelity(&locate::locate(&run, &db)?, flags, out)
        }
        Command::Status { run, db, json } => search::status(&locate::locate(&run, &db)?, json, out),
        Command::Export {
            run,
            db,
            top,
            pareto,
            format,
            weights,
            out: dir,
        } => export::export(
            &locate::locate(&run, &db)?,
            top,
            pareto,
            format,
            weights,
            dir,
            out,
        ),
        Command::Simulate(args) => simulate::simulate(&args, out),
        #[cfg(feature = "cuda")]
        Command::CudaKernels { omit, module } => cuda_kernels::cuda_kernels(&omit, &module, out),
        Command::Eval {
            space,
            arch,
            sample,
            steps,
            device,
            seed,
            json,
        } => eval(
            &space,
            arch.as_deref(),
            sample,
            steps,
            &device,
            seed,
            json,
            out,
        ),
    }
}

fn load(path: &Path) -> Result<Space, CliError> {
    Ok(Space::load(path)?)
}

/// One text line per network: exact numbers, then the text form.
pub fn network_line(n: &Network) -> String {
    format!(
        "params={} active={} flops={} nodes={} {}",
        n.cost.params, n.cost.active_params, n.cost.flops, n.cost.nodes, n.term
    )
}

fn sample(
    path: &Path,
    n: usize,
    seed: Option<u64>,
    format: SampleFormat,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let space = load(path)?;
    let master = seed.unwrap_or(space.file.seed);
    for i in 0..n as u64 {
        let mut rng = seed::rng(master, "sample", i);
        let net = space.sample(&mut rng).map_err(|e| {
            space.error_at("limits", format!("the space cannot meet its limits: {e}"))
        })?;
        match format {
            SampleFormat::Text => writeln!(out, "{}", network_line(&net))?,
            SampleFormat::Jsonl => writeln!(
                out,
                "{}",
                json!({
                    "index": i,
                    "arch": net.text(),
                    "params": net.cost.params,
                    "active_params": net.cost.active_params,
                    "flops": net.cost.flops,
                    "nodes": net.cost.nodes,
                    "height": net.term.height(),
                    "flags": net.flags(),
                })
            )?,
        }
    }
    Ok(())
}

fn quantiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    v.sort_by(f64::total_cmp);
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    (mean, v[v.len() / 2], v[v.len() - 1])
}

fn check(path: &Path, samples: usize, out: &mut dyn Write) -> Result<(), CliError> {
    let space = load(path)?;
    let ctx = space.ctx();
    let l = &space.file.limits;
    writeln!(out, "space     {} ({})", space.name(), path.display())?;
    writeln!(
        out,
        "grammar   {}: {} symbols, {} alternatives, start `{}`",
        space.file.grammar.display(),
        space.grammar.rules.len(),
        space.grammar.alternative_count(),
        space.grammar.start
    )?;
    for w in &space.grammar_warnings {
        writeln!(out, "warning   {w}")?;
    }
    writeln!(
        out,
        "task      {} (vocab {}, {} tokens, {}, metric {})",
        space.task_name,
        ctx.vocab,
        ctx.seq_len,
        if ctx.causal { "causal" } else { "non-causal" },
        space.metric
    )?;
    let lim = |v: Option<f64>| v.map_or("none".to_string(), fmt_count);
    writeln!(
        out,
        "limits    depth {}, nodes {}, params {}, active params {}, flops/token {}",
        l.max_depth,
        lim(l.max_nodes),
        lim(l.max_params),
        lim(l.max_active_params),
        lim(l.max_flops)
    )?;

    // Valid samples under the limits: depth and size.
    let mut heights = Vec::new();
    let mut sizes = Vec::new();
    let mut params = Vec::new();
    let mut failures = 0;
    let mut first_failure = None;
    for i in 0..samples as u64 {
        match space.sample(&mut seed::rng(space.file.seed, "check", i)) {
            Ok(n) => {
                heights.push(n.term.height() as f64);
                sizes.push(n.term.size() as f64);
                params.push(n.cost.params);
            }
            Err(e) => {
                failures += 1;
                first_failure.get_or_insert(e);
            }
        }
    }
    // A space nothing can be drawn from is as unusable here as in `sample`.
    if let (true, Some(e)) = (heights.is_empty(), first_failure) {
        return Err(space
            .error_at(
                "limits",
                format!("no sample could be drawn ({samples} tried): {e}"),
            )
            .into());
    }
    let trivial = |nets: &mut dyn Iterator<Item = Network>| {
        let (mut n, mut no_context, mut no_input) = (0usize, 0usize, 0usize);
        for net in nets {
            n += 1;
            match space.trivial(&net) {
                Some(why) if why.starts_with("ignores") => no_input += 1,
                Some(_) => no_context += 1,
                None => {}
            }
        }
        (n, no_context, no_input)
    };
    let spread = {
        let mut v = params.clone();
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v.get(((v.len() - 1) as f64 * q).round() as usize).copied();
        (at(0.1), at(0.9))
    };
    let (hm, hmed, hmax) = quantiles(heights);
    let (sm, smed, smax) = quantiles(sizes);
    let (pm, pmed, pmax) = quantiles(params);
    writeln!(
        out,
        "samples   {} drawn, {} failed; derivation height mean {hm:.1} median {hmed} max {hmax}; size mean {sm:.1} median {smed} max {smax}",
        samples, failures
    )?;
    writeln!(
        out,
        "params    mean {} median {} max {}; 10% below {}, 10% above {}",
        fmt_count(pm),
        fmt_count(pmed),
        fmt_count(pmax),
        fmt_count(spread.0.unwrap_or(0.0)),
        fmt_count(spread.1.unwrap_or(0.0))
    )?;
    // Networks that cannot beat chance by construction: what a search
    // would spend training on for nothing.
    let count =
        |draw: &dyn Fn(u64) -> Option<Network>| trivial(&mut (0..samples as u64).filter_map(draw));
    let say = |(n, no_context, no_input): (usize, usize, usize), what: &str| {
        format!(
            "{:.1}% of {n} {what} are trivial: {no_context} mix no tokens{}, {no_input} ignore their input",
            100.0 * (no_context + no_input) as f64 / n.max(1) as f64,
            if space.needs_context {
                " (the task needs context)"
            } else {
                " (allowed: the task does not need context)"
            }
        )
    };
    let sampled = count(&|i| {
        space
            .sample(&mut seed::rng(space.file.seed, "check", i))
            .ok()
    });
    writeln!(out, "trivial   {}", say(sampled, "samples"))?;
    if space.file.reject_trivial {
        let drawn = count(&|i| space.draw(&mut seed::rng(space.file.seed, "check", i)).ok());
        writeln!(
            out,
            "          reject_trivial is on; without it {}",
            say(drawn, "grammar draws")
        )?;
    }

    // The same grammar without size limits: how often do plain PCFG draws
    // meet them? (A low fraction means the limits, not the weights, shape the
    // space.)
    let mut free = crate::arch::ArchSemantics::new(*ctx, Limits::default());
    free.limits = Limits::default();
    let sampler = crate::grammar::Sampler::new(&space.grammar, &free, space.sampler_config);
    let (mut met, mut drawn) = (0usize, 0usize);
    for i in 0..samples as u64 {
        let Ok((d, _)) = sampler.sample(
            &free.start(),
            &mut seed::rng(space.file.seed, "check-free", i),
        ) else {
            continue;
        };
        drawn += 1;
        if let Ok(n) = Network::build(d, ctx) {
            let c = n.cost;
            let ok = |v: f64, m: Option<f64>| m.is_none_or(|m| v <= m);
            if ok(c.params, l.max_params)
                && ok(c.active_params, l.max_active_params)
                && ok(c.flops, l.max_flops)
                && ok(c.nodes, l.max_nodes)
            {
                met += 1;
            }
        }
    }
    writeln!(
        out,
        "limits    {:.1}% of {} unconstrained draws meet them",
        if drawn == 0 {
            0.0
        } else {
            100.0 * met as f64 / drawn as f64
        },
        drawn
    )?;
    for (name, text) in &space.file.baselines {
        let n = space
            .parse_arch(text)
            .map_err(|e| CliError::bad_because(format!("baseline `{name}`"), e))?;
        writeln!(out, "baseline  {name}: {}", n.summary())?;
    }
    writeln!(out, "ok")?;
    Ok(())
}

/// The architecture text from an argument that is either a text form or a
/// file holding one (the first non-empty, non-comment line). A text form
/// without `(` is a single form name, so an argument with no `(` that
/// exists as a file, or has a `.`, `/`, `\` or `~` in it, is a file's path
/// (`show ./missing.txt` is a missing file, not a syntax error).
fn arch_text(arg: &str) -> Result<String, CliError> {
    let p = Path::new(arg);
    let is_path = !arg.contains('(') && (p.is_file() || arg.contains(['.', '/', '\\', '~']));
    if is_path {
        let text = std::fs::read_to_string(p).map_err(|e| {
            CliError::bad_because(format!("{arg}: cannot read the architecture file"), e)
        })?;
        return text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("//") && !l.starts_with('#'))
            .map(str::to_string)
            .ok_or_else(|| CliError::bad(format!("{arg}: no architecture in the file")));
    }
    Ok(arg.to_string())
}

pub fn parse_arch(space: &Space, arg: &str) -> Result<Network, CliError> {
    let text = arch_text(arg)?;
    space.parse_arch(&text).map_err(|e| match e {
        // A syntax error is located in the argument, as `architecture:1:5`.
        ArchError::Syntax(s) => CliError::Source(SourceError {
            file: Some(PathBuf::from("architecture")),
            ..s
        }),
        other => CliError::bad_because("architecture", other),
    })
}

fn show(arg: &str, path: &Path, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let space = load(path)?;
    let net = parse_arch(&space, arg)?;
    if json {
        let v = json!({
            "arch": net.text(),
            "params": net.cost.params,
            "active_params": net.cost.active_params,
            "flops": net.cost.flops,
            "nodes": net.cost.nodes,
            "flags": net.flags(),
            "graph": net.arch,
        });
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        )?;
        return Ok(());
    }
    let ctx = space.ctx();
    writeln!(out, "{}", net.text())?;
    writeln!(out)?;
    write!(out, "{}", net.tree())?;
    writeln!(out)?;
    writeln!(
        out,
        "graph ({} tokens × {} wide in, {}):",
        ctx.seq_len,
        ctx.width,
        if ctx.causal { "causal" } else { "non-causal" }
    )?;
    write!(out, "{}", net.listing())?;
    writeln!(out)?;
    writeln!(
        out,
        "parameters {} ({})   active {}   FLOPs/token {}   nodes {}",
        net.cost.params,
        fmt_count(net.cost.params),
        fmt_count(net.cost.active_params),
        fmt_count(net.cost.flops),
        net.cost.nodes
    )?;
    for f in net.flags() {
        writeln!(out, "note: {f}")?;
    }
    Ok(())
}

fn list_tasks(json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let cat = tasks::catalog();
    if json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&cat).unwrap_or_default()
        )?;
        return Ok(());
    }
    for t in cat {
        writeln!(
            out,
            "{}  ({}, metric {}{})\n    {}",
            t.name,
            if t.causal { "causal" } else { "non-causal" },
            t.metric,
            if t.needs_file { ", needs `file`" } else { "" },
            t.description
        )?;
        for p in t.params {
            let range = if p.integer {
                format!("{}..={}", p.min, p.max)
            } else {
                format!("[{}, {}]", p.min, p.max)
            };
            writeln!(
                out,
                "    {:<20} default {:<8} {:<16} {}",
                p.name, p.default, range, p.help
            )?;
        }
    }
    Ok(())
}

/// The device a `--device` flag names, opened once before any work: a
/// name that is no device, or CUDA in a build without it, is the user's to
/// fix (exit 2); a GPU that does not open is the machine's (exit 1), with
/// the driver's words.
pub(crate) fn open_device(flag: &str) -> Result<DeviceKind, CliError> {
    let device = DeviceKind::parse(flag).map_err(|e| CliError::bad(format!("--device {e}")))?;
    opened(device, &format!("--device {flag}"))?;
    Ok(device)
}

/// Opens `device`; `what` names where it came from in an error.
pub(crate) fn opened(device: DeviceKind, what: &str) -> Result<(), CliError> {
    device.open().map_err(|e| match e {
        eval::EvalError::CudaNotBuilt => CliError::bad_because(what, e),
        eval::EvalError::CudaOpen { .. } => CliError::runtime_because(what, e),
    })
}

#[allow(clippy::too_many_arguments)]
fn eval(
    path: &Path,
    arch: Option<&str>,
    sample: Option<u64>,
    steps: Option<usize>,
    device: &str,
    seed: Option<u64>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let device = open_device(device)?;
    let space = load(path)?;
    let net = match (arch, sample) {
        (Some(a), _) => parse_arch(&space, a)?,
        (None, Some(s)) => space
            .sample(&mut seed::rng(s, "sample", 0))
            .map_err(|e| CliError::bad_because(path.display().to_string(), e))?,
        (None, None) => return Err(CliError::bad("give --arch or --sample")),
    };
    let seed = seed.unwrap_or(space.file.seed);
    let task = space
        .build_task(space.file.seed)
        .map_err(|e| CliError::bad_because(path.display().to_string(), e))?;
    let cfg = crate::search::train_config(
        &space,
        seed,
        steps.unwrap_or(space.file.train.steps),
        device,
    );
    let outcome = eval::evaluate(&net.arch, task.as_ref(), &cfg);
    if json {
        let v = json!({ "arch": net.text(), "outcome": outcome });
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        )?;
    } else {
        writeln!(out, "{}", net.text())?;
        writeln!(out, "{}", outcome.report())?;
    }
    match &outcome.status {
        eval::Status::Ok => Ok(()),
        eval::Status::Failed { reason, .. } => Err(CliError::runtime(format!(
            "the candidate did not train: {reason}"
        ))),
    }
}

/// A shipped space file (`spaces/NAME`) for a command run without
/// `--space`: from the current directory, else beside the executable (or
/// any folder above it, as for `target/release/archgram`), else in the
/// source tree the binary was built from.
pub fn default_space(name: &str) -> Result<PathBuf, CliError> {
    let rel = Path::new("spaces").join(name);
    let mut tried = vec![PathBuf::from(".")];
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        tried.extend(dir.ancestors().map(Path::to_path_buf));
    }
    tried.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    tried
        .iter()
        .map(|d| d.join(&rel))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CliError::bad(format!(
                "no --space given and the default {} was not found in the current directory, beside the archgram executable or in {}; pass --space FILE",
                rel.display(),
                env!("CARGO_MANIFEST_DIR")
            ))
        })
}

fn hash(archs: &[String], path: Option<&Path>, out: &mut dyn Write) -> Result<(), CliError> {
    use crate::hash::{functional, Functional};
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => default_space("quickstart.ron")?,
    };
    let space = load(&path)?;
    let mut nets = Vec::with_capacity(archs.len());
    for a in archs {
        let net = parse_arch(&space, a)?;
        let structural = crate::hash::structural_hash(&net.arch);
        let verdict = functional(&net.arch);
        let h = crate::hash::Hashes {
            structural,
            functional: match &verdict {
                Functional::Hash(f) => Some(*f),
                Functional::Degenerate(_) => None,
            },
        };
        writeln!(out, "{h}  {}", net.text())?;
        nets.push((net, h, verdict));
    }
    for (i, (_, _, v)) in nets.iter().enumerate() {
        if let Functional::Degenerate(why) = v {
            writeln!(
                out,
                "#{}: degenerate, never merged on its outputs: {why}",
                i + 1
            )?;
        }
    }
    for i in 0..nets.len() {
        for j in i + 1..nets.len() {
            let ((a, ha, _), (b, hb, _)) = (&nets[i], &nets[j]);
            let diff = first_difference(&a.term, &b.term, &mut Vec::new());
            let at = |d: &Option<String>| d.clone().unwrap_or_else(|| "none: the same text".into());
            let verdict = if ha.structural == hb.structural {
                "merged at the structural stage (the same graph)".to_string()
            } else {
                match (ha.functional, hb.functional) {
                    (Some(x), Some(y)) if x == y => format!(
                        "merged at the functional stage (equal outputs on every probe; first difference {})",
                        at(&diff)
                    ),
                    (None, _) | (_, None) => {
                        let which: Vec<String> = [(i, ha), (j, hb)]
                            .iter()
                            .filter(|(_, h)| h.functional.is_none())
                            .map(|(k, _)| format!("#{}", k + 1))
                            .collect();
                        format!(
                            "not merged: {} {} degenerate, never merged on outputs; first difference {}",
                            which.join(" and "),
                            if which.len() == 1 { "is" } else { "are" },
                            at(&diff)
                        )
                    }
                    _ => format!(
                        "not merged: first difference {}; their outputs differ",
                        at(&diff)
                    ),
                }
            };
            writeln!(out, "#{} and #{}: {verdict}", i + 1, j + 1)?;
        }
    }
    Ok(())
}

/// Where two derivations first differ, in pre-order: the child path and
/// both nodes (form and parameters).
fn first_difference(a: &Derivation, b: &Derivation, path: &mut Vec<usize>) -> Option<String> {
    let head = |d: &Derivation| {
        let params: Vec<String> = d.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if params.is_empty() {
            d.form.clone()
        } else {
            format!("{}({})", d.form, params.join(", "))
        }
    };
    let at = |path: &[usize]| {
        if path.is_empty() {
            "at the root".to_string()
        } else {
            let p: Vec<String> = path.iter().map(|i| i.to_string()).collect();
            format!("at child path {}", p.join("."))
        }
    };
    if a.form != b.form || a.params != b.params || a.children.len() != b.children.len() {
        let what = if a.form == b.form && a.params == b.params {
            format!(
                "`{}` with {} vs {} children",
                head(a),
                a.children.len(),
                b.children.len()
            )
        } else {
            format!("`{}` vs `{}`", head(a), head(b))
        };
        return Some(format!("{}: {what}", at(path)));
    }
    for (i, (x, y)) in a.children.iter().zip(&b.children).enumerate() {
        path.push(i);
        let d = first_difference(x, y, path);
        path.pop();
        if d.is_some() {
            return d;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;
    #[test]
    fn a_default_space_that_cannot_be_found_says_what_to_pass() {
        let e = super::default_space("no-such-space.ron").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("pass --space FILE"), "{e}");
        assert!(super::default_space("quickstart.ron").is_ok());
    }

    /// A held store is told apart by its type, all the way up: the store's
    /// `Held`, a runtime failure (exit 1) at the CLI, with the message that
    /// says what to do.
    #[test]
    fn a_held_store_is_classified_by_variant_and_exits_1() {
        let dir = tempfile::tempdir().unwrap();
        let _held = SledStore::open(dir.path()).unwrap();
        let e = SledStore::open(dir.path())
            .err()
            .expect("the store is held");
        assert!(matches!(e, StoreError::Held { .. }), "{e:?}");
        let e = CliError::from(e);
        assert!(
            matches!(
                e,
                CliError::Search(SearchError::Store(StoreError::Held { .. }))
            ),
            "{e:?}"
        );
        assert_eq!(e.exit_code(), 1);
        assert!(
            e.report().contains("another archgram process"),
            "{}",
            e.report()
        );
    }

    /// Only a write to stdout that failed with `BrokenPipe` is quiet; any
    /// other output error, or a broken pipe met elsewhere, is a failure.
    #[test]
    fn a_broken_pipe_is_told_by_its_kind() {
        use std::io::{Error, ErrorKind};
        let pipe = CliError::from(Error::from(ErrorKind::BrokenPipe));
        assert!(pipe.is_broken_pipe());
        let full = CliError::from(Error::from_raw_os_error(28));
        assert!(!full.is_broken_pipe());
        assert_eq!(full.exit_code(), 1);
        assert!(
            full.report().starts_with("cannot write output: "),
            "{}",
            full.report()
        );
        let elsewhere = CliError::runtime_because("dashboard", Error::from(ErrorKind::BrokenPipe));
        assert!(!elsewhere.is_broken_pipe());
    }

    /// Exit codes by variant, and the cause printed after the message.
    #[test]
    fn errors_keep_their_cause_and_exit_by_variant() {
        let missing = super::arch_text("./no-such-arch.txt").unwrap_err();
        assert!(matches!(missing, CliError::BadInput { .. }), "{missing:?}");
        assert_eq!(missing.exit_code(), 2);
        let io = std::error::Error::source(&missing)
            .and_then(|c| c.downcast_ref::<io::Error>())
            .expect("the read error is kept");
        assert_eq!(io.kind(), io::ErrorKind::NotFound);
        let text = missing.report();
        assert!(
            text.starts_with("./no-such-arch.txt: cannot read the architecture file: "),
            "{text}"
        );

        let bad_run = CliError::from(SearchError::bad("not a run"));
        assert_eq!(bad_run.exit_code(), 2);
        let io_failure = CliError::from(SearchError::io(
            "cannot write runs/x/space.ron",
            io::Error::from_raw_os_error(28),
        ));
        assert_eq!(io_failure.exit_code(), 1);
        let resumable = CliError::Resumable {
            error: Box::new(io_failure),
            run: PathBuf::from("runs/x"),
        };
        assert_eq!(resumable.exit_code(), 1);
        let text = resumable.report();
        let (first, hint) = text.split_once('\n').unwrap();
        assert!(
            first.starts_with("cannot write runs/x/space.ron: "),
            "{text}"
        );
        assert!(
            first.len() > "cannot write runs/x/space.ron: ".len(),
            "{text}"
        );
        assert!(hint.contains("archgram resume runs/x"), "{text}");
        assert_eq!(CliError::Interrupted.exit_code(), 130);
    }
}
