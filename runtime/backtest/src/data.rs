//! Bar data: loading OHLCV bars from CSV, validating them, and merging the bars
//! of several symbols into one stream of events ordered by timestamp.
//!
//! A [`Dataset`] is immutable and cheap to share: the symbols and bars live
//! behind `Arc`s, and [`Dataset::slice`] makes a window over the same bars
//! without copying (walk-forward windows, optimisation runs in parallel).
//!
//! # CSV format
//!
//! One file per symbol. The first line is the header, exactly
//! `timestamp,open,high,low,close,volume` (surrounding spaces and letter case
//! are ignored); every other line is one bar. A timestamp is either unix
//! seconds (an integer, possibly negative), an RFC 3339 date-time such as
//! `2024-01-02T00:00:00Z` or `2024-01-02T09:30:00-05:00` (fractional seconds
//! are dropped), or a bare date `2024-01-02` (midnight UTC).
//!
//! Every bar is checked, and the first problem is reported with the file and
//! the 1-based line number (the header is line 1):
//!
//! - six fields, each a number (the timestamp as above);
//! - open, high, low and close finite and > 0; volume finite and >= 0;
//! - high >= open, close and low; low <= open and close;
//! - timestamps strictly increasing;
//! - at least one bar.
//!
//! Reading is fast on clean files: the lines are split into up to as many
//! chunks as the machine has cores (at least 1 MiB each) and parsed in
//! parallel (byte records, no line
//! bookkeeping); a file with any problem, or with a quote anywhere, is read
//! again by the exact sequential reader, which names the first problem with
//! its line. Both readers give the same bars for a clean file (tested).
//!
//! This module does not resample, fill gaps or adjust for splits: the data is
//! replayed as given.

use std::collections::VecDeque;
use std::fmt;
use std::io::Read;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use palisade_host_api::Bar;

/// The header a bar CSV file must start with.
pub const CSV_HEADER: [&str; 6] = ["timestamp", "open", "high", "low", "close", "volume"];

/// Where a bad bar was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A line of a CSV file (1-based; the header is line 1).
    Line { origin: String, line: u64 },
    /// A bar given to [`Dataset::from_bars`] (0-based index in the given vector).
    Bar { index: usize },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line { origin, line } => write!(f, "{origin} line {line}"),
            Location::Bar { index } => write!(f, "bar {index}"),
        }
    }
}

