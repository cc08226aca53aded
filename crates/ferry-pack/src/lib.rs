//! Packing as a library: a `ferry.toml` (or a Cargo.toml's `[package.metadata.ferry]`) and a
//! few options turned into the `PackageSpec` ferry-deb writes — files and whole directory
//! trees gathered, systemd units and their maintainer-script snippets, generated changelog
//! and copyright, the architecture read from the ELF headers. `ferry pack` keeps only its
//! flags, output and progress.
//!
//! - [`manifest`]: the file format (unknown keys refused by name) and its loading;
//! - [`plan`]: manifest + [`PackOptions`] → [`ferry_deb::PackageSpec`].
#![warn(missing_docs)]

mod error;
pub mod manifest;
mod plan;

pub use error::{Context, Error, Result};
pub use manifest::{DeploySection, Manifest};
pub use plan::{PackOptions, add_source, detect_architecture, plan};
