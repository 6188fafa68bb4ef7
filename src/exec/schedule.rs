//! The scheduling rules, without tokio or I/O: which job may start now, which can no longer
//! run, and what each job's state is at the end. The runner asks it what to start and tells it
//! what finished; unit tests drive it directly.
//!
//! - A job starts when every dependency succeeded, up to `limit` at once.
//! - Never two bench jobs together: they would disturb each other's numbers. When `quiet` (the
//!   default; `--overlap` turns it off), nothing else runs during a bench job either: a bench
//!   job waits for running jobs to end, and no job starts while one measures.
//! - Analysis and reports ("tolerant" jobs) summarise whatever was measured, failures included:
//!   they wait for their dependencies to finish, not to succeed.
//! - A job whose dependency failed or was skipped is skipped, with the reason.
//! - Without `keep_going`, the first failure stops new starts; `stop` does the same on a signal.

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Pending,
    Running,
    Done,
    Failed(String),
    Skipped(String),
}

/// What the scheduler needs to know of one job.
#[derive(Debug, Clone)]
pub struct Node {
    pub id: String,
    pub deps: Vec<usize>,
    pub bench: bool,
    pub tolerant: bool,
}

#[derive(Debug)]
pub struct Scheduler {
    nodes: Vec<Node>,
    state: Vec<State>,
    limit: usize,
    keep_going: bool,
    running: usize,
    bench_running: bool,
    stopped: bool,
    quiet: bool,
}

impl Scheduler {
    pub fn new(nodes: Vec<Node>, limit: usize, keep_going: bool) -> Scheduler {
        let n = nodes.len();
        Scheduler {
            nodes,
            state: vec![State::Pending; n],
            limit: limit.max(1),
            keep_going,
            running: 0,
            bench_running: false,
            stopped: false,
            quiet: false,
        }
    }

    /// Nothing runs alongside a bench job (see the module docs).
    pub fn set_quiet(&mut self, quiet: bool) {
        self.quiet = quiet;
    }

    /// Records a job as done before the run started (`--resume` keeps it).
    pub fn mark_done(&mut self, j: usize) {
        if self.state[j] == State::Pending {
            self.state[j] = State::Done;
        }
    }

    /// Marks as skipped every pending job with a failed or skipped dependency; returns them
    /// with the reason (in job order; a skip makes its dependents skippable on the next call).
    pub fn skip_blocked(&mut self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        if self.stopped {
            return out;
        }
        for j in 0..self.nodes.len() {
            if self.state[j] != State::Pending || self.nodes[j].tolerant {
                continue;
            }
            let blocked = self.nodes[j]
                .deps
                .iter()
                .find(|&&d| matches!(self.state[d], State::Failed(_) | State::Skipped(_)));
            if let Some(&bad) = blocked {
                let reason = format!("dependency `{}` did not succeed", self.nodes[bad].id);
                self.state[j] = State::Skipped(reason.clone());
                out.push((j, reason));
            }
        }
        out
    }

    /// The jobs to start now, in job order, marked running.
    pub fn start_ready(&mut self) -> Vec<usize> {
        let mut out = Vec::new();
        if self.stopped {
            return out;
        }
        for j in 0..self.nodes.len() {
            if self.running >= self.limit {
                break;
            }
            if self.state[j] != State::Pending || !self.ready(j) {
                continue;
            }
            if self.quiet && self.bench_running {
                break;
            }
            if self.nodes[j].bench {
                if self.bench_running || (self.quiet && self.running > 0) {
                    continue;
                }
                self.bench_running = true;
            }
            self.state[j] = State::Running;
            self.running += 1;
            out.push(j);
        }
        out
    }

    fn ready(&self, j: usize) -> bool {
        let deps = &self.nodes[j].deps;
        if self.nodes[j].tolerant {
            deps.iter()
                .all(|&d| !matches!(self.state[d], State::Pending | State::Running))
        } else {
            deps.iter().all(|&d| self.state[d] == State::Done)
        }
    }

    /// Records a finished job: Ok, or the failure's message.
    pub fn finish(&mut self, j: usize, result: Result<(), String>) {
        if self.state[j] == State::Running {
            self.running -= 1;
        }
        if self.nodes[j].bench {
            self.bench_running = false;
        }
        self.state[j] = match result {
            Ok(()) => State::Done,
            Err(message) => {
                if !self.keep_going {
                    self.stopped = true;
                }
                State::Failed(message)
            }
        };
    }

    /// No new job starts from now on (a signal, or a failure without `keep_going`).
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    pub fn running(&self) -> usize {
        self.running
    }

    pub fn state(&self, j: usize) -> &State {
        &self.state[j]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, deps: &[usize], bench: bool, tolerant: bool) -> Node {
        Node {
            id: id.into(),
            deps: deps.to_vec(),
            bench,
            tolerant,
        }
    }

