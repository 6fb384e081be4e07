//! Limit policies: the operator's knobs that bound what one guest may use.
//!
//! A [`Policy`] is plain serde data read from a TOML file (see `policies/` at
//! the repository root and its README). This module loads a policy by name or
//! by path, fills in defaults for missing keys, and validates every value
//! against its allowed range, so that an error names the file, the key and the
//! range. The shipped `default.toml` and `strict.toml` are embedded in the
//! binary, so a policy name works without the files on disk.
//!
//! It deliberately does not enforce anything: the sandbox turns a policy into
//! wasmtime store limits, fuel and epoch deadlines, and the validator checks
//! modules against it. Nor does it hash policies; [`Policy::canonical_toml`]
//! gives the stable text for callers that do.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Size of one WebAssembly page, the unit linear memory grows by.
pub const WASM_PAGE_BYTES: u64 = 64 * KIB;

// Defaults: the one place where each knob's default value is written. The
// shipped `policies/default.toml` repeats them for operators, and a test checks
// that it agrees with these.

/// Default for [`Policy::memory_bytes`]: 64 MiB (1024 wasm pages), plenty for
/// indicator state over long histories.
pub const DEFAULT_MEMORY_BYTES: u64 = 64 * MIB;
/// Default for [`Policy::table_elements`].
pub const DEFAULT_TABLE_ELEMENTS: u32 = 10_000;
/// Default for [`Policy::fuel_per_event`]: about ten million wasm operators
/// for init, finish and each bar.
pub const DEFAULT_FUEL_PER_EVENT: u64 = 10_000_000;
/// Default for [`Policy::fuel_per_run`]: 10^12, about what a guest can burn
/// within [`DEFAULT_DEADLINE_PER_RUN_MS`].
pub const DEFAULT_FUEL_PER_RUN: u64 = 1_000_000_000_000;
/// Default for [`Policy::deadline_per_event_ms`]: one second.
pub const DEFAULT_DEADLINE_PER_EVENT_MS: u64 = 1_000;
/// Default for [`Policy::deadline_per_run_ms`]: ten minutes.
pub const DEFAULT_DEADLINE_PER_RUN_MS: u64 = 600_000;
/// Default for [`Policy::stack_bytes`]: 512 KiB.
pub const DEFAULT_STACK_BYTES: u64 = 512 * KIB;
/// Default for [`Policy::module_bytes`]: 8 MiB.
pub const DEFAULT_MODULE_BYTES: u64 = 8 * MIB;
/// Default for [`Policy::max_functions`].
pub const DEFAULT_MAX_FUNCTIONS: u32 = 50_000;
/// Default for [`Policy::max_tables`]: one, the indirect-call table that
/// compilers emit.
pub const DEFAULT_MAX_TABLES: u32 = 1;
/// Default for [`Policy::log_bytes`]: 64 KiB of log lines per run.
pub const DEFAULT_LOG_BYTES: u64 = 64 * KIB;
/// Default for [`Policy::orders_per_event`].
pub const DEFAULT_ORDERS_PER_EVENT: u32 = 100;
/// Default for [`Policy::output_bytes`]: 64 MiB.
pub const DEFAULT_OUTPUT_BYTES: u64 = 64 * MIB;
/// Default for [`Policy::metrics_per_run`].
pub const DEFAULT_METRICS_PER_RUN: u32 = 64;
/// Default for [`Policy::log_overflow`]: drop (and count) the lines past
/// `log_bytes`.
pub const DEFAULT_LOG_OVERFLOW: LogOverflow = LogOverflow::Truncate;
/// Default for [`Policy::compile_ms`]: ten seconds of CPU time.
pub const DEFAULT_COMPILE_MS: u64 = 10_000;
/// Default for [`Policy::compile_memory_bytes`]: 1 GiB.
pub const DEFAULT_COMPILE_MEMORY_BYTES: u64 = GIB;
/// Default for [`Policy::max_variants`].
pub const DEFAULT_MAX_VARIANTS: u64 = 100_000;
/// Default for [`Policy::python_memory_bytes`]: 256 MiB (the interpreter
/// starts at about 12 MiB).
pub const DEFAULT_PYTHON_MEMORY_BYTES: u64 = 256 * MIB;
/// Default for [`Policy::python_stack_bytes`]: 1 MiB, well above what
/// Python's own recursion limit (1,000 frames) needs, so runaway recursion
/// is a RecursionError first.
pub const DEFAULT_PYTHON_STACK_BYTES: u64 = MIB;
/// Default for [`Policy::python_fuel_scale`]: a line of Python costs about as
/// many wasm operators as tens of lines of Rust.
pub const DEFAULT_PYTHON_FUEL_SCALE: u64 = 10;
/// Default for [`Policy::allow_wasi`]: WASI is not offered.
pub const DEFAULT_ALLOW_WASI: bool = false;

