//! minerva's entry point: parse the command line, call the library, map errors to exit codes.

use clap::Parser;
use minerva::cli::{Cli, Command, FetchArgs, PipelineArgs};
use minerva::error::{exit, Error};
use minerva::exec::{self, RunOptions};
use minerva::plan::{build_plan, PlanOptions};
use minerva::results::{RunDir, RunStatus};
use std::path::Path;

fn plan_for(args: &PipelineArgs, models_dir: Option<&Path>) -> Result<minerva::plan::Plan, Error> {
    let opts = PlanOptions {
        overrides: args.set.clone(),
        grants: minerva::plan::Grants::load(&args.allow_env, &args.allow_read)?,
        models_dir: models_dir.map(Path::to_path_buf),
        ..Default::default()
    };
    let plan = build_plan(&args.pipeline, &opts)?;
    // From here on every granted value is redacted wherever minerva writes or prints.
    minerva::redact::install(&plan.redactor);
    Ok(plan)
}

fn reproduce_command(args: &PipelineArgs) -> String {
    let mut parts = vec![
        "minerva".to_string(),
        "run".to_string(),
        minerva::fleet::shell_quote(&args.pipeline.display().to_string()),
    ];
    for s in &args.set {
        parts.push("--set".into());
        parts.push(minerva::fleet::shell_quote(s));
    }
    for e in &args.allow_env {
        parts.push("--allow-env".into());
        parts.push(minerva::fleet::shell_quote(e));
    }
    for r in &args.allow_read {
        parts.push("--allow-read".into());
        parts.push(minerva::fleet::shell_quote(&r.display().to_string()));
    }
    parts.join(" ")
}

fn fetch_config(args: &FetchArgs, bars: bool) -> minerva::fetch::FetchConfig {
    use std::io::IsTerminal;
    let mut cfg = minerva::fetch::FetchConfig::from_env(&args.models_dir);
    cfg.offline |= args.offline;
    if let Some(s) = args.lock_timeout {
        cfg.lock_timeout = std::time::Duration::from_secs(s);
    }
    if bars && std::io::stderr().is_terminal() {
        cfg.bars = Some(indicatif::MultiProgress::new());
    }
    cfg
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Other(format!("cannot start the runtime: {e}")))
}

/// `minerva download`: every source through the download stage's code; prints final paths.
fn download(
    sources: &[String],
    sha256: Option<String>,
    args: &FetchArgs,
    quiet: bool,
) -> Result<i32, Error> {
    use minerva::fetch::{self, FetchConfig};
    use std::sync::Arc;
    if sha256.is_some() && sources.len() != 1 {
        return Err(Error::Usage("--sha256 applies to one source only".into()));
    }
    let mut parsed = Vec::new();
    for s in sources {
        parsed.push(fetch::parse_source(s).map_err(|e| Error::Usage(e.to_string()))?);
    }
    let cfg: Arc<FetchConfig> = Arc::new(fetch_config(args, !quiet));
    let pin = match sha256 {
        Some(h) => {
            let h = h.trim().to_ascii_lowercase();
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::Usage(format!(
                    "--sha256 {h}: not a sha256 hex digest"
                )));
            }
            Some(h)
        }
        None => None,
    };
    let rt = runtime()?;
    let results = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for (i, src) in parsed.into_iter().enumerate() {
            let model = minerva::plan::Model {
                name: format!("download-{i}"),
                format: minerva::spec::ModelFormat::Gguf,
                sources: vec![src],
                sha256: pin.clone(),
                file_sha256: Default::default(),
                allow_code: false,
                resolved: None,
            };
            let cfg = cfg.clone();
            set.spawn(async move { (i, fetch::fetch_model(&model, &cfg).await) });
        }
        let mut out: Vec<Option<Result<fetch::FetchedModel, fetch::FetchError>>> =
            (0..sources.len()).map(|_| None).collect();
        while let Some(j) = set.join_next().await {
            if let Ok((i, r)) = j {
                out[i] = Some(r);
            }
        }
        out
    });
    let mut failed = 0;
    for (src, r) in sources.iter().zip(results) {
        match r {
            Some(Ok(f)) => {
                match (&f.link, f.files.as_slice()) {
                    // A url or pip file, kept in minerva's cache and linked under the models
                    // directory: the link.
                    (Some(link), [_]) if !src.starts_with("hf://") => {
                        println!("{}", link.display())
                    }
                    (_, []) => println!("{}", f.path.display()),
                    (_, files) => {
                        for file in files {
                            println!("{}", file.path.display());
                        }
                    }
                }
                if !quiet {
                    eprintln!(
                        "{}",
                        minerva::redact::text(&format!("{src}: {}", f.describe()))
                    );
                }
            }
            Some(Err(e)) => {
                failed += 1;
                eprintln!("error: {}", minerva::redact::text(&format!("{src}: {e}")));
            }
            None => {
                failed += 1;
                eprintln!("error: {src}: the download task failed");
            }
        }
    }
    Ok(if failed == 0 {
        exit::OK
    } else {
        exit::RUN_FAILED
    })
}

