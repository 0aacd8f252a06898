//! Command-line definitions (clap). Only syntax lives here; the commands
//! themselves are in `commands`.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

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
    /// A short Markdown report of the run and its winners.
    Md,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    Cpu,
    /// Needs a build with `--features cuda`.
    Cuda,
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
        /// Samples drawn to estimate depth and how often limits are met.
        #[arg(long, default_value_t = 300)]
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
        /// Training steps (default: the space's).
        #[arg(long)]
        steps: Option<usize>,
        #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
        device: DeviceArg,
        /// Training seed (default: the space's).
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Print the structural and functional hashes of architectures, to see
    /// why two were merged (or were not).
    #[command(
        after_help = "Example:\n  archgram hash 'repeat(n=1, seq(block(norm=pre, norm_kind=layer, mlp(act=gelu, gated=false, ratio=4))))' best.txt"
    )]
    Hash {
        /// Text forms, or files holding one each.
        #[arg(required = true)]
        archs: Vec<String>,
        #[arg(long, default_value = "spaces/quickstart.ron")]
        space: PathBuf,
    },
    /// Run a search: sample or mutate, drop duplicates, train, keep the best.
    #[command(
        after_help = "Examples:\n  archgram search --space spaces/quickstart.ron --budget 60 --seed 1 --no-tui\n  archgram search --space spaces/moe-heavy.ron --strategy random --time 10m --name moe-random"
    )]
    Search {
        /// Space file (.ron).
        #[arg(long)]
        space: PathBuf,
        /// `random`, `evolution`, or `halving` (successive halving over
        /// training steps, fed by the space's `halving.source`; default: the
        /// space's strategy).
        #[arg(long, value_parser = ["random", "evolution", "halving"])]
        strategy: Option<String>,
        /// Candidates to train (duplicates are free; default: the space's).
        #[arg(long)]
        budget: Option<usize>,
        /// Stop after this long, e.g. 90s, 10m, 2h.
        #[arg(long)]
        time: Option<String>,
        /// Master seed (default: the space's).
        #[arg(long)]
        seed: Option<u64>,
        /// Run name: output goes to runs/NAME (default: space name and seed).
        #[arg(long)]
        name: Option<String>,
        /// Candidates trained at once, one core each (default: the space's, or the core count).
        #[arg(long)]
        workers: Option<usize>,
        /// Training steps per candidate (default: the space's).
        #[arg(long)]
        steps: Option<usize>,
        /// Plain progress lines instead of the dashboard (this build prints
        /// progress lines either way; the dashboard is not built yet).
        #[arg(long)]
        no_tui: bool,
        /// Folder that holds runs.
        #[arg(long, default_value = "runs")]
        runs: PathBuf,
    },
    /// Continue a run that was stopped or killed; finished work is kept.
    #[command(after_help = "Example:\n  archgram resume runs/quickstart-1")]
    Resume {
        run: PathBuf,
        #[arg(long)]
        time: Option<String>,
        #[arg(long)]
        no_tui: bool,
    },
    /// The live dashboard on a run's event log (another process's search,
    /// or a finished run).
    #[command(after_help = "Example:\n  archgram watch runs/quickstart-1")]
    Watch { run: PathBuf },
    /// Progress, best so far, Pareto front and cache statistics of a run
    /// (works while it runs: reads the event log).
    #[command(after_help = "Example:\n  archgram status runs/quickstart-1 --json")]
    Status {
        run: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Write a run's best architectures as files other tools read.
    #[command(
        after_help = "Examples:\n  archgram export runs/quickstart-1 --top 3 --format json\n  archgram export runs/quickstart-1 --pareto --format dot --out front/"
    )]
    Export {
        run: PathBuf,
        /// The best K by score.
        #[arg(long, conflicts_with = "pareto")]
        top: Option<usize>,
        /// Every candidate on the Pareto front (score against active parameters and FLOPs).
        #[arg(long)]
        pareto: bool,
        #[arg(long, value_enum, default_value_t = ExportFormat::Json)]
        format: ExportFormat,
        /// Output folder (default: RUN/export).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List the generated proxy tasks and their parameters.
    #[command(after_help = "Example:\n  archgram tasks")]
    Tasks {
        #[arg(long)]
        json: bool,
    },
}
