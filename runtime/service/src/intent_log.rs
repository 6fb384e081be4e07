//! Reading a deployment's published intents back from its journal
//! (`intents.jsonl`) for `GET /v1/deployments/{id}/intents`, without
//! reading and parsing the whole file on every poll.
//!
//! A journal only grows: a complete line is never rewritten, and a crash's
//! half line is cut before anything follows it. So each file gets a sparse
//! index, extended with the whole lines appended since the last read: every
//! [`CHECKPOINT_LINES`] lines, the line's offset and the largest order id of
//! the lines before it. A read starts at the last checkpoint before which no
//! order id exceeds `after`, and parses from there on. Order ids are not
//! assumed to be in order: an intent sent again after a takeover, or any
//! other disorder, only makes a read start earlier.
//!
//! A file replaced (restored by a takeover, or a new deployment of the same
//! id: another inode, or the same inode number reused with another creation
//! time), shorter than indexed, or whose last indexed bytes changed is
//! indexed again from its start.
//!
//! Each file's index has its own lock, held while it is checked and grown;
//! the reading itself is streamed and stops at [`MAX_INTENTS`]. Reads block:
//! async callers run them on the blocking pool.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::lock;

use palisade_live::Intent;

/// Lines between two checkpoints: a read parses at most this many lines
/// that cannot match before the first that can (when order ids are in
/// order), and the index costs 16 bytes per this many lines.
pub const CHECKPOINT_LINES: u64 = 256;

/// Most intents one read returns.
pub const MAX_INTENTS: usize = 1_000;

/// The indexes of the journals read so far, by path.
#[derive(Debug, Default)]
pub struct IntentLog {
    files: Mutex<HashMap<PathBuf, Arc<Mutex<FileIndex>>>>,
    checkpoint_lines: u64,
}

#[derive(Debug, Default)]
struct FileIndex {
    /// Device, inode and creation time (ns; 0 where the file system does
    /// not say) of the file indexed.
    identity: (u64, u64, u128),
    /// Bytes indexed: whole lines only.
    len: u64,
    /// Per checkpoint: a line's offset, and the largest order id of the
    /// lines before it (never decreasing along the file).
    checkpoints: Vec<(u64, u64)>,
    /// The largest order id indexed.
    max: u64,
    lines: u64,
    /// The last bytes indexed (at most [`TAIL_BYTES`]), checked on each
    /// read: a file replaced by one reusing the inode shows other bytes.
    tail: Vec<u8>,
}

/// How many of the last indexed bytes a read checks.
const TAIL_BYTES: usize = 64;

#[derive(serde::Deserialize)]
struct OrderId {
    order_id: u64,
}

impl IntentLog {
    pub fn new() -> IntentLog {
        IntentLog::with_checkpoints(CHECKPOINT_LINES)
    }

    fn with_checkpoints(checkpoint_lines: u64) -> IntentLog {
        IntentLog {
            files: Mutex::new(HashMap::new()),
            checkpoint_lines: checkpoint_lines.max(1),
        }
    }

