//! A deployment's bar log: every bar its feed delivered and its sequencer
//! accepted, appended (and, by default, flushed to disk) before the strategy
//! is handed it, so that a fresh instance replaying the log rebuilds the
//! strategy's state exactly (recovery by replay).
//!
//! The file is a header (`PALBARS1`, then the symbol list as one JSON line)
//! followed by fixed-size records: a bar in the ABI's little-endian layout
//! ([`Bar::SIZE`] bytes) and the CRC-32 of those bytes. Records are written
//! whole with one `write` per batch. A crash can leave a partial last record,
//! or a last record whose bytes did not all reach the disk: [`BarLog::open`]
//! cuts such a tail (the strategy never saw those bars, since `append` had
//! not returned) and reports it. A record that fails its check anywhere
//! before the tail is corruption: opening fails, naming the file and record.
//!
//! What it does not do: check bars (the sequencer did; the dataset they are
//! replayed into checks them again), compact or rotate.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use palisade_host_api::Bar;

/// The file's first bytes.
const MAGIC: &[u8; 8] = b"PALBARS1";
/// A record: a bar and its CRC-32.
const RECORD: usize = Bar::SIZE + 4;

/// How far a bar is written before the strategy sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// `fdatasync` after every batch: survives a power cut.
    #[default]
    Disk,
    /// Written to the operating system: survives the process being killed
    /// (`kill -9`), not a power cut; no disk wait per bar.
    Os,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Durability, String> {
        match s {
            "disk" => Ok(Durability::Disk),
            "os" => Ok(Durability::Os),
            other => Err(format!("durability `{other}` is not one of: disk, os")),
        }
    }
}

/// Why a bar log cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum BarLogError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{path}: not a bar log (it does not start with {magic:?})",
        magic = "PALBARS1"
    )]
    NotABarLog { path: PathBuf },
    #[error("{path}: the log is of symbols {stored:?}, the deployment's are {wanted:?}")]
    Symbols {
        path: PathBuf,
        stored: Vec<String>,
        wanted: Vec<String>,
    },
    #[error("{path}: record {record} (byte {offset}) fails its checksum, and {after} records follow it: the log is corrupt")]
    Corrupt {
        path: PathBuf,
        record: u64,
        offset: u64,
        after: u64,
    },
}

/// What [`BarLog::open`] cut from the end of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CutTail {
    pub offset: u64,
    pub bytes: u64,
}

/// An open bar log, positioned at its end.
#[derive(Debug)]
pub struct BarLog {
    path: PathBuf,
    file: File,
    durability: Durability,
    count: u64,
    last_ts: Option<i64>,
    cut: Option<CutTail>,
    buf: Vec<u8>,
}

