//! Core benchmark (not a test): prints figures for the runner core's speed and memory goals.
//!
//!   cargo bench --bench core
//!
//! - plan time for a generated pipeline expanding to 10,000 jobs (goal < 100 ms)
//! - analysis time for 1,000,000 synthetic samples (goal < 1 s on 2 cores), peak RSS < 1 GB
//! - the runner's own peak RSS while running the quickstart (goal < 100 MB; workers excluded)
//! - GGUF header verification of a sparse 5 GB file (goal: milliseconds, < 64 MB RSS)
//! - sha256 of a dense 1 GiB cached file, hashing on one core (goal ≥ 1.4 GB/s)
//!
//! Each measurement runs in a fresh child process of this binary, so each peak RSS is its own.

use minerva::analyze::analyze;
use minerva::plan::{build_plan, BenchJob, PlanOptions};
use minerva::results::Millis;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn peak_rss_mb() -> f64 {
    minerva::backend::worker::peak_rss_bytes().unwrap_or(0) as f64 / (1024.0 * 1024.0)
}

fn generated_pipeline(dir: &Path) -> PathBuf {
    let mut y = String::from("name: big\nmodels:\n");
    for m in 0..10 {
        y.push_str(&format!(
            "  - {{ name: m{m}, format: gguf, source: {{ path: m{m}.gguf }} }}\n"
        ));
    }
    y.push_str("scenarios:\n");
    for s in 0..10 {
        y.push_str(&format!(
            "  - {{ name: s{s}, prompt: \"prompt {s}\", max_tokens: 16 }}\n"
        ));
    }
    let models: Vec<String> = (0..10).map(|m| format!("m{m}")).collect();
    let scenarios: Vec<String> = (0..10).map(|s| format!("s{s}")).collect();
    let ttft: Vec<String> = (0..100).map(|t| t.to_string()).collect();
    y.push_str(&format!(
        "stages:\n  - {{ name: fetch, kind: download }}\n  - name: bench\n    kind: bench\n    needs: [fetch]\n    matrix:\n      backend: [simulated]\n      model: [{}]\n      scenario: [{}]\n      params:\n        ttft_ms: [{}]\n  - {{ name: analyze, kind: analyze, needs: [bench] }}\n  - {{ name: report, kind: report, needs: [analyze] }}\n",
        models.join(", "),
        scenarios.join(", "),
        ttft.join(", ")
    ));
    let path = dir.join("big.yaml");
    std::fs::write(&path, y).unwrap_or_else(|e| panic!("{e}"));
    path
}

fn child_plan() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = generated_pipeline(dir.path());
    let mut times = Vec::new();
    let mut jobs = 0;
    for _ in 0..7 {
        let t = Instant::now();
        let plan = build_plan(&path, &PlanOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        times.push(t.elapsed().as_secs_f64() * 1e3);
        jobs = plan.bench_jobs().count();
    }
    times.sort_by(f64::total_cmp);
    println!("plan: {jobs} bench jobs, median {:.1} ms (min {:.1}, max {:.1}) over 7 runs; peak RSS {:.0} MiB", times[3], times[0], times[6], peak_rss_mb());
}

