//! The `palisade` binary: everything is in `palisade_runtime::cli`.

/// mimalloc instead of the system allocator: a service job allocates and
/// frees many blocks of mixed sizes on several threads (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    palisade_runtime::cli::main()
}
