//! The `protogate` binary: the command line only; everything else is the library.

fn main() -> std::process::ExitCode {
    protogate::cli::main()
}
