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
    // Started under the name `hello-service`, ferry is the quickstart's example service.
    let invoked_as = std::env::args_os().next().map(std::path::PathBuf::from);
    if invoked_as
        .as_deref()
        .and_then(std::path::Path::file_name)
        .is_some_and(|name| name == "hello-service")
    {
        return hello_service::main();
    }
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
