//! Report stage, and `minerva report`: renders `report.md` from the stored manifest and samples
//! (never from in-memory state), so re-rendering later gives the same bytes.

use super::StageCtx;
use crate::analyze::analyze;
use crate::report::{build_context, render, ReportError, RunState};
use crate::results::{atomic_write, read_journal, read_samples_full, RunDir, StoreError};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RenderRunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Analyze(#[from] crate::analyze::AnalyzeError),
    #[error(transparent)]
    Report(#[from] ReportError),
}

/// Renders a run directory's report with `template` (else the built-in one) and writes it
/// atomically to `output` (default `<run>/report.md`). A path recorded in the run directory is
/// never read: a run directory may come from someone else.
pub fn render_run(
    dir: &RunDir,
    template: Option<&Path>,
    output: Option<&Path>,
) -> Result<PathBuf, RenderRunError> {
    let manifest = dir.read_manifest()?;
    let read = read_samples_full(&dir.samples())?;
    let samples = read.samples;
    let analysis = analyze(&samples)?;
    let models = read_models(dir);
    let state = RunState {
        journal: read_journal(&dir.journal())?,
        unreadable_lines: read.skipped_lines,
        superseded: read.superseded,
    };
    let out = output
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.report());
    let mut ctx = build_context(&manifest, &samples, &analysis, &models, &state);
    // The plots, drawn from the same stored samples, beside the report in the run directory.
    let scenarios: Vec<String> = manifest.pipeline["scenarios"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str().map(str::to_string))
        .collect();
    let plots = crate::report::plots::plots(&analysis, &samples, &scenarios);
    if !plots.is_empty() {
        let plot_dir = dir.root.join("plots");
        std::fs::create_dir_all(&plot_dir).map_err(|e| StoreError::Write {
            path: plot_dir.clone(),
            source: e,
        })?;
        let beside = out.parent().map(|p| p.join("plots")) == Some(plot_dir.clone());
        for p in &plots {
            let path = plot_dir.join(&p.file);
            atomic_write(&path, crate::redact::text(&p.svg).as_bytes())?;
            let link = if beside {
                format!("plots/{}", p.file)
            } else {
                path.display().to_string()
            };
            ctx.plots.push(crate::report::PlotRef {
                title: p.title.clone(),
                path: link,
            });
        }
    }
    let text = match template {
        Some(p) => {
            let src = crate::report::load_template(p)?;
            render(&ctx, Some((&p.display().to_string(), &src)))?
        }
        None => render(&ctx, None)?,
    };
    atomic_write(&out, crate::redact::text(&text).as_bytes())?;
    Ok(out)
}

/// The files in which the verify stage stored model facts (`model-<name>.json`, regular files
/// only), sorted.
pub fn model_files(dir: &RunDir) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir.root)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("model-") && n.ends_with(".json"))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The model facts the verify stage stored (`model-<name>.json`), by name.
pub fn read_models(dir: &RunDir) -> Vec<super::ModelInfo> {
    model_files(dir)
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .filter_map(|t| serde_json::from_str(&t).ok())
        .collect()
}

pub async fn run(ctx: &StageCtx, template: Option<&Path>) -> super::StageResult {
    let dir = ctx.run_dir.clone();
    let template = template.map(Path::to_path_buf);
    let path = tokio::task::spawn_blocking(move || render_run(&dir, template.as_deref(), None))
        .await
        .map_err(|e| super::StageError::Task(format!("report task failed: {e}")))??;
    Ok(Some(path.display().to_string()))
}