/// Runs a plan to its end (signals stop it; a second one kills the workers), showing progress
/// unless `quiet`.
fn execute(
    plan: minerva::plan::Plan,
    opts: RunOptions,
    quiet: bool,
) -> Result<minerva::exec::RunOutcome, Error> {
    let multi = opts.fetch.bars.clone();
    let rt = runtime()?;
    let outcome = rt.block_on(async move {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            let _ = cancel_tx.send(true);
            // A second signal stops at once, and takes the workers with it.
            wait_for_signal().await;
            minerva::stage::kill_workers();
            std::process::exit(exit::INTERRUPTED);
        });
        let ui = tokio::spawn(minerva::ui::consume_events(rx, quiet, multi));
        let r = exec::run(plan, opts, tx, cancel_rx).await;
        let _ = ui.await;
        r
    });
    // A cancelled hash or conversion may still be running on a blocking thread: exit without
    // waiting for it.
    rt.shutdown_background();
    Ok(outcome?)
}

/// The exit code of a run, saying on stderr why it is not 0 (unless `quiet`).
fn outcome_code(outcome: &minerva::exec::RunOutcome, quiet: bool) -> i32 {
    match outcome.status {
        RunStatus::Complete => exit::OK,
        RunStatus::Interrupted => {
            if !quiet {
                eprintln!(
                    "interrupted: samples measured so far are in {}",
                    outcome.run_dir.display()
                );
            }
            exit::INTERRUPTED
        }
        RunStatus::Failed | RunStatus::Running => {
            if !quiet {
                eprintln!(
                    "{} job(s) failed: {}; {} skipped",
                    outcome.failed.len(),
                    outcome.failed.join(", "),
                    outcome.skipped.len()
                );
            }
            exit::RUN_FAILED
        }
    }
}

