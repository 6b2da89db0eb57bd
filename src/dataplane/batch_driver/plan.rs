//! The batch plan: list the input folder, form mini-batches, shard them across instances.
//!
//! Pure apart from [`list_input`], which reads the file system once. The plan is global: mini-batch `k`
//! always holds the sorted files `k*size .. (k+1)*size`, whatever the instance count, so its ID is stable
//! across runs (resume) and across a change of `instanceCount`. Sharding is round-robin over mini-batches:
//! instance `i` of `n` owns the mini-batches `k` with `k % n == i`, which spreads slow regions of the
//! input evenly and keeps each instance's share within one mini-batch of the others'.

use std::{
    fmt,
    path::{Path, PathBuf},
};

/// Why the input could not be listed or the plan is invalid.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read input folder {path}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("input path {path} is not valid UTF-8")]
    NonUtf8Path { path: PathBuf },
    #[error("mini-batch size must be at least 1")]
    ZeroMiniBatchSize,
    #[error("instance index {index} is out of range for {count} instance(s)")]
    InstanceOutOfRange { index: u32, count: u32 },
}

impl PlanError {
    /// A bounded name for metrics and status reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::ReadDir { .. } | Self::NonUtf8Path { .. } => "InputUnreadable",
            Self::ZeroMiniBatchSize | Self::InstanceOutOfRange { .. } => "InvalidPlan",
        }
    }
}

/// One input file: its path relative to the input folder (with `/` separators) and its absolute path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputFile {
    pub relative: String,
    pub absolute: PathBuf,
}

/// Lists the regular files under `root`, recursively, sorted by relative path (byte order).
///
/// Symbolic links to files are followed; symbolic links to directories are not (no cycles).
/// An input that is itself a file (`uri_file`) is a plan of that one file.
pub fn list_input(root: &Path) -> Result<Vec<InputFile>, PlanError> {
    if root.is_file() {
        let relative = root
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| PlanError::NonUtf8Path {
                path: root.to_path_buf(),
            })?
            .to_string();
        return Ok(vec![InputFile {
            relative,
            absolute: root.to_path_buf(),
        }]);
    }
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| PlanError::ReadDir {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| PlanError::ReadDir {
                path: dir.clone(),
                source,
            })?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|source| PlanError::ReadDir {
                path: path.clone(),
                source,
            })?;
            if kind.is_dir() {
                pending.push(path);
                continue;
            }
            let is_file =
                kind.is_file() || (kind.is_symlink() && path.metadata().is_ok_and(|m| m.is_file()));
            if !is_file {
                continue;
            }
            let relative = relative_name(root, &path)?;
            files.push(InputFile {
                relative,
                absolute: path,
            });
        }
    }
    files.sort_by(|a, b| a.relative.cmp(&b.relative));
    Ok(files)
}

fn relative_name(root: &Path, path: &Path) -> Result<String, PlanError> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let mut parts = Vec::new();
    for part in rel.components() {
        let text = part
            .as_os_str()
            .to_str()
            .ok_or_else(|| PlanError::NonUtf8Path {
                path: path.to_path_buf(),
            })?;
        parts.push(text);
    }
    Ok(parts.join("/"))
}

/// The stable identity of a mini-batch: its index in the global plan and a hash of its file names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MiniBatchId {
    pub index: u64,
    pub fingerprint: u64,
}

impl fmt::Display for MiniBatchId {
    /// `000042-1f2e3d4c5b6a7988`: zero-padded index, then the fingerprint in hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06}-{:016x}", self.index, self.fingerprint)
    }
}

/// One mini-batch of the global plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MiniBatch {
    pub id: MiniBatchId,
    /// Files of this mini-batch, in input order.
    pub files: Vec<InputFile>,
}

/// The global plan: every mini-batch of the input, in order.
#[derive(Clone, Debug)]
pub struct Plan {
    pub mini_batch_size: usize,
    pub items_total: usize,
    pub mini_batches: Vec<MiniBatch>,
}

impl Plan {
    /// Cuts the sorted `files` into mini-batches of `mini_batch_size` (the last one may be shorter).
    pub fn new(files: Vec<InputFile>, mini_batch_size: usize) -> Result<Self, PlanError> {
        if mini_batch_size == 0 {
            return Err(PlanError::ZeroMiniBatchSize);
        }
        let items_total = files.len();
        let mut mini_batches = Vec::with_capacity(items_total.div_ceil(mini_batch_size));
        let mut iter = files.into_iter().peekable();
        let mut index = 0u64;
        while iter.peek().is_some() {
            let chunk: Vec<InputFile> = iter.by_ref().take(mini_batch_size).collect();
            let fingerprint = fingerprint(chunk.iter().map(|f| f.relative.as_str()));
            mini_batches.push(MiniBatch {
                id: MiniBatchId { index, fingerprint },
                files: chunk,
            });
            index += 1;
        }
        Ok(Self {
            mini_batch_size,
            items_total,
            mini_batches,
        })
    }

