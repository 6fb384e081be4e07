//! TEMPORARY experiment (not to be committed): guest cost of sma_cross.wasm per bar under engine configs.
use palisade_benches::{guest_module, random_walk_bars, DEFAULT_SEED};
use palisade_sdk::Bar;
use std::time::Instant;
use wasmtime::*;

struct St {
    bars: Vec<Bar>,
    pos: usize,
    position: f64,
    next_id: i64,
    mem: Option<Memory>,
    batch_start: usize,
    batch_len: usize,
    unfilled: u32,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let fuel = args.iter().any(|a| a == "fuel");
    let epoch = args.iter().any(|a| a == "epoch");
    let nan = args.iter().any(|a| a == "nan");
    let pool = args.iter().any(|a| a == "pool");
    let reps: usize = 9;
    let mut config = Config::new();
    config
        .cranelift_opt_level(OptLevel::Speed)
        .consume_fuel(fuel)
        .epoch_interruption(epoch)
        .cranelift_nan_canonicalization(nan)
        .relaxed_simd_deterministic(true)
        .profiler(ProfilingStrategy::PerfMap);
    if pool {
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
    let module = Module::new(
        &engine,
        match std::env::var("WASM") {
            Ok(p) => std::fs::read(p).unwrap(),
            Err(_) => guest_module("sma_cross"),
        },
    )?;
    let mut linker: Linker<St> = Linker::new(&engine);
    linker.func_wrap(
        "palisade",
        "next_batch",
        move |mut c: Caller<'_, St>, buf: i32, cap: i32| -> i32 {
            let mem = c.data().mem.unwrap();
            let (data, st) = mem.data_and_store_mut(&mut c);
            st.batch_start += st.batch_len;
            let n = (cap as usize).min(st.bars.len() - st.batch_start);
            st.batch_len = n;
            let out = &mut data[buf as usize..buf as usize + n * 56];
            for (ch, b) in out
                .chunks_exact_mut(56)
                .zip(&st.bars[st.batch_start..st.batch_start + n])
            {
                ch.copy_from_slice(&b.to_le_bytes());
            }
            st.pos = st.batch_start + n;
            if fuel {
                c.set_fuel(u64::MAX / 4).unwrap();
            }
            n as i32
        },
    )?;
    linker.func_wrap(
        "palisade",
        "position",
        |c: Caller<'_, St>, _bar: i32, _s: i32| -> f64 { c.data().position },
    )?;
    linker.func_wrap(
        "palisade",
        "order",
        |mut c: Caller<'_, St>, _bar: i32, _s: i32, qty: f64, _k: i32, _p: f64| -> i64 {
            let st = c.data_mut();
            st.position += qty;
            st.next_id += 1;
            st.unfilled += 1;
            st.next_id
        },
    )?;
    linker.func_wrap(
        "palisade",
        "param",
        |mut c: Caller<'_, St>, ptr: i32, len: i32| -> f64 {
            let mem = c.data().mem.unwrap();
            let name = std::str::from_utf8(&mem.data(&mut c)[ptr as usize..(ptr + len) as usize])
                .unwrap()
                .to_string();
            match name.as_str() {
                "fast" => 10.0,
                "slow" => 30.0,
                "size" => 1.0,
                _ => f64::NAN,
            }
        },
    )?;
    linker.func_wrap(
        "palisade",
        "poll_fill",
        |mut c: Caller<'_, St>, _bar: i32, out: i32| -> i32 {
            if c.data().unfilled == 0 {
                return 0;
            }
            c.data_mut().unfilled -= 1;
            let mem = c.data().mem.unwrap();
            mem.data_mut(&mut c)[out as usize..out as usize + 48].fill(0);
            1
        },
    )?;
    linker.define_unknown_imports_as_traps(&module)?;
    let pre = linker.instantiate_pre(&module)?;
    let bars = random_walk_bars(1_000_000, DEFAULT_SEED);
    let mut best = f64::MAX;
    for _ in 0..reps {
        let mut store = Store::new(
            &engine,
            St {
                bars: bars.clone(),
                pos: 0,
                position: 0.0,
                next_id: 0,
                mem: None,
                batch_start: 0,
                batch_len: 0,
                unfilled: 0,
            },
        );
        if fuel {
            store.set_fuel(u64::MAX / 4)?;
        }
        if epoch {
            store.set_epoch_deadline(1 << 40);
        }
        let inst = pre.instantiate(&mut store)?;
        let mem = inst.get_memory(&mut store, "memory");
        store.data_mut().mem = mem;
        let run = inst.get_typed_func::<(), i32>(&mut store, "palisade_run")?;
        let t = Instant::now();
        let r = run.call(&mut store, ())?;
        let dt = t.elapsed().as_secs_f64();
        assert_eq!(r, 0);
        best = best.min(dt);
    }
    println!(
        "fuel={fuel} epoch={epoch} nan={nan} pool={pool}: best {:.1} ms = {:.1} ns/bar",
        best * 1e3,
        best * 1e9 / 1e6
    );
    Ok(())
}
