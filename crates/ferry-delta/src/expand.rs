//! The expanded form of a package.

use std::io::Read;

use ferry_deb::ar::{ArReader, ArWriter};
use ferry_deb::{Compression, Decompressor};

use crate::Error;

/// The largest expanded form made or accepted (bsdiff needs several times this in memory
/// at publish): 256 MiB. Larger packages are always downloaded whole.
pub const MAX_EXPANDED_BYTES: u64 = 256 << 20;

/// The expanded form of the package `deb`: `debian-binary`, `control.tar` and `data.tar`
/// (members decompressed, anything else dropped) in an ar archive whose headers are fixed
/// (mtime 0, uid and gid 0, mode 100644). It is a valid .deb with the same contents, and
/// expanding an expanded form gives the same bytes back, so an agent may keep either in its
/// cache as the base of the next patch.
pub fn expand(deb: &[u8], limit: u64) -> Result<Vec<u8>, Error> {
    let mut reader = ArReader::new(deb)?;
    let mut binary = None;
    let mut control = None;
    let mut data = None;
    while let Some(member) = reader.next_member()? {
        if member.name == "debian-binary" {
            binary = Some(reader.read_member(&member, 64)?);
        } else if member.name.starts_with("control.tar") {
            let compression = Compression::from_member_name(&member.name, "control.tar")?;
            control = Some(decompress(reader.member_reader(), compression, limit)?);
        } else if member.name.starts_with("data.tar") {
            let compression = Compression::from_member_name(&member.name, "data.tar")?;
            data = Some(decompress(reader.member_reader(), compression, limit)?);
        }
    }
    let missing = |name: &str| {
        Error::Deb(ferry_deb::Error::NotADeb(format!(
            "the package has no {name} member"
        )))
    };
    let binary = binary.ok_or_else(|| missing("debian-binary"))?;
    let control = control.ok_or_else(|| missing("control.tar"))?;
    let data = data.ok_or_else(|| missing("data.tar"))?;
    let total = (binary.len() + control.len() + data.len()) as u64 + 8 + 3 * 61;
    if total > limit {
        return Err(Error::TooLarge { limit });
    }
    let mut writer = ArWriter::new(Vec::with_capacity(total as usize), 0)
        .map_err(|error| Error::Patch(format!("cannot write the expanded form: {error}")))?;
    for (name, bytes) in [
        ("debian-binary", &binary),
        ("control.tar", &control),
        ("data.tar", &data),
    ] {
        writer
            .append(name, bytes.len() as u64, &mut bytes.as_slice())
            .map_err(|error| Error::Patch(format!("cannot write the expanded form: {error}")))?;
    }
    writer
        .finish()
        .map_err(|error| Error::Patch(format!("cannot write the expanded form: {error}")))
}

fn decompress(member: impl Read, compression: Compression, limit: u64) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::new();
    let read = Decompressor::new(member, compression)?
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| Error::Patch(format!("cannot decompress a member: {error}")))?;
    if read as u64 > limit {
        return Err(Error::TooLarge { limit });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use ferry_deb::Compressor;

    use super::*;

    /// A package-shaped ar: debian-binary, a gzip control.tar, a zstd data.tar.
    fn deb(control: &[u8], data: &[u8]) -> Vec<u8> {
        let compress = |bytes: &[u8], compression: Compression| {
            let mut compressor = Compressor::new(Vec::new(), compression, 3, 1).unwrap();
            compressor.write_all(bytes).unwrap();
            compressor.finish().unwrap()
        };
        let control = compress(control, Compression::Gzip);
        let data = compress(data, Compression::Zstd);
        let mut writer = ArWriter::new(Vec::new(), 1_700_000_000).unwrap();
        writer
            .append("debian-binary", 4, &mut &b"2.0\n"[..])
            .unwrap();
        writer
            .append(
                "control.tar.gz",
                control.len() as u64,
                &mut control.as_slice(),
            )
            .unwrap();
        writer
            .append("data.tar.zst", data.len() as u64, &mut data.as_slice())
            .unwrap();
        writer.finish().unwrap()
    }

    fn payload(seed: u8) -> Vec<u8> {
        (0..200_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
            .collect()
    }

    #[test]
    fn the_expanded_form_is_the_uncompressed_package_and_expanding_it_again_changes_nothing() {
        let original = deb(b"control files", &payload(0));
        let expanded = expand(&original, MAX_EXPANDED_BYTES).unwrap();
        let mut reader = ArReader::new(expanded.as_slice()).unwrap();
        let mut names = Vec::new();
        while let Some(member) = reader.next_member().unwrap() {
            let bytes = reader.read_member(&member, u64::MAX).unwrap();
            if member.name == "data.tar" {
                assert_eq!(bytes, payload(0));
            }
            names.push(member.name);
        }
        assert_eq!(names, ["debian-binary", "control.tar", "data.tar"]);
        assert_eq!(expand(&expanded, MAX_EXPANDED_BYTES).unwrap(), expanded);
    }

    #[test]
    fn a_small_change_makes_a_small_patch_that_rebuilds_the_target_exactly() {
        let base = expand(&deb(b"v1", &payload(0)), MAX_EXPANDED_BYTES).unwrap();
        let mut changed = payload(0);
        changed[100_000..100_016].copy_from_slice(b"one line changed");
        let target = expand(&deb(b"v2", &changed), MAX_EXPANDED_BYTES).unwrap();
        let patch = crate::diff(&base, &target).unwrap();
        assert!(
            patch.len() < target.len() / 20,
            "patch {} of {}",
            patch.len(),
            target.len()
        );
        let mut rebuilt = Vec::new();
        let written = crate::apply(&base, &patch, target.len() as u64, &mut rebuilt).unwrap();
        assert_eq!(written, target.len() as u64);
        assert_eq!(rebuilt, target);
        // A patch that would write more than the signed size is refused before it runs.
        assert!(crate::apply(&base, &patch, 10, Vec::new()).is_err());
        // Garbage is not a patch.
        assert!(crate::apply(&base, b"not a patch", u64::MAX, Vec::new()).is_err());
    }

    #[test]
    fn packages_over_the_limit_are_refused() {
        let original = deb(b"c", &payload(1));
        assert!(matches!(
            expand(&original, 1000),
            Err(Error::TooLarge { limit: 1000 })
        ));
        assert!(
            expand(b"!<arch>\n", MAX_EXPANDED_BYTES).is_err(),
            "no members"
        );
        assert!(expand(b"not an archive", MAX_EXPANDED_BYTES).is_err());
    }
}
