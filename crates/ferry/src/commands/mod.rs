//! One file per subcommand: its flags and the glue from them to the library crates.

pub mod pack;
pub mod inspect;
pub mod keygen;
pub mod publish;
pub mod releases;
pub mod rollback;
pub mod promote;
pub mod verify;
pub mod agent;
pub mod run;
pub mod quickstart;
