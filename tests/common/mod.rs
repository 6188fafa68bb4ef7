//! Shared by the integration test binaries: a small builder over the real `minerva` binary,
//! run from the repository root.
#![allow(dead_code)]

pub mod hub;
pub mod mlx_quant;
pub mod openai_mock;
pub mod recorder;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_minerva");

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A small builder over the binary, run in the repository root.
pub struct Minerva {
    pub cmd: Command,
}

impl Minerva {
    pub fn new(args: &[&str]) -> Self {
        let mut cmd = Command::new(BIN);
        // No user config: grants come only from what each test passes.
        // The machine-wide bench lock, one per test: tests running at once do not wait for
        // each other (the lock tests share one on purpose).
        let test = std::thread::current()
            .name()
            .unwrap_or("main")
            .replace([':', '/'], "_");
        let locks = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("locks")
            .join(test);
        cmd.current_dir(root())
            .args(args)
            .env_remove("RUST_LOG")
            .env("MINERVA_CONFIG", "/nonexistent/minerva-tests/config.toml")
            .env("MINERVA_LOCK_DIR", locks);
        Minerva { cmd }
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.cmd.env(k, v);
        self
    }
    pub fn output(mut self) -> Output {
        self.cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run minerva: {e}"))
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn lines(p: &Path) -> Vec<serde_json::Value> {
    read(p)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

pub trait OutputWith {
    fn output_with(self, out: &Path) -> Output;
}

impl OutputWith for Minerva {
    fn output_with(mut self, out: &Path) -> Output {
        self.cmd.arg(out);
        self.output()
    }
}
