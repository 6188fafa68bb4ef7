//! Crash-safe, resumable runs, end to end on the simulated backend (realtime, about 2 s a run):
//! SIGKILL anywhere then `--resume`, SIGHUP, two runners and the machine-wide bench lock,
//! `--reuse`, a torn line in the middle of samples.jsonl, and what `--resume` refuses.

mod common;

use common::{read, tempdir, text, Minerva};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const PIPELINE: &str = "tests/fixtures/pipelines/valid/resume.yaml";
const MORE: &str = "tests/fixtures/pipelines/valid/resume_more.yaml";

fn json(p: &Path) -> Value {
    serde_json::from_str(&read(p)).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The lines of a JSONL file that parse; none when it does not exist yet.
fn jsonl(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `minerva run` with `args`, started, not waited for.
fn spawn(args: &[&str], lock_dir: Option<&Path>) -> Child {
    let mut m = Minerva::new(args);
    if let Some(d) = lock_dir {
        m = m.env("MINERVA_LOCK_DIR", &d.display().to_string());
    }
    m.cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn run(args: &[&str]) -> std::process::Output {
    Minerva::new(args).output()
}

/// Measured, not superseded, successful samples per job.
fn measured(run_dir: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for s in jsonl(&run_dir.join("samples.jsonl")) {
        if s["warmup"] == true || s["superseded"] == true || !s["error"].is_null() {
            continue;
        }
        *out.entry(s["job_id"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    out
}

/// The report's section headings.
fn sections(report: &str) -> Vec<String> {
    report
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Makes this process the reaper of orphans, so a worker that outlived its runner shows up as
/// our child (Linux).
#[allow(unsafe_code)]
fn become_subreaper() {
    // SAFETY: prctl with plain integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// Live (not zombie) `minerva worker` processes whose parent is `parent`.
fn workers_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.len() < 2 || fields[0] == "Z" || fields[1] != parent.to_string() {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if cmdline.split(|b| *b == 0).nth(1) == Some(&b"worker"[..]) {
            out.push(pid);
        }
    }
    out
}

/// Workers whose parent is this test process: workers that outlived their runner.
fn orphan_workers() -> Vec<u32> {
    workers_of(std::process::id())
}

/// Waits (at most 1 s: the kernel delivers PR_SET_PDEATHSIG at once) until no worker is left.
fn wait_no_orphans() {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let left = orphan_workers();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "workers left running: {left:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[allow(unsafe_code)]
fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    let r = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(r, 0, "kill failed");
}

#[test]
fn killed_anywhere_then_resumed_every_job_has_its_runs_and_nothing_is_left_running() {
    become_subreaper();
    let out = tempdir();
    let out_s = out.path().display().to_string();
    let whole = run(&["run", PIPELINE, "--out", &out_s, "--run-id", "whole"]);
    assert_eq!(whole.status.code(), Some(0), "{}", text(&whole.stderr));
    let whole_report = read(&out.path().join("resume/whole/report.md"));
    let jobs = measured(&out.path().join("resume/whole"));
    assert_eq!(jobs.len(), 6);

    // A seeded sequence of kill moments over the run's ~2 s (some before the first job, some
    // after the last).
    let mut x: u64 = 0x5eed;
    let mut cut_short = 0;
    for i in 0..20 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let at = Duration::from_millis((x >> 33) % 2400);
        let id = format!("k{i}");
        let dir = out.path().join("resume").join(&id);
        let mut child = spawn(
            &["run", PIPELINE, "--out", &out_s, "--run-id", &id, "-q"],
            None,
        );
        std::thread::sleep(at);
        signal(&child, libc::SIGKILL);
        let _ = child.wait();
        wait_no_orphans();
        if !dir.join("manifest.json").exists() {
            // Killed before the run directory existed: nothing to resume.
            continue;
        }
        let before = jsonl(&dir.join("samples.jsonl")).len();
        let dir_s = dir.display().to_string();
        let again = run(&["run", PIPELINE, "--resume", &dir_s, "-q"]);
        assert_eq!(
            again.status.code(),
            Some(0),
            "iteration {i} (killed at {at:?}): {}",
            text(&again.stderr)
        );
        wait_no_orphans();
        let got = measured(&dir);
        assert_eq!(got.len(), 6, "iteration {i}: {got:?}");
        for (job, n) in &got {
            assert_eq!(*n, 4, "iteration {i} (killed at {at:?}): {job} has {n}");
        }
        let superseded = jsonl(&dir.join("samples.jsonl"))
            .iter()
            .filter(|s| s["superseded"] == true)
            .count();
        if superseded > 0 {
            cut_short += 1;
        }
        let report = read(&dir.join("report.md"));
        assert_eq!(sections(&report), sections(&whole_report), "iteration {i}");
        assert!(!report.contains("INCOMPLETE"), "iteration {i}");
        let m = json(&dir.join("manifest.json"));
        assert_eq!(m["status"], "complete");
        assert_eq!(m["resumes"].as_array().map(Vec::len), Some(1));
        assert!(before <= jsonl(&dir.join("samples.jsonl")).len());
    }
    eprintln!("{cut_short} of 20 kills cut a bench job short (its samples superseded)");
    // The kill moments hit the middle of a job at least sometimes.
    assert!(
        cut_short >= 3,
        "only {cut_short} iterations cut a job short"
    );

    // A worker killed with its runner even while it writes nothing (a 5 s model load): without
    // PR_SET_PDEATHSIG it would notice the closed pipe only at its next write.
    let mut child = spawn(
        &[
            "run",
            PIPELINE,
            "--out",
            &out_s,
            "--run-id",
            "load",
            "--set",
            "load=5000",
        ],
        None,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while workers_of(child.id()).is_empty() {
        assert!(Instant::now() < deadline, "no worker started");
        std::thread::sleep(Duration::from_millis(10));
    }
    signal(&child, libc::SIGKILL);
    let _ = child.wait();
    wait_no_orphans();
}

#[test]
fn sighup_stops_the_run_like_sigterm_and_latest_waits_for_a_complete_run() {
    become_subreaper();
    let out = tempdir();
    let out_s = out.path().display().to_string();
    let dir = out.path().join("resume/hup");
    let mut child = spawn(&["run", PIPELINE, "--out", &out_s, "--run-id", "hup"], None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while jsonl(&dir.join("jobs.jsonl")).is_empty() {
        assert!(Instant::now() < deadline, "no job ended");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A resume of a run that is still running is refused, and changes nothing.
    let dir_s = dir.display().to_string();
    let early = run(&["run", PIPELINE, "--resume", &dir_s]);
    assert_eq!(early.status.code(), Some(3), "{}", text(&early.stderr));
    assert!(text(&early.stderr).contains("the run directory is locked by pid"));

    signal(&child, libc::SIGHUP);
    let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status.code(), Some(130));
    wait_no_orphans();
    let m = json(&dir.join("manifest.json"));
    assert_eq!(m["status"], "interrupted");
    let link = |name: &str| std::fs::read_link(out.path().join("resume").join(name)).ok();
    assert_eq!(link("latest-started"), Some(PathBuf::from("hup")));
    assert_eq!(
        link("latest"),
        None,
        "latest moves only when a run completes"
    );

    let rep = run(&["report", &dir_s]);
    assert_eq!(rep.status.code(), Some(0), "{}", text(&rep.stderr));
    let report = read(&dir.join("report.md"));
    let done = jsonl(&dir.join("jobs.jsonl"))
        .iter()
        .filter(|r| r["kind"] == "bench" && r["status"] == "ok")
        .count();
    assert!(
        report.contains(&format!("**INCOMPLETE: {done} of 6 bench jobs completed")),
        "{report}"
    );

    // Resumed through the link that names it.
    let started = out
        .path()
        .join("resume/latest-started")
        .display()
        .to_string();
    let again = run(&["run", PIPELINE, "--resume", &started]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert_eq!(link("latest"), Some(PathBuf::from("hup")));
    assert_eq!(link("latest-started"), Some(PathBuf::from("hup")));
    assert!(measured(&dir).values().all(|n| *n == 4));
}

/// Each bench job's [lock taken, end] in ms since the epoch, from a journal.
fn bench_spans(dir: &Path) -> Vec<(f64, f64)> {
    jsonl(&dir.join("jobs.jsonl"))
        .iter()
        .filter(|r| r["kind"] == "bench" && r["reused_from"].is_null())
        .filter_map(|r| {
            let t = |k: &str| {
                chrono::DateTime::parse_from_rfc3339(r[k].as_str()?)
                    .ok()
                    .map(|t| t.timestamp_millis() as f64)
            };
            Some((t("measured_from")?, t("ended_at")?))
        })
        .collect()
}

#[test]
fn two_runners_never_benchmark_at_once() {
    let out = tempdir();
    let out_s = out.path().display().to_string();
    let locks = tempdir();
    let lock = locks.path().join("bench.lock.holder");
    // Runner a is the slower one (a 2 s load per job): its first job still holds the lock
    // when b and c arrive.
    let a = spawn(
        &[
            "run",
            PIPELINE,
            "--out",
            &out_s,
            "--run-id",
            "a",
            "--set",
            "load=2000",
        ],
        Some(locks.path()),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lock.exists() {
        assert!(
            Instant::now() < deadline,
            "runner a never took the bench lock"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // --no-wait: fails at once, naming the holder.
    let b = Minerva::new(&[
        "run",
        PIPELINE,
        "--out",
        &out_s,
        "--run-id",
        "b",
        "--no-wait",
    ])
    .env("MINERVA_LOCK_DIR", &locks.path().display().to_string())
    .output();
    assert_eq!(b.status.code(), Some(1), "{}", text(&b.stderr));
    let why = text(&b.stderr);
    assert!(
        why.contains("the bench lock is locked by pid")
            && why.contains("pipeline resume, bench bench/simulated/tiny/")
            && why.contains("resume/a"),
        "{why}"
    );
    // Without it: waits, says for whom, and never measures while the other runner does.
    let c = spawn(
        &["run", PIPELINE, "--out", &out_s, "--run-id", "c"],
        Some(locks.path()),
    );
    let a = a.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let c = c.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.status.code(), Some(0), "{}", text(&a.stderr));
    assert_eq!(c.status.code(), Some(0), "{}", text(&c.stderr));
    let (sa, sc) = (
        bench_spans(&out.path().join("resume/a")),
        bench_spans(&out.path().join("resume/c")),
    );
    assert_eq!((sa.len(), sc.len()), (6, 6));
    for x in &sa {
        for y in &sc {
            assert!(y.0 >= x.1 || y.1 <= x.0, "bench spans overlap: {x:?} {y:?}");
        }
    }
    // Whoever asked second waited (c, unless it arrived between two of a's jobs: then a),
    // said so, and its journal and report record it.
    let waits = |me: &str, other: &str| {
        jsonl(&out.path().join("resume").join(me).join("jobs.jsonl"))
            .iter()
            .filter(|r| {
                r["waited_for"]
                    .as_str()
                    .is_some_and(|w| w.contains(&format!("resume/{other}")))
            })
            .count()
    };
    let (c_waited, a_waited) = (waits("c", "a"), waits("a", "c"));
    assert!(c_waited + a_waited >= 1, "nobody waited");
    for (me, n, said) in [("c", c_waited, &c.stderr), ("a", a_waited, &a.stderr)] {
        if n > 0 {
            assert!(text(said).contains("the bench lock: waiting for pid"));
            assert!(read(&out.path().join("resume").join(me).join("report.md"))
                .contains("waited for another runner's bench to end"));
        }
    }
}

#[test]
fn reuse_copies_only_jobs_with_the_same_key() {
    let out = tempdir();
    let out_s = out.path().display().to_string();
    let first = run(&["run", PIPELINE, "--out", &out_s, "--run-id", "first"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let first_dir = out.path().join("resume/first");
    let first_s = first_dir.display().to_string();

    let reused = |dir: &Path| -> (usize, usize) {
        let j = jsonl(&dir.join("jobs.jsonl"));
        let bench = j.iter().filter(|r| r["kind"] == "bench");
        let (r, m): (Vec<&Value>, Vec<&Value>) = bench.partition(|r| !r["reused_from"].is_null());
        (r.len(), m.len())
    };

    // One model added: only its 6 jobs are measured; the other 6 are copied.
    let more = run(&[
        "run", MORE, "--out", &out_s, "--run-id", "more", "--reuse", &first_s,
    ]);
    assert_eq!(more.status.code(), Some(0), "{}", text(&more.stderr));
    let more_dir = out.path().join("resume_more/more");
    assert_eq!(reused(&more_dir), (6, 6));
    for r in jsonl(&more_dir.join("jobs.jsonl")) {
        if r["kind"] == "bench" {
            let id = r["id"].as_str().unwrap_or("");
            assert_eq!(r["reused_from"].is_null(), id.contains("/tiny_b/"), "{id}");
        }
    }
    let counts = measured(&more_dir);
    assert_eq!(counts.len(), 12);
    assert!(counts.values().all(|n| *n == 4));
    // Copied samples are the earlier run's figures, under this run's job ids.
    let tg = |dir: &Path, job: &str| -> Vec<f64> {
        jsonl(&dir.join("samples.jsonl"))
            .iter()
            .filter(|s| s["job_id"] == job && s["warmup"] == false)
            .filter_map(|s| s["tg_tps"].as_f64())
            .collect()
    };
    let job = "bench/simulated/tiny/one/jitter=0.05,load_ms=10,pp_tps=800,realtime=true,tpot_ms=4,ttft_ms=5";
    assert_eq!(tg(&more_dir, job), tg(&first_dir, job));
    let report = read(&more_dir.join("report.md"));
    assert_eq!(report.matches("reused from `first`").count(), 6, "{report}");

    // A directory that is not a run: exit 2 before anything runs.
    let bad = run(&["run", PIPELINE, "--out", &out_s, "--reuse", &out_s]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    assert!(text(&bad.stderr).contains("not a run directory"));

    // A changed param: nothing matches.
    let tpot = run(&[
        "run", PIPELINE, "--out", &out_s, "--run-id", "tpot", "--set", "tpot=5", "--reuse",
        &first_s,
    ]);
    assert_eq!(tpot.status.code(), Some(0), "{}", text(&tpot.stderr));
    assert_eq!(reused(&out.path().join("resume/tpot")), (0, 6));

    // The recorded engine build differs: nothing matches.
    let manifest = first_dir.join("manifest.json");
    let mut m = json(&manifest);
    m["backends"]["simulated"] =
        Value::String("simulated latency model 0.0 (another build)".into());
    std::fs::write(&manifest, serde_json::to_vec_pretty(&m).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    let build = run(&[
        "run", PIPELINE, "--out", &out_s, "--run-id", "build", "--reuse", &first_s,
    ]);
    assert_eq!(build.status.code(), Some(0), "{}", text(&build.stderr));
    assert_eq!(reused(&out.path().join("resume/build")), (0, 6));
}

#[test]
fn a_torn_middle_line_is_skipped_and_counted_and_resume_refuses_what_changed() {
    let out = tempdir();
    let out_s = out.path().display().to_string();
    let r = run(&["run", PIPELINE, "--out", &out_s, "--run-id", "torn"]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    let dir = out.path().join("resume/torn");
    let dir_s = dir.display().to_string();

    // Line 7 loses its second half (a write torn by a full disk), the file goes on.
    let samples = dir.join("samples.jsonl");
    let lines: Vec<String> = read(&samples).lines().map(str::to_string).collect();
    let mut torn = lines.clone();
    torn[6] = lines[6][..lines[6].len() / 2].to_string();
    std::fs::write(&samples, torn.join("\n") + "\n").unwrap_or_else(|e| panic!("{e}"));
    let rep = run(&["report", &dir_s]);
    assert_eq!(rep.status.code(), Some(0), "{}", text(&rep.stderr));
    let report = read(&dir.join("report.md"));
    assert!(
        report.contains("**1 unreadable line(s) in samples.jsonl skipped** (line 7)"),
        "{report}"
    );
    assert!(text(&rep.stderr).contains(":7: skipping a line that is not a sample"));

    // The pipeline resolves differently: refused, naming what changed.
    let changed = run(&["run", PIPELINE, "--resume", &dir_s, "--set", "tpot=5"]);
    assert_eq!(changed.status.code(), Some(2), "{}", text(&changed.stderr));
    let why = text(&changed.stderr);
    assert!(
        why.contains("the pipeline resolves differently")
            && why.contains("vars.tpot")
            && why.contains("stages[0].jobs[*] (6)"),
        "{why}"
    );

    // Another engine build: refused without --force, recorded with it.
    let manifest = dir.join("manifest.json");
    let mut m = json(&manifest);
    m["backends"]["simulated"] = Value::String("an older build".into());
    std::fs::write(&manifest, serde_json::to_vec_pretty(&m).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    let refused = run(&["run", PIPELINE, "--resume", &dir_s]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    let why = text(&refused.stderr);
    assert!(
        why.contains("simulated build (was an older build") && why.contains("--force"),
        "{why}"
    );
    let forced = run(&["run", PIPELINE, "--resume", &dir_s, "--force"]);
    assert_eq!(forced.status.code(), Some(0), "{}", text(&forced.stderr));
    let m = json(&manifest);
    assert_eq!(
        m["resumes"][0]["forced"][0]
            .as_str()
            .map(|f| f.starts_with("simulated build")),
        Some(true)
    );
    let report = read(&dir.join("report.md"));
    assert!(
        report.contains("**Resumed with --force although the simulated build"),
        "{report}"
    );
}

#[test]
fn nothing_runs_beside_a_bench_unless_overlap_and_the_report_says_so() {
    let out = tempdir();
    let out_s = out.path().display().to_string();
    let p = "tests/fixtures/pipelines/valid/overlap.yaml";
    let background = |id: &str| -> Vec<Value> {
        jsonl(&out.path().join("overlap").join(id).join("jobs.jsonl"))
            .into_iter()
            .filter(|r| r["kind"] == "bench")
            .flat_map(|r| r["background"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    let quiet = run(&["run", p, "--out", &out_s, "--run-id", "quiet"]);
    assert_eq!(quiet.status.code(), Some(0), "{}", text(&quiet.stderr));
    assert!(background("quiet").is_empty());
    let report = read(&out.path().join("overlap/quiet/report.md"));
    assert!(!report.contains("--overlap"), "{report}");

    let both = run(&["run", p, "--out", &out_s, "--run-id", "both", "--overlap"]);
    assert_eq!(both.status.code(), Some(0), "{}", text(&both.stderr));
    assert_eq!(background("both"), vec![Value::String("check/tiny".into())]);
    let report = read(&out.path().join("overlap/both/report.md"));
    assert!(
        report.contains("measured while other work of this run ran (--overlap): `check/tiny`"),
        "{report}"
    );
}
