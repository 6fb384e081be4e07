//! Single-backtest benchmarks of issue 2 (figures in `BENCHMARKS.md`).
//!
//! Run: `scripts/build-guests.sh && cargo bench -p palisade-benches --bench backtest`
//! (one group: `cargo bench -p palisade-benches --bench backtest -- sma_cross_1m`).
//!
//! - `sma_cross_1m/{wasm,native}`: sma-cross (fast 10, slow 30, size 1) over
//!   1,000,000 generated bars, in the sandbox (`Sandbox::backtest` of
//!   `guest-examples/out/sma_cross.wasm`) and compiled natively through the
//!   same engine (`native::backtest::<SmaCross>`), in one group so the ratio
//!   comes from one run. Engine time only: the module is compiled before
//!   measuring. Criterion reports bars/s as elements/s.
//! - `instantiate/{instantiate_and_drop,backtest_1_bar}`: a new store and
//!   instance of sma-cross (pooling allocator, `InstancePre`) then teardown;
//!   and a whole backtest of one bar (instantiate, run, report, teardown).
//! - `validate_compile_100k`: `Sandbox::load` (validation plus Cranelift
//!   compilation on the engine's threads) of a generated ~100 KB module;
//!   `validate_load_precompiled_100k`: `Sandbox::check` then
//!   `Sandbox::load_precompiled` of the same module (validation plus loading
//!   its serialized compiled code).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use palisade_backtest::Dataset;
use palisade_run::native;
use palisade_run::Policy;
use palisade_run::{params, RunConfig, RunOutput};
use palisade_sandbox::{CompiledModule, EngineSettings, Sandbox};
use palisade_testkit::bars::{minute_dataset as random_walk, DEFAULT_SEED};
use palisade_testkit::guests::bytes as guest_module;

/// Bars of the throughput benchmark.
const BARS: usize = 1_000_000;

/// Functions in the generated module of `validate_compile_100k`, chosen so
/// that its binary is about 100 KB (checked when the bench starts).
const BIG_MODULE_FUNCTIONS: usize = 390;

/// Accepted binary size of the generated module, in bytes.
const BIG_MODULE_SIZE: std::ops::RangeInclusive<usize> = 95_000..=110_000;

/// A sandbox for the default policy with a few pool slots.
fn sandbox(policy: &Policy) -> Sandbox {
    let settings = EngineSettings {
        max_instances: 4,
        ..EngineSettings::for_policy(policy)
    };
    Sandbox::new(settings).unwrap_or_else(|f| panic!("cannot start the sandbox: {f}"))
}

/// sma-cross compiled from `guest-examples/out/sma_cross.wasm`, and its run
/// configuration with parameters fast 10, slow 30, size 1.
fn sma_cross(sandbox: &Sandbox, policy: &Policy) -> (CompiledModule, RunConfig) {
    let bytes = guest_module("sma_cross");
    let strategy = sandbox
        .load(&bytes, policy)
        .unwrap_or_else(|f| panic!("sma_cross.wasm was refused: {f}"));
    let overrides =
        [("fast", "10"), ("slow", "30"), ("size", "1")].map(|(k, v)| (k.to_owned(), v.to_owned()));
    let values = params::resolve(&strategy.info.manifest, &overrides)
        .unwrap_or_else(|e| panic!("sma-cross parameters: {e}"));
    let run = RunConfig {
        params: values,
        ..RunConfig::default()
    };
    (strategy, run)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime")
}

fn check_ok(what: &str, out: &RunOutput) {
    if let Err(f) = &out.outcome {
        panic!("{what}: the backtest failed: {f}");
    }
}

