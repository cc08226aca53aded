//! ferry's data model and trust: release and channel-pointer documents, their signed
//! envelopes (minisign), and the rules for serials and expiry.
#![warn(missing_docs)]
