//! The gate's audit log: every transition of one deployment's gate, one
//! JSON object per line, appended and flushed to disk before the transition
//! takes effect.
//!
//! The file is append-only. [`AuditLog::append`] writes a whole line and
//! `sync_data`s it before returning, so an entry the caller saw written
//! survives a crash. A crash in the middle of a write can leave a last line
//! without its newline: [`AuditLog::open`] truncates such a torn tail (its
//! transition never took effect, since `append` had not returned), reports
//! it through [`AuditLog::torn_tail`] and a warning, and carries on. A
//! complete line that does not parse, or a sequence number out of order, is
//! not a crash's trace: opening fails, naming the file and line.
//!
//! Entries are numbered from 1 without gaps; the log keeps them in memory
//! for queries (transitions are rare: a few per day).
//!
//! What it does not do: decide transitions (the gate does), rotate files or
//! know where deployments keep them.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::drift::DriftSnapshot;
use crate::gate::{GateState, Transition};

/// One recorded transition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// 1 for the first entry of a log, then one more per entry.
    pub seq: u64,
    /// When the transition was decided, unix milliseconds.
    pub at_ms: i64,
    pub deployment: String,
    pub from: GateState,
    pub to: GateState,
    pub reason: String,
    pub actor: String,
    /// The drift measures the transition was decided on.
    pub metrics: DriftSnapshot,
}

impl AuditEntry {
    /// The entry numbered `seq` recording `transition` of `deployment`'s gate.
    pub fn new(seq: u64, deployment: &str, transition: &Transition) -> AuditEntry {
        AuditEntry {
            seq,
            at_ms: transition.at_ms,
            deployment: deployment.to_owned(),
            from: transition.from,
            to: transition.to,
            reason: transition.reason.clone(),
            actor: transition.actor.clone(),
            metrics: transition.metrics.clone(),
        }
    }
}

/// An incomplete last line found, and cut, when the log was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// Where the line started, which is now the file's length.
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes: u64,
}

/// Why a log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open audit log {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("audit log {}:{line}: {message}", path.display())]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// One deployment's audit log file.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    /// The file's length after the last complete line.
    len: u64,
    entries: Vec<AuditEntry>,
    torn: Option<TornTail>,
}

