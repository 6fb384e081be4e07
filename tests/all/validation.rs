//! Validation: every module is checked before it runs, and each rejection
//! names its reason.

use palisade_run::Cause;

use crate::support::{guests, policy, sandbox, wat_guest, DRAIN};

const MANIFEST: &str =
    r#"(@custom "palisade.manifest" "{\"abi\":2,\"name\":\"m\",\"version\":\"1\",\"params\":[]}")"#;
const RUN: &str = r#"(func (export "palisade_run") (result i32) (i32.const 0))"#;
const MEMORY: &str = r#"(memory (export "memory") 1)"#;

fn module(fields: &str) -> Vec<u8> {
    wat::parse_str(format!("(module {fields})")).expect("test WAT parses")
}

/// Loads `bytes` under the default policy (edited) and checks the verdict:
/// `Ok(())`, or the cause and a fragment of the message.
fn check(
    what: &str,
    bytes: &[u8],
    edit: impl FnOnce(&mut palisade_run::Policy),
    want: Result<(), (Cause, &str)>,
) {
    let p = policy(edit);
    let got = sandbox(&p).load(bytes, &p).map(|_| ());
    match (&got, &want) {
        (Ok(()), Ok(())) => {}
        (Err(f), Err((cause, fragment))) => {
            assert_eq!(f.cause, *cause, "{what}: {f}");
            assert!(
                f.message.contains(fragment),
                "{what}: message {:?} lacks {fragment:?}",
                f.message
            );
        }
        _ => panic!("{what}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn the_examples_are_valid() {
    for (name, path) in guests::ALL {
        let bytes = std::fs::read(path).unwrap();
        check(name, &bytes, |_| {}, Ok(()));
    }
}

#[test]
fn rejections_name_their_reason() {
    let none = |_: &mut _| {};
    check(
        "text",
        b"hello, world",
        none,
        Err((Cause::InvalidModule, "not a WebAssembly module")),
    );
    check(
        "empty",
        b"",
        none,
        Err((Cause::InvalidModule, "not a WebAssembly module")),
    );
    check(
        "component",
        b"\0asm\x0d\0\x01\0",
        none,
        Err((Cause::InvalidModule, "not a core WebAssembly module")),
    );
    check(
        "truncated",
        b"\0asm\x01\0\0\0\x01",
        none,
        Err((Cause::InvalidModule, "invalid WebAssembly")),
    );
    check(
        "forbidden import",
        &module(&format!(
            r#"(import "env" "system" (func (param i32) (result i32))) {MEMORY} {RUN} {MANIFEST}"#
        )),
        none,
        Err((Cause::ForbiddenImport, "forbidden import env.system")),
    );
    check(
        "wasi import",
        &module(&format!(
            r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32))) {MEMORY} {RUN} {MANIFEST}"#
        )),
        none,
        Err((
            Cause::ForbiddenImport,
            "forbidden import wasi_snapshot_preview1.fd_write (WASI is not granted",
        )),
    );
    check(
        "unknown palisade import",
        &module(&format!(
            r#"(import "palisade" "open_file" (func)) {MEMORY} {RUN} {MANIFEST}"#
        )),
        none,
        Err((Cause::ForbiddenImport, "forbidden import palisade.open_file")),
    );
    check(
        "imported memory",
        &module(&format!(
            r#"(import "palisade" "memory" (memory 1)) {RUN} {MANIFEST}"#
        )),
        none,
        Err((Cause::ForbiddenImport, "forbidden import palisade.memory")),
    );
    check(
        "wrong import signature",
        &module(&format!(r#"(import "palisade" "order" (func (param i32) (result i64))) {MEMORY} {RUN} {MANIFEST}"#)),
        none,
        Err((
            Cause::InvalidModule,
            "import palisade.order has signature (i32) -> (i64), ABI v2 defines (i32, f64, i32, f64) -> (i64)",
        )),
    );
    check(
        "missing entry point",
        &module(&format!("{MEMORY} {MANIFEST}")),
        none,
        Err((Cause::InvalidModule, "missing export palisade_run")),
    );
    check(
        "wrong entry signature",
        &module(&format!(
            r#"{MEMORY} (func (export "palisade_run") (param i32)) {MANIFEST}"#
        )),
        none,
        Err((
            Cause::InvalidModule,
            "export palisade_run has signature (i32) -> ()",
        )),
    );
    check(
        "no memory",
        &module(&format!("{RUN} {MANIFEST}")),
        none,
        Err((Cause::InvalidModule, "must define one memory and export it")),
    );
    check(
        "missing manifest",
        &module(&format!("{MEMORY} {RUN}")),
        none,
        Err((Cause::InvalidModule, "missing custom section palisade.manifest")),
    );
    check(
        "manifest not json",
        &module(&format!(
            r#"{MEMORY} {RUN} (@custom "palisade.manifest" "{{abi")"#
        )),
        none,
        Err((Cause::InvalidModule, "manifest is not valid JSON")),
    );
    check(
        "a later abi version",
        &module(&format!(
            r#"{MEMORY} {RUN} (@custom "palisade.manifest" "{{\"abi\":3,\"name\":\"m\",\"version\":\"1\"}}")"#
        )),
        none,
        Err((
            Cause::InvalidModule,
            "manifest declares ABI version 3; this runtime runs ABI v2 (palisade-sdk 0.2)",
        )),
    );
    // A module built with palisade-sdk 0.1 (ABI v1: batches of bars and a bar
    // index on every call) is told what to rebuild with, not which of its
    // imports are unknown.
    check(
        "an abi v1 module",
        &module(&format!(
            r#"(import "palisade" "next_batch" (func (param i32 i32) (result i32)))
               (import "palisade" "order" (func (param i32 i32 f64 i32 f64) (result i64)))
               {MEMORY} {RUN} (@custom "palisade.manifest" "{{\"abi\":1,\"name\":\"m\",\"version\":\"1\",\"params\":[]}}")"#
        )),
        none,
        Err((
            Cause::InvalidModule,
            "the module was built for ABI v1 (palisade-sdk 0.1), which this runtime no longer runs: ABI v1 handed a strategy bars ahead of the one it decided on; rebuild it with palisade-sdk 0.2 (ABI v2)",
        )),
    );
    check(
        "default out of range",
        &module(&format!(
            r#"{MEMORY} {RUN} (@custom "palisade.manifest" "{{\"abi\":2,\"name\":\"m\",\"version\":\"1\",\"params\":[{{\"name\":\"n\",\"type\":\"int\",\"default\":50,\"min\":1,\"max\":10}}]}}")"#
        )),
        none,
        Err((
            Cause::InvalidModule,
            "parameter n: default 50 is outside [min, max]",
        )),
    );
    check(
        "bad strategy name",
        &module(&format!(
            r#"{MEMORY} {RUN} (@custom "palisade.manifest" "{{\"abi\":2,\"name\":\"Bad Name\",\"version\":\"1\"}}")"#
        )),
        none,
        Err((Cause::InvalidModule, "strategy name \"Bad Name\"")),
    );
    check(
        "start function",
        &module(&format!(r#"{MEMORY} {RUN} (func $s) (start $s) {MANIFEST}"#)),
        none,
        Err((Cause::InvalidModule, "start function not allowed")),
    );
    check(
        "shared memory (threads)",
        &module(&format!(
            r#"(memory (export "memory") 1 1 shared) {RUN} {MANIFEST}"#
        )),
        none,
        Err((Cause::InvalidModule, "invalid WebAssembly")),
    );
    check(
        "too big for the policy",
        &wat_guest(1, DRAIN, ""),
        |p| p.module_bytes = 1024,
        Ok(()),
    );
    let big = wat_guest(
        1,
        DRAIN,
        &format!(r#"(data (i32.const 0) "{}")"#, "x".repeat(2000)),
    );
    check(
        "over module_bytes",
        &big,
        |p| p.module_bytes = 1024,
        Err((
            Cause::InvalidModule,
            "the policy allows at most 1024 (module_bytes)",
        )),
    );
    check(
        "too many functions",
        &wat_guest(1, DRAIN, "(func) (func) (func)"),
        |p| p.max_functions = 5,
        Err((
            Cause::InvalidModule,
            "module has 9 functions, the policy allows 5 (max_functions)",
        )),
    );
    check(
        "table over the policy",
        &wat_guest(1, DRAIN, "(table 2000 funcref)"),
        |p| p.table_elements = 1000,
        Err((
            Cause::InvalidModule,
            "declares 2000 elements, the policy allows 1000 (table_elements)",
        )),
    );
}

#[test]
fn declared_memory_is_checked_on_both_sides_of_the_limit() {
    let bytes = wat_guest(16, DRAIN, "");
    check(
        "16 pages under a 16-page limit",
        &bytes,
        |p| p.memory_bytes = 16 * 65536,
        Ok(()),
    );
    check(
        "16 pages under a 15-page limit",
        &bytes,
        |p| p.memory_bytes = 15 * 65536,
        Err((
            Cause::MemoryLimit,
            "memory declares 16 pages (1048576 bytes) at start, the policy allows 15 pages",
        )),
    );
}

/// Corrupted modules (seeded byte mutations of a real one) are refused or
/// run; they never panic the host.
#[test]
fn mutated_modules_never_panic_the_host() {
    let original = std::fs::read(guests::SMA_CROSS).unwrap();
    let p = policy(|_| {});
    let sb = sandbox(&p);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut refused = 0;
    for _ in 0..300 {
        let mut bytes = original.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() as usize) % bytes.len();
            bytes[at] = next() as u8;
        }
        if next() % 8 == 0 {
            let cut = (next() as usize) % bytes.len();
            bytes.truncate(cut);
        }
        match sb.load(&bytes, &p) {
            Err(_) => refused += 1,
            Ok(strategy) => {
                let run = palisade_run::RunConfig {
                    params: palisade_run::params::resolve(&strategy.info.manifest, &[]).unwrap_or_default(),
                    ..Default::default()
                };
                let _ = crate::support::block_on(sb.backtest(
                    &strategy,
                    crate::support::data(50, 1, 2),
                    &p,
                    &run,
                ));
            }
        }
    }
    assert!(refused > 0, "some mutations must be refused");
}
