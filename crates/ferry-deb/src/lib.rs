//! The Debian binary package format: writing (ar, control.tar, data.tar with gzip, xz,
//! zstd or no compression), reading and inspecting. No I/O policy and no async here.
#![warn(missing_docs)]
