//! Compilation under a budget: Cranelift runs in a child process whose CPU
//! time and memory the parent bounds, so a module built to make compilation
//! explode (tens of seconds, gigabytes) is stopped and refused as
//! `invalid_module` instead of holding a core or the host's memory.
//!
//! The parent ([`compile_bounded`]) starts `compiler __compile <settings>`
//! (the `palisade` binary, which calls [`child_main`]) with the module on its
//! stdin, caps its data segment (`RLIMIT_DATA`) and its CPU time
//! (`RLIMIT_CPU`, as a backstop), watches its CPU time every few
//! milliseconds and kills it past the budget. The child compiles with an
//! engine of the same settings and writes the compiled code to its stdout;
//! the parent loads it as precompiled code (it is its own build's output).
//!
//! What it does not do: run anything the module contains, or trust what the
//! child writes beyond loading it as compiled code of the module it
//! validated itself.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use palisade_run::{Cause, Failure, Policy};

use crate::wasm_engine::{EngineSettings, WasmEngine};

/// The argument that makes the `palisade` binary a compiler child.
pub const CHILD_ARG: &str = "__compile";

/// The bounds of one compilation, from the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompileLimits {
    /// CPU time of the compiler, all its threads together.
    pub cpu_ms: u64,
    /// Memory the compiler may allocate (its data segment).
    pub memory_bytes: u64,
}

impl CompileLimits {
    pub fn from_policy(p: &Policy) -> CompileLimits {
        CompileLimits {
            cpu_ms: p.compile_ms,
            memory_bytes: p.compile_memory_bytes,
        }
    }
}

/// Why a bounded compilation did not give compiled code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompileError {
    /// The module's fault: it does not compile, or not within its budget
    /// (`invalid_module`).
    #[error("{0}")]
    Module(Failure),
    /// The host's: the compiler could not be started or gave unusable
    /// output (not the module's fault; try again or tell the operator).
    #[error("the compiler failed: {0}")]
    Host(String),
}

impl From<Failure> for CompileError {
    fn from(f: Failure) -> Self {
        CompileError::Module(f)
    }
}

/// The executable to start compiler children from: this process's own
/// (`/proc/self/exe`, which stays this build even when the file on disk is
/// replaced), or `None` where it cannot be found.
pub fn this_executable() -> Option<std::path::PathBuf> {
    let proc = std::path::PathBuf::from("/proc/self/exe");
    if proc.exists() {
        return Some(proc);
    }
    std::env::current_exe().ok()
}

/// How often the parent looks at the child's CPU time.
const POLL: Duration = Duration::from_millis(2);

fn invalid(message: String) -> Failure {
    Failure::new(Cause::InvalidModule, message)
}

/// CPU time (user + system) of process `pid` so far, from `/proc`.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_micros(ticks * 1_000_000 / hz))
}

