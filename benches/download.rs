//! Download throughput over loopback: `minerva download` (HEAD, redirect, streamed GET, sha256
//! while streaming, fsync, rename) against `curl -o` on the same 1 GiB file from the same local
//! hub, interleaved, in one run. Prints figures; asserts nothing.
//!
//!   cargo bench --bench download [-- SIZE_MIB ROUNDS]

#[allow(dead_code)]
#[path = "../tests/common/hub.rs"]
mod hub;

use hub::{Fault, File, Hub, Repo};
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let mib: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1024);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let size = mib << 20;
    let data = Arc::new(hub::bytes(size, 42));
    let mut repos = BTreeMap::new();
    let mut files = BTreeMap::new();
    files.insert(
        "big.gguf".to_string(),
        File {
            data: data.clone(),
            lfs: true,
            fault: Fault::None,
        },
    );
    repos.insert(
        "bench/big".to_string(),
        Repo {
            files,
            ..Repo::default()
        },
    );
    let hub = Hub::start(repos);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bin = env!("CARGO_BIN_EXE_minerva");
    let url = format!("{}/cdn/bench/big/big.gguf", hub.endpoint());
    let has_curl = Command::new("curl").arg("--version").output().is_ok();
    println!(
        "download: {mib} MiB over loopback, {rounds} interleaved rounds (minerva hashes and fsyncs; curl -o does neither)"
    );
    let gbps = |secs: f64| size as f64 / 1e9 / secs;
    let (mut m, mut c) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let cache = dir.path().join(format!("hf-{round}"));
        let t = Instant::now();
        let out = Command::new(bin)
            .args(["-q", "download", "hf://bench/big/big.gguf"])
            .env("HF_ENDPOINT", hub.endpoint())
            .env("HF_HUB_CACHE", &cache)
            .env("MINERVA_CACHE", dir.path().join("state"))
            .env("MINERVA_MODELS", dir.path().join("models"))
            .env_remove("HF_TOKEN")
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let secs = t.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        m.push(secs);
        let _ = std::fs::remove_dir_all(&cache);
        if has_curl {
            let dest = dir.path().join("curl.out");
            let t = Instant::now();
            let ok = Command::new("curl")
                .args(["-s", "-f", "-o"])
                .arg(&dest)
                .arg(&url)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            let secs = t.elapsed().as_secs_f64();
            assert!(ok, "curl failed");
            c.push(secs);
            let _ = std::fs::remove_file(&dest);
        }
        println!(
            "  round {}: minerva {:.2} GB/s{}",
            round + 1,
            gbps(m[round]),
            c.get(round)
                .map(|s| format!(", curl {:.2} GB/s", gbps(*s)))
                .unwrap_or_default()
        );
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let mm = med(&mut m);
    if c.is_empty() {
        println!("minerva median {:.2} GB/s (curl not found)", gbps(mm));
    } else {
        let cm = med(&mut c);
        println!(
            "median: minerva {:.2} GB/s, curl {:.2} GB/s, minerva/curl {:.2}",
            gbps(mm),
            gbps(cm),
            cm / mm
        );
    }
}
