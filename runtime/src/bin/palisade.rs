//! The `palisade` binary: everything is in `palisade_runtime::cli`.
fn main() -> std::process::ExitCode {
    palisade_runtime::cli::main()
}