/// The name a policy built by [`Policy::default`] carries.
pub const DEFAULT_POLICY_NAME: &str = "default";

/// The shipped policy files, embedded so that a name works without them on
/// disk. `policies/README.md` documents them.
const BUILTIN: &[(&str, &str)] = &[
    ("default", include_str!("../../../policies/default.toml")),
    ("strict", include_str!("../../../policies/strict.toml")),
    ("python", include_str!("../../../policies/python.toml")),
];

/// Limits for one guest, read from a policy file.
///
/// Every field has a default (the `DEFAULT_*` constants), so a file lists only
/// what it changes; unknown keys are rejected. Values are checked by
/// [`Policy::validate`], which every constructor in this module calls.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// The name the policy was loaded as: `default`, `strict` or the file
    /// stem. Not part of the file.
    #[serde(skip)]
    pub name: String,
    /// Most linear memory a guest may have, in bytes; a multiple of
    /// [`WASM_PAGE_BYTES`]. Growing past it is `memory_limit`.
    pub memory_bytes: u64,
    /// Most elements a guest's table may have. Growing past it is
    /// `memory_limit`; declaring more is `invalid_module`.
    pub table_elements: u32,
    /// Fuel for init, for finish and for each bar. Bars are handed over one
    /// timestamp at a time; a timestamp's budget is `fuel_per_event` × its
    /// bars (one per symbol), and init and finish each get `fuel_per_event`
    /// (the finish phase in total, however the guest spends it). Running
    /// out is `fuel_exhausted`.
    pub fuel_per_event: u64,
    /// Total fuel of one run, across all events. Running out is
    /// `fuel_exhausted`.
    pub fuel_per_run: u64,
    /// Wall-clock limit, in milliseconds, for init, for finish and for each
    /// timestamp. Passing it is `deadline`.
    pub deadline_per_event_ms: u64,
    /// Wall-clock limit of one run, in milliseconds. Passing it is `deadline`.
    pub deadline_per_run_ms: u64,
    /// Most wasm stack a guest may use, in bytes. Passing it is
    /// `stack_overflow`.
    pub stack_bytes: u64,
    /// Largest module accepted, in bytes; larger is `invalid_module`.
    pub module_bytes: u64,
    /// Most functions a module may define or import; more is
    /// `invalid_module`.
    pub max_functions: u32,
    /// Most tables a module may declare; more is `invalid_module`.
    pub max_tables: u32,
    /// Total bytes of guest log lines kept per run, each line counting its
    /// message plus 64 bytes; what does not fit is handled by
    /// [`Policy::log_overflow`].
    pub log_bytes: u64,
    /// What happens to a log line past `log_bytes`: `truncate` drops it and
    /// counts it (`usage.logs_dropped`), `fail` stops the run with
    /// `output_limit`.
    pub log_overflow: LogOverflow,
    /// Orders a guest may place while handling one timestamp; exceeding it
    /// stops the run with `output_limit`.
    pub orders_per_event: u32,
    /// Most bytes of result (trades, metrics) one run may produce; more is
    /// `output_limit`.
    pub output_bytes: u64,
    /// Distinct metric names a guest may record in a run; more is
    /// `output_limit`.
    pub metrics_per_run: u32,
    /// Most CPU time, in milliseconds, compiling one module may take (all
    /// the compiler's threads together); more is `invalid_module`
    /// ("compilation exceeded ...").
    pub compile_ms: u64,
    /// Most memory compiling one module may allocate, in bytes, the
    /// compiler process's own (about 80 MiB) included; more is
    /// `invalid_module`.
    pub compile_memory_bytes: u64,
    /// Most variants one optimization study may run.
    pub max_variants: u64,
    /// Python strategies: most linear memory of the Python runtime (the
    /// interpreter, its heap and the strategy's objects, all its memories
    /// together), in bytes; a multiple of [`WASM_PAGE_BYTES`]. It replaces
    /// `memory_bytes` for them. Past it, Python raises MemoryError; if that
    /// escapes the strategy, the run ends as `memory_limit`.
    pub python_memory_bytes: u64,
    /// Python strategies: most wasm stack the Python runtime may use, in
    /// bytes; replaces `stack_bytes` for them. Passing it is
    /// `stack_overflow` (runaway Python recursion is stopped first by
    /// Python's recursion limit, also `stack_overflow`).
    pub python_stack_bytes: u64,
    /// Python strategies: their `fuel_per_event` and `fuel_per_run` are this
    /// many times the policy's (the interpreter spends many wasm operators
    /// per line of Python).
    pub python_fuel_scale: u64,
    /// Reserved: WASI is not offered in this version, so `true` is rejected.
    pub allow_wasi: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            name: DEFAULT_POLICY_NAME.to_owned(),
            memory_bytes: DEFAULT_MEMORY_BYTES,
            table_elements: DEFAULT_TABLE_ELEMENTS,
            fuel_per_event: DEFAULT_FUEL_PER_EVENT,
            fuel_per_run: DEFAULT_FUEL_PER_RUN,
            deadline_per_event_ms: DEFAULT_DEADLINE_PER_EVENT_MS,
            deadline_per_run_ms: DEFAULT_DEADLINE_PER_RUN_MS,
            stack_bytes: DEFAULT_STACK_BYTES,
            module_bytes: DEFAULT_MODULE_BYTES,
            max_functions: DEFAULT_MAX_FUNCTIONS,
            max_tables: DEFAULT_MAX_TABLES,
            log_bytes: DEFAULT_LOG_BYTES,
            orders_per_event: DEFAULT_ORDERS_PER_EVENT,
            output_bytes: DEFAULT_OUTPUT_BYTES,
            metrics_per_run: DEFAULT_METRICS_PER_RUN,
            log_overflow: DEFAULT_LOG_OVERFLOW,
            compile_ms: DEFAULT_COMPILE_MS,
            compile_memory_bytes: DEFAULT_COMPILE_MEMORY_BYTES,
            max_variants: DEFAULT_MAX_VARIANTS,
            python_memory_bytes: DEFAULT_PYTHON_MEMORY_BYTES,
            python_stack_bytes: DEFAULT_PYTHON_STACK_BYTES,
            python_fuel_scale: DEFAULT_PYTHON_FUEL_SCALE,
            allow_wasi: DEFAULT_ALLOW_WASI,
        }
    }
}

