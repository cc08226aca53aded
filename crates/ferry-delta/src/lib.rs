//! Delta updates. A patch turns one release's package into the next one's at a few percent
//! of its size, and is verified as strongly as a full download:
//!
//! - [`expand`]: the *expanded form* of a .deb — the same package with its `control.tar` and
//!   `data.tar` decompressed, in an ar archive with fixed headers. Diffing compressed bytes
//!   finds almost nothing; diffing the expanded forms finds the one function that changed.
//!   dpkg and ferry's `unpack` install the expanded form as they install the original.
//! - [`diff`] / [`apply`]: bsdiff 4 patches between two expanded forms (qbsdiff).
//! - [`publish_deltas`]: at publish, patches from the channel's last few artifacts to the new
//!   one, stored content-addressed, listed in a signed [`ferry_release::DeltaIndex`] that also
//!   records the sha256 of the new expanded form — so an agent checks what it rebuilt against
//!   a signed hash, without recompressing anything.
//!
//! The agent side (choosing a patch whose base it has cached, applying it with bounded
//! memory, falling back to the full download) is `ferry_agent::delta`.

mod error;
mod expand;
mod patch;
mod publish;

pub use error::Error;
pub use expand::{MAX_EXPANDED_BYTES, expand};
pub use patch::{apply, diff};
pub use publish::{DeltaOptions, describe_patches, publish_deltas, read_index};
