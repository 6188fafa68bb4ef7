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
    cuda();
    flavour();
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

/// How this binary was built, for the manifest: the `-C target-cpu` of the Rust flags ("native",
/// "x86-64-v3", …; "default" without one), the CPU features the compiler enabled (what
/// `cfg(target_feature)` sees; llama-cpp-sys-2 passes the same `-march` to llama.cpp, or
/// GGML_NATIVE with `native`), and the cargo features of minerva that change what runs.
fn flavour() {
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let flags: Vec<&str> = flags.split('\x1f').collect();
    let mut target_cpu = "default".to_string();
    for (i, f) in flags.iter().enumerate() {
        // `-C target-cpu=X`, `-Ctarget-cpu=X` or `--codegen target-cpu=X`.
        let value = f
            .strip_prefix("-C")
            .map(str::trim_start)
            .filter(|v| !v.is_empty())
            .or_else(|| {
                (*f == "-C" || *f == "--codegen")
                    .then(|| flags.get(i + 1).copied())
                    .flatten()
            });
        if let Some(cpu) = value.and_then(|v| v.strip_prefix("target-cpu=")) {
            target_cpu = cpu.to_string();
        }
    }
    println!("cargo:rustc-env=MINERVA_TARGET_CPU={target_cpu}");
    let cpu_features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    println!("cargo:rustc-env=MINERVA_TARGET_FEATURES={cpu_features}");
    let features: Vec<&str> = ["cuda", "mlx"]
        .into_iter()
        .filter(|f| std::env::var_os(format!("CARGO_FEATURE_{}", f.to_uppercase())).is_some())
        .collect();
    println!(
        "cargo:rustc-env=MINERVA_CARGO_FEATURES={}",
        features.join(",")
    );
}

/// With feature `cuda`: the CUDA architecture and toolkit version the kernels were compiled for,
/// for the manifest, and on Linux the shared cuBLAS and runtime of the toolkit
/// scripts/setup-cuda.sh prepared (its MINERVA_CUDA_LIB_DIR), linked after everything else and
/// found at run time through the binary's rpath. (llama-cpp-sys-2 asks for NVIDIA's static
/// cuBLAS archives, which the PyPI wheels do not have; the script's empty stand-ins satisfy that
/// request and these links provide the symbols.)
fn cuda() {
    println!("cargo:rerun-if-env-changed=MINERVA_CUDA_LIB_DIR");
    println!("cargo:rerun-if-env-changed=CMAKE_CUDA_ARCHITECTURES");
    println!("cargo:rerun-if-env-changed=CUDA_PATH");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        println!("cargo:rustc-env=MINERVA_CUDA_ARCH=");
        println!("cargo:rustc-env=MINERVA_CUDA_TOOLKIT=");
        return;
    }
    let arch = std::env::var("CMAKE_CUDA_ARCHITECTURES").unwrap_or_else(|_| "default".into());
    println!("cargo:rustc-env=MINERVA_CUDA_ARCH={arch}");
    let nvcc = std::env::var("CUDA_PATH")
        .map(|p| std::path::Path::new(&p).join("bin/nvcc"))
        .unwrap_or_else(|_| "nvcc".into());
    let toolkit = std::process::Command::new(nvcc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            s.split("release ")
                .nth(1)
                .and_then(|r| r.split(',').next())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MINERVA_CUDA_TOOLKIT={toolkit}");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        match std::env::var("MINERVA_CUDA_LIB_DIR") {
            Ok(dir) if !dir.is_empty() => {
                println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
                println!("cargo:rustc-link-arg=-L{dir}");
                println!(
                    "cargo:rustc-link-arg=-Wl,--push-state,--no-as-needed,-lcublas,-lcublasLt,-lcudart,--pop-state"
                );
            }
            _ => println!(
                "cargo:warning=feature `cuda` links the CUDA toolkit of scripts/setup-cuda.sh: \
                 run it and source target/cuda/env.sh (MINERVA_CUDA_LIB_DIR is not set)"
            ),
        }
    }
}
