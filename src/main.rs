//! minerva's entry point: parse the command line, call the library, map errors to exit codes.

use clap::Parser;
use minerva::cli::{Cli, Command, PipelineArgs};
use minerva::error::{exit, Error};
use minerva::exec::{self, RunOptions};
use minerva::plan::{build_plan, PlanOptions};
use minerva::results::{RunDir, RunStatus};
use std::path::Path;

fn plan_for(args: &PipelineArgs) -> Result<minerva::plan::Plan, Error> {
    let opts = PlanOptions {
        overrides: args.set.clone(),
        ..Default::default()
    };
    Ok(build_plan(&args.pipeline, &opts)?)
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn reproduce_command(args: &PipelineArgs) -> String {
    let mut parts = vec![
        "minerva".to_string(),
        "run".to_string(),
        shell_quote(&args.pipeline.display().to_string()),
    ];
    for s in &args.set {
        parts.push("--set".into());
        parts.push(shell_quote(s));
    }
    parts.join(" ")
}

fn real_main(cli: Cli) -> Result<i32, Error> {
    match cli.command {
        Command::Worker => Ok(minerva::backend::worker::main()),
        Command::Validate(args) => {
            let plan = plan_for(&args)?;
            if !cli.quiet {
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
        Command::Plan { pipeline, json } => {
            let plan = plan_for(&pipeline)?;
            if json {
                let v = serde_json::json!({
                    "pipeline": plan.resolved_json(),
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
        } => {
            let plan = plan_for(&pipeline)?;
            let opts = RunOptions {
                out_dir: out,
                run_id,
                jobs,
                keep_going,
                command: reproduce_command(&pipeline),
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| Error::Other(format!("cannot start the runtime: {e}")))?;
            let quiet = cli.quiet;
            let outcome = rt.block_on(async move {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    wait_for_signal().await;
                    let _ = cancel_tx.send(true);
                    // A second signal stops at once.
                    wait_for_signal().await;
                    std::process::exit(exit::INTERRUPTED);
                });
                let ui = tokio::spawn(minerva::ui::consume_events(rx, quiet));
                let r = exec::run(plan, opts, tx, cancel_rx).await;
                let _ = ui.await;
                r
            })?;
            match &outcome.report {
                Some(report) => println!("report: {}", report.display()),
                None => println!("results: {}", outcome.run_dir.display()),
            }
            Ok(match outcome.status {
                RunStatus::Complete => exit::OK,
                RunStatus::Interrupted => {
                    eprintln!(
                        "interrupted: samples measured so far are in {}",
                        outcome.run_dir.display()
                    );
                    exit::INTERRUPTED
                }
                RunStatus::Failed | RunStatus::Running => {
                    eprintln!(
                        "{} job(s) failed: {}; {} skipped",
                        outcome.failed.len(),
                        outcome.failed.join(", "),
                        outcome.skipped.len()
                    );
                    exit::RUN_FAILED
                }
            })
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
                } else {
                    minerva::spec::ModelFormat::Safetensors
                };
                let model = minerva::plan::Model {
                    name: f
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    format,
                    source: minerva::spec::SourceSpec::Path(f.display().to_string()),
                    sha256: sha256.clone().map(|h| h.to_ascii_lowercase()),
                };
                match minerva::stage::verify_model(&model, f) {
                    Ok(mut info) => {
                        if hash && info.sha256.is_none() {
                            match minerva::formats::gguf::sha256_file(f) {
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

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn main() {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Worker) {
        minerva::ui::init_worker_logging();
    } else {
        minerva::ui::init_logging(cli.verbose, cli.quiet);
    }
    let code = match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    };
    std::process::exit(code);
}
