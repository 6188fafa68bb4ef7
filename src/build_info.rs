//! How this binary was built: the engine crates' versions (read from Cargo.lock), the CPU it was
//! compiled for, its CPU features and its cargo features, all captured by build.rs. The run
//! manifest keeps [`Build`], so a figure can be traced to a native or a portable build.

use serde::{Deserialize, Serialize};

pub const LLAMA_CPP_2_VERSION: &str = env!("MINERVA_LLAMA_CPP_2_VERSION");
pub const LLAMA_CPP_SYS_VERSION: &str = env!("MINERVA_LLAMA_CPP_SYS_VERSION");
pub const CANDLE_CORE_VERSION: &str = env!("MINERVA_CANDLE_CORE_VERSION");
pub const CANDLE_TRANSFORMERS_VERSION: &str = env!("MINERVA_CANDLE_TRANSFORMERS_VERSION");
pub const TOKENIZERS_VERSION: &str = env!("MINERVA_TOKENIZERS_VERSION");
pub const MLX_RS_VERSION: &str = env!("MINERVA_MLX_RS_VERSION");
pub const MLX_SYS_VERSION: &str = env!("MINERVA_MLX_SYS_VERSION");

/// `-C target-cpu` of the build ("default" when the Rust flags had none).
pub const TARGET_CPU: &str = env!("MINERVA_TARGET_CPU");
/// Every CPU feature the compiler enabled, comma-separated.
const TARGET_FEATURES: &str = env!("MINERVA_TARGET_FEATURES");
/// minerva's own cargo features that change what runs (`cuda`, `mlx`), comma-separated.
const CARGO_FEATURES: &str = env!("MINERVA_CARGO_FEATURES");
/// With feature `cuda`: the GPU architectures compiled for and nvcc's release.
const CUDA_ARCH: &str = env!("MINERVA_CUDA_ARCH");
const CUDA_TOOLKIT: &str = env!("MINERVA_CUDA_TOOLKIT");

/// The CPU features worth naming in a report: the SIMD levels inference kernels are chosen by.
const NOTABLE: &[&str] = &[
    "sse4.2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "bmi2",
    "avxvnni",
    "avx512f",
    "avx512bw",
    "avx512dq",
    "avx512vl",
    "avx512vnni",
    "avx512bf16",
    "avx512fp16",
    "amx-tile",
    "amx-int8",
    "amx-bf16",
    "neon",
    "dotprod",
    "i8mm",
    "sve",
];

/// The build, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Build {
    /// The CPU the Rust code (and, through llama-cpp-sys-2, llama.cpp) was compiled for:
    /// "native" for the build host's own CPU, "x86-64-v3" for the portable default.
    pub target_cpu: String,
    /// Built for the build host's CPU (`-C target-cpu=native`; llama.cpp with GGML_NATIVE).
    pub native: bool,
    /// The notable SIMD features compiled in.
    pub cpu_features: Vec<String>,
    /// minerva's cargo features (`cuda`, `mlx`).
    #[serde(default)]
    pub cargo_features: Vec<String>,
    /// With feature `cuda`: the GPU architectures compiled for (CMAKE_CUDA_ARCHITECTURES).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_arch: Option<String>,
    /// With feature `cuda`: the CUDA toolkit release compiled with (also the runtime linked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_toolkit: Option<String>,
}

impl Build {
    /// One line for the report: "native (avx2 fma … avx512f), features cuda".
    pub fn describe(&self) -> String {
        let mut s = if self.native {
            "native".to_string()
        } else {
            format!("portable, target-cpu {}", self.target_cpu)
        };
        if !self.cpu_features.is_empty() {
            s.push_str(&format!(" ({})", self.cpu_features.join(" ")));
        }
        if !self.cargo_features.is_empty() {
            s.push_str(&format!(", features {}", self.cargo_features.join(" ")));
        }
        if let (Some(arch), Some(tk)) = (&self.cuda_arch, &self.cuda_toolkit) {
            s.push_str(&format!(", CUDA {tk} for sm_{arch}"));
        }
        s
    }
}

fn list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|f| !f.is_empty())
}

/// This binary's build.
pub fn build() -> Build {
    let enabled: Vec<&str> = list(TARGET_FEATURES).collect();
    Build {
        target_cpu: TARGET_CPU.to_string(),
        native: TARGET_CPU == "native",
        cpu_features: NOTABLE
            .iter()
            .filter(|f| enabled.contains(f))
            .map(|f| f.to_string())
            .collect(),
        cargo_features: list(CARGO_FEATURES).map(str::to_string).collect(),
        cuda_arch: (!CUDA_ARCH.is_empty()).then(|| CUDA_ARCH.to_string()),
        cuda_toolkit: (!CUDA_TOOLKIT.is_empty()).then(|| CUDA_TOOLKIT.to_string()),
    }
}

/// Whether this binary has the CUDA backends of llama.cpp and candle.
pub fn has_cuda() -> bool {
    cfg!(feature = "cuda")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_names_its_cpu_and_features() {
        let b = build();
        // The test build is the portable one of .cargo/config.toml (or a native one).
        assert!(b.target_cpu == "x86-64-v3" || b.native || !cfg!(target_arch = "x86_64"));
        if cfg!(all(target_arch = "x86_64", target_feature = "avx2")) {
            assert!(b.cpu_features.iter().any(|f| f == "avx2"), "{b:?}");
        }
        assert_eq!(b.cargo_features.contains(&"cuda".into()), has_cuda());
        assert_eq!(b.cuda_arch.is_some(), has_cuda());
        let line = b.describe();
        assert!(line.starts_with(if b.native {
            "native"
        } else {
            "portable, target-cpu"
        }));
    }
}