/// What is wrong with one bar (or one CSV line).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum BarProblem {
    #[error("expected 6 fields (timestamp,open,high,low,close,volume), found {found}")]
    FieldCount { found: usize },
    #[error("{column} is empty")]
    Missing { column: &'static str },
    #[error("{column} is not a number: `{text}`")]
    NotANumber { column: &'static str, text: String },
    #[error("timestamp is not unix seconds, RFC 3339 or YYYY-MM-DD: `{text}`")]
    Timestamp { text: String },
    #[error("{column} is NaN")]
    NaN { column: &'static str },
    #[error("{column} is infinite")]
    Infinite { column: &'static str },
    #[error("{column} is negative ({value})")]
    Negative { column: &'static str, value: f64 },
    #[error("{column} is zero")]
    Zero { column: &'static str },
    #[error("high {high} is below {column} {value}")]
    HighBelow {
        high: f64,
        column: &'static str,
        value: f64,
    },
    #[error("low {low} is above {column} {value}")]
    LowAbove {
        low: f64,
        column: &'static str,
        value: f64,
    },
    #[error("timestamp {current} is not after the previous {previous}")]
    NotIncreasing { previous: i64, current: i64 },
    #[error(
        "bars must be ordered by timestamp, then symbol id: \
         (timestamp {ts}, symbol {symbol}) follows (timestamp {previous_ts}, symbol {previous_symbol})"
    )]
    OutOfOrder {
        previous_ts: i64,
        previous_symbol: i32,
        ts: i64,
        symbol: i32,
    },
    #[error("symbol id {symbol} is out of range ({count} symbols)")]
    UnknownSymbol { symbol: i32, count: usize },
}

/// Why bar data could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: cannot open: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The CSV reader failed (I/O error, invalid UTF-8).
    #[error("{origin}: {source}")]
    Csv {
        origin: String,
        #[source]
        source: csv::Error,
    },
    #[error("{origin} line {line}: expected header `timestamp,open,high,low,close,volume`, found `{found}`")]
    Header {
        origin: String,
        line: u64,
        found: String,
    },
    #[error("{origin}: no bars")]
    Empty { origin: String },
    #[error("{at}: {problem}")]
    Bar { at: Location, problem: BarProblem },
    #[error("symbol `{symbol}` is given twice")]
    DuplicateSymbol { symbol: String },
    #[error("symbol name is empty")]
    EmptySymbol,
    #[error("too many symbols ({count})")]
    TooManySymbols { count: usize },
}

impl DataError {
    fn bar(at: Location, problem: BarProblem) -> DataError {
        DataError::Bar { at, problem }
    }
}

/// Validated bars of one or more symbols, merged into one stream of events.
///
/// Invariants (checked by every constructor): prices are finite and > 0,
/// volume is finite and >= 0, `low <= open, close <= high`; `Bar::symbol`
/// indexes [`Dataset::symbols`]; bars are ordered by `(ts, symbol)`, strictly
/// (so each symbol's timestamps strictly increase, and bars of one timestamp
/// come in symbol order).
#[derive(Clone, Debug)]
pub struct Dataset {
    symbols: Arc<[String]>,
    /// A `Vec` behind the `Arc` so that a live deployment's dataset can grow
    /// ([`Dataset::push`]) without copying while it is not shared.
    bars: Arc<Vec<Bar>>,
    start: usize,
    end: usize,
    timestamps: usize,
}

impl Dataset {
    /// The symbol names; a bar's `symbol` is an index into this list.
    pub fn symbols(&self) -> &[String] {
        &self.symbols
    }

    /// The bars, in event order.
    #[inline]
    pub fn bars(&self) -> &[Bar] {
        &self.bars[self.start..self.end]
    }

    /// Number of bars (events).
    #[inline]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// True for an empty window (only [`Dataset::slice`] makes one).
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Number of distinct timestamps (the number of equity-curve points a
    /// backtest over this data records).
    pub fn timestamps(&self) -> usize {
        self.timestamps
    }

    /// The id of a symbol name.
    pub fn symbol_id(&self, name: &str) -> Option<u32> {
        self.symbols
            .iter()
            .position(|s| s == name)
            .and_then(|i| u32::try_from(i).ok())
    }

    /// Loads one CSV file per symbol and merges them. `inputs` pairs a symbol
    /// name with its file; errors name the file as given.
    pub fn from_csv_files(inputs: &[(String, PathBuf)]) -> Result<Dataset, DataError> {
        check_names(inputs.iter().map(|(s, _)| s.as_str()))?;
        let mut parts = Vec::with_capacity(inputs.len());
        for (symbol, path) in inputs {
            let origin = path.display().to_string();
            let bytes = std::fs::read(path).map_err(|source| DataError::Open {
                path: origin.clone(),
                source,
            })?;
            parts.push(Dataset::from_csv_bytes(symbol, &bytes, &origin)?);
        }
        Dataset::merge(parts)
    }

    /// Reads the bars of one symbol from CSV text in memory: in parallel
    /// when the text is clean, else as [`Dataset::from_csv_reader`] does
    /// (which names the first problem). The same bars either way.
    pub fn from_csv_bytes(symbol: &str, bytes: &[u8], origin: &str) -> Result<Dataset, DataError> {
        if let Some(bars) = parse_clean(bytes) {
            check_names([symbol])?;
            return Ok(Dataset::new_unchecked(vec![symbol.to_owned()], bars));
        }
        Dataset::from_csv_reader(symbol, bytes, origin)
    }

    /// Reads the bars of one symbol from CSV. `origin` names the source in
    /// error messages (usually the file name).
    pub fn from_csv_reader(symbol: &str, reader: impl Read, origin: &str) -> Result<Dataset, DataError> {
        check_names([symbol])?;
        let csv_err = |source| DataError::Csv {
            origin: origin.to_owned(),
            source,
        };
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(NewlineTracker::new(reader));
        let mut record = csv::StringRecord::new();
        if !rdr.read_record(&mut record).map_err(csv_err)? {
            return Err(DataError::Empty {
                origin: origin.to_owned(),
            });
        }
        check_header(&record, record_line(&mut rdr), origin)?;

        let mut bars = Vec::new();
        let mut previous: Option<i64> = None;
        while rdr.read_record(&mut record).map_err(csv_err)? {
            let line = record_line(&mut rdr);
            let at = || Location::Line {
                origin: origin.to_owned(),
                line,
            };
            let bar = parse_record(&record).map_err(|p| DataError::bar(at(), p))?;
            check_bar(&bar).map_err(|p| DataError::bar(at(), p))?;
            if let Some(previous) = previous {
                if bar.ts <= previous {
                    let problem = BarProblem::NotIncreasing {
                        previous,
                        current: bar.ts,
                    };
                    return Err(DataError::bar(at(), problem));
                }
            }
            previous = Some(bar.ts);
            bars.push(bar);
        }
        if bars.is_empty() {
            return Err(DataError::Empty {
                origin: origin.to_owned(),
            });
        }
        Ok(Dataset::new_unchecked(vec![symbol.to_owned()], bars))
    }

    /// Builds a dataset from bars already in memory, checking the same
    /// invariants as the CSV reader (see [`Dataset`]); errors name the bar by
    /// its index in `bars`.
    pub fn from_bars(symbols: Vec<String>, bars: Vec<Bar>) -> Result<Dataset, DataError> {
        check_names(symbols.iter().map(String::as_str))?;
        if bars.is_empty() {
            return Err(DataError::Empty {
                origin: "bars".to_owned(),
            });
        }
        let count = symbols.len();
        let mut last_ts: Vec<Option<i64>> = vec![None; count];
        let mut previous: Option<(i64, i32)> = None;
        for (index, bar) in bars.iter().enumerate() {
            let at = Location::Bar { index };
            let slot = usize::try_from(bar.symbol)
                .ok()
                .filter(|&s| s < count)
                .ok_or_else(|| {
                    let problem = BarProblem::UnknownSymbol {
                        symbol: bar.symbol,
                        count,
                    };
                    DataError::bar(at.clone(), problem)
                })?;
            check_bar(bar).map_err(|p| DataError::bar(at.clone(), p))?;
            if let Some(prev) = last_ts[slot] {
                if bar.ts <= prev {
                    let problem = BarProblem::NotIncreasing {
                        previous: prev,
                        current: bar.ts,
                    };
                    return Err(DataError::bar(at, problem));
                }
            }
            check_after(previous, bar).map_err(|p| DataError::bar(at.clone(), p))?;
            last_ts[slot] = Some(bar.ts);
            previous = Some((bar.ts, bar.symbol));
        }
        let bars = bars.into_iter().map(|b| Bar { reserved: 0, ..b }).collect();
        Ok(Dataset::new_unchecked(symbols, bars))
    }

    /// A dataset of `symbols` with no bars yet: a live deployment's, which
    /// grows by [`Dataset::push`] as its feed's bars close.
    pub fn empty(symbols: Vec<String>) -> Result<Dataset, DataError> {
        check_names(symbols.iter().map(String::as_str))?;
        if symbols.is_empty() {
            return Err(DataError::Empty {
                origin: "symbols".to_owned(),
            });
        }
        Ok(Dataset::new_unchecked(symbols, Vec::new()))
    }

    /// Appends `bars` after the last bar, checking the invariants of
    /// [`Dataset`] against it (errors name the bar by its index in `bars`);
    /// nothing is appended when one fails. A window ([`Dataset::slice`]) is
    /// compacted first; the bars are copied only when another dataset shares
    /// them.
    pub fn push(&mut self, bars: &[Bar]) -> Result<(), DataError> {
        let count = self.symbols.len();
        let mut previous = self.bars().last().map(|b| (b.ts, b.symbol));
        for (index, bar) in bars.iter().enumerate() {
            let at = Location::Bar { index };
            if usize::try_from(bar.symbol).map_or(true, |s| s >= count) {
                let problem = BarProblem::UnknownSymbol {
                    symbol: bar.symbol,
                    count,
                };
                return Err(DataError::bar(at, problem));
            }
            check_bar(bar).map_err(|p| DataError::bar(at.clone(), p))?;
            check_after(previous, bar).map_err(|p| DataError::bar(at.clone(), p))?;
            previous = Some((bar.ts, bar.symbol));
        }
        if self.start != 0 || self.end != self.bars.len() {
            *self = std::mem::replace(self, Dataset::new_unchecked(Vec::new(), Vec::new())).compact();
        }
        let mut last = self.bars().last().map(|b| b.ts);
        let all = Arc::make_mut(&mut self.bars);
        for bar in bars {
            if last != Some(bar.ts) {
                self.timestamps += 1;
                last = Some(bar.ts);
            }
            all.push(Bar { reserved: 0, ..*bar });
        }
        self.end = all.len();
        Ok(())
    }

    /// Merges datasets into one: the symbols are concatenated in the order
    /// given (each part's ids shifted accordingly), and the bars are ordered
    /// by timestamp, bars of equal timestamp in symbol order. Symbol names
    /// must be unique across parts.
    pub fn merge(parts: impl IntoIterator<Item = Dataset>) -> Result<Dataset, DataError> {
        let mut parts: Vec<Dataset> = parts.into_iter().collect();
        let total: usize = parts.iter().map(Dataset::len).sum();
        if total == 0 {
            return Err(DataError::Empty {
                origin: "merged data".to_owned(),
            });
        }
        if parts.len() == 1 {
            return Ok(parts.swap_remove(0).compact());
        }
        let symbols: Vec<String> = parts.iter().flat_map(|p| p.symbols().iter().cloned()).collect();
        check_names(symbols.iter().map(String::as_str))?;
        let mut bars = Vec::with_capacity(total);
        let mut offset = 0i32;
        for part in &parts {
            bars.extend(part.bars().iter().map(|b| Bar {
                symbol: b.symbol + offset,
                ..*b
            }));
            // Fits: check_names bounded the symbol count by i32::MAX.
            offset += part.symbols().len() as i32;
        }
        // Stable: bars of equal timestamp keep their concatenation order,
        // which is symbol order (parts are concatenated in symbol order and
        // each part is ordered by (ts, symbol)).
        bars.sort_by_key(|b| b.ts);
        Ok(Dataset::new_unchecked(symbols, bars))
    }

    /// A window of events `range` (relative to this dataset) sharing the same
    /// bars without copying. Symbol ids are unchanged; a symbol may have no bar
    /// in the window.
    ///
    /// # Panics
    ///
    /// When `range` is not within `0..self.len()` or is decreasing, like slice
    /// indexing.
    pub fn slice(&self, range: Range<usize>) -> Dataset {
        let bars = &self.bars()[range.clone()];
        Dataset {
            symbols: Arc::clone(&self.symbols),
            bars: Arc::clone(&self.bars),
            start: self.start + range.start,
            end: self.start + range.end,
            timestamps: count_timestamps(bars),
        }
    }

    /// A copy holding only this window's bars (a no-op for a full dataset).
    fn compact(self) -> Dataset {
        if self.start == 0 && self.end == self.bars.len() {
            return self;
        }
        Dataset {
            bars: Arc::new(self.bars().to_vec()),
            start: 0,
            end: self.len(),
            ..self
        }
    }

    fn new_unchecked(symbols: Vec<String>, bars: Vec<Bar>) -> Dataset {
        let timestamps = count_timestamps(&bars);
        let end = bars.len();
        Dataset {
            symbols: symbols.into(),
            bars: Arc::new(bars),
            start: 0,
            end,
            timestamps,
        }
    }
}

fn count_timestamps(bars: &[Bar]) -> usize {
    let mut count = 0;
    let mut last = None;
    for bar in bars {
        if last != Some(bar.ts) {
            count += 1;
            last = Some(bar.ts);
        }
    }
    count
}

fn check_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), DataError> {
    let mut seen = std::collections::HashSet::new();
    for name in names {
        if name.is_empty() {
            return Err(DataError::EmptySymbol);
        }
        if !seen.insert(name) {
            return Err(DataError::DuplicateSymbol {
                symbol: name.to_owned(),
            });
        }
    }
    if i32::try_from(seen.len()).is_err() {
        return Err(DataError::TooManySymbols { count: seen.len() });
    }
    Ok(())
}

/// Counts the newlines a CSV reader reads, so that a record's line number is
/// exact: the `csv` crate's record positions count the blank lines before a
/// record as part of the previous one, and its reader position, taken after a
/// record, is one line further on only when the record ended with `\n`.
struct NewlineTracker<R> {
    inner: R,
    offset: u64,
    /// Offsets of newlines read but not yet passed by the parser (a buffer's
    /// worth at most).
    newlines: VecDeque<u64>,
}

impl<R> NewlineTracker<R> {
    fn new(inner: R) -> Self {
        NewlineTracker {
            inner,
            offset: 0,
            newlines: VecDeque::new(),
        }
    }

    /// Whether the byte just before offset `end` is a newline; forgets the
    /// newlines before it.
    fn newline_before(&mut self, end: u64) -> bool {
        let Some(last) = end.checked_sub(1) else {
            return false;
        };
        while self.newlines.front().is_some_and(|&n| n < last) {
            self.newlines.pop_front();
        }
        self.newlines.front() == Some(&last)
    }
}

impl<R: Read> Read for NewlineTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for (i, &b) in buf[..n].iter().enumerate() {
            if b == b'\n' {
                self.newlines.push_back(self.offset + i as u64);
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// The 1-based line of the record just read (its last line, for a record
/// with a quoted newline).
fn record_line<R: Read>(rdr: &mut csv::Reader<NewlineTracker<R>>) -> u64 {
    let position = rdr.position();
    let (end, line) = (position.byte(), position.line());
    line - u64::from(rdr.get_mut().newline_before(end))
}

/// Smallest part of a file worth a thread of its own.
const MIN_CHUNK_BYTES: usize = 1 << 20;

/// The bars of a clean CSV file (a valid header, then only valid bars in
/// increasing time, no quote anywhere), parsed in parallel; `None` for
/// anything else, which the exact reader then reports.
fn parse_clean(bytes: &[u8]) -> Option<Vec<Bar>> {
    if bytes.contains(&b'"') {
        return None;
    }
    let header_end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |i| i + 1);
    let mut header = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(&bytes[..header_end]);
    let mut record = csv::StringRecord::new();
    if !header.read_record(&mut record).ok()? || check_header(&record, 1, "").is_err() {
        return None;
    }
    // The header record must be the whole first line (a lone `\r` ends a
    // record too: then the exact reader sees more records in that line).
    if header.position().byte() != header_end as u64 {
        return None;
    }
    let body = &bytes[header_end..];
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let parts = (body.len() / MIN_CHUNK_BYTES).clamp(1, threads.max(1));
    let mut chunks = Vec::with_capacity(parts);
    let mut start = 0;
    for i in 1..=parts {
        let mut end = if i == parts {
            body.len()
        } else {
            body.len() * i / parts
        };
        while end < body.len() && body[end - 1] != b'\n' {
            end += 1;
        }
        if end > start {
            chunks.push(&body[start..end]);
        }
        start = end;
    }
    let parsed: Vec<Option<Vec<Bar>>> = if chunks.len() == 1 {
        vec![parse_chunk(chunks[0])]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = chunks.iter().map(|c| s.spawn(move || parse_chunk(c))).collect();
            handles.into_iter().map(|h| h.join().ok().flatten()).collect()
        })
    };
    let mut bars: Vec<Bar> = Vec::with_capacity(parsed.iter().flatten().map(Vec::len).sum());
    for part in parsed {
        let part = part?;
        if let (Some(last), Some(first)) = (bars.last(), part.first()) {
            if first.ts <= last.ts {
                return None;
            }
        }
        bars.extend_from_slice(&part);
    }
    (!bars.is_empty()).then_some(bars)
}

/// The bars of a run of whole CSV lines, or `None` at the first problem.
fn parse_chunk(chunk: &[u8]) -> Option<Vec<Bar>> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(chunk);
    let mut record = csv::ByteRecord::new();
    let mut bars = Vec::with_capacity(chunk.len() / 40);
    let mut previous = i64::MIN;
    while rdr.read_byte_record(&mut record).ok()? {
        if record.len() != CSV_HEADER.len() {
            return None;
        }
        let text = |i: usize| std::str::from_utf8(&record[i]).ok();
        let number = |i: usize| text(i).filter(|t| !t.is_empty())?.parse::<f64>().ok();
        let bar = Bar {
            ts: parse_timestamp(text(0)?).ok()?,
            symbol: 0,
            reserved: 0,
            open: number(1)?,
            high: number(2)?,
            low: number(3)?,
            close: number(4)?,
            volume: number(5)?,
        };
        if check_bar(&bar).is_err() || bar.ts <= previous {
            return None;
        }
        previous = bar.ts;
        bars.push(bar);
    }
    Some(bars)
}

