//! The `presence` binary: everything lives in the library; see `presence::cli`.

/// mimalloc: fewer cycles per request than glibc's allocator and less fragmentation with a
/// million cached presences (see BENCHMARKS.md); `presence::allocator` says how it is asked.
#[global_allocator]
static GLOBAL: presence::allocator::Allocator = presence::allocator::Allocator;

fn main() -> std::process::ExitCode {
    presence::cli::main()
}
