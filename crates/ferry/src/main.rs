//! The `ferry` binary: parse the command line, install logging, run the subcommand and
//! turn its result into an exit code. All real work lives in the library crates.

mod cli;
mod commands;
mod env;
mod logging;
mod notify;
mod provenance;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    logging::init(cli.verbose, cli.quiet);
    match cli.command.run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}
