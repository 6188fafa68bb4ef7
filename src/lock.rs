//! A leaf: advisory file locks between processes (`flock`), waited on with a bound and a
//! message that names the holder. Used for downloads (two processes fetching one file) and for
//! the machine-wide bench lock (two runners never benchmark at once).
//!
//! The holder writes who it is (pid and what it does) to `<lock>.holder` once it has the lock,
//! and removes that file before letting go; a waiter reads it to say for whom it waits.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How to wait for a lock.
#[derive(Debug, Clone)]
pub struct LockWait {
    /// What this process does with the lock, for the other side's message: "pipeline
    /// quickstart, bench bench/llama_cpp/… (out/quickstart/r1)".
    pub holder: String,
    /// Give up after this long.
    pub timeout: Duration,
    /// Fail at once instead of waiting.
    pub no_wait: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot use the lock {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} is locked by {holder} ({path})")]
    Busy {
        what: String,
        holder: String,
        path: PathBuf,
    },
    #[error(
        "{what}: gave up after {waited:?} waiting for {holder} ({path}); raise --lock-timeout"
    )]
    TimedOut {
        what: String,
        holder: String,
        waited: Duration,
        path: PathBuf,
    },
    #[error("{what}: interrupted while waiting for {holder}")]
    Interrupted { what: String, holder: String },
}

/// A held lock: released (and its holder file removed) when dropped.
#[derive(Debug)]
pub struct Held {
    _file: std::fs::File,
    holder_file: PathBuf,
    /// Whom this process waited for before it got the lock, if anyone.
    pub waited_for: Option<String>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.holder_file);
    }
}

fn holder_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".holder");
    PathBuf::from(s)
}

/// Who holds the lock at `path`, as its holder file says ("pid 123: bench …"), else "another
/// process".
pub fn holder(path: &Path) -> String {
    std::fs::read_to_string(holder_path(path))
        .ok()
        .map(|t| t.trim().chars().take(300).collect::<String>())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "another process".into())
}

/// Takes the lock at `path` for `what` (e.g. "the bench lock", "downloading x.gguf"). While
/// another process holds it, logs once at warn whom it waits for, then waits up to
/// `wait.timeout` (or not at all with `no_wait`); a `cancel` set to true stops the wait.
pub async fn acquire(
    path: &Path,
    what: &str,
    wait: &LockWait,
    mut cancel: Option<watch::Receiver<bool>>,
) -> Result<Held, LockError> {
    let io = |source| LockError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io)?;
    let started = Instant::now();
    // Whom this wait was for: each holder named by its holder file, once (between two holds
    // the file may be absent: "another process" is kept only when no holder was named).
    let mut holders: Vec<String> = Vec::new();
    loop {
        match f.try_lock() {
            Ok(()) => {
                let hp = holder_path(path);
                let me = format!("pid {}: {}", std::process::id(), wait.holder);
                let _ = crate::paths::write_atomic(&hp, me.as_bytes());
                return Ok(Held {
                    _file: f,
                    holder_file: hp,
                    waited_for: (!holders.is_empty()).then(|| holders.join("; ")),
                });
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let who = holder(path);
                if wait.no_wait {
                    return Err(LockError::Busy {
                        what: what.into(),
                        holder: who,
                        path: path.to_path_buf(),
                    });
                }
                let unnamed = who == "another process";
                let known = holders.contains(&who) || (unnamed && !holders.is_empty());
                if !known {
                    tracing::warn!(
                        "{what}: waiting for {who} to finish (at most {}s; --lock-timeout)",
                        wait.timeout.as_secs()
                    );
                    holders.retain(|h| h != "another process");
                    holders.push(who.clone());
                }
                if started.elapsed() >= wait.timeout {
                    return Err(LockError::TimedOut {
                        what: what.into(),
                        holder: who,
                        waited: started.elapsed(),
                        path: path.to_path_buf(),
                    });
                }
                let nap = tokio::time::sleep(Duration::from_millis(100));
                match cancel.as_mut() {
                    Some(c) => {
                        if *c.borrow() {
                            return Err(LockError::Interrupted {
                                what: what.into(),
                                holder: who,
                            });
                        }
                        tokio::select! {
                            _ = nap => {}
                            _ = c.changed() => {}
                        }
                    }
                    None => nap.await,
                }
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(holder: &str, ms: u64, no_wait: bool) -> LockWait {
        LockWait {
            holder: holder.into(),
            timeout: Duration::from_millis(ms),
            no_wait,
        }
    }

    #[tokio::test]
    async fn a_second_taker_names_the_holder_times_out_and_gets_it_once_released() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("bench.lock");
        let first = acquire(&path, "the bench lock", &wait("run A", 1000, false), None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(holder(&path), format!("pid {}: run A", std::process::id()));
        // flock is per open file: a second open in this process contends like another process.
        let busy = acquire(&path, "the bench lock", &wait("run B", 1000, true), None).await;
        let msg = busy.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("locked by pid") && msg.contains("run A"),
            "{msg}"
        );
        let late = acquire(&path, "the bench lock", &wait("run B", 300, false), None).await;
        let msg = late.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("gave up after") && msg.contains("run A"),
            "{msg}"
        );
        drop(first);
        assert_eq!(holder(&path), "another process");
        let second = acquire(&path, "the bench lock", &wait("run B", 300, false), None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(second.waited_for, None);
    }

    #[tokio::test]
    async fn a_waiter_remembers_the_named_holder_across_the_gap_between_holds() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("bench.lock");
        let first = acquire(&path, "the bench lock", &wait("run A", 1000, false), None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let p2 = path.clone();
        let waiter = tokio::spawn(async move {
            acquire(&p2, "the bench lock", &wait("run B", 5000, false), None).await
        });
        tokio::time::sleep(Duration::from_millis(250)).await;
        // The holder file goes first when a hold ends; the lock a moment later.
        let _ = std::fs::remove_file(holder_path(&path));
        tokio::time::sleep(Duration::from_millis(250)).await;
        drop(first);
        let held = waiter
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            held.waited_for,
            Some(format!("pid {}: run A", std::process::id()))
        );
    }
}
