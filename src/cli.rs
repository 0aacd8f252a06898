//! Command-line definitions (clap). Only syntax lives here; the commands
//! themselves are in `commands`.

use clap::builder::RangedU64ValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// A count of 1 or more (`--budget 0` and friends are refused by clap, exit 2).
fn at_least_one() -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(1..)
}

/// `--time`: a duration in humantime's syntax (`90s`, `10m`, `1h30m`) or
/// plain seconds; zero is refused.
fn run_time(s: &str) -> Result<Duration, Box<dyn std::error::Error + Send + Sync>> {
    let d = match s.trim().parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(s.trim())?,
    };
    if d.is_zero() {
        return Err("expected a duration longer than zero, such as 90s, 10m or 2h".into());
    }
    Ok(d)
}

#[derive(Parser, Debug)]
#[command(
    name = "archgram",
    version,
    about = "Neural architecture search over probabilistic grammars, with routing simulation",
    after_help = "Examples:\n  archgram sample --space spaces/quickstart.ron -n 20 --seed 7\n  archgram check --space spaces/einspace.ron\n  archgram show 'repeat(n=2, seq(block(norm=pre, norm_kind=layer, mlp(act=gelu, gated=false, ratio=4))))'"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SampleFormat {
    /// One line per architecture: numbers, then the text form.
    Text,
    /// One JSON object per line.
    Jsonl,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// Text form, graph and outcome as RON.
    Ron,
    /// Text form, graph and outcome as JSON.
    Json,
    /// A Graphviz graph of the architecture.
    Dot,
    /// A self-contained Python file with a `torch.nn.Module` (routers
    /// included); with --weights, safetensors weights it loads.
    Pytorch,
    /// A short Markdown report of the run and its winners.
    Md,
}

/// Which weights `export --format pytorch --weights` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WeightsArg {
    /// The seeded initial weights training started from.
    Init,
    /// Retrained deterministically from the run's seed: the weights the
    /// search scored.
    Trained,
}

