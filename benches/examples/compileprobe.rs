//! TEMPORARY experiment (not to be committed): compile time of the ~100 KB module under engine configs.
use std::fmt::Write as _;
use std::time::Instant;
use wasmtime::*;

include!("/tmp/bigwat.rs");

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let has = |s: &str| args.iter().any(|a| a == s);
    let bytes = match std::env::var("WASM") {
        Ok(p) => std::fs::read(p).unwrap(),
        Err(_) => wat::parse_str(big_module_wat(390)).unwrap(),
    };
    if has("dump") {
        std::fs::write("/tmp/big.wasm", &bytes).unwrap();
    }
    let mut config = Config::new();
    config
        .cranelift_opt_level(if has("none") {
            OptLevel::None
        } else {
            OptLevel::Speed
        })
        .consume_fuel(has("fuel"))
        .epoch_interruption(has("epoch"))
        .cranelift_nan_canonicalization(has("nan"))
        .relaxed_simd_deterministic(true)
        .parallel_compilation(!has("serial"));
    if has("pool") {
        let mut p = PoolingAllocationConfig::new();
        p.total_memories(4)
            .total_tables(4)
            .total_stacks(4)
            .total_core_instances(4)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            .max_memory_size(64 << 20);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    }
    if std::env::args().any(|a| a == "fastalloc") {
        config.cranelift_regalloc_algorithm(RegallocAlgorithm::SinglePass);
    }
    let engine = Engine::new(&config)?;
    let mut best = f64::MAX;
    let mut best_v = f64::MAX;
    for _ in 0..7 {
        let t = Instant::now();
        let _ = palisade_runtime::sandbox::validate::validate(
            &bytes,
            &palisade_runtime::policy::Policy::default(),
        );
        best_v = best_v.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let m = Module::new(&engine, &bytes)?;
        best = best.min(t.elapsed().as_secs_f64());
        drop(m);
    }
    println!(
        "{:?}: {} bytes, validate {:.2} ms, Module::new best {:.1} ms",
        &args[1..],
        bytes.len(),
        best_v * 1e3,
        best * 1e3
    );
    Ok(())
}
