//! The run manifest: what ran, where, with which inputs, and how it ended.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The version of the metric definitions (what TTFT, TPOT, tokens/s... measure and from which
/// timestamps). Bump it whenever a definition changes: `minerva compare` refuses to compare runs
/// of different versions unless told to (`--allow-different metrics`).
pub const METRICS_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Complete,
    Failed,
    Interrupted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    pub hostname: String,
    pub cpu: String,
    pub physical_cores: Option<usize>,
    pub logical_cpus: usize,
    pub memory_bytes: u64,
    pub os: String,
    pub kernel: String,
    pub arch: String,
    pub gpus: Vec<String>,
    /// The NVIDIA driver's version line, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_driver: Option<String>,
    /// Each GPU's facts from NVML (memory, bus, bandwidth, compute capability); empty without an
    /// NVIDIA driver.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpu_devices: Vec<crate::gpu::GpuInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobOutcome {
    pub id: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub minerva_version: String,
    pub git_revision: String,
    pub run_id: String,
    pub status: RunStatus,
    pub started_at: String,
    #[serde(default)]
    pub ended_at: Option<String>,
    /// The command that reproduces this run.
    pub command: String,
    pub pipeline_sha256: String,
    /// sha256 of the resolved pipeline JSON below.
    pub resolved_sha256: String,
    pub pipeline: Value,
    pub host: HostInfo,
    /// Per backend: its build (versions, CPU features), filled in by backends that have one.
    #[serde(default)]
    pub backends: Value,
    /// The report template the run used, when not the built-in one.
    #[serde(default)]
    pub report_template: Option<String>,
    #[serde(default)]
    pub jobs: Vec<JobOutcome>,
    /// The runner's own peak RSS (workers excluded).
    #[serde(default)]
    pub runner_peak_rss_bytes: Option<u64>,
    /// Per model: the download stage's record (source used, resolved commit, files, sha256).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub models: std::collections::BTreeMap<String, Value>,
    /// The version of the metric definitions the run's figures follow ([`METRICS_VERSION`]);
    /// runs from before it was recorded follow version 1.
    #[serde(default = "first_metrics_version")]
    pub metrics_version: u32,
    /// The ids of the bench jobs the plan holds (the INCOMPLETE banner counts against them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bench_jobs: Vec<String>,
    /// Each `minerva run --resume` of this run: when, what was rerun, what differed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resumes: Vec<Resume>,
    /// The run directories `--reuse` looked in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reuse_from: Vec<String>,
    /// `--shard K/N`: which share of the whole plan this run is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardInfo>,
    /// `--label KEY=VALUE`: where the run ran, as the user put it.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Set on a run `minerva merge` made: its shards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<Merged>,
    /// Where in-process repetitions' energy comes from ("RAPL package-0 (…)"), or "not
    /// measured here: why"; recorded when the run has in-process bench jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy: Option<String>,
    /// How the minerva that ran was built: native or portable, its CPU and cargo features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<crate::build_info::Build>,
}

/// What a sharded plan (and its run's manifest) records about its shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// K, from 1.
    pub index: u32,
    /// N.
    pub count: u32,
    /// The hash of the whole plan the shard was cut from (`plan::full_plan_sha256`): shards merge
    /// only when theirs agree.
    pub plan_sha256: String,
    /// Bench jobs in the whole plan, and in this shard.
    pub plan_bench_jobs: usize,
    pub bench_jobs: usize,
    /// Estimated cost (`plan::job_cost`) of the whole plan and of this shard.
    pub plan_cost: u64,
    pub cost: u64,
}

/// A run made by `minerva merge` from a pipeline's shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Merged {
    /// N, and the whole plan's hash every shard carried.
    pub count: u32,
    pub plan_sha256: String,
    /// The shards that were not there (`--allow-missing`): the report says PARTIAL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<u32>,
    /// Each merged shard, by index.
    pub shards: Vec<MergedShard>,
}

impl Merged {
    /// "shard 2 of 3 missing", "shards 2, 3 of 4 missing"; None when none is.
    pub fn missing_text(&self) -> Option<String> {
        (!self.missing.is_empty()).then(|| {
            format!(
                "shard{} {} of {} missing",
                if self.missing.len() == 1 { "" } else { "s" },
                self.missing
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                self.count
            )
        })
    }
}

/// One shard of a merged run, as its own manifest had it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergedShard {
    pub index: u32,
    pub run_id: String,
    /// The shard's run directory, as given to `minerva merge`.
    pub dir: String,
    pub status: RunStatus,
    pub host: HostInfo,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    pub bench_jobs: Vec<String>,
}

/// One `minerva run --resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resume {
    pub at: String,
    /// The jobs that were run again (cut short, failed or never started), in plan order.
    pub rerun: Vec<String>,
    /// What differed from the run's first start and was allowed with `--force` (host, a
    /// backend's build); empty when nothing did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forced: Vec<String>,
}

fn first_metrics_version() -> u32 {
    1
}

impl HostInfo {
    /// What identifies the machine for reuse and resume: everything but the hostname's
    /// spelling of memory (total memory is kept; it changes with hardware).
    pub fn fingerprint(&self) -> String {
        let v = serde_json::json!([
            self.hostname,
            self.cpu,
            self.physical_cores,
            self.logical_cpus,
            self.memory_bytes,
            self.os,
            self.kernel,
            self.arch,
            self.gpus,
            self.gpu_driver,
        ]);
        crate::formats::sha256_hex(v.to_string().as_bytes())
    }
}

pub fn host_info() -> HostInfo {
    use sysinfo::System;
    let mut sys = System::new();
    sys.refresh_memory();
    sys.refresh_cpu_all();
    let cpu = sys
        .cpus()
        .first()
        .map(|c| c.brand().trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    let mut host = HostInfo {
        hostname: System::host_name().unwrap_or_else(|| "unknown".into()),
        cpu,
        physical_cores: System::physical_core_count(),
        logical_cpus: sys.cpus().len(),
        memory_bytes: sys.total_memory(),
        os: System::long_os_version().unwrap_or_else(|| "unknown".into()),
        kernel: System::kernel_version().unwrap_or_else(|| "unknown".into()),
        arch: std::env::consts::ARCH.to_string(),
        gpus: detect_gpus(),
        gpu_driver: std::fs::read_to_string("/proc/driver/nvidia/version")
            .ok()
            .and_then(|v| v.lines().next().map(|l| l.trim().to_string())),
        gpu_devices: Vec::new(),
    };
    // NVML, where the driver has it: the GPUs' own names and facts, and the driver's version
    // with the CUDA version it supports.
    if let Some(g) = crate::gpu::gpus() {
        host.gpus = g.devices.iter().map(|d| d.name.clone()).collect();
        host.gpu_driver = Some(match &g.cuda_driver {
            Some(cuda) => format!("NVIDIA driver {} (CUDA {cuda})", g.driver),
            None => format!("NVIDIA driver {}", g.driver),
        });
        host.gpu_devices = g.devices.clone();
    }
    host
}

/// GPUs visible through the NVIDIA driver's proc files; none on machines without one.
fn detect_gpus() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc/driver/nvidia/gpus") {
        for e in dir.flatten() {
            if let Ok(info) = std::fs::read_to_string(e.path().join("information")) {
                if let Some(model) = info.lines().find_map(|l| l.strip_prefix("Model:")) {
                    out.push(model.trim().to_string());
                }
            }
        }
    }
    out.sort();
    out
}
