//! The `presence` binary: everything lives in the library; see `presence::cli`.

fn main() -> std::process::ExitCode {
    presence::cli::main()
}
