//! One file per subcommand: its flags and the glue from them to the library crates.

pub mod agent;
pub mod cloud_init;
pub mod completions;
pub mod config;
pub mod dashboard;
pub mod deploy;
pub mod inspect;
pub mod keygen;
pub mod keyring;
pub mod pack;
pub mod pause;
pub mod promote;
pub mod publish;
pub mod quickstart;
pub mod releases;
pub mod reload;
pub mod rollback;
pub mod run;
pub mod sign;
pub mod status;
pub mod store_args;
pub mod try_host;
pub mod verify;
pub mod watch;
