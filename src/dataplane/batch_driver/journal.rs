//! The journal: one append-only JSON-lines file per instance, in `OUTPUT/_mlcompute/`.
//!
//! Each line records one finished mini-batch: its ID, attempt counts, failed items and (for
//! `append_row`) its rendered rows. Lines are written in groups and the file is fsync'd after each
//! group, so after a crash the journal holds a prefix of the finished mini-batches; a torn last line is
//! cut off when the journal is reopened. The journals are both the resume record (a mini-batch found in
//! any journal is not run again) and the per-instance part files that [`super::output::merge`] turns
//! into the output file.

use std::{
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// Folder under the output folder that holds the driver's own files.
pub const STATE_DIR: &str = "_mlcompute";

/// Why the journal could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot open journal {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write journal {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read journal {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode a journal entry")]
    Encode(#[source] serde_json::Error),
}

impl JournalError {
    /// A bounded name for metrics and status reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Open { .. } | Self::Read { .. } => "JournalRead",
            Self::Write { .. } | Self::Encode(_) => "JournalWrite",
        }
    }
}

/// A file that failed, and why.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FailedItem {
    /// Path relative to the input folder.
    pub item: String,
    /// One line: exception type and message, or the timeout / crash.
    pub reason: String,
    /// The traceback, when there is one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// One finished mini-batch.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// Mini-batch ID (`index-fingerprint`, see [`super::plan::MiniBatchId`]).
    pub id: String,
    /// Index in the global plan (also in `id`; kept for sorting without parsing).
    pub index: u64,
    pub items: usize,
    pub attempts: u32,
    #[serde(default)]
    pub timeouts: u32,
    #[serde(default)]
    pub crashes: u32,
    #[serde(default)]
    pub failed: Vec<FailedItem>,
    #[serde(default)]
    pub rows: Vec<String>,
}

/// The journal file of instance `index`.
pub fn journal_path(output: &Path, instance: u32) -> PathBuf {
    output
        .join(STATE_DIR)
        .join(format!("journal-{instance:05}.jsonl"))
}

/// An open journal, positioned at its end.
pub struct Journal {
    path: PathBuf,
    file: File,
}

impl Journal {
    /// Opens (or creates) a journal; a torn last line (no newline) from a crash is cut off.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let open_err = |source| JournalError::Open {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(open_err)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(open_err)?;
        let complete = complete_prefix_len(&mut file).map_err(open_err)?;
        if complete < file.metadata().map_err(open_err)?.len() {
            file.set_len(complete).map_err(open_err)?;
            file.sync_all().map_err(open_err)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends entries and fsyncs once (group commit).
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), JournalError> {
        let mut buf = Vec::with_capacity(entries.len() * 128);
        for entry in entries {
            serde_json::to_writer(&mut buf, entry).map_err(JournalError::Encode)?;
            buf.push(b'\n');
        }
        let write_err = |source| JournalError::Write {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(&buf).map_err(write_err)?;
        self.file.sync_data().map_err(write_err)
    }
}

/// Length of the file up to and including its last newline.
fn complete_prefix_len(file: &mut File) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut pos = len;
    let mut buf = vec![0u8; 64 * 1024];
    while pos > 0 {
        let chunk = (buf.len() as u64).min(pos);
        pos -= chunk;
        file.seek(SeekFrom::Start(pos))?;
        let slice = &mut buf[..chunk as usize];
        std::io::Read::read_exact(file, slice)?;
        if let Some(last) = slice.iter().rposition(|b| *b == b'\n') {
            return Ok(pos + last as u64 + 1);
        }
    }
    Ok(0)
}

/// Where an entry sits, so a merge can read it again without holding every row in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    pub file: usize,
    pub offset: u64,
    pub len: usize,
}

