//! What a pipeline reaches beyond the project, checked against the user's grants while the plan
//! is built: environment variables, paths outside the project, hosts and commands. The result
//! ([`Touches`]) is shown by `minerva plan` and at the start of `minerva run`, the way a person
//! reviews a GitHub Actions permissions block before running someone else's workflow.

use super::grants::{Place, Roots};
use super::{PlanOptions, Touches};
use std::path::{Path, PathBuf};

pub(super) struct Access<'o> {
    opts: &'o PlanOptions,
    pub roots: Roots,
    pub touches: Touches,
    /// The Hugging Face endpoint `hf` sources reach.
    pub hf_endpoint: String,
}

/// `scheme://host[:port]` of a URL, for the list of hosts a pipeline contacts.
pub fn url_host(url: &str) -> Option<String> {
    let u = reqwest::Url::parse(url).ok()?;
    let host = u.host_str()?;
    Some(match u.port() {
        Some(p) => format!("{}://{host}:{p}", u.scheme()),
        None => format!("{}://{host}", u.scheme()),
    })
}

impl<'o> Access<'o> {
    pub fn new(pipeline: &Path, opts: &'o PlanOptions) -> Self {
        let models_dir = models_dir(opts);
        let fetch = crate::fetch::FetchConfig::from_env(&models_dir);
        let roots = Roots::new(
            pipeline,
            &models_dir,
            &[fetch.hf_cache.clone(), fetch.state_dir.clone()],
            &opts.grants,
        );
        Access {
            opts,
            roots,
            touches: Touches::default(),
            hf_endpoint: fetch.endpoint,
        }
    }

    /// A granted variable's value (the caller checked the grant).
    pub fn env_value(&self, name: &str) -> Option<String> {
        match &self.opts.env {
            Some(map) => map.get(name).cloned(),
            None => std::env::var(name).ok(),
        }
    }

    pub fn env_granted(&self, name: &str) -> bool {
        self.opts.grants.env.contains(name)
    }

    /// How to grant something, for hints.
    pub fn how_to(&self, flag: &str, value: &str) -> String {
        self.opts.grants.how_to(flag, value)
    }

    /// Checks a path the pipeline reads: inside the project, or granted. Records granted paths
    /// outside the project. The error is a message for a located diagnostic.
    pub fn read_path(&mut self, p: &str) -> Result<PathBuf, String> {
        match self.roots.place(Path::new(p)) {
            Place::Project(r) => Ok(r),
            Place::Granted(r) => {
                self.touches.paths.insert(r.display().to_string());
                Ok(r)
            }
            Place::Outside(r) => Err(format!(
                "`{p}` resolves to {}, outside the project (the pipeline's directory, the working directory and the models directory)",
                r.display()
            )),
        }
    }

    pub fn host(&mut self, url: &str) {
        if let Some(h) = url_host(url) {
            self.touches.hosts.insert(h);
        }
    }

    pub fn command(&mut self, c: String) {
        if !self.touches.commands.contains(&c) {
            self.touches.commands.push(c);
        }
    }
}

/// The models directory a plan assumes: the option, else `$MINERVA_MODELS`, else `models`.
pub fn models_dir(opts: &PlanOptions) -> PathBuf {
    opts.models_dir
        .clone()
        .or_else(|| {
            std::env::var_os("MINERVA_MODELS")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("models"))
}
