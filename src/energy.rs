//! Energy around each in-process repetition: CPU package energy from the kernel's RAPL counters
//! (`/sys/class/powercap/*/energy_uj`) and each NVIDIA GPU's board energy from NVML
//! (`crate::gpu`), summed. Where no counter is readable the report says "not measured here",
//! never a guess. `MINERVA_POWERCAP_ROOT` names another directory laid out like
//! `/sys/class/powercap` (for tests).

use std::path::{Path, PathBuf};

/// The environment variable naming the powercap root (default `/sys/class/powercap`).
pub const ROOT_ENV: &str = "MINERVA_POWERCAP_ROOT";

/// The package zones' counters.
#[derive(Debug, Clone)]
pub struct Meter {
    zones: Vec<Zone>,
}

#[derive(Debug, Clone)]
struct Zone {
    name: String,
    counter: Counter,
    /// The counter wraps to 0 after this many µJ.
    max_range_uj: u64,
}

#[derive(Debug, Clone)]
enum Counter {
    /// A RAPL zone's `energy_uj` file.
    Rapl(PathBuf),
    /// An NVIDIA GPU's total energy (NVML index), in mJ.
    Gpu(u32),
}

impl Zone {
    /// The counter now, in µJ.
    fn read(&self) -> Option<u64> {
        match &self.counter {
            Counter::Rapl(p) => read_u64(p),
            Counter::Gpu(i) => crate::gpu::energy_mj(*i).map(|mj| mj.saturating_mul(1000)),
        }
    }
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

impl Meter {
    /// The package zones under `$MINERVA_POWERCAP_ROOT` (else `/sys/class/powercap`) and the
    /// GPUs whose energy counter NVML reads, or why there are none.
    pub fn open() -> Result<Meter, String> {
        let root = std::env::var_os(ROOT_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/sys/class/powercap"));
        let gpus: Vec<Zone> = crate::gpu::gpus()
            .map(|g| g.devices.as_slice())
            .unwrap_or_default()
            .iter()
            .filter(|d| d.energy_counter)
            .map(|d| Zone {
                name: format!("GPU {} {}", d.index, d.name),
                counter: Counter::Gpu(d.index),
                max_range_uj: u64::MAX,
            })
            .collect();
        match Meter::open_at(&root) {
            Ok(mut m) => {
                m.zones.extend(gpus);
                Ok(m)
            }
            Err(_) if !gpus.is_empty() => Ok(Meter { zones: gpus }),
            Err(why) => Err(format!("{why}; no NVIDIA GPU energy counter (NVML)")),
        }
    }

    /// The top-level zones (`intel-rapl:N`, not their subzones) named `package-*` whose
    /// `energy_uj` can be read.
    pub fn open_at(root: &Path) -> Result<Meter, String> {
        let entries = std::fs::read_dir(root)
            .map_err(|e| format!("no RAPL counters: {}: {e}", root.display()))?;
        let mut zones: Vec<Zone> = entries
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.contains("rapl:") && n.matches(':').count() == 1
            })
            .filter_map(|e| {
                let dir = e.path();
                let name = std::fs::read_to_string(dir.join("name")).ok()?;
                let name = name.trim().to_string();
                let energy_uj = dir.join("energy_uj");
                (name.starts_with("package") && read_u64(&energy_uj).is_some()).then(|| Zone {
                    name,
                    max_range_uj: read_u64(&dir.join("max_energy_range_uj")).unwrap_or(u64::MAX),
                    counter: Counter::Rapl(energy_uj),
                })
            })
            .collect();
        zones.sort_by(|a, b| a.name.cmp(&b.name));
        if zones.is_empty() {
            return Err(format!(
                "no readable RAPL package counter under {} (energy_uj is root-only on many systems, and VMs rarely expose it)",
                root.display()
            ));
        }
        Ok(Meter { zones })
    }

    /// Where the figures come from, for the report.
    pub fn describe(&self) -> String {
        let names = |gpu: bool| -> Vec<&str> {
            self.zones
                .iter()
                .filter(|z| matches!(z.counter, Counter::Gpu(_)) == gpu)
                .map(|z| z.name.as_str())
                .collect()
        };
        let (rapl, gpus) = (names(false), names(true));
        let mut parts = Vec::new();
        if !rapl.is_empty() {
            parts.push(format!("RAPL {} (CPU package energy)", rapl.join(" + ")));
        }
        if !gpus.is_empty() {
            parts.push(format!("NVML {} (GPU board energy)", gpus.join(" + ")));
        }
        parts.join(" + ")
    }

    /// Every zone's counter now, in µJ (None if one cannot be read).
    pub fn read(&self) -> Option<Vec<u64>> {
        self.zones.iter().map(Zone::read).collect()
    }

    /// Joules between two readings, each counter's wrap undone.
    pub fn joules(&self, start: &[u64], end: &[u64]) -> f64 {
        self.zones
            .iter()
            .zip(start.iter().zip(end))
            .map(|(z, (a, b))| {
                if b >= a {
                    b - a
                } else {
                    z.max_range_uj.saturating_sub(*a).saturating_add(*b)
                }
            })
            .sum::<u64>() as f64
            / 1e6
    }
}

/// The worker's meter, opened once.
pub fn meter() -> Option<&'static Meter> {
    static METER: std::sync::OnceLock<Option<Meter>> = std::sync::OnceLock::new();
    METER.get_or_init(|| Meter::open().ok()).as_ref()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A powercap directory with one package zone (and a subzone, which is not counted).
    pub(crate) fn fake_root(uj: u64, max: u64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for (zone, name) in [("intel-rapl:0", "package-0"), ("intel-rapl:0:0", "core")] {
            let z = dir.path().join(zone);
            std::fs::create_dir_all(&z).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(z.join("name"), format!("{name}\n")).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(z.join("energy_uj"), format!("{uj}\n"))
                .unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(z.join("max_energy_range_uj"), format!("{max}\n"))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        dir
    }

    #[test]
    fn package_counters_are_read_and_their_wrap_undone() {
        let root = fake_root(5_000_000, 10_000_000);
        let m = Meter::open_at(root.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.describe(), "RAPL package-0 (CPU package energy)");
        let a = m.read().unwrap_or_default();
        assert_eq!(a, vec![5_000_000]);
        std::fs::write(root.path().join("intel-rapl:0/energy_uj"), "7500000")
            .unwrap_or_else(|e| panic!("{e}"));
        let b = m.read().unwrap_or_default();
        assert!((m.joules(&a, &b) - 2.5).abs() < 1e-9);
        // Past the range the counter starts again from 0.
        assert!((m.joules(&[9_000_000], &[500_000]) - 1.5).abs() < 1e-9);
    }

    #[test]
    fn no_counters_is_said_not_guessed() {
        let empty = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let err = Meter::open_at(empty.path()).err().unwrap_or_default();
        assert!(err.contains("no readable RAPL package counter"), "{err}");
        let err = Meter::open_at(&empty.path().join("absent"))
            .err()
            .unwrap_or_default();
        assert!(err.starts_with("no RAPL counters"), "{err}");
    }
}
