//! The `presence` binary: everything lives in the library; see `presence::cli`.

/// mimalloc: fewer cycles per request than glibc's allocator and less fragmentation with a
/// million cached presences (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    presence::cli::main()
}