    /// The intents of the journal at `path` for orders after `after`, in
    /// the journal's order, at most [`MAX_INTENTS`]; none if there is no
    /// such file. A line that does not parse is skipped, and a last line
    /// still being written is left for a later read.
    pub fn after(&self, path: &Path, after: u64) -> io::Result<Vec<Intent>> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let (start, end) = {
            let index = self.index(path);
            let mut index = lock(&index);
            // Read under the lock: a length read before it could be older
            // than what another reader indexed meanwhile.
            let meta = file.metadata()?;
            let created = meta
                .created()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            let identity = (meta.dev(), meta.ino(), created);
            if index.identity != identity || meta.len() < index.len || !index.tail_matches(&mut file)? {
                *index = FileIndex {
                    identity,
                    ..FileIndex::default()
                };
            }
            if meta.len() > index.len {
                index.extend(&mut file, meta.len(), self.checkpoint_lines)?;
            }
            if after >= index.max {
                return Ok(Vec::new());
            }
            // The first checkpoint (offset 0, nothing before it) always
            // qualifies: `after` is never below 0.
            let k = index
                .checkpoints
                .partition_point(|&(_, max_before)| max_before <= after);
            (index.checkpoints[k.saturating_sub(1)].0, index.len)
        };
        file.seek(SeekFrom::Start(start))?;
        let mut lines = BufReader::new(file.take(end - start));
        let (mut intents, mut line) = (Vec::new(), Vec::new());
        while intents.len() < MAX_INTENTS {
            line.clear();
            if lines.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            match serde_json::from_slice::<Intent>(line.strip_suffix(b"\n").unwrap_or(&line)) {
                Ok(intent) if intent.order_id > after => intents.push(intent),
                _ => {}
            }
        }
        Ok(intents)
    }

    /// The index of `path`, made empty on first use.
    fn index(&self, path: &Path) -> Arc<Mutex<FileIndex>> {
        lock(&self.files).entry(path.to_owned()).or_default().clone()
    }
}

impl FileIndex {
    fn tail_matches(&self, file: &mut File) -> io::Result<bool> {
        if self.tail.is_empty() {
            return Ok(true);
        }
        let mut bytes = vec![0; self.tail.len()];
        file.seek(SeekFrom::Start(self.len - self.tail.len() as u64))?;
        match file.read_exact(&mut bytes) {
            Ok(()) => Ok(bytes == self.tail),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Indexes the whole lines between what is indexed and `len`.
    fn extend(&mut self, file: &mut File, len: u64, every: u64) -> io::Result<()> {
        file.seek(SeekFrom::Start(self.len))?;
        let mut bytes = Vec::new();
        file.by_ref().take(len - self.len).read_to_end(&mut bytes)?;
        let mut offset = self.len;
        let mut rest = bytes.as_slice();
        while let Some(n) = rest.iter().position(|&b| b == b'\n') {
            if self.lines.is_multiple_of(every) {
                self.checkpoints.push((offset, self.max));
            }
            if let Ok(line) = serde_json::from_slice::<OrderId>(&rest[..n]) {
                self.max = self.max.max(line.order_id);
            }
            self.lines += 1;
            offset += n as u64 + 1;
            rest = &rest[n + 1..];
        }
        let whole = (offset - self.len) as usize;
        if whole > 0 {
            let mut tail = std::mem::take(&mut self.tail);
            tail.extend_from_slice(&bytes[..whole]);
            self.tail = tail[tail.len().saturating_sub(TAIL_BYTES)..].to_vec();
        }
        self.len = offset;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn line(order_id: u64) -> String {
        let intent = Intent {
            id: Intent::id_for("d", order_id),
            deployment: "d".into(),
            order_id,
            decided_ts: 60,
            symbol: "X".into(),
            side: palisade_live::Side::Buy,
            qty: 1.0,
            intended_qty: 1.0,
            kind: palisade_live::OrderKind::Market,
            price: None,
            published_ms: 1,
        };
        format!("{}\n", serde_json::to_string(&intent).unwrap())
    }

    /// What a read must give: every line parsed, filtered, the first 1,000.
    fn reference(path: &Path, after: u64) -> Vec<u64> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let whole = text.rfind('\n').map_or(0, |i| i + 1);
        text[..whole]
            .lines()
            .filter_map(|l| serde_json::from_str::<Intent>(l).ok())
            .filter(|i| i.order_id > after)
            .take(MAX_INTENTS)
            .map(|i| i.order_id)
            .collect()
    }

    fn ids(log: &IntentLog, path: &Path, after: u64) -> Vec<u64> {
        log.after(path, after)
            .unwrap()
            .iter()
            .map(|i| i.order_id)
            .collect()
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn reads_agree_with_parsing_the_whole_file_as_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("intents.jsonl");
        let log = IntentLog::with_checkpoints(4);
        assert!(ids(&log, &path, 0).is_empty(), "no file, no intents");
        // Mostly increasing ids, with repeats, one going back, and lines
        // that do not parse; appended in bursts, one read after each.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = 0;
        for burst in 0..120 {
            let mut text = String::new();
            for _ in 0..(burst % 7) * 5 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                match state % 10 {
                    0 => text.push_str(&line(next)),
                    1 => text.push_str(&line(next.saturating_sub(state % 40))),
                    2 => text.push_str("{\"not\": \"an intent\"}\n"),
                    _ => {
                        next += 1 + state % 3;
                        text.push_str(&line(next));
                    }
                }
            }
            append(&path, &text);
            for after in [0, next / 3, next / 2, next.saturating_sub(5), next, next + 1] {
                assert_eq!(
                    ids(&log, &path, after),
                    reference(&path, after),
                    "burst {burst}, after {after}"
                );
            }
        }
        assert!(next > 1_500, "the file outgrew one read's 1,000 intents");
        assert_eq!(ids(&log, &path, 0).len(), MAX_INTENTS);
    }

    #[test]
    fn a_line_being_written_waits_for_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("intents.jsonl");
        let log = IntentLog::with_checkpoints(2);
        let whole = line(7);
        append(&path, &format!("{}{}", line(5), &whole[..20]));
        assert_eq!(ids(&log, &path, 0), vec![5]);
        append(&path, &whole[20..]);
        assert_eq!(ids(&log, &path, 0), vec![5, 7]);
        assert_eq!(ids(&log, &path, 5), vec![7]);
    }

