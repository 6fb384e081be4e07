//! Append-only JSON-lines journals of a deployment: the intents it
//! published, the live fills it accepted and the orders its strategy decided
//! live. They rebuild the deployment's books after a crash, and the signal
//! check compares the orders with an offline replay.
//!
//! A line is written whole with one `write`. A last line without its newline
//! is a crash's trace and is cut when the journal is opened; a complete line
//! that does not parse is corruption, and opening fails naming the line.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a journal cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} line {line}: {message}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// A journal of `T`s, open for appending.
#[derive(Debug)]
pub struct Journal<T> {
    file: File,
    sync: bool,
    len: u64,
    item: PhantomData<fn(T)>,
}

impl<T: Serialize + DeserializeOwned> Journal<T> {
    /// Opens (or creates) the journal at `path`, returning what it holds.
    /// `sync` makes every append wait for the disk.
    pub fn open(path: &Path, sync: bool) -> Result<(Journal<T>, Vec<T>), JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut items = Vec::new();
        for (i, line) in bytes[..whole].split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let item = serde_json::from_slice(line).map_err(|e| JournalError::Corrupt {
                path: path.to_owned(),
                line: i + 1,
                message: e.to_string(),
            })?;
            items.push(item);
        }
        if whole < bytes.len() {
            tracing::warn!(path = %path.display(), bytes = bytes.len() - whole, "cut a torn last line off a journal");
            file.set_len(whole as u64).map_err(io)?;
        }
        let journal = Journal {
            file,
            sync,
            len: items.len() as u64,
            item: PhantomData,
        };
        Ok((journal, items))
    }

    /// Appends one item as one line.
    pub fn append(&mut self, item: &T) -> io::Result<()> {
        let mut line = serde_json::to_vec(item).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        if self.sync {
            self.file.sync_data()?;
        }
        self.len += 1;
        Ok(())
    }

    /// Items in the journal.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the journal holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_survive_reopening_and_a_torn_line_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let (mut j, items) = Journal::<(u32, String)>::open(&path, true).unwrap();
        assert!(items.is_empty());
        j.append(&(1, "a".into())).unwrap();
        j.append(&(2, "b".into())).unwrap();
        drop(j);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"[3,\"c").unwrap();
        drop(f);
        let (mut j, items) = Journal::<(u32, String)>::open(&path, false).unwrap();
        assert_eq!(items, [(1, "a".into()), (2, "b".into())]);
        j.append(&(3, "c".into())).unwrap();
        drop(j);
        let (_, items) = Journal::<(u32, String)>::open(&path, false).unwrap();
        assert_eq!(items.len(), 3);
    }

    #[test]
    fn a_bad_complete_line_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        std::fs::write(&path, b"[1,\"a\"]\nnot json\n[2,\"b\"]\n").unwrap();
        let err = Journal::<(u32, String)>::open(&path, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