/// What happens to a guest's log line past the policy's `log_bytes`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogOverflow {
    /// Drop the line and count it in `usage.logs_dropped`.
    Truncate,
    /// Stop the run with `output_limit`.
    Fail,
}

/// The allowed values of one numeric knob: `range`, and a multiple of
/// `multiple_of`.
#[derive(Debug, Clone)]
struct Bounds {
    range: RangeInclusive<u64>,
    multiple_of: u64,
}

impl Bounds {
    const fn new(min: u64, max: u64) -> Bounds {
        Bounds {
            range: min..=max,
            multiple_of: 1,
        }
    }

    fn allows(&self, value: u64) -> bool {
        self.range.contains(&value) && value.is_multiple_of(self.multiple_of)
    }
}

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy file {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type.
    #[error("{file}:{line}:{column}: {message} (at `{snippet}`)")]
    Parse {
        file: String,
        /// 1-based line of the offending text.
        line: usize,
        /// 1-based column of the offending text.
        column: usize,
        /// What toml reported, e.g. "unknown field `foo`, expected one of ...".
        message: String,
        /// The offending line, trimmed.
        snippet: String,
    },
    /// A value is outside its allowed range.
    #[error(
        "{file}: {key} = {value} is out of range (allowed {min}..={max}{})",
        multiple_of_suffix(*multiple_of)
    )]
    OutOfRange {
        file: String,
        key: &'static str,
        value: u64,
        min: u64,
        max: u64,
        /// 1 when any value in the range is allowed.
        multiple_of: u64,
    },
    /// A per-event limit is larger than the per-run limit it is part of.
    #[error("{file}: {key} = {value} exceeds {limit_key} = {limit_value}")]
    Exceeds {
        file: String,
        key: &'static str,
        value: u64,
        limit_key: &'static str,
        limit_value: u64,
    },
    /// `allow_wasi = true`, which this version does not offer.
    #[error("{file}: allow_wasi = true is not supported: WASI is not offered in this version")]
    WasiNotOffered { file: String },
    /// No policy of that name exists where it was looked for.
    #[error("unknown policy `{name}` in {searched} (available: {})", available.join(", "))]
    UnknownPolicy {
        name: String,
        /// "built-in policies" or the policies directory.
        searched: String,
        available: Vec<String>,
    },
    /// The argument is neither an existing file nor a valid policy name.
    #[error("`{name}` is neither a policy file nor a policy name (names are [a-z0-9_-]+)")]
    InvalidName { name: String },
}