impl WeightsArg {
    pub fn name(self) -> &'static str {
        match self {
            WeightsArg::Init => "init",
            WeightsArg::Trained => "trained",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PlacementArg {
    /// Expert e on device e mod D.
    RoundRobin,
    /// Heaviest experts first, each to the least-loaded device (LPT).
    Greedy,
    /// Greedy, plus replicas of the hottest experts in spare slots (EPLB-style).
    ReplicateHot,
}

/// `archgram simulate`: where the routing comes from, the cluster, the output.
#[derive(Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Routing trace of an evaluated candidate, RUN/CANDIDATE (e.g. runs/q1/17).
    #[arg(long, conflicts_with_all = ["arch", "skew", "tokens", "seed"], required_unless_present = "arch")]
    pub trace: Option<PathBuf>,
    /// Architecture (text form, or a file holding one) to synthesise routing for.
    #[arg(long)]
    pub arch: Option<String>,
    /// Space the architecture is read against.
    #[arg(long, default_value = "spaces/moe-heavy.ron")]
    pub space: PathBuf,
    /// Expert popularity of synthetic routing: `zipf:S` (S ≥ 0; 0 is uniform) [default: zipf:1.0].
    #[arg(long)]
    pub skew: Option<String>,
    /// Tokens per synthetic trace (one micro-batch) [default: 4096].
    #[arg(long)]
    pub tokens: Option<usize>,
    /// Seed of the synthetic routing [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Devices (1 to 1024), or a comma-separated sweep such as 8,16,32,64.
    #[arg(long, default_value = "8", value_delimiter = ',',
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub devices: Vec<usize>,
    /// Nodes (must divide the devices); default: nodes of the hardware's gpus_per_node.
    #[arg(long)]
    pub nodes: Option<usize>,
    /// How experts are placed on devices.
    #[arg(long, value_enum, default_value_t = PlacementArg::RoundRobin)]
    pub placement: PlacementArg,
    /// Extra expert slots per device for replicate-hot replicas.
    #[arg(long, default_value_t = 1)]
    pub spare_slots: usize,
    /// Capacity factor for every layer (0: dropless); default: each layer's own.
    #[arg(long)]
    pub capacity_factor: Option<f64>,
    /// Hardware file (.ron); default: A100-like numbers (see README, "simulate").
    #[arg(long)]
    pub hw: Option<PathBuf>,
    /// Print one JSON object (everything, byte matrices included).
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Draw architectures from a space; every one is valid and within the limits.
    #[command(
        after_help = "Example:\n  archgram sample --space spaces/quickstart.ron -n 1000 --seed 7 --format jsonl"
    )]
    Sample {
        /// Space file (.ron).
        #[arg(long)]
        space: PathBuf,
        /// How many architectures.
        #[arg(short = 'n', long = "count", default_value_t = 10)]
        n: usize,
        /// Master seed (default: the space's seed).
        #[arg(long)]
        seed: Option<u64>,
        /// `text` (numbers, then the text form) or `jsonl`.
        #[arg(long, value_enum, default_value_t = SampleFormat::Text)]
        format: SampleFormat,
    },
    /// Validate a space and its grammar and summarise them.
    #[command(
        after_help = "Example:\n  archgram check --space spaces/moe-heavy.ron --samples 500"
    )]
    Check {
        /// Space file (.ron).
        #[arg(long)]
        space: PathBuf,
        /// Samples drawn to estimate depth and how often limits are met
        /// (1 or more; the check fails when none can be drawn).
        #[arg(long, default_value_t = 300, value_parser = at_least_one())]
        samples: usize,
    },
    /// Show one architecture: tree, graph, parameters and FLOPs.
    #[command(
        after_help = "Examples:\n  archgram show 'repeat(n=1, seq(block(norm=pre, norm_kind=rms, attention(head_dim=auto, heads=2))))'\n  archgram show best.txt --space spaces/moe-heavy.ron"
    )]
    Show {
        /// Text form, or a file holding one.
        arch: String,
        /// Space whose grammar and task shape the architecture is read against.
        #[arg(long, default_value = "spaces/quickstart.ron")]
        space: PathBuf,
        /// Print JSON (text form, costs, graph) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Compile every kernel dfdx compiles at run time with NVRTC and the
    /// headers embedded in this binary, as a GPU machine would (NVRTC runs
    /// on the CPU: no GPU needed); each failure is printed with NVRTC's log.
    #[cfg(feature = "cuda")]
    #[command(hide = true)]
    CudaKernels {
        /// Leave out this embedded header (to see the check fail).
        #[arg(long)]
        omit: Vec<String>,
        /// Only this kernel module, e.g. reshape_fwd_float (default: all).
        #[arg(long)]
        module: Vec<String>,
    },
    /// Train one candidate as a proxy on the space's task and print its outcome.
    #[command(
        after_help = "Examples:\n  archgram eval --space spaces/quickstart.ron --sample 3\n  archgram eval --space spaces/quickstart.ron --arch best.txt --steps 500 --json"
    )]
    Eval {
        /// Space file (.ron): grammar, task and training settings.
        #[arg(long)]
        space: PathBuf,
        /// Architecture text form, or a file holding one.
        #[arg(long, conflicts_with = "sample", required_unless_present = "sample")]
        arch: Option<String>,
        /// Evaluate the architecture `sample` draws with this seed (index 0).
        #[arg(long)]
        sample: Option<u64>,
        /// Training steps, 1 or more (default: the space's).
        #[arg(long, value_parser = at_least_one())]
        steps: Option<usize>,
        /// Where to train: cpu, cuda (GPU 0) or cuda:N (GPU N); cuda needs
        /// a build with `--features cuda`.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Training seed (default: the space's).
        #[arg(long)]
        seed: Option<u64>,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the structural and functional hashes of architectures and, for
    /// each pair, whether a search would merge them and at which stage, or
    /// why not.
    #[command(
        after_help = "Example:\n  archgram hash 'repeat(n=1, seq(block(norm=pre, norm_kind=layer, mlp(act=gelu, gated=false, ratio=4))))' best.txt"
    )]
    Hash {
        /// Text forms, or files holding one each.
        #[arg(required = true)]
        archs: Vec<String>,
        /// Space whose grammar and task shape the architectures are read
        /// against (default: spaces/quickstart.ron, looked for in the current
        /// directory, then beside the archgram executable and the source
        /// tree it was built from).
        #[arg(long)]
        space: Option<PathBuf>,
    },
    /// Run a search: sample or mutate, drop duplicates, train, keep the best.
    #[command(
        after_help = "Examples:\n  archgram search --space spaces/quickstart.ron --budget 60 --seed 1 --no-tui\n  archgram search --space spaces/moe-heavy.ron --strategy random --time 10m --name moe-random"
    )]
    Search {
        /// Space file (.ron).
        #[arg(long)]
        space: PathBuf,
        #[command(flatten)]
        flags: SearchFlags,
        /// Plain progress lines instead of the live dashboard (the default
        /// when stdout is not a terminal).
        #[arg(long)]
        no_tui: bool,
        /// Folder that holds runs.
        #[arg(long, default_value = "runs")]
        runs: PathBuf,
        #[command(flatten)]
        shared: SharedFlags,
    },
    /// Train the candidates of a run in a PostgreSQL database, beside
    /// other workers on any machine: claims one at a time, keeps its lease
    /// alive while it trains, records the result; stops when the run's
    /// coordinator has finished it. The space comes from the database, so
    /// no files are needed.
    #[command(
        after_help = "Example:\n  archgram worker --db postgres://archgram@db1/archgram --run quickstart-1 --workers 2"
    )]
    Worker {
        /// The database: a `postgres://user@host/dbname` URL or libpq
        /// `key=value` pairs (a password is never printed). Without
        /// --db, the ARCHGRAM_DB environment variable (keeps a password
        /// off the command line).
        #[arg(long, value_name = "URL")]
        db: Option<String>,
        /// The run to work on (default: the newest in the database).
        #[arg(long)]
        run: Option<String>,
        /// Candidates trained at once, each with a connection of its own;
        /// a large one also uses idle cores (with --device cuda, all on
        /// that GPU).
        #[arg(long, value_parser = at_least_one(), default_value_t = 1)]
        workers: usize,
        /// Where candidates train: cpu, cuda (GPU 0) or cuda:N (GPU N);
        /// cuda needs a build with `--features cuda`.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Seconds a claim lasts without a heartbeat (tests shorten it).
        #[arg(long, hide = true, default_value_t = 60.0)]
        lease: f64,
    },
    /// Continue a run that was stopped or killed; finished work is kept.
    /// The run keeps the settings it started with (space, budget, seed,
    /// workers, steps).
    #[command(
        after_help = "Examples:\n  archgram resume runs/quickstart-1 --time 30m\n  archgram resume quickstart-1 --db postgres://archgram@db1/archgram"
    )]
    Resume {
        /// The run's folder, e.g. runs/quickstart-1 (with --db, the run's
        /// name in the database).
        run: PathBuf,
        /// Take over a run in this PostgreSQL database as its coordinator
        /// (one whose coordinator stopped or died; workers keep going).
        /// Without --db, the ARCHGRAM_DB environment variable when set:
        /// RUN is then a run's name there.
        #[arg(long, value_name = "URL")]
        db: Option<String>,
        /// Stop after this long (counted from now), e.g. 90s, 10m, 1h30m;
        /// without it, the run goes on until its budget is spent.
        #[arg(long, value_parser = run_time)]
        time: Option<Duration>,
        /// Plain progress lines instead of the live dashboard (the default
        /// when stdout is not a terminal).
        #[arg(long)]
        no_tui: bool,
    },
    /// The live dashboard on a run's event log (another process's search,
    /// or a finished run).
    #[command(
        after_help = "Examples:\n  archgram watch runs/quickstart-1\n  archgram watch quickstart-1 --db postgres://archgram@db1/archgram"
    )]
    Watch {
        /// The run's folder, e.g. runs/quickstart-1 (with --db, the run's
        /// name in the database).
        run: PathBuf,
        #[command(flatten)]
        db: DbFlag,
    },
    /// Progress, best so far, Pareto front and cache statistics of a run
    /// (works while it runs: reads the event log).
    #[command(
        after_help = "Examples:\n  archgram status runs/quickstart-1 --json\n  archgram status quickstart-1 --db postgres://archgram@db1/archgram"
    )]
    Status {
        /// The run's folder, e.g. runs/quickstart-1 (with --db, the run's
        /// name in the database).
        run: PathBuf,
        #[command(flatten)]
        db: DbFlag,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Measure how well a finished run's proxy ranks its candidates: retrain
    /// its top K and a spread of the rest with fresh seeds, at the run's
    /// steps and at a longer budget, and report rank correlations (overall
    /// and among the top K), seed noise and the regret of the run's pick.
    /// Trainings are kept in the run, so a repeat or a continuation after
    /// Ctrl-C costs only what is missing.
    #[command(after_help = "Examples:
  archgram fidelity runs/quickstart-1
  archgram fidelity runs/quickstart-1 --top 8 --long-steps 1000 --seeds 2 --ladder 25,80 --json
  archgram fidelity quickstart-1 --db postgres://archgram@db1/archgram")]
    Fidelity {
        /// The run's folder, e.g. runs/quickstart-1, its search ended (with
        /// --db, the run's name in the database, its coordinator stopped).
        run: PathBuf,
        #[command(flatten)]
        db: DbFlag,
        #[command(flatten)]
        flags: FidelityFlags,
    },
    /// Write a run's best architectures as files other tools read.
    #[command(
        after_help = "Examples:\n  archgram export runs/quickstart-1 --top 3 --format json\n  archgram export runs/quickstart-1 --pareto --format dot --out front/\n  archgram export runs/quickstart-1 --top 3 --format pytorch --weights\n  python3 runs/quickstart-1/export/01-id51.py --check\n  archgram export quickstart-1 --db postgres://archgram@db1/archgram --top 3 --out best/"
    )]
    Export {
        /// The run's folder, e.g. runs/quickstart-1 (a run whose search is
        /// still going is refused: export reads the store the search
        /// holds); with --db, the run's name in the database (read while
        /// it runs too).
        run: PathBuf,
        #[command(flatten)]
        db: DbFlag,
        /// The best K by score, 1 or more [default: 1].
        #[arg(long, conflicts_with = "pareto", value_parser = at_least_one())]
        top: Option<usize>,
        /// Every candidate on the Pareto front (score against active parameters and FLOPs).
        #[arg(long)]
        pareto: bool,
        /// What to write.
        #[arg(long, value_enum, default_value_t = ExportFormat::Json)]
        format: ExportFormat,
        /// With --format pytorch: also write weights (ID.safetensors) and a
        /// probe of archgram's logits (ID.probe.safetensors) for `--check`.
        /// `trained` (the default) retrains the candidate from the run's seed.
        #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "trained")]
        weights: Option<WeightsArg>,
        /// Output folder (default: RUN/export; for a run in a database,
        /// export/RUN in the current folder).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Expert-parallel cost model: per-device load, dropped tokens,
    /// all-to-all bytes and time per MoE layer and per training step.
    #[command(
        after_help = "Examples:\n  archgram simulate --arch best.txt --space spaces/moe-heavy.ron --skew zipf:1.2 --devices 8,16,32,64\n  archgram simulate --trace runs/moe-1/17 --devices 16 --nodes 2 --placement replicate-hot --json"
    )]
    Simulate(SimulateArgs),
    /// List the generated proxy tasks and their parameters.
    #[command(after_help = "Example:\n  archgram tasks")]
    Tasks {
        /// Print the catalogue as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `--db`: the run is in a PostgreSQL database, not in a run folder.
#[derive(Args, Debug, Clone, Default)]
pub struct DbFlag {
    /// The PostgreSQL database that holds the run, as a
    /// `postgres://user:password@host/dbname` URL or libpq `key=value`
    /// pairs; RUN is then the run's name there. Without --db, the
    /// ARCHGRAM_DB environment variable when set (keeps a password off the
    /// command line).
    #[arg(long, value_name = "URL")]
    pub db: Option<String>,
}

/// `search`'s settings that override the space's defaults.
#[derive(Args, Debug, Clone, Default)]
pub struct SearchFlags {
    /// `random`, `evolution`, `model` (a surrogate fitted on the trained
    /// candidates ranks a pool of fresh samples and mutations of the best,
    /// and only its pick is trained), or `halving` (successive halving over
    /// training steps, fed by the space's `halving.source`; default: the
    /// space's strategy).
    #[arg(long, value_parser = ["random", "evolution", "model", "halving"])]
    pub strategy: Option<String>,
    /// Candidates to train, 1 or more (duplicates are free; default: the space's).
    #[arg(long, value_parser = at_least_one())]
    pub budget: Option<usize>,
    /// Stop after this long, e.g. 90s, 10m, 1h30m.
    #[arg(long, value_parser = run_time)]
    pub time: Option<Duration>,
    /// Master seed (default: the space's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run name: output goes to runs/NAME (default: space name and seed).
    /// One folder name: not empty, `.` or `..`, without `/`, `\` or
    /// control characters, at most 100 bytes.
    #[arg(long)]
    pub name: Option<String>,
    /// Candidates trained at once: from 1 to the number of cores
    /// (default: the space's, or the core count; 1 with --device cuda); a
    /// large one also uses cores no other is using. With --device cuda they
    /// all train on that GPU, one kernel at a time: more than 1 was
    /// measured slower there (the README's GPU section says what fills a
    /// GPU).
    #[arg(long, value_parser = at_least_one())]
    pub workers: Option<usize>,
    /// Where candidates train: cpu, cuda (GPU 0) or cuda:N (GPU N); cuda
    /// needs a build with `--features cuda`. The device is opened before
    /// the run starts [default: cpu].
    #[arg(long)]
    pub device: Option<String>,
    /// Training steps per candidate, 1 or more (default: the space's).
    #[arg(long, value_parser = at_least_one())]
    pub steps: Option<usize>,
    /// Skip the confirm stage (retraining the top candidates with fresh
    /// seeds once the budget is spent; the space's `search.confirm` sets
    /// how many and how many seeds).
    #[arg(long)]
    pub no_confirm: bool,
}

/// `search --db`: a run many machines share.
#[derive(Args, Debug, Clone, Default)]
pub struct SharedFlags {
    /// Keep the run in this PostgreSQL database (a
    /// `postgres://user@host/dbname` URL or libpq `key=value` pairs) and
    /// coordinate it: workers
    /// on any machine (`archgram worker`) train its candidates. Without
    /// --workers, this process trains none itself. `--db` without a URL
    /// reads it from the ARCHGRAM_DB environment variable (keeps a
    /// password off the command line).
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
    pub db: Option<String>,
    /// Seconds a claim of this process's own workers lasts without a
    /// heartbeat (tests shorten it).
    #[arg(long, hide = true, default_value_t = 60.0)]
    pub lease: f64,
}

/// `fidelity`'s plan; unset fields take the run's defaults.
#[derive(Args, Debug, Clone, Default)]
pub struct FidelityFlags {
    /// The run's best K are all retrained [default: 8].
    #[arg(long)]
    pub top: Option<usize>,
    /// Further candidates, evenly spaced through the rest of the ranking [default: 4].
    #[arg(long)]
    pub spread: Option<usize>,
    /// The longer budget to compare against [default: 4× the run's steps].
    #[arg(long)]
    pub long_steps: Option<usize>,
    /// Fresh training seeds per candidate and budget [default: 2].
    #[arg(long)]
    pub seeds: Option<usize>,
    /// Extra step counts to train each candidate at (one seed), e.g.
    /// 25,80 [default: a halving run's lower rungs].
    #[arg(long, value_delimiter = ',')]
    pub ladder: Option<Vec<usize>>,
    /// Trainings at once [default: the core count].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}
