use super::*;

fn manifest(cpu: &str) -> Manifest {
    serde_json::from_value(serde_json::json!({
        "minerva_version": "0.1.0", "git_revision": "abc", "run_id": "r", "status": "complete",
        "started_at": "2026-12-01T00:00:00Z", "command": "minerva run p.yaml",
        "pipeline_sha256": "x", "resolved_sha256": "y",
        "pipeline": {"scenarios": [{"name": "s", "max_tokens": 16}]},
        "host": {"hostname": "h", "cpu": cpu, "physical_cores": 2, "logical_cpus": 2,
                 "memory_bytes": 1073741824u64, "os": "Debian", "kernel": "6.1", "arch": "x86_64",
                 "gpus": []},
        "backends": {"simulated": "simulated backend"}
    }))
    .unwrap_or_else(|e| panic!("{e}"))
}

fn job(params: &str, tpot: &[f64]) -> JobValues {
    JobValues {
        key: JobKey {
            backend: "simulated".into(),
            model: "m".into(),
            scenario: "s".into(),
            params: params.into(),
        },
        params: params
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        simulated: true,
        server: false,
        values: BTreeMap::from([
            ("tpot_ms".to_string(), tpot.to_vec()),
            ("load_ms".to_string(), vec![150.0; tpot.len()]),
        ]),
    }
}

fn run(cpu: &str, jobs: Vec<JobValues>) -> Run {
    Run {
        dir: PathBuf::from(format!("out/{cpu}")),
        manifest: manifest(cpu),
        jobs,
    }
}

