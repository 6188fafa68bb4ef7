//! Download stage: makes each model's files present locally.
//!
//! Today only `path:` sources are resolved (the file or directory must exist). `hf`, `url` and
//! `pip` sources validate and plan, and fail here with a clear message until they are built.

use crate::plan::Model;
use crate::spec::SourceSpec;

pub async fn run(model: &Model) -> Result<Option<String>, String> {
    match &model.source {
        SourceSpec::Path(p) => {
            let meta = tokio::fs::metadata(p)
                .await
                .map_err(|e| format!("model `{}`: {p}: {e}", model.name))?;
            Ok(Some(if meta.is_dir() {
                format!("{p} (directory)")
            } else {
                format!("{p} ({} bytes)", meta.len())
            }))
        }
        SourceSpec::Hf { repo, .. } => Err(format!(
            "model `{}`: downloading from Hugging Face (`hf: {repo}`) is not implemented in this build; \
             download the file yourself and use `source: {{ path: ... }}`",
            model.name
        )),
        SourceSpec::Url(u) => Err(format!(
            "model `{}`: downloading from a URL ({u}) is not implemented in this build; use `source: {{ path: ... }}`",
            model.name
        )),
        SourceSpec::Pip { package, .. } => Err(format!(
            "model `{}`: fetching from a pip package ({package}) is not implemented in this build; use `source: {{ path: ... }}`",
            model.name
        )),
    }
}
