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
) -> Result<Vec<u8>, Failure> {
    let mut cmd = Command::new(compiler);
    cmd.arg(CHILD_ARG)
        .args(settings_args(settings))
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
            let set = |resource, value: u64| {
                let limit = libc::rlimit {
                    rlim_cur: value as libc::rlim_t,
                    rlim_max: value as libc::rlim_t,
                };
                if libc::setrlimit(resource, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            };
            set(libc::RLIMIT_CPU, cpu_seconds)?;
            set(libc::RLIMIT_DATA, memory)?;
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| invalid(format!("cannot start the compiler {}: {e}", compiler.display())))?;
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
    let mut over: Option<Duration> = None;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| invalid(format!("the compiler: {e}")))?
        {
            break status;
        }
        let used = cpu_time(child.id()).unwrap_or_default();
        // CPU time is the budget; wall time is bounded too, at ten times it,
        // for a compiler that waits instead of working.
        if used > budget || started.elapsed() > budget * 10 {
            over = Some(used);
            let _ = child.kill();
            break child.wait().map_err(|e| invalid(format!("the compiler: {e}")))?;
        }
        std::thread::sleep(POLL);
    };
    let _ = writer.join();
    let artifact = reader.join().unwrap_or_default();
    let errors = errors.join().unwrap_or_default();
    if let Some(used) = over {
        return Err(invalid(format!(
            "compilation exceeded its {} ms of CPU time (compile_ms; stopped at {} ms)",
            limits.cpu_ms,
            used.as_millis()
        )));
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
        )));
    }
    if signal == Some(libc::SIGXCPU) || signal == Some(libc::SIGKILL) {
        return Err(invalid(format!(
            "compilation exceeded its {} ms of CPU time (compile_ms)",
            limits.cpu_ms
        )));
    }
    let detail = errors.lines().last().unwrap_or("no message").to_owned();
    Err(invalid(format!("compilation failed: {detail}")))
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
    };
    let mut module = Vec::new();
    std::io::stdin()
        .read_to_end(&mut module)
        .map_err(|e| format!("reading the module: {e}"))?;
    let engine = WasmEngine::new(settings).map_err(|e| format!("cannot start the engine: {e:#}"))?;
    let artifact = engine
        .engine()
        .precompile_module(&module)
        .map_err(|e| format!("{e:#}"))?;
    std::io::stdout()
        .write_all(&artifact)
        .map_err(|e| format!("writing the compiled code: {e}"))
}