    #[test]
    fn a_replaced_or_shorter_file_is_indexed_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("intents.jsonl");
        let log = IntentLog::with_checkpoints(2);
        append(&path, &(1..=9).map(line).collect::<String>());
        assert_eq!(ids(&log, &path, 6), vec![7, 8, 9]);
        // Replaced by a longer file with other ids (a new inode).
        let other = dir.path().join("other");
        std::fs::write(&other, (20..=40).map(line).collect::<String>()).unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert_eq!(ids(&log, &path, 35), vec![36, 37, 38, 39, 40]);
        // Cut shorter in place.
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(line(20).len() as u64 * 3).unwrap();
        assert_eq!(ids(&log, &path, 0), vec![20, 21, 22]);
        // Rewritten in place, as long (the inode kept, as a new file may
        // reuse a removed one's): other bytes where the index ended.
        std::fs::write(&path, (60..=62).map(line).collect::<String>()).unwrap();
        assert_eq!(ids(&log, &path, 0), vec![60, 61, 62]);
        append(&path, &line(63));
        assert_eq!(ids(&log, &path, 61), vec![62, 63]);
    }

    #[test]
    fn a_reader_that_waited_for_the_lock_keeps_what_another_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("intents.jsonl");
        let log = IntentLog::with_checkpoints(4);
        append(&path, &(1..=100).map(line).collect::<String>());
        assert_eq!(ids(&log, &path, 99), vec![100]);
        std::thread::scope(|scope| {
            // A reader waits for the index while another grows it past
            // what the file held when the first started.
            let index = log.index(&path);
            let mut held = lock(&index);
            let reader = scope.spawn(|| ids(&log, &path, 100));
            std::thread::sleep(std::time::Duration::from_millis(200));
            append(&path, &(101..=110).map(line).collect::<String>());
            let mut file = File::open(&path).unwrap();
            let len = file.metadata().unwrap().len();
            held.extend(&mut file, len, 4).unwrap();
            let grown = held.checkpoints.len();
            drop(held);
            assert_eq!(reader.join().unwrap(), (101..=110).collect::<Vec<_>>());
            let index = lock(&index);
            assert_eq!(index.len, len, "indexed again from the start");
            assert_eq!(index.checkpoints.len(), grown);
        });
    }
}