    /// download → two benches → analyze → report.
    fn pipeline() -> Vec<Node> {
        vec![
            node("download", &[], false, false),
            node("bench/a", &[0], true, false),
            node("bench/b", &[0], true, false),
            node("analyze", &[1, 2], false, true),
            node("report", &[3], false, true),
        ]
    }

    #[test]
    fn benches_never_overlap_and_deps_come_first() {
        let mut s = Scheduler::new(pipeline(), 4, false);
        assert_eq!(s.start_ready(), vec![0]);
        assert_eq!(s.start_ready(), Vec::<usize>::new());
        s.finish(0, Ok(()));
        // Both benches are ready; only one runs.
        assert_eq!(s.start_ready(), vec![1]);
        s.finish(1, Ok(()));
        assert_eq!(s.start_ready(), vec![2]);
        s.finish(2, Ok(()));
        assert_eq!(s.start_ready(), vec![3]);
        s.finish(3, Ok(()));
        assert_eq!(s.start_ready(), vec![4]);
        s.finish(4, Ok(()));
        assert_eq!(s.running(), 0);
        assert!((0..5).all(|j| *s.state(j) == State::Done));
    }

    #[test]
    fn a_failure_stops_new_starts_unless_keep_going() {
        let mut s = Scheduler::new(pipeline(), 4, false);
        s.start_ready();
        s.finish(0, Ok(()));
        s.start_ready();
        s.finish(1, Err("boom".into()));
        assert!(s.skip_blocked().is_empty());
        assert!(s.start_ready().is_empty());
        assert_eq!(*s.state(2), State::Pending);

        let mut s = Scheduler::new(pipeline(), 4, true);
        s.start_ready();
        s.finish(0, Ok(()));
        s.start_ready();
        s.finish(1, Err("boom".into()));
        // The other bench runs; analysis waits for it, then summarises the failure too.
        assert_eq!(s.start_ready(), vec![2]);
        s.finish(2, Ok(()));
        assert_eq!(s.start_ready(), vec![3]);
    }

    #[test]
    fn a_failed_dependency_skips_its_dependents_with_the_reason() {
        let mut s = Scheduler::new(pipeline(), 4, true);
        s.start_ready();
        s.finish(0, Err("no network".into()));
        let skipped = s.skip_blocked();
        assert_eq!(
            skipped,
            vec![
                (1, "dependency `download` did not succeed".to_string()),
                (2, "dependency `download` did not succeed".to_string()),
            ]
        );
        // Tolerant jobs still run once everything before them ended.
        assert_eq!(s.start_ready(), vec![3]);
    }

    #[test]
    fn quiet_benches_run_alone_and_resumed_jobs_count_as_done() {
        // Two downloads, a bench on each: the second download must not run during a bench.
        let nodes = vec![
            node("dl/a", &[], false, false),
            node("bench/a", &[0], true, false),
            node("dl/b", &[], false, false),
            node("bench/b", &[2], true, false),
        ];
        let mut s = Scheduler::new(nodes.clone(), 4, false);
        s.set_quiet(true);
        assert_eq!(s.start_ready(), vec![0, 2]);
        s.finish(0, Ok(()));
        // bench/a is ready but dl/b still runs: it waits.
        assert!(s.start_ready().is_empty());
        s.finish(2, Ok(()));
        assert_eq!(s.start_ready(), vec![1]);
        // Nothing starts while bench/a measures.
        assert!(s.start_ready().is_empty());
        s.finish(1, Ok(()));
        assert_eq!(s.start_ready(), vec![3]);

        // Without quiet (--overlap), a download may run during a bench.
        let mut s = Scheduler::new(nodes.clone(), 4, false);
        assert_eq!(s.start_ready(), vec![0, 2]);
        s.finish(0, Ok(()));
        assert_eq!(s.start_ready(), vec![1]);

        let mut s = Scheduler::new(nodes, 4, false);
        s.set_quiet(true);
        s.mark_done(0);
        s.mark_done(1);
        assert_eq!(s.start_ready(), vec![2]);
        s.finish(2, Ok(()));
        assert_eq!(s.start_ready(), vec![3]);
    }

    #[test]
    fn the_limit_caps_concurrent_jobs_and_stop_starts_nothing() {
        let nodes = (0..5)
            .map(|i| node(&format!("dl/{i}"), &[], false, false))
            .collect();
        let mut s = Scheduler::new(nodes, 2, false);
        assert_eq!(s.start_ready(), vec![0, 1]);
        s.finish(1, Ok(()));
        assert_eq!(s.start_ready(), vec![2]);
        s.stop();
        s.finish(0, Ok(()));
        assert!(s.start_ready().is_empty());
        assert_eq!(s.running(), 1);
    }
}
