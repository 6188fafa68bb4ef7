//! The comparability guard: what both manifests record about where and how the runs were
//! measured. A difference in the host, the engine builds, the metric definitions or a
//! scenario's definition means the two numbers do not measure the same thing; `compare` refuses
//! it unless the caller allows that class. Differences in what is being compared (model files,
//! minerva's own version) are the point of a comparison and are only shown.

use super::JobValues;
use crate::results::Manifest;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DifferenceClass {
    /// CPU, cores, memory, GPUs and driver, OS and kernel.
    Host,
    /// The engines: llama.cpp build and compiled CPU features, candle/MLX versions, BLAS.
    Build,
    /// The metric-definitions version.
    Metrics,
    /// A scenario's resolved definition.
    Scenario,
    /// What is compared: model files, minerva's version (never refused).
    Compared,
}

impl DifferenceClass {
    pub fn as_str(self) -> &'static str {
        match self {
            DifferenceClass::Host => "host",
            DifferenceClass::Build => "build",
            DifferenceClass::Metrics => "metrics",
            DifferenceClass::Scenario => "scenario",
            DifferenceClass::Compared => "compared",
        }
    }

    /// Parses one `--allow-different` value.
    pub fn parse(s: &str) -> Option<DifferenceClass> {
        match s.trim() {
            "host" => Some(DifferenceClass::Host),
            "build" => Some(DifferenceClass::Build),
            "metrics" => Some(DifferenceClass::Metrics),
            "scenario" => Some(DifferenceClass::Scenario),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    pub class: DifferenceClass,
    /// e.g. `host.cpu`, `build.llama_cpp`, `scenario.short`.
    pub field: String,
    pub base: String,
    pub new: String,
}

impl Difference {
    /// "CPU differs (A vs B)": for the headline.
    pub fn headline(&self) -> String {
        let what = match self.field.as_str() {
            "host.cpu" => "CPU".to_string(),
            f => f.to_string(),
        };
        format!("{what} differs ({} vs {})", self.base, self.new)
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1024.0 * 1024.0 * 1024.0))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "(not recorded)".into(),
        other => other.to_string(),
    }
}

/// A scenario's definition as the manifest resolved it, by name.
fn scenario_def<'a>(m: &'a Manifest, name: &str) -> Option<&'a Value> {
    match m.pipeline.get("scenarios")? {
        Value::Array(list) => list
            .iter()
            .find(|s| s.get("name").and_then(Value::as_str) == Some(name)),
        Value::Object(map) => map.get(name),
        _ => None,
    }
}

fn short_hash(v: &Value) -> String {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    crate::formats::sha256_hex(&bytes)[..12].to_string()
}

/// A model's files as the download stage recorded them: name, size and sha256 of each.
fn model_files(m: &Manifest, name: &str) -> Option<String> {
    let files = m.models.get(name)?.get("files")?.as_array()?;
    let mut parts: Vec<String> = files
        .iter()
        .map(|f| {
            format!(
                "{} {} {}",
                f.get("name").map(text).unwrap_or_default(),
                f.get("size").map(text).unwrap_or_default(),
                f.get("sha256").map(text).unwrap_or_default()
            )
        })
        .collect();
    parts.sort();
    Some(parts.join("; "))
}

/// The differences between two manifests over the matched jobs: (guarded, shown).
pub fn differences(
    base: &Manifest,
    new: &Manifest,
    matched: &[(&JobValues, &JobValues)],
) -> (Vec<Difference>, Vec<Difference>) {
    let mut guarded = Vec::new();
    let mut push = |class, field: &str, b: String, n: String| {
        if b != n {
            guarded.push(Difference {
                class,
                field: field.to_string(),
                base: b,
                new: n,
            });
        }
    };
    let (hb, hn) = (&base.host, &new.host);
    let host = DifferenceClass::Host;
    push(host, "host.cpu", hb.cpu.clone(), hn.cpu.clone());
    push(
        host,
        "host.physical_cores",
        format!("{:?}", hb.physical_cores),
        format!("{:?}", hn.physical_cores),
    );
    push(
        host,
        "host.logical_cpus",
        hb.logical_cpus.to_string(),
        hn.logical_cpus.to_string(),
    );
    push(
        host,
        "host.memory",
        gib(hb.memory_bytes),
        gib(hn.memory_bytes),
    );
    push(host, "host.gpus", hb.gpus.join(", "), hn.gpus.join(", "));
    push(
        host,
        "host.gpu_driver",
        hb.gpu_driver.clone().unwrap_or_default(),
        hn.gpu_driver.clone().unwrap_or_default(),
    );
    push(host, "host.os", hb.os.clone(), hn.os.clone());
    push(host, "host.kernel", hb.kernel.clone(), hn.kernel.clone());
    push(host, "host.arch", hb.arch.clone(), hn.arch.clone());

    // Engine builds of the backends both runs used for matched jobs.
    let backends: BTreeSet<&str> = matched
        .iter()
        .flat_map(|(b, n)| [b.key.backend.as_str(), n.key.backend.as_str()])
        .collect();
    for name in &backends {
        let get = |m: &Manifest| m.backends.get(*name).map(text).unwrap_or_default();
        push(
            DifferenceClass::Build,
            &format!("build.{name}"),
            get(base),
            get(new),
        );
    }
    // minerva's own build: native or portable, CPU and cargo features (runs from before the
    // manifest recorded it are not compared on it).
    if let (Some(b), Some(n)) = (&base.build, &new.build) {
        push(
            DifferenceClass::Build,
            "build.minerva",
            b.describe(),
            n.describe(),
        );
    }
    push(
        DifferenceClass::Metrics,
        "metrics_version",
        base.metrics_version.to_string(),
        new.metrics_version.to_string(),
    );
    let scenarios: BTreeSet<(&str, &str)> = matched
        .iter()
        .map(|(b, n)| (b.key.scenario.as_str(), n.key.scenario.as_str()))
        .collect();
    for (sb, sn) in scenarios {
        let (db, dn) = (scenario_def(base, sb), scenario_def(new, sn));
        if let (Some(db), Some(dn)) = (db, dn) {
            if db != dn {
                push(
                    DifferenceClass::Scenario,
                    &format!("scenario.{sb}"),
                    format!("{} {}", short_hash(db), db),
                    format!("{} {}", short_hash(dn), dn),
                );
            }
        }
    }

    let mut shown = Vec::new();
    let mut show = |field: &str, b: String, n: String| {
        if b != n {
            shown.push(Difference {
                class: DifferenceClass::Compared,
                field: field.to_string(),
                base: b,
                new: n,
            });
        }
    };
    show(
        "minerva_version",
        format!("{} ({})", base.minerva_version, base.git_revision),
        format!("{} ({})", new.minerva_version, new.git_revision),
    );
    let models: BTreeSet<(&str, &str)> = matched
        .iter()
        .map(|(b, n)| (b.key.model.as_str(), n.key.model.as_str()))
        .collect();
    for (mb, mn) in models {
        if let (Some(fb), Some(fn_)) = (model_files(base, mb), model_files(new, mn)) {
            show(&format!("model.{mb}"), fb, fn_);
        }
    }
    (guarded, shown)
}