/// `minerva bench`: llama-bench's flags → a pipeline, written under `<out>/bench/pipelines/`
/// (content-addressed, so `minerva run` and `--resume` find it again), run like any other; the
/// result on stdout in the format `-o` asks for, the run directory on stderr.
fn bench(args: &minerva::cli::BenchArgs, quiet: bool) -> Result<i32, Error> {
    use minerva::benchcli::{self, BenchPlan};
    let command = command_line();
    let bp = BenchPlan::new(args, &command).map_err(|e| Error::Usage(e.to_string()))?;
    if args.emit_pipeline {
        print!("{}", bp.yaml);
        return Ok(exit::OK);
    }
    let digest = minerva::formats::sha256_hex(bp.yaml.as_bytes());
    let path = args
        .out
        .join("bench")
        .join("pipelines")
        .join(format!("{}.yaml", &digest[..12]));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Other(format!("{}: {e}", dir.display())))?;
    }
    minerva::results::atomic_write(&path, bp.yaml.as_bytes())?;
    let opts = PlanOptions {
        grants: minerva::plan::Grants::load(&bp.granted_env, &bp.granted_paths)?,
        models_dir: Some(args.fetch.models_dir.clone()),
        ..Default::default()
    };
    let plan = build_plan(&path, &opts)?;
    minerva::redact::install(&plan.redactor);
    let run_opts = RunOptions {
        out_dir: args.out.clone(),
        run_id: None,
        jobs: 4,
        keep_going: true,
        command,
        fetch: fetch_config(&args.fetch, !quiet),
        resume: None,
        reuse: Vec::new(),
        overlap: false,
        no_wait: false,
        labels: Default::default(),
    };
    let outcome = execute(
        plan,
        run_opts,
        quiet || !(args.progress || std::io::IsTerminal::is_terminal(&std::io::stderr())),
    )?;
    eprintln!("results: {}", outcome.run_dir.display());
    eprintln!("pipeline: {}", path.display());
    let code = outcome_code(&outcome, quiet);
    match benchcli::render(
        &RunDir::new(outcome.run_dir.clone()),
        args.output,
        bp.server,
    ) {
        Ok(text) => print!("{text}"),
        Err(e) if code != exit::OK => eprintln!("error: {e}"),
        Err(e) => return Err(Error::Other(e.to_string())),
    }
    Ok(code)
}

/// This process's command line, shell-quoted, as a manifest records it.
fn command_line() -> String {
    std::iter::once("minerva".to_string())
        .chain(std::env::args().skip(1))
        .map(|a| minerva::fleet::shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `KEY=VALUE` values of a repeatable flag.
fn key_values(flag: &str, raw: &[String]) -> Result<Vec<(String, String)>, Error> {
    raw.iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| Error::Usage(format!("{flag} {kv}: expected KEY=VALUE")))
        })
        .collect()
}

/// `minerva fleet`: the plan is built (so a bad pipeline or shard count fails here, not on the
/// cluster), then the spec written.
fn fleet(target: minerva::cli::FleetTarget) -> Result<i32, Error> {
    use minerva::cli::FleetTarget;
    use minerva::fleet;
    let args = match &target {
        FleetTarget::Slurm { fleet, .. }
        | FleetTarget::K8s { fleet, .. }
        | FleetTarget::Github { fleet, .. } => fleet.clone(),
    };
    let plan = plan_for(&args.pipeline, None)?;
    let name = plan.name.clone();
    plan.shard(minerva::plan::ShardSpec {
        index: 1,
        count: args.shards.max(1),
    })
    .map_err(|e| Error::Usage(e.to_string().replace("--shard 1/", "--shards ")))?;
    if args.shards == 0 {
        return Err(Error::Usage("--shards: at least 1".into()));
    }
    let f = fleet::Fleet {
        pipeline: args.pipeline.pipeline.display().to_string(),
        name,
        shards: args.shards,
        set: args.pipeline.set.clone(),
        out: args.out.clone(),
        minerva: args.minerva.clone(),
    };
    let text = match target {
        FleetTarget::Slurm {
            partition,
            gpus_per_task,
            cpus_per_task,
            time,
            ..
        } => fleet::slurm(
            &f,
            &fleet::SlurmOptions {
                partition,
                gpus_per_task,
                time,
                cpus_per_task,
            },
        ),
        FleetTarget::K8s {
            image,
            claim,
            cpu,
            memory,
            gpus,
            node_selector,
            ..
        } => {
            let node_selector = key_values("--node-selector", &node_selector)?;
            fleet::k8s(
                &f,
                &fleet::K8sOptions {
                    image,
                    claim,
                    cpu,
                    memory,
                    gpus,
                    node_selector,
                },
            )
        }
        FleetTarget::Github {
            runs_on,
            baseline_artifact,
            ..
        } => fleet::github(
            &f,
            &fleet::GithubOptions {
                runs_on,
                baseline_artifact,
            },
        ),
    };
    match &args.output {
        Some(path) => minerva::results::atomic_write(path, text.as_bytes())?,
        None => print!("{text}"),
    }
    Ok(exit::OK)
}

