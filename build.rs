// Records the git revision for the run manifest.
fn main() {
    let rev = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    let rev = if dirty && rev != "unknown" {
        format!("{rev}-dirty")
    } else {
        rev
    };
    println!("cargo:rustc-env=MINERVA_GIT_REVISION={rev}");
    // Engine crate versions, from the lock file, for the manifest.
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    for (krate, var) in [
        ("llama-cpp-2", "MINERVA_LLAMA_CPP_2_VERSION"),
        ("llama-cpp-sys-2", "MINERVA_LLAMA_CPP_SYS_VERSION"),
        ("candle-core", "MINERVA_CANDLE_CORE_VERSION"),
        ("candle-transformers", "MINERVA_CANDLE_TRANSFORMERS_VERSION"),
        ("tokenizers", "MINERVA_TOKENIZERS_VERSION"),
        ("mlx-rs", "MINERVA_MLX_RS_VERSION"),
        ("mlx-sys", "MINERVA_MLX_SYS_VERSION"),
    ] {
        let needle = format!("name = \"{krate}\"\nversion = \"");
        let version = lock
            .find(&needle)
            .map(|i| &lock[i + needle.len()..])
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("unknown");
        println!("cargo:rustc-env={var}={version}");
    }
    mlx();
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
    println!("cargo:rerun-if-changed=.git/refs");
}

/// The MLX backend is compiled in with feature `mlx`, and always on Apple silicon (where mlx-rs
/// is a plain target dependency): `cfg(minerva_mlx)` says which. On Linux the binary finds the
/// wheel's libmlx.so through an rpath to the directory scripts/setup-mlx.sh prepared (it sets
/// MINERVA_MLX_LIB_DIR in .cargo/mlx.toml).
fn mlx() {
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let feature = std::env::var_os("CARGO_FEATURE_MLX").is_some();
    println!("cargo::rustc-check-cfg=cfg(minerva_mlx)");
    if feature || (target_os == "macos" && target_arch == "aarch64") {
        println!("cargo:rustc-cfg=minerva_mlx");
    }
    println!("cargo:rerun-if-env-changed=MINERVA_MLX_LIB_DIR");
    if feature && target_os == "linux" {
        match std::env::var("MINERVA_MLX_LIB_DIR") {
            Ok(dir) if !dir.is_empty() => println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}"),
            _ => println!(
                "cargo:warning=feature `mlx` on Linux needs scripts/setup-mlx.sh first \
                 (MINERVA_MLX_LIB_DIR is not set: .cargo/mlx.toml is missing)"
            ),
        }
    }
}
