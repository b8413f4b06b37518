//! The `lineguard` binary: the command line lives in the library (`cli`),
//! where the man page and the completions read it too.

fn main() -> std::process::ExitCode {
    lineguard::cli::main()
}