/// Compiles `bytes` in a child process started from `compiler`, for an
/// engine of `settings`, within `limits`; returns the compiled code (what
/// `Sandbox::serialize` would give). A compilation past its CPU time or its
/// memory is `invalid_module`, "compilation exceeded ...".
pub fn compile_bounded(
    compiler: &Path,
    settings: &EngineSettings,
    bytes: &[u8],
    limits: CompileLimits,
) -> Result<Vec<u8>, CompileError> {
    let mut cmd = Command::new(compiler);
    cmd.arg(CHILD_ARG)
        .args(settings_args(settings))
        // One compiler thread: its CPU time is the wall time it holds a
        // core for, and its memory does not grow with the machine's cores.
        .env("RAYON_NUM_THREADS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let cpu_seconds = limits.cpu_ms.div_ceil(1000) + 1;
    let memory = limits.memory_bytes;
    // SAFETY: between fork and exec the closure only calls setrlimit, which
    // is async-signal-safe, and allocates nothing.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            // Never above the limits this process already has (lowering a
            // hard limit is always allowed, raising it is not).
            let set = |resource, value: u64| {
                let mut now = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::getrlimit(resource, &mut now) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let mut value = value as libc::rlim_t;
                if now.rlim_max != libc::RLIM_INFINITY && value > now.rlim_max {
                    value = now.rlim_max;
                }
                let limit = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                if libc::setrlimit(resource, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            };
            set(libc::RLIMIT_CPU, cpu_seconds)?;
            set(libc::RLIMIT_DATA, memory)?;
            // A compile bomb's death must not write a core file.
            set(libc::RLIMIT_CORE, 0)?;
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| CompileError::Host(format!("cannot start {}: {e}", compiler.display())))?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let module = bytes.to_vec();
    let writer = std::thread::spawn(move || {
        // A child that dies early closes the pipe: its exit says why.
        let _ = stdin.write_all(&module);
    });
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let errors = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stderr.read_to_string(&mut out);
        out
    });
    let budget = Duration::from_millis(limits.cpu_ms);
    let started = Instant::now();
    // Which bound stopped the child, if one did.
    let mut stopped: Option<String> = None;
    let status = loop {
        let waited = child.try_wait();
        let used = cpu_time(child.id()).unwrap_or_default();
        let verdict = match waited {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if used > budget => Some(format!(
                "compilation exceeded its {} ms of CPU time (compile_ms; stopped at {} ms)",
                limits.cpu_ms,
                used.as_millis()
            )),
            // A compiler that waits instead of working: ten times the budget
            // in wall time.
            Ok(None) if started.elapsed() > budget * 10 => Some(format!(
                "compilation took more than {} ms of wall time (10 x compile_ms) for {} ms of CPU time",
                (budget * 10).as_millis(),
                used.as_millis()
            )),
            Ok(None) => None,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(CompileError::Host(format!("waiting for the compiler: {e}")));
            }
        };
        if let Some(why) = verdict {
            stopped = Some(why);
            let _ = child.kill();
            break child
                .wait()
                .map_err(|e| CompileError::Host(format!("waiting for the compiler: {e}")));
        }
        std::thread::sleep(POLL);
    };
    let _ = writer.join();
    let artifact = reader.join().unwrap_or_default();
    let errors = errors.join().unwrap_or_default();
    let status = status?;
    if let Some(why) = stopped {
        return Err(invalid(why).into());
    }
    if status.success() {
        return Ok(artifact);
    }
    use std::os::unix::process::ExitStatusExt;
    let signal = status.signal();
    if errors.contains("memory allocation") || errors.contains("out of memory") {
        return Err(invalid(format!(
            "compilation exceeded its {} bytes of memory (compile_memory_bytes)",
            limits.memory_bytes
        ))
        .into());
    }
    if signal == Some(libc::SIGXCPU) {
        return Err(invalid(format!(
            "compilation exceeded its {} ms of CPU time (compile_ms)",
            limits.cpu_ms
        ))
        .into());
    }
    if let Some(signal) = signal {
        return Err(CompileError::Host(format!(
            "the compiler was killed by signal {signal}"
        )));
    }
    match errors.strip_prefix(COMPILE_ERROR) {
        // The module does not compile: its fault.
        Some(detail) => Err(invalid(format!("compilation failed: {}", detail.trim())).into()),
        None => Err(CompileError::Host(
            errors.lines().last().unwrap_or("no message").to_owned(),
        )),
    }
}

/// The child's engine settings: the parent's, but with one pool slot (the
/// pool's reservations count against the child's memory limit, and the
/// number of slots does not change the compiled code).
fn settings_args(s: &EngineSettings) -> [String; 5] {
    [
        s.stack_bytes.to_string(),
        s.max_memory_bytes.to_string(),
        s.max_table_elements.to_string(),
        s.max_tables.to_string(),
        1.to_string(),
    ]
}

/// What the child's stderr starts with when the module itself does not
/// compile (anything else is the host's problem).
const COMPILE_ERROR: &str = "module does not compile: ";

/// The child's side: `args` are what follows [`CHILD_ARG`]; reads the module
/// from stdin, compiles it for an engine of those settings, writes the
/// compiled code to stdout. Exit code 0, or 1 with the error on stderr.
pub fn child_main(args: &[String]) -> ExitCode {
    match child(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(1)
        }
    }
}

fn child(args: &[String]) -> Result<(), String> {
    let n = |i: usize| -> Result<u64, String> {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("{CHILD_ARG}: expected 5 numbers, got {args:?}"))
    };
    let settings = EngineSettings {
        stack_bytes: n(0)? as usize,
        max_memory_bytes: n(1)?,
        max_table_elements: n(2)? as u32,
        max_tables: n(3)? as u32,
        max_instances: n(4)? as u32,
        ..EngineSettings::default()
    };
    let mut module = Vec::new();
    std::io::stdin()
        .read_to_end(&mut module)
        .map_err(|e| format!("reading the module: {e}"))?;
    let engine = WasmEngine::new(settings).map_err(|e| format!("cannot start the engine: {e:#}"))?;
    let artifact = engine
        .engine()
        .precompile_module(&module)
        .map_err(|e| format!("{COMPILE_ERROR}{e:#}"))?;
    let mut out = std::io::stdout().lock();
    out.write_all(&artifact)
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing the compiled code: {e}"))
}
