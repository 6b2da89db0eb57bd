//! The Python worker shim, shipped inside the binary and written to a work folder at start.

use std::path::{Path, PathBuf};

/// Source of the worker shim (standard library only).
pub const WORKER_SOURCE: &str = include_str!("python/mlcompute_batch_worker.py");

/// File name the shim is written under.
pub const WORKER_FILE_NAME: &str = "mlcompute_batch_worker.py";

/// Why the shim could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("cannot write the worker shim to {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ShimError {
    /// A bounded name for metrics and status reasons.
    pub fn category(&self) -> &'static str {
        "ShimWrite"
    }
}

/// Writes the shim into `dir` (created if missing) and returns its path.
///
/// Writes to a temporary name and renames, so concurrent drivers sharing `dir` never see half a file.
pub fn install(dir: &Path) -> Result<PathBuf, ShimError> {
    let path = dir.join(WORKER_FILE_NAME);
    let tmp = dir.join(format!(".{WORKER_FILE_NAME}.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(&tmp, WORKER_SOURCE)?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|source| ShimError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shim_is_installed_verbatim() {
        let dir = std::env::temp_dir().join(format!("mlc-shim-{}", std::process::id()));
        let path = install(&dir).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), WORKER_SOURCE);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