fn metric<'a>(c: &'a Comparison, name: &str) -> &'a MetricComparison {
    c.jobs[0]
        .metrics
        .iter()
        .find(|m| m.metric == name)
        .unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn ten_percent_slower_tpot_is_slower_with_its_size() {
    let base = run("cpu", vec![job("", &[10.0, 10.1, 9.9, 10.05, 9.95])]);
    let new = run("cpu", vec![job("", &[11.0, 11.1, 10.9, 11.05, 10.95])]);
    let c = compare_runs(&base, &new, &CompareOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let m = metric(&c, "tpot_ms");
    assert_eq!(m.verdict, Verdict::Slower);
    assert!((m.change.unwrap_or(0.0) - 0.1).abs() < 1e-9);
    let (lo, hi) = m.change_ci.unwrap_or((0.0, 0.0));
    assert!(lo > 0.08 && hi < 0.12 && lo < 0.1 && hi > 0.1, "{lo} {hi}");
    // 5 vs 5 completely separated: exact p = 2/252.
    assert!((m.p_value.unwrap_or(1.0) - 2.0 / 252.0).abs() < 1e-12);
    // Load time is one observation per job, whatever the sample count.
    let load = metric(&c, "load_ms");
    assert_eq!(load.verdict, Verdict::Invalid);
    assert_eq!(load.reason.as_deref(), Some("n=1, needs 3"));
    assert!(c.has_regression());
    assert!(render::markdown(&c)
        .starts_with("## minerva compare: 1 slower, 0 faster, 0 within noise, 1 INVALID"));
}

#[test]
fn small_changes_and_small_samples_are_not_verdicts() {
    // Significant but 1%: below the 2% threshold.
    let base = run("cpu", vec![job("", &[10.0, 10.01, 9.99, 10.0, 10.02])]);
    let new = run("cpu", vec![job("", &[10.1, 10.11, 10.09, 10.1, 10.12])]);
    let c = compare_runs(&base, &new, &CompareOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(metric(&c, "tpot_ms").verdict, Verdict::WithinNoise);
    // …but beyond a 0.5% threshold.
    let opts = CompareOptions {
        threshold: 0.005,
        ..Default::default()
    };
    let c = compare_runs(&base, &new, &opts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(metric(&c, "tpot_ms").verdict, Verdict::Slower);
    // Two repetitions: INVALID, not a verdict.
    let base = run("cpu", vec![job("", &[10.0, 10.0])]);
    let new = run("cpu", vec![job("", &[20.0, 20.0])]);
    let c = compare_runs(&base, &new, &CompareOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let m = metric(&c, "tpot_ms");
    assert_eq!(
        (m.verdict, m.reason.as_deref()),
        (Verdict::Invalid, Some("n=2, needs 3"))
    );
}

#[test]
fn percentiles_need_their_sample_counts() {
    let def = METRICS
        .iter()
        .find(|d| d.name == "ttft_ms p90")
        .unwrap_or_else(|| panic!("p90"));
    let key = job("", &[]).key;
    let few: Vec<f64> = (0..20).map(f64::from).collect();
    let opts = CompareOptions::default();
    let c = compare_metric(def, &key, &few, &few, &opts);
    assert_eq!(c.verdict_text(), "INVALID (n=20, needs 64)");
    let base: Vec<f64> = (0..100).map(|i| 100.0 + f64::from(i % 10)).collect();
    let new: Vec<f64> = base.iter().map(|v| v * 1.3).collect();
    let c = compare_metric(def, &key, &base, &new, &opts);
    assert_eq!(c.verdict, Verdict::Slower);
    assert_eq!(percentile_min_samples(99), 662);
}

#[test]
fn jobs_match_by_identity_then_by_what_is_left() {
    let base = vec![job("threads=1", &[1.0]), job("threads=8", &[1.0])];
    let new = vec![job("threads=8", &[1.0]), job("threads=2", &[1.0])];
    let (pairs, only_b, only_n) = match_jobs(&base, &new);
    // threads=8 by identity; threads=1 ↔ threads=2 as the one left of the same job.
    assert_eq!(pairs, vec![(0, 1), (1, 0)]);
    assert!(only_b.is_empty() && only_n.is_empty());
    let base = vec![job("threads=1", &[1.0]), job("threads=4", &[1.0])];
    let new = vec![job("threads=2", &[1.0]), job("threads=3", &[1.0])];
    let (pairs, only_b, only_n) = match_jobs(&base, &new);
    assert!(pairs.is_empty(), "ambiguous pairs are not guessed");
    assert_eq!((only_b.len(), only_n.len()), (2, 2));
    // One param changed across a matrix: each job pairs with the one that differs only there.
    let base = vec![
        job("tpot=10,ttft=20", &[1.0]),
        job("tpot=10,ttft=30", &[1.0]),
    ];
    let new = vec![
        job("tpot=11,ttft=30", &[1.0]),
        job("tpot=11,ttft=20", &[1.0]),
    ];
    let (pairs, only_b, only_n) = match_jobs(&base, &new);
    assert_eq!(pairs, vec![(0, 1), (1, 0)]);
    assert!(only_b.is_empty() && only_n.is_empty());
}

#[test]
fn a_different_cpu_is_refused_unless_allowed() {
    let base = run("Intel Xeon", vec![job("", &[10.0, 10.1, 9.9])]);
    let new = run("AMD EPYC", vec![job("", &[10.0, 10.1, 9.9])]);
    match compare_runs(&base, &new, &CompareOptions::default()) {
        Err(e @ CompareError::NotComparable(_)) => {
            let text = e.to_string();
            assert!(
                text.contains("host.cpu: Intel Xeon (base) vs AMD EPYC (new)"),
                "{text}"
            );
            assert!(text.contains("--allow-different host"), "{text}");
        }
        other => panic!("expected NotComparable, got {other:?}"),
    }
    let opts = CompareOptions {
        allow_different: vec![DifferenceClass::Host],
        ..Default::default()
    };
    let c = compare_runs(&base, &new, &opts).unwrap_or_else(|e| panic!("{e}"));
    assert!(render::markdown(&c)
        .contains("**Not like for like:** CPU differs (Intel Xeon vs AMD EPYC)"));
}

#[test]
fn the_whole_interval_must_clear_the_threshold_and_spread_out_sides_are_unstable() {
    // 2.5% slower on average, but the interval reaches inside ±2%: within noise.
    let base = run("cpu", vec![job("", &[10.0, 10.1, 9.9, 10.05, 9.95, 10.0])]);
    let new = run(
        "cpu",
        vec![job("", &[10.05, 10.45, 10.2, 10.3, 10.15, 10.35])],
    );
    let c = compare_runs(&base, &new, &CompareOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let m = metric(&c, "tpot_ms");
    assert!(m.p_value.unwrap_or(1.0) < ALPHA);
    assert!(
        m.change_ci.is_some_and(|(lo, _)| lo < 0.02),
        "{:?}",
        m.change_ci
    );
    assert_eq!(m.verdict, Verdict::WithinNoise);
    // +10.5% with a side's CV at 5.5%: within twice the spread, UNSTABLE, saying what the
    // verdict would have been.
    let new = run("cpu", vec![job("", &[10.6, 11.8, 10.8, 10.2, 11.5, 11.4])]);
    let c = compare_runs(&base, &new, &CompareOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let m = metric(&c, "tpot_ms");
    assert_eq!(m.verdict, Verdict::Unstable);
    assert!(
        m.verdict_text().starts_with("UNSTABLE (new CV 5.5% > 5.0%"),
        "{}",
        m.verdict_text()
    );
    assert!(
        m.verdict_text().ends_with("would be slower)"),
        "{}",
        m.verdict_text()
    );
    assert!(!c.has_regression());
    // The same spread under a change larger than twice it: the verdict stands.
    let new = run("cpu", vec![job("", &[14.0, 15.9, 14.3, 13.2, 15.3, 15.2])]);
    let c = compare_runs(&base, &new, &CompareOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(metric(&c, "tpot_ms").verdict, Verdict::Slower);
}

#[test]
fn thresholds_parse_as_percent_or_fraction() {
    assert_eq!(parse_threshold("2%").ok(), Some(0.02));
    assert_eq!(parse_threshold("0.05").ok(), Some(0.05));
    assert!(parse_threshold("-1%").is_err());
    assert!(parse_threshold("abc").is_err());
}

#[test]
fn a_native_and_a_portable_build_are_not_compared_unless_allowed() {
    let mut base = run("cpu", vec![job("", &[10.0, 10.1, 9.9])]);
    let mut new = run("cpu", vec![job("", &[10.0, 10.1, 9.9])]);
    let mut b = crate::build_info::build();
    b.target_cpu = "x86-64-v3".into();
    b.native = false;
    b.cpu_features = vec!["avx2".into(), "fma".into()];
    let mut n = b.clone();
    n.target_cpu = "native".into();
    n.native = true;
    n.cpu_features.push("avx512f".into());
    base.manifest.build = Some(b.clone());
    new.manifest.build = Some(n);
    match compare_runs(&base, &new, &CompareOptions::default()) {
        Err(e @ CompareError::NotComparable(_)) => {
            let text = e.to_string();
            assert!(
                text.contains("build.minerva: portable, target-cpu x86-64-v3 (avx2 fma"),
                "{text}"
            );
            assert!(text.contains("vs native (avx2 fma avx512f)"), "{text}");
        }
        other => panic!("expected NotComparable, got {other:?}"),
    }
    // The same build on both sides, or a run from before builds were recorded: no difference.
    new.manifest.build = Some(b);
    assert!(compare_runs(&base, &new, &CompareOptions::default()).is_ok());
    new.manifest.build = None;
    assert!(compare_runs(&base, &new, &CompareOptions::default()).is_ok());
}