fn multiple_of_suffix(multiple_of: u64) -> String {
    if multiple_of > 1 {
        format!(", a multiple of {multiple_of}")
    } else {
        String::new()
    }
}

impl Policy {
    /// Parses and validates a policy. `origin` names the text in messages
    /// (normally the file name); its stem becomes [`Policy::name`].
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let mut policy: Policy = toml::from_str(text).map_err(|err| parse_error(text, origin, &err))?;
        policy.name = Path::new(origin)
            .file_stem()
            .map_or_else(|| origin.to_owned(), |s| s.to_string_lossy().into_owned());
        policy.validate(origin)?;
        Ok(policy)
    }

    /// Reads, parses and validates a policy file; its stem becomes the name.
    pub fn from_file(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io {
            path: path.to_owned(),
            source,
        })?;
        Policy::from_toml_str(&text, &path.display().to_string())
    }

    /// Loads the policy a user asked for: `name_or_path` is a file if one
    /// exists at that path, otherwise a name (`[a-z0-9_-]+`) looked up as
    /// `<name>.toml` in `policies_dir` when given, or among the built-in
    /// copies of the shipped files when not.
    pub fn load(name_or_path: &str, policies_dir: Option<&Path>) -> Result<Policy, PolicyError> {
        let path = Path::new(name_or_path);
        if path.is_file() {
            return Policy::from_file(path);
        }
        if !is_valid_name(name_or_path) {
            return if name_or_path.contains(['/', '\\', '.']) {
                // Meant as a path: report the file that is not there.
                Policy::from_file(path)
            } else {
                Err(PolicyError::InvalidName {
                    name: name_or_path.to_owned(),
                })
            };
        }
        match policies_dir {
            Some(dir) => {
                let file = dir.join(format!("{name_or_path}.toml"));
                if file.is_file() {
                    Policy::from_file(&file)
                } else {
                    Err(PolicyError::UnknownPolicy {
                        name: name_or_path.to_owned(),
                        searched: dir.display().to_string(),
                        available: names_in_dir(dir)?,
                    })
                }
            }
            None => Policy::builtin(name_or_path).ok_or_else(|| PolicyError::UnknownPolicy {
                name: name_or_path.to_owned(),
                searched: "built-in policies".to_owned(),
                available: Policy::builtin_names().iter().map(|&n| n.to_owned()).collect(),
            }),
        }
    }

    /// The built-in copy of a shipped policy file, if `name` is one.
    pub fn builtin(name: &str) -> Option<Policy> {
        let (_, text) = BUILTIN.iter().find(|(n, _)| *n == name)?;
        let policy = Policy::from_toml_str(text, &format!("{name}.toml"))
            .expect("the shipped policy files are valid (checked by tests)");
        Some(policy)
    }

    /// Names of the built-in policies, in a stable order.
    pub fn builtin_names() -> &'static [&'static str] {
        &["default", "strict", "python"]
    }

    /// Checks every value against its allowed range and the per-event limits
    /// against the per-run ones. `origin` names the file in messages.
    pub fn validate(&self, origin: &str) -> Result<(), PolicyError> {
        let memory = Bounds {
            multiple_of: WASM_PAGE_BYTES,
            ..Bounds::new(64 * KIB, 4 * GIB)
        };
        let checks: [(&'static str, u64, Bounds); 20] = [
            ("compile_ms", self.compile_ms, Bounds::new(10, 600_000)),
            (
                "compile_memory_bytes",
                self.compile_memory_bytes,
                Bounds::new(128 * MIB, 16 * GIB),
            ),
            ("memory_bytes", self.memory_bytes, memory),
            (
                "table_elements",
                self.table_elements.into(),
                Bounds::new(0, 1_000_000),
            ),
            (
                "fuel_per_event",
                self.fuel_per_event,
                Bounds::new(1_000, 1_000_000_000_000),
            ),
            (
                "fuel_per_run",
                self.fuel_per_run,
                Bounds::new(1_000, 1_000_000_000_000_000),
            ),
            (
                "deadline_per_event_ms",
                self.deadline_per_event_ms,
                Bounds::new(1, 3_600_000),
            ),
            (
                "deadline_per_run_ms",
                self.deadline_per_run_ms,
                Bounds::new(1, 86_400_000),
            ),
            ("stack_bytes", self.stack_bytes, Bounds::new(16 * KIB, 8 * MIB)),
            ("module_bytes", self.module_bytes, Bounds::new(KIB, 256 * MIB)),
            (
                "max_functions",
                self.max_functions.into(),
                Bounds::new(1, 1_000_000),
            ),
            ("max_tables", self.max_tables.into(), Bounds::new(0, 16)),
            ("log_bytes", self.log_bytes, Bounds::new(0, 64 * MIB)),
            (
                "orders_per_event",
                self.orders_per_event.into(),
                Bounds::new(1, 100_000),
            ),
            ("output_bytes", self.output_bytes, Bounds::new(KIB, GIB)),
            (
                "metrics_per_run",
                self.metrics_per_run.into(),
                Bounds::new(0, 10_000),
            ),
            ("max_variants", self.max_variants, Bounds::new(1, 10_000_000)),
            (
                "python_memory_bytes",
                self.python_memory_bytes,
                Bounds {
                    multiple_of: WASM_PAGE_BYTES,
                    ..Bounds::new(16 * MIB, 4 * GIB)
                },
            ),
            (
                "python_stack_bytes",
                self.python_stack_bytes,
                Bounds::new(64 * KIB, 8 * MIB),
            ),
            ("python_fuel_scale", self.python_fuel_scale, Bounds::new(1, 1_000)),
        ];
        for (key, value, bounds) in checks {
            if !bounds.allows(value) {
                return Err(PolicyError::OutOfRange {
                    file: origin.to_owned(),
                    key,
                    value,
                    min: *bounds.range.start(),
                    max: *bounds.range.end(),
                    multiple_of: bounds.multiple_of,
                });
            }
        }

        let per_event_within_run = [
            (
                "fuel_per_event",
                self.fuel_per_event,
                "fuel_per_run",
                self.fuel_per_run,
            ),
            (
                "deadline_per_event_ms",
                self.deadline_per_event_ms,
                "deadline_per_run_ms",
                self.deadline_per_run_ms,
            ),
        ];
        for (key, value, limit_key, limit_value) in per_event_within_run {
            if value > limit_value {
                return Err(PolicyError::Exceeds {
                    file: origin.to_owned(),
                    key,
                    value,
                    limit_key,
                    limit_value,
                });
            }
        }

        if self.allow_wasi {
            return Err(PolicyError::WasiNotOffered {
                file: origin.to_owned(),
            });
        }
        Ok(())
    }

    /// The policy as TOML with every key, in a stable order; the same policy
    /// always gives the same text, so callers can hash it. The name is not
    /// included.
    pub fn canonical_toml(&self) -> String {
        toml::to_string(self).expect("a policy of integers and booleans always serializes")
    }

    /// [`Policy::deadline_per_event_ms`] as a duration.
    pub fn deadline_per_event(&self) -> Duration {
        Duration::from_millis(self.deadline_per_event_ms)
    }

    /// [`Policy::deadline_per_run_ms`] as a duration.
    pub fn deadline_per_run(&self) -> Duration {
        Duration::from_millis(self.deadline_per_run_ms)
    }

    /// The limits a Python strategy runs under: `memory_bytes` and
    /// `stack_bytes` are the `python_*` ones, and both fuel budgets are
    /// scaled by `python_fuel_scale` (saturating at their largest allowed
    /// values).
    pub fn for_python(&self) -> Policy {
        Policy {
            memory_bytes: self.python_memory_bytes,
            stack_bytes: self.python_stack_bytes,
            fuel_per_event: self
                .fuel_per_event
                .saturating_mul(self.python_fuel_scale)
                .min(1_000_000_000_000),
            fuel_per_run: self
                .fuel_per_run
                .saturating_mul(self.python_fuel_scale)
                .min(1_000_000_000_000_000),
            ..self.clone()
        }
    }

    /// [`Policy::memory_bytes`] in wasm pages.
    pub fn memory_pages(&self) -> u64 {
        self.memory_bytes / WASM_PAGE_BYTES
    }
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Names of the `*.toml` files in `dir` that are valid policy names, sorted.
fn names_in_dir(dir: &Path) -> Result<Vec<String>, PolicyError> {
    let io_error = |source| PolicyError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error)? {
        let path = entry.map_err(io_error)?.path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                if is_valid_name(stem) {
                    names.push(stem.to_owned());
                }
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Turns toml's error into a one-line message that starts with the file and
/// position and quotes the offending line, which names the key.
fn parse_error(text: &str, origin: &str, err: &toml::de::Error) -> PolicyError {
    let start = err.span().map_or(0, |span| span.start).min(text.len());
    let before = &text[..floor_char_boundary(text, start)];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    PolicyError::Parse {
        file: origin.to_owned(),
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
        message: removed_key_hint(err.message().trim_end().replace('\n', "; ")),
        snippet: text[line_start..line_end].trim().to_owned(),
    }
}

/// A parse message, with what to do when it is about a key earlier versions
/// had.
fn removed_key_hint(message: String) -> String {
    if message.contains("unknown field `bars_per_batch`") {
        format!(
            "{message}; bars_per_batch was removed with ABI v2: bars are handed over one timestamp at a time, so a guest never holds a later bar (delete the key)"
        )
    } else {
        message
    }
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `text` as `origin`; `expected` is `Ok(())` or `Err(fragments)`,
    /// each of which the error message must contain.
    fn check(text: &str, origin: &str, expected: Result<(), &[&str]>) {
        let result = Policy::from_toml_str(text, origin);
        match (result, expected) {
            (Ok(_), Ok(())) => {}
            (Ok(policy), Err(fragments)) => {
                panic!("{origin}: expected an error containing {fragments:?} for\n{text}\ngot {policy:?}")
            }
            (Err(err), Ok(())) => panic!("{origin}: expected success for\n{text}\ngot: {err}"),
            (Err(err), Err(fragments)) => {
                let message = err.to_string();
                for fragment in fragments {
                    assert!(
                        message.contains(fragment),
                        "{origin}: error for\n{text}\nis `{message}`, missing `{fragment}`"
                    );
                }
            }
        }
    }

    fn shipped_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies")
    }

    #[test]
    fn defaults_are_valid() {
        Policy::default().validate("default").unwrap();
        check("", "empty.toml", Ok(()));
        assert_eq!(
            Policy::from_toml_str("", "default.toml").unwrap(),
            Policy::default()
        );
    }

    #[test]
    fn shipped_files_parse_and_validate() {
        for name in Policy::builtin_names() {
            let path = shipped_dir().join(format!("{name}.toml"));
            let from_file = Policy::from_file(&path).unwrap();
            let builtin = Policy::builtin(name).unwrap();
            assert_eq!(from_file, builtin, "{name}");
            assert_eq!(builtin.name, *name);
        }
        // default.toml spells out exactly the defaults.
        assert_eq!(Policy::builtin("default").unwrap(), Policy::default());
        let strict = Policy::builtin("strict").unwrap();
        assert_eq!(strict.log_overflow, LogOverflow::Truncate);
        assert!(strict.memory_bytes < DEFAULT_MEMORY_BYTES);
        assert!(Policy::builtin("lenient").is_none());
    }

    #[test]
    fn shipped_files_list_every_key() {
        let keys: Vec<String> = toml::from_str::<toml::Table>(&Policy::default().canonical_toml())
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys.len(), 22);
        for (name, text) in BUILTIN {
            let table: toml::Table = toml::from_str(text).unwrap();
            for key in &keys {
                assert!(table.contains_key(key), "{name}.toml lacks {key}");
            }
        }
    }

    #[test]
    fn range_boundaries() {
        // (key, min, max, other keys needed so the boundary value is
        // consistent with the rest of the policy).
        let table: &[(&str, i128, i128, &str)] = &[
            ("memory_bytes", 65_536, 4_294_967_296, ""),
            ("table_elements", 0, 1_000_000, ""),
            ("fuel_per_event", 1_000, 1_000_000_000_000, ""),
            (
                "fuel_per_run",
                1_000,
                1_000_000_000_000_000,
                "fuel_per_event = 1000",
            ),
            (
                "deadline_per_event_ms",
                1,
                3_600_000,
                "deadline_per_run_ms = 86400000",
            ),
            ("deadline_per_run_ms", 1, 86_400_000, "deadline_per_event_ms = 1"),
            ("stack_bytes", 16_384, 8_388_608, ""),
            ("module_bytes", 1_024, 268_435_456, ""),
            ("max_functions", 1, 1_000_000, ""),
            ("max_tables", 0, 16, ""),
            ("log_bytes", 0, 67_108_864, ""),
            ("orders_per_event", 1, 100_000, ""),
            ("output_bytes", 1_024, 1_073_741_824, ""),
            ("metrics_per_run", 0, 10_000, ""),
            ("max_variants", 1, 10_000_000, ""),
            ("compile_ms", 10, 600_000, ""),
            ("compile_memory_bytes", 128 * 1_048_576, 16 * 1_073_741_824, ""),
            ("python_stack_bytes", 65_536, 8_388_608, ""),
            ("python_fuel_scale", 1, 1_000, ""),
        ];
        for &(key, min, max, extra) in table {
            let origin = format!("{key}.toml");
            let text = |value: i128| format!("{extra}\n{key} = {value}\n");
            let range = format!("{key} = {{}} is out of range (allowed {min}..={max}");
            check(&text(min), &origin, Ok(()));
            check(&text(max), &origin, Ok(()));
            if min > 0 {
                let below = range.replace("{}", &(min - 1).to_string());
                check(&text(min - 1), &origin, Err(&[&origin, &below]));
            } else {
                // Negative: rejected by the type, at the key's line.
                check(&text(-1), &origin, Err(&[&origin, key]));
            }
            let above = range.replace("{}", &(max + 1).to_string());
            check(&text(max + 1), &origin, Err(&[&origin, &above]));
        }
    }

    #[test]
    fn python_memory_is_bounded_in_whole_pages() {
        // Both bounds are whole pages; one page either side of each is out.
        let key = "python_memory_bytes";
        let range = "(allowed 16777216..=4294967296, a multiple of 65536)";
        for (value, ok) in [
            (16 * MIB, true),
            (16 * MIB - WASM_PAGE_BYTES, false),
            (4 * GIB, true),
            (4 * GIB + WASM_PAGE_BYTES, false),
            (16 * MIB + 1, false),
            (17 * MIB, true),
        ] {
            let text = format!("{key} = {value}");
            let message = format!("p.toml: {key} = {value} is out of range {range}");
            let fragments = [message.as_str()];
            check(&text, "p.toml", if ok { Ok(()) } else { Err(&fragments) });
        }
        // Zero and below are refused too.
        check(
            &format!("{key} = 0"),
            "p.toml",
            Err(&[&format!("{key} = 0 is out of range")]),
        );
        check(&format!("{key} = -1"), "p.toml", Err(&["p.toml", key]));
    }

    #[test]
    fn for_python_swaps_in_the_python_knobs() {
        let p = Policy::builtin("python").unwrap();
        let py = p.for_python();
        assert_eq!(py.memory_bytes, p.python_memory_bytes);
        assert_eq!(py.stack_bytes, p.python_stack_bytes);
        assert_eq!(py.fuel_per_event, p.fuel_per_event * p.python_fuel_scale);
        assert_eq!(py.fuel_per_run, p.fuel_per_run * p.python_fuel_scale);
        // Scaled budgets saturate at the largest values a policy may hold.
        let big = Policy {
            fuel_per_event: 1_000_000_000_000,
            fuel_per_run: 1_000_000_000_000_000,
            python_fuel_scale: 1_000,
            ..Policy::default()
        };
        big.validate("big").unwrap();
        let py = big.for_python();
        assert_eq!(py.fuel_per_event, 1_000_000_000_000);
        assert_eq!(py.fuel_per_run, 1_000_000_000_000_000);
        py.validate("big, for python").unwrap();
    }

    #[test]
    fn memory_must_be_whole_pages() {
        let message = "strict.toml: memory_bytes = 100000 is out of range \
                       (allowed 65536..=4294967296, a multiple of 65536)";
        check("memory_bytes = 100000", "strict.toml", Err(&[message]));
        check("memory_bytes = 131072", "strict.toml", Ok(()));
    }

    #[test]
    fn malformed_files_are_rejected() {
        let cases: &[(&str, &[&str])] = &[
            // Unknown key: named, with its line.
            (
                "memory_bytes = 65536\nmemroy_bytes = 1\n",
                &["bad.toml:2:", "unknown field `memroy_bytes`"],
            ),
            ("name = \"x\"\n", &["bad.toml:1:", "unknown field `name`"]),
            // Wrong type: the quoted line names the key.
            (
                "stack_bytes = \"512KiB\"\n",
                &["bad.toml:1:", "invalid type", "stack_bytes = \"512KiB\""],
            ),
            (
                "allow_wasi = 1\n",
                &["bad.toml:1:", "invalid type", "allow_wasi = 1"],
            ),
            ("fuel_per_run = 1.5\n", &["bad.toml:1:", "fuel_per_run = 1.5"]),
            // u32 field above u32::MAX.
            (
                "\n\nmetrics_per_run = 4294967296\n",
                &["bad.toml:3:", "metrics_per_run = 4294967296"],
            ),
            // A key of ABI v1, with what to do about it.
            (
                "bars_per_batch = 256\n",
                &[
                    "bad.toml:1:",
                    "bars_per_batch was removed with ABI v2",
                    "delete the key",
                ],
            ),
            ("log_overflow = \"ignore\"\n", &["bad.toml:1:", "log_overflow"]),
            // Not TOML at all.
            ("memory_bytes = = 1\n", &["bad.toml:1:"]),
        ];
        for (text, fragments) in cases {
            check(text, "bad.toml", Err(fragments));
        }
    }

    #[test]
    fn per_event_limits_within_per_run() {
        let cases: &[(&str, Result<(), &[&str]>)] = &[
            ("fuel_per_event = 5000\nfuel_per_run = 5000", Ok(())),
            (
                "fuel_per_event = 5001\nfuel_per_run = 5000",
                Err(&["x.toml: fuel_per_event = 5001 exceeds fuel_per_run = 5000"]),
            ),
            ("deadline_per_event_ms = 100\ndeadline_per_run_ms = 100", Ok(())),
            (
                "deadline_per_event_ms = 101\ndeadline_per_run_ms = 100",
                Err(&["x.toml: deadline_per_event_ms = 101 exceeds deadline_per_run_ms = 100"]),
            ),
        ];
        for (text, expected) in cases {
            check(text, "x.toml", *expected);
        }
    }

    #[test]
    fn wasi_is_not_offered() {
        check("allow_wasi = false", "w.toml", Ok(()));
        check(
            "allow_wasi = true",
            "w.toml",
            Err(&["w.toml: allow_wasi = true is not supported", "not offered"]),
        );
    }

    #[test]
    fn load_by_name_and_path() {
        let strict = Policy::load("strict", None).unwrap();
        assert_eq!(strict, Policy::builtin("strict").unwrap());
        assert_eq!(strict.name, "strict");

        let dir = shipped_dir();
        assert_eq!(Policy::load("strict", Some(&dir)).unwrap(), strict);

        let path = dir.join("strict.toml");
        let by_path = Policy::load(path.to_str().unwrap(), None).unwrap();
        assert_eq!(by_path, strict);
        assert_eq!(by_path.name, "strict");
    }

    #[test]
    fn load_errors() {
        let dir = shipped_dir();
        let missing_file = dir.join("nope.toml");
        let missing_file = missing_file.to_str().unwrap();
        let cases: &[(&str, Option<&Path>, &[&str])] = &[
            (
                "lenient",
                None,
                &["unknown policy `lenient` in built-in policies (available: default, strict, python)"],
            ),
            (
                "lenient",
                Some(&dir),
                &["unknown policy `lenient`", "(available: default, python, strict)"],
            ),
            (missing_file, None, &["cannot read policy file", "nope.toml"]),
            ("Strict", None, &["`Strict` is neither", "[a-z0-9_-]+"]),
            ("", None, &["neither"]),
        ];
        for (arg, dir, fragments) in cases {
            let message = Policy::load(arg, *dir).unwrap_err().to_string();
            for fragment in *fragments {
                assert!(
                    message.contains(fragment),
                    "load({arg:?}, {dir:?}): `{message}` lacks `{fragment}`"
                );
            }
        }
    }

    #[test]
    fn canonical_toml_round_trips() {
        for name in Policy::builtin_names() {
            let policy = Policy::builtin(name).unwrap();
            let text = policy.canonical_toml();
            let again = Policy::from_toml_str(&text, &format!("{name}.toml")).unwrap();
            assert_eq!(again, policy);
            assert_eq!(again.canonical_toml(), text);
        }
        assert_ne!(
            Policy::builtin("default").unwrap().canonical_toml(),
            Policy::builtin("strict").unwrap().canonical_toml()
        );
    }

    #[test]
    fn helpers() {
        let policy = Policy::default();
        assert_eq!(policy.memory_pages(), 1024);
        assert_eq!(policy.deadline_per_event(), Duration::from_secs(1));
        assert_eq!(policy.deadline_per_run(), Duration::from_secs(600));
    }
}
