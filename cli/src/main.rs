//! `tandem`: the command-line client of a Tandem gateway (see `tandem --help`).

fn main() -> std::process::ExitCode {
    tandem_cli::main()
}