fn sma_cross_1m(c: &mut Criterion) {
    let policy = Policy::default();
    let sandbox = sandbox(&policy);
    let (strategy, run) = sma_cross(&sandbox, &policy);
    let data: Arc<Dataset> = random_walk(BARS, DEFAULT_SEED);
    let rt = runtime();

    // The two builds must do the same work: same trades, same equity.
    let wasm = rt.block_on(sandbox.backtest(&strategy, data.clone(), &policy, &run));
    let native = native::backtest::<sma_cross::SmaCross>(data.clone(), &policy, &run);
    check_ok("wasm", &wasm);
    check_ok("native", &native);
    assert_eq!(wasm.report.bars, BARS);
    assert_eq!(
        wasm.report.trades, native.report.trades,
        "wasm and native trades differ"
    );
    assert_eq!(wasm.report.final_equity, native.report.final_equity);
    eprintln!(
        "sma_cross_1m: {} bars, {} closed trades, {} orders, final equity {:.4}; \
         single runs: wasm {:.1} ms, native {:.1} ms",
        wasm.report.bars,
        wasm.report.trades.len(),
        wasm.usage.orders,
        wasm.report.final_equity,
        wasm.run_seconds * 1e3,
        native.run_seconds * 1e3,
    );

    let mut group = c.benchmark_group("sma_cross_1m");
    group
        .throughput(Throughput::Elements(BARS as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));
    group.bench_function("wasm", |b| {
        b.iter(|| rt.block_on(sandbox.backtest(&strategy, data.clone(), &policy, &run)))
    });
    group.bench_function("native", |b| {
        b.iter(|| native::backtest::<sma_cross::SmaCross>(data.clone(), &policy, &run))
    });
    group.finish();
}

fn instantiate(c: &mut Criterion) {
    let policy = Policy::default();
    let sandbox = sandbox(&policy);
    let (strategy, run) = sma_cross(&sandbox, &policy);
    let one_bar = random_walk(1, DEFAULT_SEED);
    let rt = runtime();
    rt.block_on(sandbox.instantiate_and_drop(&strategy, &policy))
        .unwrap_or_else(|f| panic!("instantiate_and_drop: {f}"));
    check_ok(
        "1 bar",
        &rt.block_on(sandbox.backtest(&strategy, one_bar.clone(), &policy, &run)),
    );

    let mut group = c.benchmark_group("instantiate");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("instantiate_and_drop", |b| {
        b.iter(|| rt.block_on(sandbox.instantiate_and_drop(&strategy, &policy)))
    });
    group.bench_function("backtest_1_bar", |b| {
        b.iter(|| rt.block_on(sandbox.backtest(&strategy, one_bar.clone(), &policy, &run)))
    });
    group.finish();
}