impl AuditLog {
    /// Opens the log at `path`, creating it if needed, and reads its
    /// entries; a torn last line is cut and reported.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        let io_error = |source| AuditError::Io {
            path: path.to_owned(),
            source,
        };
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io_error)?;
        if created {
            sync_parent(path).map_err(io_error)?;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_error)?;
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let entries = parse(path, &bytes[..complete])?;
        let torn = (complete < bytes.len()).then(|| TornTail {
            offset: complete as u64,
            bytes: (bytes.len() - complete) as u64,
        });
        if let Some(tail) = torn {
            tracing::warn!(path = %path.display(), offset = tail.offset, bytes = tail.bytes, "audit log: cut a torn last line");
            file.set_len(tail.offset).map_err(io_error)?;
            file.sync_data().map_err(io_error)?;
        }
        Ok(AuditLog {
            path: path.to_owned(),
            file,
            len: complete as u64,
            entries,
            torn,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The torn last line cut when the log was opened, if there was one.
    pub fn torn_tail(&self) -> Option<TornTail> {
        self.torn
    }

    /// The number the next entry must carry.
    pub fn next_seq(&self) -> u64 {
        self.entries.last().map_or(1, |e| e.seq + 1)
    }

    /// The latest entry, which says where the gate is after a restart.
    pub fn last(&self) -> Option<&AuditEntry> {
        self.entries.last()
    }

    /// Writes `entry` as one line and syncs it to disk before returning.
    /// Refused (`InvalidInput`) unless `entry.seq` is [`AuditLog::next_seq`].
    /// On a failed write the file is cut back to its last complete line.
    pub fn append(&mut self, entry: AuditEntry) -> io::Result<()> {
        let expected = self.next_seq();
        if entry.seq != expected {
            let message = format!("audit entry seq {} is not the next, {expected}", entry.seq);
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        }
        let mut line = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        line.push(b'\n');
        if let Err(err) = self.write_line(&line) {
            // Best effort: the next open cuts a torn tail anyway.
            let _ = self.file.set_len(self.len);
            return Err(err);
        }
        self.len += line.len() as u64;
        self.entries.push(entry);
        Ok(())
    }

    /// Records `transition` of `deployment`'s gate as the next entry.
    pub fn record(&mut self, deployment: &str, transition: &Transition) -> io::Result<AuditEntry> {
        let entry = AuditEntry::new(self.next_seq(), deployment, transition);
        self.append(entry.clone())?;
        Ok(entry)
    }

    /// Up to `limit` entries numbered after `since_seq`, oldest first.
    pub fn entries(&self, since_seq: u64, limit: usize) -> &[AuditEntry] {
        let start = self.entries.partition_point(|e| e.seq <= since_seq);
        let end = start.saturating_add(limit).min(self.entries.len());
        &self.entries[start..end]
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.file.write_all(line)?;
        self.file.sync_data()
    }
}

/// Parses complete lines (each ends with a newline), checking that they are numbered 1, 2, 3, ….
fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<AuditEntry>, AuditError> {
    let mut entries: Vec<AuditEntry> = Vec::new();
    for (i, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
        let corrupt = |message: String| AuditError::Corrupt {
            path: path.to_owned(),
            line: i + 1,
            message,
        };
        let entry: AuditEntry = serde_json::from_slice(line).map_err(|e| corrupt(e.to_string()))?;
        let expected = entries.last().map_or(1, |e| e.seq + 1);
        if entry.seq != expected {
            return Err(corrupt(format!(
                "seq {} where {expected} was expected",
                entry.seq
            )));
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// Syncs the directory holding `path`, so a new file's name survives a crash.
fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => File::open(dir)?.sync_all(),
        None => File::open(".")?.sync_all(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::{Command, Gate, GatePolicy};

    fn transitions() -> Vec<Transition> {
        let mut gate = Gate::new(GatePolicy::default(), 0);
        let metrics = DriftSnapshot::default();
        let mut out = Vec::new();
        for (n, command) in [Command::Suspend, Command::Resume, Command::EmergencyStop]
            .into_iter()
            .enumerate()
        {
            let t = gate.command(command, "ops", "", &metrics, n as i64 * 10).unwrap();
            gate.apply(&t).unwrap();
            out.push(t);
        }
        out
    }

    fn written(dir: &Path) -> (PathBuf, Vec<AuditEntry>) {
        let path = dir.join("d.audit.jsonl");
        let mut log = AuditLog::open(&path).unwrap();
        assert_eq!((log.next_seq(), log.torn_tail()), (1, None));
        let entries = transitions()
            .iter()
            .map(|t| log.record("d", t).unwrap())
            .collect();
        (path, entries)
    }

    #[test]
    fn entries_survive_reopening_and_seq_continues() {
        let dir = tempfile::tempdir().unwrap();
        let (path, entries) = written(dir.path());
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        let mut log = AuditLog::open(&path).unwrap();
        assert_eq!(log.entries(0, 100), entries.as_slice());
        assert_eq!(log.entries(1, 1), &entries[1..2]);
        assert_eq!(log.entries(3, 10), &[]);
        assert_eq!(log.last().unwrap().to, GateState::Stopped);
        assert_eq!(log.next_seq(), 4);
        let t = &transitions()[0];
        let err = log.append(AuditEntry::new(9, "d", t)).unwrap_err();
        assert_eq!(err.to_string(), "audit entry seq 9 is not the next, 4");
        assert_eq!(log.record("d", t).unwrap().seq, 4);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 4);
        assert!(text.lines().next().unwrap().starts_with(r#"{"seq":1,"at_ms":0,"deployment":"d","from":{"state":"open"},"to":{"state":"suspended","manual":true},"reason":"suspend by ops","actor":"ops","metrics":{"#));
    }

    #[test]
    fn a_torn_last_line_is_cut_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (path, entries) = written(dir.path());
        let whole = std::fs::read(&path).unwrap();
        // Prefixes of the last line: nothing, one byte, half, all but its
        // newline.
        let last_start = whole[..whole.len() - 1]
            .iter()
            .rposition(|&b| b == b'\n')
            .unwrap()
            + 1;
        let half = (last_start + whole.len()) / 2;
        for cut in [last_start, last_start + 1, half, whole.len() - 1] {
            std::fs::write(&path, &whole[..cut]).unwrap();
            let mut log = AuditLog::open(&path).unwrap();
            let torn = (cut > last_start).then_some(TornTail {
                offset: last_start as u64,
                bytes: (cut - last_start) as u64,
            });
            assert_eq!(log.torn_tail(), torn, "cut at {cut}");
            assert_eq!(log.entries(0, 10), &entries[..2]);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), last_start as u64);
            // Appending goes on from the cut.
            assert_eq!(log.record("d", &transitions()[2]).unwrap(), entries[2]);
            assert_eq!(std::fs::read(&path).unwrap(), whole);
        }
    }

    #[test]
    fn a_corrupt_complete_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = written(dir.path());
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines[1] = "{not json";
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let err = AuditLog::open(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("audit log {}:2: key must be a string", path.display())),
            "{err}"
        );
        let (a, b) = (text.lines().next().unwrap(), text.lines().nth(2).unwrap());
        std::fs::write(&path, format!("{a}\n{b}\n")).unwrap();
        let err = AuditLog::open(&path).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("audit log {}:2: seq 3 where 2 was expected", path.display())
        );
    }
}