    /// A hash of the whole plan (every mini-batch ID), so peers and later runs can tell whether they
    /// look at the same input.
    pub fn fingerprint(&self) -> u64 {
        let mut hash = Fnv::new();
        hash.write(&(self.mini_batch_size as u64).to_le_bytes());
        for batch in &self.mini_batches {
            hash.write(&batch.id.index.to_le_bytes());
            hash.write(&batch.id.fingerprint.to_le_bytes());
        }
        hash.finish()
    }

    /// The mini-batches instance `shard.index` owns (round-robin by mini-batch index).
    pub fn shard(&self, shard: Shard) -> impl Iterator<Item = &MiniBatch> {
        self.mini_batches
            .iter()
            .filter(move |batch| shard.owns(batch.id.index))
    }
}

/// Instance `index` of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    pub fn new(index: u32, count: u32) -> Result<Self, PlanError> {
        if count == 0 || index >= count {
            return Err(PlanError::InstanceOutOfRange { index, count });
        }
        Ok(Self { index, count })
    }

    /// Whether mini-batch `mini_batch_index` belongs to this instance.
    pub fn owns(&self, mini_batch_index: u64) -> bool {
        mini_batch_index % u64::from(self.count) == u64::from(self.index)
    }
}

/// FNV-1a 64-bit over the names, each terminated by a NUL byte (stable across builds and platforms).
pub fn fingerprint<'a>(names: impl Iterator<Item = &'a str>) -> u64 {
    let mut hash = Fnv::new();
    for name in names {
        hash.write(name.as_bytes());
        hash.write(&[0]);
    }
    hash.finish()
}

struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Vec<InputFile> {
        names
            .iter()
            .map(|n| InputFile {
                relative: (*n).to_string(),
                absolute: PathBuf::from("/in").join(n),
            })
            .collect()
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("f{i:04}")).collect()
    }

    #[test]
    fn mini_batches_are_cut_in_order_and_the_last_is_short() {
        let all = names(23);
        let plan = Plan::new(
            files(&all.iter().map(String::as_str).collect::<Vec<_>>()),
            10,
        )
        .unwrap();
        let sizes: Vec<usize> = plan.mini_batches.iter().map(|b| b.files.len()).collect();
        assert_eq!(sizes, vec![10, 10, 3]);
        assert_eq!(plan.mini_batches[2].files[0].relative, "f0020");
        assert_eq!(plan.items_total, 23);
    }

    #[test]
    fn ids_are_stable_and_depend_on_the_file_names() {
        let a = Plan::new(files(&["a", "b", "c"]), 2).unwrap();
        let b = Plan::new(files(&["a", "b", "c"]), 2).unwrap();
        let c = Plan::new(files(&["a", "b", "d"]), 2).unwrap();
        assert_eq!(a.mini_batches[0].id, b.mini_batches[0].id);
        assert_eq!(a.mini_batches[1].id, b.mini_batches[1].id);
        assert_eq!(a.mini_batches[0].id, c.mini_batches[0].id);
        assert_ne!(a.mini_batches[1].id, c.mini_batches[1].id);
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert_eq!(
            a.mini_batches[1].id.to_string(),
            format!("000001-{:016x}", a.mini_batches[1].id.fingerprint)
        );
    }

    #[test]
    fn shards_partition_the_plan_round_robin() {
        let all = names(95);
        let plan = Plan::new(
            files(&all.iter().map(String::as_str).collect::<Vec<_>>()),
            10,
        )
        .unwrap();
        let mut seen = Vec::new();
        for index in 0..3 {
            let shard = Shard::new(index, 3).unwrap();
            let owned: Vec<u64> = plan.shard(shard).map(|b| b.id.index).collect();
            assert!(owned.iter().all(|k| k % 3 == u64::from(index)));
            seen.extend(owned);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<u64>>());
    }

    #[test]
    fn invalid_shards_and_sizes_are_rejected() {
        assert!(Shard::new(3, 3).is_err());
        assert!(Shard::new(0, 0).is_err());
        assert!(matches!(
            Plan::new(files(&["a"]), 0),
            Err(PlanError::ZeroMiniBatchSize)
        ));
    }

    #[test]
    fn listing_is_recursive_sorted_and_skips_directories() {
        let root = std::env::temp_dir().join(format!("mlc-plan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("b/c")).unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        for name in ["z.txt", "a.txt", "b/c/x.txt", "b/y.txt"] {
            std::fs::write(root.join(name), b"").unwrap();
        }
        let listed: Vec<String> = list_input(&root)
            .unwrap()
            .into_iter()
            .map(|f| f.relative)
            .collect();
        let single = list_input(&root.join("b/y.txt")).unwrap();
        assert_eq!(single.len(), 1);
        assert_eq!(single[0].relative, "y.txt");
        assert_eq!(listed, vec!["a.txt", "b/c/x.txt", "b/y.txt", "z.txt"]);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