/// All journal files in `output`'s state folder, sorted by name.
pub fn journal_files(output: &Path) -> Result<Vec<PathBuf>, JournalError> {
    let dir = output.join(STATE_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(JournalError::Read { path: dir, source }),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| JournalError::Read {
            path: dir.clone(),
            source,
        })?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("journal-") && name.ends_with(".jsonl") {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Calls `visit` for every complete, parseable entry of `files`, in file order then line order.
///
/// A torn last line is skipped silently; any other unparseable line is skipped with a warning (it
/// cannot have been written whole by this driver).
pub fn scan(files: &[PathBuf], mut visit: impl FnMut(Entry, Located)) -> Result<(), JournalError> {
    for (index, path) in files.iter().enumerate() {
        let read_err = |source| JournalError::Read {
            path: path.clone(),
            source,
        };
        let file = File::open(path).map_err(read_err)?;
        let mut reader = BufReader::with_capacity(256 * 1024, file);
        let mut offset = 0u64;
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = reader.read_until(b'\n', &mut line).map_err(read_err)?;
            if read == 0 {
                break;
            }
            let here = offset;
            offset += read as u64;
            if line.last() != Some(&b'\n') {
                break;
            }
            match serde_json::from_slice::<Entry>(&line) {
                Ok(entry) => visit(
                    entry,
                    Located {
                        file: index,
                        offset: here,
                        len: read,
                    },
                ),
                Err(err) => {
                    tracing::warn!(journal = %path.display(), offset = here, "skipping unreadable journal line: {err}")
                }
            }
        }
    }
    Ok(())
}

/// Reads the entry at `at` again.
pub fn read_at(
    files: &[PathBuf],
    handles: &mut [Option<File>],
    at: &Located,
) -> Result<Entry, JournalError> {
    let path = files.get(at.file).cloned().unwrap_or_default();
    let read_err = |source| JournalError::Read {
        path: path.clone(),
        source,
    };
    let slot = handles
        .get_mut(at.file)
        .ok_or_else(|| read_err(std::io::Error::other("journal index out of range")))?;
    let file = match slot {
        Some(file) => file,
        None => slot.insert(File::open(&path).map_err(read_err)?),
    };
    let mut buf = vec![0u8; at.len];
    file.seek(SeekFrom::Start(at.offset)).map_err(read_err)?;
    std::io::Read::read_exact(file, &mut buf).map_err(read_err)?;
    serde_json::from_slice(&buf).map_err(|err| read_err(std::io::Error::other(err)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, rows: &[&str]) -> Entry {
        Entry {
            id: format!("{index:06}-00"),
            index,
            items: rows.len(),
            attempts: 1,
            timeouts: 0,
            crashes: 0,
            failed: Vec::new(),
            rows: rows.iter().map(|r| (*r).to_string()).collect(),
        }
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mlc-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn entries_round_trip_and_can_be_reread_by_location() {
        let out = temp("roundtrip");
        let path = journal_path(&out, 0);
        let mut journal = Journal::open(&path).unwrap();
        journal
            .append(&[entry(3, &["a,1", "b\\n2"]), entry(1, &[])])
            .unwrap();
        let files = journal_files(&out).unwrap();
        let mut seen = Vec::new();
        scan(&files, |e, at| seen.push((e, at))).unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].0, entry(3, &["a,1", "b\\n2"]));
        let mut handles = vec![None];
        assert_eq!(
            read_at(&files, &mut handles, &seen[1].1).unwrap(),
            entry(1, &[])
        );
        std::fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_cut_on_reopen() {
        let out = temp("torn");
        let path = journal_path(&out, 2);
        Journal::open(&path)
            .unwrap()
            .append(&[entry(0, &["x"])])
            .unwrap();
        let whole = std::fs::metadata(&path).unwrap().len();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"id":"000001-00","index":1,"ite"#)
            .unwrap();
        let mut count = 0;
        scan(&journal_files(&out).unwrap(), |_, _| count += 1).unwrap();
        assert_eq!(count, 1);
        let mut journal = Journal::open(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
        journal.append(&[entry(1, &["y"])]).unwrap();
        let mut indexes = Vec::new();
        scan(&journal_files(&out).unwrap(), |e, _| indexes.push(e.index)).unwrap();
        assert_eq!(indexes, vec![0, 1]);
        std::fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn a_garbled_line_in_the_middle_is_skipped() {
        let out = temp("garbled");
        let path = journal_path(&out, 0);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let good = serde_json::to_string(&entry(5, &["r"])).unwrap();
        std::fs::write(&path, format!("not json\n{good}\n")).unwrap();
        let mut indexes = Vec::new();
        scan(&journal_files(&out).unwrap(), |e, _| indexes.push(e.index)).unwrap();
        assert_eq!(indexes, vec![5]);
        std::fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn journal_files_are_listed_in_name_order() {
        let out = temp("list");
        for i in [10, 2, 0] {
            Journal::open(&journal_path(&out, i)).unwrap();
        }
        std::fs::write(out.join(STATE_DIR).join("progress-00000.json"), "{}").unwrap();
        let names: Vec<String> = journal_files(&out)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec![
                "journal-00000.jsonl",
                "journal-00002.jsonl",
                "journal-00010.jsonl"
            ]
        );
        std::fs::remove_dir_all(&out).unwrap();
    }
}
