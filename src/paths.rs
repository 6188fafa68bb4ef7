//! Path resolution for permission checks: a leaf module (std only), used by the plan's grants
//! and by the fetcher's check of which links under `models/` are minerva's.

use std::path::{Component, Path, PathBuf};

/// `p` made absolute against `cwd`, with symlinks followed as far as the path exists and
/// `.`/`..` resolved lexically beyond that (a file not created yet still gets a real answer).
pub fn resolve(p: &Path, cwd: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    };
    // The longest prefix that exists, canonicalized; the rest appended lexically.
    let comps: Vec<Component<'_>> = abs.components().collect();
    for split in (1..=comps.len()).rev() {
        let prefix: PathBuf = comps[..split].iter().collect();
        if let Ok(canon) = std::fs::canonicalize(&prefix) {
            let mut out = canon;
            for c in &comps[split..] {
                match c {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::CurDir => {}
                    other => out.push(other.as_os_str()),
                }
            }
            return out;
        }
    }
    abs
}
