//! The Debian binary package format: writing (ar, control.tar, data.tar with gzip, xz,
//! zstd or no compression), reading and inspecting. No I/O policy and no async here.
//!
//! Reading streams front to back from any `Read`:
//! ```no_run
//! # fn main() -> Result<(), ferry_deb::Error> {
//! let deb = ferry_deb::DebReader::open(std::path::Path::new("hello_1.0-1_amd64.deb"))?;
//! println!("{} {}", deb.control().package().unwrap_or("?"), deb.control().version().unwrap_or("?"));
//! let mut data = deb.into_data_archive()?;
//! for entry in data.entries().map_err(|source| ferry_deb::Error::Tar { member: "data.tar".into(), source })? {
//!     let entry = entry.map_err(|source| ferry_deb::Error::Tar { member: "data.tar".into(), source })?;
//!     println!("{}", entry.path().map_err(|source| ferry_deb::Error::Tar { member: "data.tar".into(), source })?.display());
//! }
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod ar;
pub mod compression;
pub mod control;
pub mod elf;
pub mod error;
mod generated;
pub mod inspect;
pub mod reader;
pub mod systemd;
mod tree;
pub mod version;
pub mod writer;

pub use compression::{Compression, Compressor, Decompressor};
pub use control::Control;
pub use error::{Error, Result};
pub use inspect::{EntryKind, FileEntry, Inspection, check_complete, inspect};
pub use reader::{ControlFile, DebReader, MAINTAINER_SCRIPTS, Member};
pub use version::{validate_package_name, validate_version};
pub use writer::{
    Entry, EntrySource, Listener, PackageSpec, Quiet, Source, Summary, package_file_name,
    write_package,
};