impl BarLog {
    /// Opens (or creates) the log at `path` for a deployment of `symbols`,
    /// returning it with every bar it holds, in order.
    pub fn open(
        path: &Path,
        symbols: &[String],
        durability: Durability,
    ) -> Result<(BarLog, Vec<Bar>), BarLogError> {
        let io = |source| BarLogError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let header = header(symbols);
        let len = file.metadata().map_err(io)?.len();
        if len == 0 {
            file.write_all(&header).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        let mut bytes = Vec::with_capacity(len as usize);
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        BufReader::new(&file).read_to_end(&mut bytes).map_err(io)?;
        check_header(path, &bytes, symbols)?;
        let (bars, good) = records(path, &bytes[header.len()..])?;
        let end = (header.len() + good) as u64;
        let cut = (end < bytes.len() as u64).then(|| CutTail {
            offset: end,
            bytes: bytes.len() as u64 - end,
        });
        if let Some(cut) = cut {
            tracing::warn!(path = %path.display(), offset = cut.offset, bytes = cut.bytes, "cut a torn tail off the bar log");
            file.set_len(end).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        let log = BarLog {
            path: path.to_owned(),
            file,
            durability,
            count: bars.len() as u64,
            last_ts: bars.last().map(|b| b.ts),
            cut,
            buf: Vec::new(),
        };
        Ok((log, bars))
    }

    /// Appends `bars` with one write, then syncs them as [`Durability`]
    /// says; the strategy may see them once this returns.
    pub fn append(&mut self, bars: &[Bar]) -> io::Result<()> {
        self.buf.clear();
        for bar in bars {
            let bytes = bar.to_le_bytes();
            self.buf.extend_from_slice(&bytes);
            self.buf.extend_from_slice(&crc32(&bytes).to_le_bytes());
        }
        let before = self.file.metadata()?.len();
        let written = self.file.write_all(&self.buf).and_then(|()| {
            if self.durability == Durability::Disk {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            // Nothing of a failed batch stays: a partial record would
            // misalign every later one, and bars the strategy never saw
            // would be replayed.
            let _ = self.file.set_len(before);
            return Err(e);
        }
        self.count += bars.len() as u64;
        if let Some(last) = bars.last() {
            self.last_ts = Some(last.ts);
        }
        Ok(())
    }

    /// Bars in the log.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// True when the log holds no bar.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The timestamp of the last bar logged.
    pub fn last_ts(&self) -> Option<i64> {
        self.last_ts
    }

    /// What opening cut from a torn end.
    pub fn cut_tail(&self) -> Option<CutTail> {
        self.cut
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads the bars of the log at `path` without changing it (a torn tail is
/// left for the writer to cut): what an offline replay reads while the
/// deployment keeps appending.
pub fn read(path: &Path, symbols: &[String]) -> Result<Vec<Bar>, BarLogError> {
    let bytes = std::fs::read(path).map_err(|source| BarLogError::Io {
        path: path.to_owned(),
        source,
    })?;
    check_header(path, &bytes, symbols)?;
    let (bars, _) = records(path, &bytes[header(symbols).len()..])?;
    Ok(bars)
}

fn header(symbols: &[String]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(
        serde_json::to_string(symbols)
            .expect("strings serialize")
            .as_bytes(),
    );
    out.push(b'\n');
    out
}

fn check_header(path: &Path, bytes: &[u8], symbols: &[String]) -> Result<(), BarLogError> {
    if !bytes.starts_with(MAGIC) {
        return Err(BarLogError::NotABarLog {
            path: path.to_owned(),
        });
    }
    if bytes.starts_with(&header(symbols)) {
        return Ok(());
    }
    let line = bytes[MAGIC.len()..]
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or_default();
    let stored = serde_json::from_slice(line).unwrap_or_default();
    Err(BarLogError::Symbols {
        path: path.to_owned(),
        stored,
        wanted: symbols.to_vec(),
    })
}

/// The bars of `bytes` (the records after the header) and how many bytes of
/// whole, checked records come before a torn tail.
fn records(path: &Path, bytes: &[u8]) -> Result<(Vec<Bar>, usize), BarLogError> {
    let (chunks, _) = bytes.as_chunks::<RECORD>();
    let mut bars = Vec::with_capacity(chunks.len());
    for (i, chunk) in chunks.iter().enumerate() {
        let (bar, crc) = chunk.split_at(Bar::SIZE);
        if crc32(bar).to_le_bytes() != crc {
            let after = (chunks.len() - i - 1) as u64;
            // Only the last record may be torn: a crash leaves no bad
            // record with whole records after it.
            if after == 0 {
                return Ok((bars, i * RECORD));
            }
            return Err(BarLogError::Corrupt {
                path: path.to_owned(),
                record: i as u64,
                offset: (i * RECORD) as u64,
                after,
            });
        }
        bars.push(Bar::from_le_bytes(bar.try_into().expect("a record holds a bar")));
    }
    Ok((bars, chunks.len() * RECORD))
}

/// CRC-32 (IEEE 802.3, reflected), bytewise with a table built at compile time.
fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in bytes {
        crc = TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(ts: i64, symbol: i32) -> Bar {
        Bar {
            ts,
            symbol,
            reserved: 0,
            open: 10.0 + ts as f64,
            high: 12.0 + ts as f64,
            low: 9.0 + ts as f64,
            close: 11.0 + ts as f64,
            volume: 5.0,
        }
    }

    fn symbols() -> Vec<String> {
        vec!["A".to_owned(), "B".to_owned()]
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn bars_appended_are_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bars.log");
        let (mut log, bars) = BarLog::open(&path, &symbols(), Durability::Disk).unwrap();
        assert!(bars.is_empty() && log.is_empty());
        let written = [bar(1, 0), bar(1, 1), bar(2, 0)];
        log.append(&written[..2]).unwrap();
        log.append(&written[2..]).unwrap();
        assert_eq!((log.len(), log.last_ts()), (3, Some(2)));
        drop(log);
        let (log, bars) = BarLog::open(&path, &symbols(), Durability::Os).unwrap();
        assert_eq!(bars, written);
        assert_eq!((log.len(), log.last_ts(), log.cut_tail()), (3, Some(2), None));
    }

    #[test]
    fn a_torn_last_record_is_cut_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bars.log");
        let (mut log, _) = BarLog::open(&path, &symbols(), Durability::Os).unwrap();
        log.append(&[bar(1, 0), bar(2, 0)]).unwrap();
        drop(log);
        let full = std::fs::metadata(&path).unwrap().len();
        for cut in [1, RECORD as u64 - 1, RECORD as u64 - 4] {
            // A partial record.
            let f = OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(full - cut).unwrap();
            drop(f);
            let (log, bars) = BarLog::open(&path, &symbols(), Durability::Os).unwrap();
            assert_eq!(bars, [bar(1, 0)], "cut {cut}");
            assert_eq!(log.cut_tail().unwrap().bytes, RECORD as u64 - cut, "cut {cut}");
            drop(log);
            // Restore the second bar for the next round.
            let (mut log, _) = BarLog::open(&path, &symbols(), Durability::Os).unwrap();
            log.append(&[bar(2, 0)]).unwrap();
        }
        // A whole last record with a wrong byte (its write did not all land).
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 10] ^= 0xFF;
        std::fs::write(&path, &bytes).unwrap();
        let (log, bars) = BarLog::open(&path, &symbols(), Durability::Os).unwrap();
        assert_eq!(bars, [bar(1, 0)]);
        assert_eq!(log.cut_tail().unwrap().bytes, RECORD as u64);
    }

    #[test]
    fn a_bad_record_before_the_end_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bars.log");
        let (mut log, _) = BarLog::open(&path, &symbols(), Durability::Os).unwrap();
        log.append(&[bar(1, 0), bar(2, 0), bar(3, 0)]).unwrap();
        drop(log);
        let mut bytes = std::fs::read(&path).unwrap();
        let header = header(&symbols()).len();
        bytes[header + RECORD + 3] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = BarLog::open(&path, &symbols(), Durability::Os)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("record 1") && err.contains("1 records follow"),
            "{err}"
        );
        // The file is left as it was for an operator to look at.
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn a_log_of_other_symbols_or_another_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bars.log");
        drop(BarLog::open(&path, &symbols(), Durability::Os).unwrap());
        let err = BarLog::open(&path, &["A".to_owned()], Durability::Os)
            .unwrap_err()
            .to_string();
        assert!(err.contains(r#"["A", "B"]"#) && err.contains(r#"["A"]"#), "{err}");
        let other = dir.path().join("other");
        std::fs::write(&other, b"hello").unwrap();
        let err = BarLog::open(&other, &symbols(), Durability::Os)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a bar log"), "{err}");
    }
}
