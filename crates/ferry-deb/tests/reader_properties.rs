//! Property tests over the reader: random bytes, and real packages (every compression)
//! truncated, bit-flipped, spliced or with ar headers rewritten, must give `Ok` or a clean
//! `Err` — never a panic, never a hang.

use std::io::Cursor;
use std::sync::OnceLock;

use ferry_deb::{Compression, Control, Entry, EntrySource, PackageSpec, Quiet, Source};
use proptest::prelude::*;

fn sample(compression: Compression) -> Vec<u8> {
    let mut control = Control::new();
    control.set("Package", "sample");
    control.set("Version", "1.0-1");
    control.set("Architecture", "all");
    control.set("Maintainer", "Test <test@example.com>");
    control.set("Description", "a sample\n with more");
    let long = format!("/usr/share/sample/{}/file", "d".repeat(120));
    let spec = PackageSpec {
        control,
        entries: vec![
            Entry {
                path: "/etc/sample.conf".into(),
                mode: 0o644,
                source: EntrySource::File(Source::Bytes(b"a=1\n".to_vec())),
            },
            Entry {
                path: "/usr/bin/sample".into(),
                mode: 0o755,
                source: EntrySource::File(Source::Bytes(vec![7u8; 5000])),
            },
            Entry {
                path: long,
                mode: 0o644,
                source: EntrySource::File(Source::Bytes(b"deep".to_vec())),
            },
            Entry {
                path: "/usr/bin/alias".into(),
                mode: 0o777,
                source: EntrySource::Symlink("sample".into()),
            },
        ],
        conffiles: vec![],
        control_files: vec![("postinst".into(), 0o755, b"#!/bin/sh\nexit 0\n".to_vec())],
        compression,
        level: compression.default_level(),
        threads: 1,
        mtime: 1_700_000_000,
    };
    let mut out = Vec::new();
    ferry_deb::write_package(&spec, &mut out, &mut Cursor::new(Vec::new()), &mut Quiet).unwrap();
    out
}

fn samples() -> &'static Vec<Vec<u8>> {
    static SAMPLES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SAMPLES.get_or_init(|| Compression::WRITABLE.iter().map(|&c| sample(c)).collect())
}

/// Read everything the reader offers; errors are fine, panics are not.
fn read_all(bytes: &[u8]) -> Result<usize, ferry_deb::Error> {
    let inspection = ferry_deb::inspect(bytes)?;
    Ok(inspection.files.len())
}

#[test]
fn unmodified_samples_read_back() {
    for bytes in samples() {
        assert_eq!(read_all(bytes).unwrap(), 11);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = read_all(&bytes);
        let mut with_magic = b"!<arch>\n".to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = read_all(&with_magic);
    }

    #[test]
    fn truncated_packages_are_errors(which in 0usize..4, fraction in 0.0f64..1.0) {
        let bytes = &samples()[which];
        let cut = ((bytes.len() as f64) * fraction) as usize;
        // Any cut shorter than the package must be reported (the last padding byte aside).
        let result = read_all(&bytes[..cut]);
        prop_assert!(result.is_err() || cut + 1 >= bytes.len(), "cut at {} of {} accepted", cut, bytes.len());
    }

    #[test]
    fn mutated_packages_never_panic(
        which in 0usize..4,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = samples()[which].clone();
        let length = bytes.len();
        for (position, value) in flips {
            bytes[position % length] ^= value | 1;
        }
        let _ = read_all(&bytes);
    }

    #[test]
    fn spliced_packages_never_panic(
        which in 0usize..4,
        position in any::<usize>(),
        insert in proptest::collection::vec(any::<u8>(), 1..600),
        remove in 0usize..600,
    ) {
        let mut bytes = samples()[which].clone();
        let at = position % bytes.len();
        let end = (at + remove).min(bytes.len());
        bytes.splice(at..end, insert);
        let _ = read_all(&bytes);
    }

    #[test]
    fn rewritten_ar_sizes_never_panic(which in 0usize..4, member in 0usize..3, size in "[0-9 ]{10}") {
        let mut bytes = samples()[which].clone();
        // Walk to the chosen member's header and overwrite its size field.
        let mut offset = 8;
        for _ in 0..member {
            let size: usize = std::str::from_utf8(&bytes[offset + 48..offset + 58]).unwrap().trim().parse().unwrap();
            offset += 60 + size + size % 2;
        }
        bytes[offset + 48..offset + 58].copy_from_slice(size.as_bytes());
        let _ = read_all(&bytes);
    }
}