fn check_header(record: &csv::StringRecord, line: u64, origin: &str) -> Result<(), DataError> {
    let ok = record.len() == CSV_HEADER.len()
        && record
            .iter()
            .zip(CSV_HEADER)
            .all(|(field, want)| field.trim_start_matches('\u{feff}').eq_ignore_ascii_case(want));
    if ok {
        return Ok(());
    }
    Err(DataError::Header {
        origin: origin.to_owned(),
        line,
        found: record.iter().collect::<Vec<_>>().join(","),
    })
}

fn parse_record(record: &csv::StringRecord) -> Result<Bar, BarProblem> {
    if record.len() != CSV_HEADER.len() {
        return Err(BarProblem::FieldCount { found: record.len() });
    }
    let ts = parse_timestamp(&record[0])?;
    let number = |i: usize| {
        let column = CSV_HEADER[i];
        let text = &record[i];
        if text.is_empty() {
            return Err(BarProblem::Missing { column });
        }
        text.parse::<f64>().map_err(|_| BarProblem::NotANumber {
            column,
            text: text.to_owned(),
        })
    };
    Ok(Bar {
        ts,
        symbol: 0,
        reserved: 0,
        open: number(1)?,
        high: number(2)?,
        low: number(3)?,
        close: number(4)?,
        volume: number(5)?,
    })
}