fn child_analyze() {
    // 100 jobs × 10,000 repetitions, 4 token timestamps each, generated on the fly.
    let plan_job: BenchJob = serde_json::from_value(serde_json::json!({
        "backend": "simulated",
        "model": {"name": "m", "format": "gguf", "sources": [{"path": "m.gguf"}], "sha256": null},
        "scenario": {"name": "s", "description": null, "prompt": "p", "system": null, "prompt_tokens": null, "max_tokens": 4, "chat": true},
        "params": {}, "display_params": {"threads": 2}, "runs": 10000, "warmup": 0, "seed": 1, "timeout": 60.0
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let n = 1_000_000u32;
    let ids: Vec<String> = (0..100)
        .map(|j| format!("bench/simulated/m/s{j}/threads=2"))
        .collect();
    let samples = || {
        (0..n).map(|i| {
            let j = (i % 100) as usize;
            let mut s = plan_job.blank_sample(&ids[j], i / 100, false);
            let x = f64::from(i % 997);
            s.ttft_ms = Some(Millis(20.0 + x * 0.01));
            s.e2e_ms = Some(Millis(60.0 + x * 0.02));
            s.pp_tps = Some(500.0 + x);
            s.tg_tps = Some(100.0 - x * 0.01);
            s.load_ms = Some(Millis(150.0));
            s.peak_rss_bytes = Some(100 << 20);
            s.token_ms = vec![
                Millis(20.0),
                Millis(30.0 + x * 0.001),
                Millis(40.0),
                Millis(50.0),
            ];
            s
        })
    };
    // The generator alone, to separate its cost from the analysis.
    let t = Instant::now();
    samples().for_each(drop);
    let gen = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let a = analyze(samples()).unwrap_or_else(|e| panic!("{e}"));
    let secs = t.elapsed().as_secs_f64();
    let rows: u64 = a.jobs.iter().map(|j| j.samples).sum();
    println!(
        "analysis: {rows} samples (3M inter-token gaps) in {} jobs: {:.3} s in all, of which {:.3} s generating the samples, so {:.3} s analysis; peak RSS {:.0} MiB",
        a.jobs.len(),
        secs,
        gen,
        secs - gen,
        peak_rss_mb()
    );
}

/// A valid GGUF header with one 5 GB F32 tensor, the data left as a hole (sparse file).
fn sparse_gguf(dir: &Path) -> PathBuf {
    fn s(o: &mut Vec<u8>, v: &str) {
        o.extend((v.len() as u64).to_le_bytes());
        o.extend(v.as_bytes());
    }
    let mut o = Vec::new();
    o.extend(b"GGUF");
    o.extend(3u32.to_le_bytes());
    o.extend(1u64.to_le_bytes());
    o.extend(1u64.to_le_bytes());
    s(&mut o, "general.architecture");
    o.extend(8u32.to_le_bytes());
    s(&mut o, "llama");
    s(&mut o, "w");
    o.extend(2u32.to_le_bytes());
    let (d0, d1) = (1u64 << 20, 1200u64);
    o.extend(d0.to_le_bytes());
    o.extend(d1.to_le_bytes());
    o.extend(0u32.to_le_bytes());
    o.extend(0u64.to_le_bytes());
    let data = (o.len() as u64).div_ceil(32) * 32;
    o.resize(data as usize, 0);
    let path = dir.join("sparse.gguf");
    std::fs::write(&path, &o).unwrap_or_else(|e| panic!("{e}"));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{e}"));
    f.set_len(data + d0 * d1 * 4)
        .unwrap_or_else(|e| panic!("{e}"));
    path
}

fn child_verify(path: &Path) {
    let t = Instant::now();
    let s = minerva::formats::gguf::verify_file(path).unwrap_or_else(|e| panic!("{e}"));
    let secs = t.elapsed().as_secs_f64();
    println!(
        "gguf verify: {:.2} GB file, {} tensor(s), {:.2} ms; peak RSS {:.0} MiB",
        s.file_size as f64 / 1e9,
        s.tensor_count,
        secs * 1e3,
        peak_rss_mb()
    );
}

/// sha256 of a dense 1 GiB file, read once first so it is in the page cache: the hashing speed.
/// (Reading the sparse file's holes runs at ~0.3 GB/s on this VM, which would measure the disk.)
fn child_hash(dir: &Path) {
    use std::io::Write;
    let path = dir.join("dense.bin");
    {
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}")));
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            for c in block.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                c.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&block).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    // Warm the page cache in constant memory.
    if let Ok(mut f) = std::fs::File::open(&path) {
        let _ = std::io::copy(&mut f, &mut std::io::sink());
    }
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let t = Instant::now();
    let h = minerva::formats::gguf::sha256_file(&path).unwrap_or_else(|e| panic!("{e}"));
    let secs = t.elapsed().as_secs_f64();
    println!(
        "sha256: {:.2} GB (cached) in {:.3} s = {:.2} GB/s (hashing on one core, reads on a second thread) ({}…); peak RSS {:.0} MiB",
        size as f64 / 1e9,
        secs,
        size as f64 / 1e9 / secs,
        &h[..12],
        peak_rss_mb()
    );
}

fn quickstart_runner_rss() {
    let bin = env!("CARGO_BIN_EXE_minerva");
    let out = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = env!("CARGO_MANIFEST_DIR");
    let t = Instant::now();
    let status = Command::new(bin)
        .current_dir(root)
        .args([
            "-q",
            "run",
            "pipelines/quickstart.yaml",
            "--run-id",
            "bench",
            "--out",
        ])
        .arg(out.path())
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("quickstart/bench/manifest.json"))
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    let rss = manifest["runner_peak_rss_bytes"].as_f64().unwrap_or(0.0) / (1024.0 * 1024.0);
    println!(
        "quickstart: exit {:?}, {:.1} s wall, runner peak RSS {:.0} MiB (workers excluded)",
        status.code(),
        t.elapsed().as_secs_f64(),
        rss
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        match args.get(i + 1).map(String::as_str) {
            Some("plan") => child_plan(),
            Some("analyze") => child_analyze(),
            Some("verify") => child_verify(Path::new(&args[i + 2])),
            Some("hash") => child_hash(Path::new(&args[i + 2])),
            other => panic!("unknown child mode {other:?}"),
        }
        return;
    }
    let me = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    for mode in ["plan", "analyze"] {
        let out = Command::new(&me)
            .args(["--child", mode])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let sparse = sparse_gguf(dir.path());
    for (mode, arg) in [
        ("verify", sparse.clone()),
        ("hash", dir.path().to_path_buf()),
    ] {
        let out = Command::new(&me)
            .args(["--child", mode])
            .arg(&arg)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    }
    drop(dir);
    quickstart_runner_rss();
}
