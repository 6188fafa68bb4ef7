//! NVIDIA GPUs through NVML, the driver's management library (`libnvidia-ml.so.1`, loaded at
//! run time by nvml-wrapper, so every build has this and a machine without the driver simply has
//! no GPU facts): each GPU's name, compute capability, memory, memory bus and clock (the
//! bandwidth roofline of a job that runs on it), the driver's version and the CUDA version it
//! supports, and the board's energy counter. nvidia-smi's text is never parsed.

use nvml_wrapper::enum_wrappers::device::Clock;
use nvml_wrapper::Nvml;
use serde::{Deserialize, Serialize};

/// One GPU, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuInfo {
    /// NVML's index (CUDA's device order unless CUDA_DEVICE_ORDER says otherwise).
    pub index: u32,
    pub name: String,
    /// "9.0" for Hopper.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_capability: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bus_bits: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_clock_mhz: Option<u32>,
    /// The memory's theoretical peak: max memory clock × 2 transfers per clock × bus width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_bandwidth_bytes_per_s: Option<f64>,
    /// Whether the board's total-energy counter reads (Volta and later).
    #[serde(default)]
    pub energy_counter: bool,
}

/// The driver and its GPUs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpus {
    /// The driver's version, e.g. "580.95.05".
    pub driver: String,
    /// The newest CUDA version the driver supports, e.g. "13.0".
    pub cuda_driver: Option<String>,
    pub devices: Vec<GpuInfo>,
}

/// NVML, initialised once per process; None without an NVIDIA driver.
pub fn nvml() -> Option<&'static Nvml> {
    static NVML: std::sync::OnceLock<Option<Nvml>> = std::sync::OnceLock::new();
    NVML.get_or_init(|| Nvml::init().ok()).as_ref()
}

/// The theoretical peak of a memory: clock (MHz, as NVML reports it) × 2 (double data rate) ×
/// bus width (bits) ÷ 8. NVML's memory clock for GDDR6X and HBM is the one this formula wants:
/// an H100 SXM (2619 MHz, 5120 bits) gives 3.35 TB/s, its data-sheet figure.
pub fn peak_bandwidth(max_memory_clock_mhz: u32, bus_bits: u32) -> f64 {
    max_memory_clock_mhz as f64 * 1e6 * 2.0 * bus_bits as f64 / 8.0
}

/// The driver and every GPU it sees, or why there are none.
pub fn probe() -> Result<Gpus, String> {
    let nvml = nvml().ok_or_else(|| {
        "no NVIDIA driver: libnvidia-ml.so.1 could not be loaded or initialised".to_string()
    })?;
    let count = nvml.device_count().map_err(|e| format!("NVML: {e}"))?;
    let mut devices = Vec::new();
    for index in 0..count {
        let Ok(d) = nvml.device_by_index(index) else {
            continue;
        };
        let bus = d.memory_bus_width().ok();
        let clock = d.max_clock_info(Clock::Memory).ok();
        devices.push(GpuInfo {
            index,
            name: d.name().unwrap_or_else(|_| "unknown NVIDIA GPU".into()),
            compute_capability: d
                .cuda_compute_capability()
                .ok()
                .map(|c| format!("{}.{}", c.major, c.minor)),
            memory_bytes: d.memory_info().ok().map(|m| m.total),
            memory_bus_bits: bus,
            max_memory_clock_mhz: clock,
            peak_bandwidth_bytes_per_s: clock.zip(bus).map(|(c, b)| peak_bandwidth(c, b)),
            energy_counter: d.total_energy_consumption().is_ok(),
        });
    }
    Ok(Gpus {
        driver: nvml
            .sys_driver_version()
            .map_err(|e| format!("NVML: {e}"))?,
        cuda_driver: nvml.sys_cuda_driver_version().ok().map(|v| {
            format!(
                "{}.{}",
                nvml_wrapper::cuda_driver_version_major(v),
                nvml_wrapper::cuda_driver_version_minor(v)
            )
        }),
        devices,
    })
}

/// A GPU's board energy since the driver loaded, in millijoules.
pub fn energy_mj(index: u32) -> Option<u64> {
    nvml()?
        .device_by_index(index)
        .ok()?
        .total_energy_consumption()
        .ok()
}

/// The GPUs once per process (the manifest's host facts ask for them more than once).
pub fn gpus() -> Option<&'static Gpus> {
    static GPUS: std::sync::OnceLock<Option<Gpus>> = std::sync::OnceLock::new();
    GPUS.get_or_init(|| probe().ok()).as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_bandwidth_matches_data_sheets() {
        // H100 SXM5: HBM3, 2619 MHz, 5120 bits: 3.35 TB/s.
        let h100 = peak_bandwidth(2619, 5120);
        assert!((h100 / 1e12 - 3.352).abs() < 0.01, "{h100}");
        // RTX 4090: GDDR6X, NVML's 10501 MHz, 384 bits: 1008 GB/s.
        let rtx = peak_bandwidth(10501, 384);
        assert!((rtx / 1e9 - 1008.1).abs() < 1.0, "{rtx}");
    }

    #[test]
    fn without_a_driver_there_are_no_gpus_and_it_says_why() {
        // Holds on machines without an NVIDIA driver (this project's CI); on one with a
        // driver, the probe must find at least one GPU with a name.
        match probe() {
            Ok(g) => assert!(g.devices.iter().all(|d| !d.name.is_empty())),
            Err(why) => assert!(why.contains("libnvidia-ml.so.1"), "{why}"),
        }
    }
}