/// A valid ABI v1 strategy module of `functions` non-trivial functions
/// (loops of f64 and i64 arithmetic, memory traffic, branches and calls to
/// earlier functions), as WAT. `palisade_run` pulls every batch and feeds
/// each batch's first close through the last function.
fn big_module_wat(functions: usize) -> String {
    let mut w = String::new();
    w.push_str(
        "(module\n\
         (import \"palisade\" \"next_bars\" (func $next_bars (param i32 i32) (result i32)))\n\
         (import \"palisade\" \"log\" (func $log (param i32 i32 i32)))\n\
         (memory (export \"memory\") 2)\n\
         (@custom \"palisade.manifest\" \"{\\\"abi\\\":2,\\\"name\\\":\\\"big\\\",\\\"version\\\":\\\"1\\\",\\\"params\\\":[]}\")\n",
    );
    for i in 0..functions {
        let c1 = 0.5 + (i % 97) as f64 / 100.0;
        let c2 = 3.0 + (i % 31) as f64;
        let k = 0x9E37_79B9_i64 + 2 * i as i64 + 1;
        let rot = 1 + i % 61;
        let _ = write!(
            w,
            "(func $f{i} (param $x f64) (param $n i32) (result f64)
  (local $acc f64) (local $i i32) (local $t i64) (local $p i32)
  (local.set $acc (local.get $x))
  (local.set $t (i64.trunc_sat_f64_s (local.get $x)))
  (block $done
    (loop $top
      (br_if $done (i32.ge_s (local.get $i) (local.get $n)))
      (local.set $acc
        (f64.sub
          (f64.add (f64.mul (local.get $acc) (f64.const {c1:.2}))
                   (f64.sqrt (f64.abs (local.get $acc))))
          (f64.floor (f64.div (local.get $acc) (f64.const {c2:.1})))))
      (local.set $t
        (i64.rotl
          (i64.xor (i64.mul (local.get $t) (i64.const {k}))
                   (i64.extend_i32_s (local.get $i)))
          (i64.const {rot})))
      (local.set $p (i32.shl (i32.and (i32.add (local.get $i) (i32.const {i})) (i32.const 1023)) (i32.const 3)))
      (f64.store (local.get $p)
        (f64.add (f64.load (local.get $p)) (f64.convert_i64_s (local.get $t))))
      (if (f64.gt (local.get $acc) (f64.const 1e6))
        (then (local.set $acc (f64.mul (local.get $acc) (f64.const 0.5))))
        (else (local.set $acc (f64.add (local.get $acc) (f64.min (local.get $x) (f64.const 1.0))))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $top)))
  (local.set $acc (f64.add (local.get $acc) (f64.convert_i64_s (i64.and (local.get $t) (i64.const 65535)))))\n"
        );
        if i > 0 {
            let a = (i * 7 + 3) % i;
            let _ = writeln!(
                w,
                "  (local.set $acc (f64.add (local.get $acc) (call $f{a} (f64.neg (local.get $acc)) (i32.shr_u (local.get $n) (i32.const 1)))))"
            );
        }
        if i > 1 {
            let b = (i * 13 + 5) % i;
            let _ = writeln!(
                w,
                "  (local.set $acc (f64.max (local.get $acc) (call $f{b} (f64.nearest (local.get $acc)) (i32.const 2))))"
            );
        }
        w.push_str("  (local.get $acc))\n");
    }
    let last = functions - 1;
    let _ = write!(
        w,
        "(func (export \"palisade_run\") (result i32)
  (local $n i32) (local $acc f64)
  (block $end
    (loop $next
      (local.set $n (call $next_bars (i32.const 65536) (i32.const 256)))
      (br_if $end (i32.eqz (local.get $n)))
      (local.set $acc (f64.add (local.get $acc) (call $f{last} (f64.load offset=40 (i32.const 65536)) (i32.const 4))))
      (br $next)))
  (if (f64.ne (local.get $acc) (local.get $acc))
    (then (call $log (i32.const 2) (i32.const 8192) (i32.const 0))))
  (i32.const 0))
)\n"
    );
    w
}

fn validate_compile_100k(c: &mut Criterion) {
    let policy = Policy::default();
    let sandbox = sandbox(&policy);
    let bytes = wat::parse_str(big_module_wat(BIG_MODULE_FUNCTIONS)).expect("the generated WAT parses");
    assert!(
        BIG_MODULE_SIZE.contains(&bytes.len()),
        "the generated module is {} bytes, outside {BIG_MODULE_SIZE:?}: adjust BIG_MODULE_FUNCTIONS",
        bytes.len()
    );
    let strategy = sandbox
        .load(&bytes, &policy)
        .unwrap_or_else(|f| panic!("the generated module was refused: {f}"));
    eprintln!(
        "validate_compile_100k: {} bytes, {} functions",
        bytes.len(),
        strategy.info.functions
    );

    let mut group = c.benchmark_group("validate_compile_100k");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.bench_with_input(BenchmarkId::from_parameter(bytes.len()), &bytes, |b, bytes| {
        b.iter(|| sandbox.load(bytes, &policy).map(|s| s.info.size_bytes))
    });
    group.finish();

    // The same module from its precompiled artifact, as the service loads
    // every module after its first compilation: validation, then the
    // artifact mapped and linked.
    let artifact = sandbox
        .serialize(&strategy)
        .unwrap_or_else(|f| panic!("cannot serialize: {f}"));
    eprintln!(
        "validate_load_precompiled_100k: artifact of {} bytes",
        artifact.len()
    );
    let mut group = c.benchmark_group("validate_load_precompiled_100k");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_with_input(BenchmarkId::from_parameter(bytes.len()), &bytes, |b, bytes| {
        // SAFETY: the artifact was serialized above by this sandbox.
        b.iter(|| {
            let info = sandbox.check(bytes, &policy)?;
            unsafe { sandbox.load_precompiled(info, &artifact) }.map(|s| s.info.size_bytes)
        })
    });
    group.finish();
}

criterion_group!(benches, sma_cross_1m, instantiate, validate_compile_100k);
criterion_main!(benches);