/// Parses unix seconds, an RFC 3339 date-time or a `YYYY-MM-DD` date (UTC).
pub fn parse_timestamp(text: &str) -> Result<i64, BarProblem> {
    if text.is_empty() {
        return Err(BarProblem::Missing { column: "timestamp" });
    }
    let bad = || BarProblem::Timestamp {
        text: text.to_owned(),
    };
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<i64>().map_err(|_| bad());
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc().timestamp());
    }
    Err(bad())
}

/// Checks that `bar` comes strictly after `previous` (timestamp, symbol).
fn check_after(previous: Option<(i64, i32)>, bar: &Bar) -> Result<(), BarProblem> {
    match previous {
        Some((previous_ts, previous_symbol)) if (bar.ts, bar.symbol) <= (previous_ts, previous_symbol) => {
            Err(BarProblem::OutOfOrder {
                previous_ts,
                previous_symbol,
                ts: bar.ts,
                symbol: bar.symbol,
            })
        }
        _ => Ok(()),
    }
}

/// Checks one bar's own values (not its order): prices finite and > 0,
/// volume finite and >= 0, `low <= open, close <= high`. Live feeds check
/// their bars with it too, so a bar means the same thing in both.
pub fn check_bar(bar: &Bar) -> Result<(), BarProblem> {
    for (column, value) in [
        ("open", bar.open),
        ("high", bar.high),
        ("low", bar.low),
        ("close", bar.close),
    ] {
        if value.is_nan() {
            return Err(BarProblem::NaN { column });
        }
        if value.is_infinite() {
            return Err(BarProblem::Infinite { column });
        }
        if value < 0.0 {
            return Err(BarProblem::Negative { column, value });
        }
        if value == 0.0 {
            return Err(BarProblem::Zero { column });
        }
    }
    let column = "volume";
    if bar.volume.is_nan() {
        return Err(BarProblem::NaN { column });
    }
    if bar.volume.is_infinite() {
        return Err(BarProblem::Infinite { column });
    }
    if bar.volume < 0.0 {
        return Err(BarProblem::Negative {
            column,
            value: bar.volume,
        });
    }
    for (column, value) in [("open", bar.open), ("close", bar.close), ("low", bar.low)] {
        if bar.high < value {
            return Err(BarProblem::HighBelow {
                high: bar.high,
                column,
                value,
            });
        }
    }
    for (column, value) in [("open", bar.open), ("close", bar.close)] {
        if bar.low > value {
            return Err(BarProblem::LowAbove {
                low: bar.low,
                column,
                value,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "timestamp,open,high,low,close,volume\n";

    /// Loads `text` with the exact reader and with the parallel one, and
    /// checks that they agree, bar for bar or error for error.
    fn load(text: &str) -> Result<Dataset, DataError> {
        let exact = Dataset::from_csv_reader("X", text.as_bytes(), "prices.csv");
        let fast = Dataset::from_csv_bytes("X", text.as_bytes(), "prices.csv");
        match (&exact, &fast) {
            (Ok(a), Ok(b)) => assert_eq!(a.bars(), b.bars(), "input:\n{text}"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "input:\n{text}"),
            _ => panic!("the readers disagree on\n{text}\nexact: {exact:?}\nfast: {fast:?}"),
        }
        exact
    }

    /// A clean file of `n` bars (several parallel chunks when large).
    fn big(n: usize) -> String {
        let mut text = String::from(HEADER);
        for i in 0..n {
            let p = 100.0 + (i % 977) as f64 / 64.0;
            text.push_str(&format!(
                "{},{p},{},{},{p},{}\n",
                1_000 + 60 * i,
                p + 1.0,
                p - 1.0,
                i % 13
            ));
        }
        text
    }

    #[test]
    fn a_header_ended_by_a_lone_carriage_return_is_read_exactly() {
        let both = load(&format!("{}\r1,1,1,1,1,0\n2,1,1,1,1,0\n", HEADER.trim_end())).unwrap();
        assert_eq!(both.len(), 2);
        assert!(load(&format!("{}\rgarbage\n1,1,1,1,1,0\n", HEADER.trim_end())).is_err());
    }

    #[test]
    fn large_files_read_in_parallel_give_the_exact_readers_bars_and_errors() {
        let text = big(120_000);
        assert!(
            text.len() > 4 * MIN_CHUNK_BYTES,
            "{} bytes is not several chunks",
            text.len()
        );
        let data = load(&text).unwrap();
        assert_eq!(data.len(), 120_000);
        assert_eq!(parse_clean(text.as_bytes()).map(|b| b.len()), Some(120_000));
        // A problem deep inside (a bad close at line 100,002; timestamps out
        // of order across a chunk border): the exact reader names its line.
        let mut lines: Vec<&str> = text.lines().collect();
        let mut fields: Vec<&str> = lines[100_001].split(',').collect();
        fields[4] = "x";
        let broken = fields.join(",");
        let mut with_bad = lines.clone();
        with_bad[100_001] = &broken;
        let bad = with_bad.join("\n");
        assert!(parse_clean(bad.as_bytes()).is_none());
        let err = load(&bad).unwrap_err().to_string();
        assert_eq!(err, "prices.csv line 100002: close is not a number: `x`");
        let middle = lines.len() / 2;
        lines.swap(middle, middle + 1);
        let swapped = lines.join("\n");
        assert!(parse_clean(swapped.as_bytes()).is_none());
        assert!(
            load(&swapped).unwrap_err().to_string().contains("not after"),
            "out of order"
        );
        // A quote anywhere sends the file to the exact reader.
        let quoted = text.replacen("1000,", "\"1000\",", 1);
        assert!(parse_clean(quoted.as_bytes()).is_none());
        assert_eq!(load(&quoted).unwrap().len(), 120_000);
    }

    /// Checks that `text` loads into bars with these `(ts, close)` values.
    #[track_caller]
    fn check_ok(text: &str, expected: &[(i64, f64)]) {
        let data = load(text).unwrap_or_else(|e| panic!("input:\n{text}\nerror: {e}"));
        let got: Vec<(i64, f64)> = data.bars().iter().map(|b| (b.ts, b.close)).collect();
        assert_eq!(got, expected, "input:\n{text}");
        assert_eq!(data.symbols(), ["X".to_owned()]);
    }

    /// Checks that `text` fails with exactly this message.
    #[track_caller]
    fn check_err(text: &str, expected: &str) {
        match load(text) {
            Ok(d) => panic!("input:\n{text}\nloaded {} bars, expected: {expected}", d.len()),
            Err(e) => assert_eq!(e.to_string(), expected, "input:\n{text}"),
        }
    }

    #[test]
    fn csv_good() {
        check_ok(
            "timestamp,open,high,low,close,volume\n1,10,11,9,10.5,100\n2,10.5,12,10,11,0\n",
            &[(1, 10.5), (2, 11.0)],
        );
        // Header case and spaces, spaces around fields, no final newline.
        check_ok(
            " Timestamp , OPEN,High,low ,Close,Volume\n 1 , 10 , 11 , 9 , 10 , 1",
            &[(1, 10.0)],
        );
        // CRLF line ends and a byte-order mark.
        check_ok(
            "\u{feff}timestamp,open,high,low,close,volume\r\n5,1,1,1,1,1\r\n",
            &[(5, 1.0)],
        );
        // All prices equal is a valid bar; scientific notation is a number.
        check_ok(&format!("{HEADER}-3,1e2,1e2,1e2,1e2,0\n"), &[(-3, 100.0)]);
    }

    #[test]
    fn csv_timestamps() {
        let cases: &[(&str, i64)] = &[
            ("0", 0),
            ("1704153600", 1_704_153_600),
            ("2024-01-02T00:00:00Z", 1_704_153_600),
            ("2024-01-02T00:00:00+00:00", 1_704_153_600),
            ("2024-01-02T09:30:00-05:00", 1_704_153_600 + 14 * 3600 + 1800),
            ("2024-01-02T00:00:00.750Z", 1_704_153_600),
            ("2024-01-02", 1_704_153_600),
            ("1969-12-31T23:59:59Z", -1),
        ];
        for &(text, want) in cases {
            assert_eq!(parse_timestamp(text), Ok(want), "{text}");
            check_ok(&format!("{HEADER}{text},1,1,1,1,1\n"), &[(want, 1.0)]);
        }
        for bad in [
            "1.5",
            "2024-13-01",
            "2024-01-02T00:00:00",
            "yesterday",
            "99999999999999999999",
        ] {
            check_err(
                &format!("{HEADER}{bad},1,1,1,1,1\n"),
                &format!("prices.csv line 2: timestamp is not unix seconds, RFC 3339 or YYYY-MM-DD: `{bad}`"),
            );
        }
    }

    #[test]
    fn csv_bad() {
        let cases: &[(&str, &str)] = &[
            ("", "prices.csv: no bars"),
            (HEADER, "prices.csv: no bars"),
            (
                "time,open,high,low,close,volume\n1,1,1,1,1,1\n",
                "prices.csv line 1: expected header `timestamp,open,high,low,close,volume`, found `time,open,high,low,close,volume`",
            ),
            (
                "timestamp,open,high,low,close\n",
                "prices.csv line 1: expected header `timestamp,open,high,low,close,volume`, found `timestamp,open,high,low,close`",
            ),
            (
                "timestamp,open,high,low,close,volume\n1,1,1,1,1\n",
                "prices.csv line 2: expected 6 fields (timestamp,open,high,low,close,volume), found 5",
            ),
            (
                "timestamp,open,high,low,close,volume\n1,1,1,1,1,1\n2,1,1,1,1,1,1\n",
                "prices.csv line 3: expected 6 fields (timestamp,open,high,low,close,volume), found 7",
            ),
            (
                "timestamp,open,high,low,close,volume\n1,1,1,1,abc,1\n",
                "prices.csv line 2: close is not a number: `abc`",
            ),
            (
                "timestamp,open,high,low,close,volume\n1,1,,1,1,1\n",
                "prices.csv line 2: high is empty",
            ),
            (
                "timestamp,open,high,low,close,volume\n,1,1,1,1,1\n",
                "prices.csv line 2: timestamp is empty",
            ),
            (
                "timestamp,open,high,low,close,volume\n1,1,1,1,NaN,1\n",
                "prices.csv line 2: close is NaN",
            ),
            (
                "timestamp,open,high,low,close,volume\n1,inf,1,1,1,1\n",
                "prices.csv line 2: open is infinite",
            ),
            (
                "timestamp,open,high,low,close,volume\n1,1,1,-1,1,1\n",
                "prices.csv line 2: low is negative (-1)",
            ),
            (
                "timestamp,open,high,low,close,volume\n1,0,1,1,1,1\n",
                "prices.csv line 2: open is zero",
            ),
            (
                "timestamp,open,high,low,close,volume\n1,1,1,1,1,-5\n",
                "prices.csv line 2: volume is negative (-5)",
            ),
            (
                "timestamp,open,high,low,close,volume\n1,1,1,1,1,nan\n",
                "prices.csv line 2: volume is NaN",
            ),
            (
                "timestamp,open,high,low,close,volume\n1,10,9,8,8.5,1\n",
                "prices.csv line 2: high 9 is below open 10",
            ),
            (
                "timestamp,open,high,low,close,volume\n1,8,9,8,9.5,1\n",
                "prices.csv line 2: high 9 is below close 9.5",
            ),
            (
                "timestamp,open,high,low,close,volume\n1,9,9,9.5,9,1\n",
                "prices.csv line 2: high 9 is below low 9.5",
            ),
            (
                "timestamp,open,high,low,close,volume\n1,9,10,9.5,9.7,1\n",
                "prices.csv line 2: low 9.5 is above open 9",
            ),
            (
                "timestamp,open,high,low,close,volume\n1,9.7,10,9.5,9.2,1\n",
                "prices.csv line 2: low 9.5 is above close 9.2",
            ),
            (
                "timestamp,open,high,low,close,volume\n1,1,1,1,1,1\n2,1,1,1,1,1\n2,1,1,1,1,1\n",
                "prices.csv line 4: timestamp 2 is not after the previous 2",
            ),
            (
                "timestamp,open,high,low,close,volume\n5,1,1,1,1,1\n\n4,1,1,1,1,1\n",
                "prices.csv line 4: timestamp 4 is not after the previous 5",
            ),
            (
                "timestamp,open,high,low,close,volume\r\n5,1,1,1,1,1\r\n\r\n\r\n4,1,1,1,1,1",
                "prices.csv line 5: timestamp 4 is not after the previous 5",
            ),
            (
                "\n\ntimestamp,open,high,low,close,volume\n\n1,1,1,1,1,1\n2,x,1,1,1,1\n",
                "prices.csv line 6: open is not a number: `x`",
            ),
            (
                "\ntimestamp,open,high,low,close\n1,1,1,1,1,1\n",
                "prices.csv line 2: expected header `timestamp,open,high,low,close,volume`, found `timestamp,open,high,low,close`",
            ),
            (
                "timestamp,open,high,low,close,volume\n1,1,1,1,1,1\n   \n",
                "prices.csv line 3: expected 6 fields (timestamp,open,high,low,close,volume), found 1",
            ),
            (
                "timestamp,open,high,low,close,volume\n2024-01-03,1,1,1,1,1\n2024-01-02T00:00:00Z,1,1,1,1,1\n",
                "prices.csv line 3: timestamp 1704153600 is not after the previous 1704240000",
            ),
        ];
        for &(text, expected) in cases {
            check_err(text, expected);
        }
    }

    #[test]
    fn csv_reader_error_names_origin() {
        let bytes: &[u8] = b"timestamp,open,high,low,close,volume\n1,1,1,1,\xff,1\n";
        let err = Dataset::from_csv_reader("X", bytes, "bad.csv").unwrap_err();
        assert!(err.to_string().starts_with("bad.csv: "), "{err}");
    }

    fn bar(ts: i64, symbol: i32, close: f64) -> Bar {
        Bar {
            ts,
            symbol,
            reserved: 0,
            open: close,
            high: close,
            low: close,
            close,
            volume: 1.0,
        }
    }

    fn single(symbol: &str, rows: &[(i64, f64)]) -> Dataset {
        let bars = rows.iter().map(|&(ts, c)| bar(ts, 0, c)).collect();
        Dataset::from_bars(vec![symbol.to_owned()], bars).unwrap()
    }

    fn events(data: &Dataset) -> Vec<(i64, i32)> {
        data.bars().iter().map(|b| (b.ts, b.symbol)).collect()
    }

    #[test]
    fn merge_orders_by_timestamp_then_symbol() {
        let a = single("A", &[(1, 1.0), (3, 1.0), (4, 1.0)]);
        let b = single("B", &[(1, 2.0), (2, 2.0), (4, 2.0), (5, 2.0)]);
        let c = single("C", &[(0, 3.0), (4, 3.0)]);
        let merged = Dataset::merge([a, b, c]).unwrap();
        assert_eq!(merged.symbols(), ["A", "B", "C"]);
        assert_eq!(
            events(&merged),
            [
                (0, 2),
                (1, 0),
                (1, 1),
                (2, 1),
                (3, 0),
                (4, 0),
                (4, 1),
                (4, 2),
                (5, 1)
            ]
        );
        assert_eq!(merged.timestamps(), 6);
        assert_eq!(merged.bars()[0].close, 3.0);
        assert_eq!(merged.symbol_id("C"), Some(2));
        assert_eq!(merged.symbol_id("D"), None);

        let err = Dataset::merge([single("A", &[(1, 1.0)]), single("A", &[(2, 1.0)])]);
        assert_eq!(err.unwrap_err().to_string(), "symbol `A` is given twice");
    }

    #[test]
    fn from_csv_files_merges_and_names_files() {
        let dir = std::env::temp_dir().join(format!("palisade-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a.csv");
        let b = dir.join("b.csv");
        std::fs::write(&a, format!("{HEADER}1,1,1,1,1,1\n3,1,1,1,1,1\n")).unwrap();
        std::fs::write(&b, format!("{HEADER}1,2,2,2,2,1\n2,2,2,2,2,1\n")).unwrap();
        let inputs = vec![("A".to_owned(), a.clone()), ("B".to_owned(), b.clone())];
        let data = Dataset::from_csv_files(&inputs).unwrap();
        assert_eq!(events(&data), [(1, 0), (1, 1), (2, 1), (3, 0)]);

        std::fs::write(&b, format!("{HEADER}1,2,2,2,2,1\n2,2,2,2,x,1\n")).unwrap();
        let err = Dataset::from_csv_files(&inputs).unwrap_err().to_string();
        assert_eq!(err, format!("{} line 3: close is not a number: `x`", b.display()));

        let missing = vec![("A".to_owned(), dir.join("missing.csv"))];
        let err = Dataset::from_csv_files(&missing).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}: cannot open: ", dir.join("missing.csv").display())),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn from_bars_checks_invariants() {
        let names = || vec!["A".to_owned(), "B".to_owned()];
        let check = |bars: Vec<Bar>, expected: &str| {
            let err = Dataset::from_bars(names(), bars).unwrap_err();
            assert_eq!(err.to_string(), expected);
        };
        check(vec![], "bars: no bars");
        check(
            vec![bar(1, 2, 1.0)],
            "bar 0: symbol id 2 is out of range (2 symbols)",
        );
        check(
            vec![bar(1, 0, 1.0), bar(1, -1, 1.0)],
            "bar 1: symbol id -1 is out of range (2 symbols)",
        );
        check(vec![bar(1, 0, 1.0), bar(1, 0, f64::NAN)], "bar 1: open is NaN");
        check(
            vec![bar(1, 0, 1.0), bar(1, 0, 1.0)],
            "bar 1: timestamp 1 is not after the previous 1",
        );
        check(
            vec![bar(1, 1, 1.0), bar(1, 0, 1.0)],
            "bar 1: bars must be ordered by timestamp, then symbol id: (timestamp 1, symbol 0) follows (timestamp 1, symbol 1)",
        );
        check(
            vec![bar(2, 0, 1.0), bar(1, 1, 1.0)],
            "bar 1: bars must be ordered by timestamp, then symbol id: (timestamp 1, symbol 1) follows (timestamp 2, symbol 0)",
        );
        let err = Dataset::from_bars(vec!["A".into(), String::new()], vec![bar(1, 0, 1.0)]);
        assert_eq!(err.unwrap_err().to_string(), "symbol name is empty");
        let ok = Dataset::from_bars(names(), vec![bar(1, 0, 1.0), bar(1, 1, 1.0), bar(2, 1, 1.0)]).unwrap();
        assert_eq!(ok.len(), 3);
        assert_eq!(ok.timestamps(), 2);
    }

    #[test]
    fn slice_is_a_window() {
        let data = single("A", &[(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]);
        let window = data.slice(1..3);
        assert_eq!(events(&window), [(2, 0), (3, 0)]);
        assert_eq!(window.timestamps(), 2);
        let inner = window.slice(1..2);
        assert_eq!(inner.bars()[0].close, 3.0);
        let empty = data.slice(2..2);
        assert!(empty.is_empty());
        assert_eq!(empty.timestamps(), 0);
        // Merging a single window copies only its bars.
        let merged = Dataset::merge([window]).unwrap();
        assert_eq!(events(&merged), [(2, 0), (3, 0)]);
    }
}
