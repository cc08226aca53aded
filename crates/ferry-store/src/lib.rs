//! The object-store layer: ferry's store layout on `file://` and `s3://`, conditional
//! reads and writes, and the compare-and-swap publish protocol.
#![warn(missing_docs)]
