//! `ferry keygen PREFIX`: make a minisign key pair, PREFIX.key (secret, mode 0600, never
//! overwritten) and PREFIX.pub (give it to every agent and verifier).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path prefix: writes PREFIX.key and PREFIX.pub.
    #[arg(value_name = "PREFIX")]
    pub prefix: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let pair = ferry_release::generate_key_pair(&args.prefix)
        .with_context(|| format!("cannot make a key pair at {}", args.prefix.display()))?;
    println!("key id {}", pair.id);
    println!(
        "secret key: {} (keep it private; it signs releases)",
        pair.secret_path.display()
    );
    println!(
        "public key: {} (give it to agents: --trust / trust = [...])",
        pair.public_path.display()
    );
    Ok(ExitCode::SUCCESS)
}