/// `--label KEY=VALUE` values: a key of letters, digits, `_`, `-` and `.`; any value.
fn parse_labels(raw: &[String]) -> Result<std::collections::BTreeMap<String, String>, Error> {
    let pairs = key_values("--label", raw)?;
    if let Some((k, _)) = pairs.iter().find(|(k, _)| {
        !k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    }) {
        return Err(Error::Usage(format!(
            "--label {k}=…: the key may hold letters, digits, `_`, `-` and `.`"
        )));
    }
    Ok(pairs.into_iter().collect())
}

/// Long on purpose: one arm per subcommand, each a few lines that turn arguments into a library
/// call.
fn real_main(cli: Cli) -> Result<i32, Error> {
    match cli.command {
        Command::Worker => Ok(minerva::backend::worker::main()),
        Command::Schema { kind } => {
            print!("{}", minerva::schema::schema_text(kind));
            Ok(0)
        }
        Command::Download {
            sources,
            sha256,
            fetch,
        } => download(&sources, sha256, &fetch, cli.quiet),
        Command::Validate {
            pipeline: args,
            json,
        } => {
            let plan = match plan_for(&args, None) {
                Ok(p) => p,
                Err(e) if json => {
                    let v = serde_json::json!({
                        "pipeline": args.pipeline,
                        "ok": false,
                        "error": minerva::redact::text(&e.to_string()),
                    });
                    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                    return Ok(e.exit_code());
                }
                Err(e) => return Err(e),
            };
            if json {
                let v = serde_json::json!({
                    "pipeline": args.pipeline,
                    "ok": true,
                    "name": plan.name,
                    "models": plan.models.iter().map(|m| &m.name).collect::<Vec<_>>(),
                    "scenarios": plan.scenarios.iter().map(|s| &s.name).collect::<Vec<_>>(),
                    "stages": plan.stages.iter().map(|s| &s.name).collect::<Vec<_>>(),
                    "jobs": plan.jobs.len(),
                    "touches": plan.touches,
                });
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else if !cli.quiet {
                println!(
                    "{}: ok ({} models, {} scenarios, {} stages, {} jobs)",
                    args.pipeline.display(),
                    plan.models.len(),
                    plan.scenarios.len(),
                    plan.stages.len(),
                    plan.jobs.len()
                );
            }
            Ok(exit::OK)
        }
        Command::Plan {
            pipeline,
            json,
            shard,
        } => {
            let mut plan = plan_for(&pipeline, None)?;
            if let Some(spec) = shard {
                plan = plan.shard(spec).map_err(|e| Error::Usage(e.to_string()))?;
            }
            if json {
                let v = serde_json::json!({
                    "pipeline": plan.resolved_json(),
                    "touches": plan.touches,
                    "jobs": plan.jobs.iter().map(|j| serde_json::json!({
                        "id": j.id,
                        "stage": plan.stages[j.stage].name,
                        "needs": j.deps.iter().map(|d| plan.jobs[*d].id.clone()).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print!("{}", minerva::ui::plan_text(&plan));
            }
            Ok(exit::OK)
        }
        Command::Run {
            pipeline,
            out,
            run_id,
            jobs,
            keep_going,
            resume,
            force,
            reuse,
            overlap,
            no_wait,
            json,
            shard,
            labels,
            fetch,
        } => {
            let labels = parse_labels(&labels)?;
            let mut plan = plan_for(&pipeline, Some(&fetch.models_dir))?;
            if let Some(spec) = shard {
                plan = plan.shard(spec).map_err(|e| Error::Usage(e.to_string()))?;
            }
            if !cli.quiet {
                eprint!("{}", minerva::ui::touches_text(&plan.touches));
            }
            // A --reuse run that cannot be read is bad input, found before anything starts.
            for dir in &reuse {
                if let Err(e) = RunDir::new(dir.clone()).read_manifest() {
                    return Err(Error::Usage(format!(
                        "--reuse {}: not a run directory: {e}",
                        dir.display()
                    )));
                }
            }
            let resume = match resume {
                Some(dir) => Some(exec::resume::check(&plan, dir, force)?),
                None => None,
            };
            let opts = RunOptions {
                out_dir: out,
                run_id,
                jobs,
                keep_going,
                command: reproduce_command(&pipeline),
                fetch: fetch_config(&fetch, !cli.quiet),
                resume,
                reuse,
                overlap,
                no_wait,
                labels,
            };
            let outcome = execute(plan, opts, cli.quiet)?;
            if json {
                let v = serde_json::json!({
                    "status": outcome.status,
                    "run_dir": outcome.run_dir,
                    "report": outcome.report,
                    "failed": outcome.failed,
                    "skipped": outcome.skipped,
                });
                println!("{}", serde_json::to_string(&v).unwrap_or_default());
                return Ok(outcome_code(&outcome, false));
            }
            match &outcome.report {
                Some(report) => println!("report: {}", report.display()),
                None => println!("results: {}", outcome.run_dir.display()),
            }
            Ok(outcome_code(&outcome, false))
        }
        Command::Bench(args) => bench(&args, cli.quiet),
        Command::Fleet { target } => fleet(target),
        Command::Merge {
            runs,
            out,
            allow_missing,
        } => {
            let command = command_line();
            let m = minerva::merge::merge(&runs, &out, allow_missing, &command)?;
            if let (Some(missing), false) = (&m.missing, cli.quiet) {
                eprintln!("PARTIAL: {missing}");
            }
            if !cli.quiet {
                eprintln!(
                    "merged {} sample lines into {}",
                    m.samples,
                    m.run_dir.display()
                );
            }
            println!("report: {}", m.report.display());
            Ok(exit::OK)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "minerva", &mut std::io::stdout());
            Ok(exit::OK)
        }
        Command::Man => {
            use clap::CommandFactory;
            let man = clap_mangen::Man::new(Cli::command());
            let mut out = Vec::new();
            man.render(&mut out)
                .map_err(|e| Error::Other(format!("cannot render the man page: {e}")))?;
            use std::io::Write;
            std::io::stdout()
                .write_all(&out)
                .map_err(|e| Error::Other(format!("cannot write the man page: {e}")))?;
            Ok(exit::OK)
        }
        Command::Verify {
            files,
            hash,
            sha256,
        } => {
            if sha256.is_some() && files.len() != 1 {
                return Err(Error::Other("--sha256 takes exactly one file".into()));
            }
            let mut failed = 0;
            for f in &files {
                let format = if f.extension().is_some_and(|e| e == "gguf") {
                    minerva::spec::ModelFormat::Gguf
                } else if f.is_dir() || f.extension().is_some_and(|e| e == "safetensors") {
                    minerva::spec::ModelFormat::Safetensors
                } else {
                    eprintln!(
                        "{}: cannot tell the model format (expected a .gguf or .safetensors file, or a SafeTensors model directory)",
                        f.display()
                    );
                    failed += 1;
                    continue;
                };
                let model = minerva::plan::Model {
                    name: f
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    format,
                    sources: vec![minerva::spec::SourceSpec::Path(f.display().to_string())],
                    sha256: sha256.clone().map(|h| h.to_ascii_lowercase()),
                    file_sha256: Default::default(),
                    allow_code: false,
                    resolved: None,
                };
                match minerva::stage::verify_model(&model, f) {
                    Ok(mut info) => {
                        if hash && info.sha256.is_none() {
                            match minerva::formats::sha256_file(f) {
                                Ok(h) => info.sha256 = Some(h),
                                Err(e) => {
                                    eprintln!("{}: cannot hash: {e}", f.display());
                                    failed += 1;
                                    continue;
                                }
                            }
                        }
                        println!(
                            "{}: ok: {}",
                            f.display(),
                            minerva::stage::describe_model(&info)
                        );
                        if let Some(h) = &info.sha256 {
                            println!("  sha256 {h}");
                        }
                        if let (Some(v), Some(c)) = (info.vocab_size, info.context_length) {
                            println!(
                                "  vocabulary {v}, context {c}, {} tensors",
                                info.tensor_count.unwrap_or(0)
                            );
                        }
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        failed += 1;
                    }
                }
            }
            Ok(if failed == 0 {
                exit::OK
            } else {
                exit::RUN_FAILED
            })
        }
        Command::Convert(minerva::cli::ConvertCommand::GgufToSafetensors {
            input,
            output,
            dtype,
        }) => {
            let dt = minerva::convert::parse_dtype(&dtype).ok_or_else(|| {
                Error::Usage(format!(
                    "--dtype: expected f32, bf16 or f16, found `{dtype}`"
                ))
            })?;
            let t0 = std::time::Instant::now();
            let c = minerva::convert::gguf_to_safetensors(&input, &output, dt, None)
                .map_err(|e| Error::Other(e.to_string()))?;
            println!(
                "{}: {} tensors, {} parameters, {:?}, {} in {:.1} s",
                c.dir.display(),
                c.tensors,
                c.parameters,
                c.dtype,
                minerva::fetch::human_bytes(c.bytes),
                t0.elapsed().as_secs_f64()
            );
            Ok(exit::OK)
        }
        Command::Compare {
            base,
            new,
            threshold,
            unstable_cv,
            metrics,
            fail_on_regression,
            json,
            allow_different,
        } => {
            use minerva::compare::{self, CompareError, CompareOptions, DifferenceClass};
            let allow_different = allow_different
                .iter()
                .map(|s| {
                    DifferenceClass::parse(s).ok_or_else(|| {
                        CompareError::Usage(format!(
                            "--allow-different {s}: expected host, build, metrics or scenario"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let opts = CompareOptions {
                threshold: compare::parse_threshold(&threshold)?,
                unstable_cv: compare::parse_fraction("--unstable-cv", &unstable_cv)?,
                metrics,
                allow_different,
            };
            let c = compare::compare(&base, &new, &opts)?;
            if json {
                println!("{}", compare::render::json(&c));
            } else {
                print!("{}", compare::render::markdown(&c));
            }
            Ok(if fail_on_regression && c.has_regression() {
                exit::RUN_FAILED
            } else {
                exit::OK
            })
        }
        Command::Export {
            run_dir,
            format,
            build_commit,
            output,
        } => {
            let entries = minerva::export::entries(&RunDir::new(run_dir), build_commit.as_deref())?;
            let text = minerva::export::render(&entries, format);
            match output {
                Some(path) => minerva::results::atomic_write(&path, text.as_bytes())?,
                None => print!("{text}"),
            }
            Ok(exit::OK)
        }
        Command::Report {
            run_dir,
            template,
            output,
        } => {
            let dir = RunDir::new(run_dir);
            let path = minerva::stage::render_run(
                &dir,
                template.as_deref(),
                output.as_deref().map(Path::new),
            )?;
            println!("report: {}", path.display());
            Ok(exit::OK)
        }
    }
}

/// Waits for Ctrl-C, SIGTERM or SIGHUP (a closed terminal or SSH session stops the run as
/// cleanly as Ctrl-C does).
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn main() {
    let cli = Cli::parse_from(minerva::cli::normalize_args(std::env::args()));
    // Secret-looking environment values (HF_TOKEN, AWS_SECRET_ACCESS_KEY, …) never appear in
    // anything minerva writes or prints, granted or not.
    minerva::redact::install_secret_environment();
    if matches!(cli.command, Command::Worker) {
        minerva::ui::init_worker_logging();
    } else {
        minerva::ui::init_logging(cli.verbose, cli.quiet);
    }
    let code = match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", minerva::redact::text(&e.to_string()));
            e.exit_code()
        }
    };
    std::process::exit(code);
}
