//! Debian architecture detection from ELF headers, so `ferry pack` labels a package with
//! the architecture its executables were built for instead of the build machine's.

use std::io::Read;
use std::path::Path;

/// The Debian architecture of an ELF file, or `None` when `header` is not an ELF
/// executable or shared object (or an unknown machine).
pub fn architecture_from_header(header: &[u8]) -> Option<&'static str> {
    if header.len() < 52 || &header[0..4] != b"\x7fELF" {
        return None;
    }
    let class64 = match header[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let little = match header[5] {
        1 => true,
        2 => false,
        _ => return None,
    };
    let read16 = |offset: usize| {
        let bytes = [header[offset], header[offset + 1]];
        if little {
            u16::from_le_bytes(bytes)
        } else {
            u16::from_be_bytes(bytes)
        }
    };
    let read32 = |offset: usize| {
        let bytes = [
            header[offset],
            header[offset + 1],
            header[offset + 2],
            header[offset + 3],
        ];
        if little {
            u32::from_le_bytes(bytes)
        } else {
            u32::from_be_bytes(bytes)
        }
    };
    // ET_EXEC = 2, ET_DYN = 3 (PIE executables and shared libraries). Relocatable
    // objects and core files say nothing about what the package runs on.
    let file_type = read16(16);
    if file_type != 2 && file_type != 3 {
        return None;
    }
    let machine = read16(18);
    let flags = if class64 {
        if header.len() < 64 {
            return None;
        }
        read32(48)
    } else {
        read32(36)
    };
    Some(match (machine, class64, little) {
        (3, false, true) => "i386",
        (62, true, true) => "amd64",
        (62, false, true) => "x32",
        (183, true, true) => "arm64",
        // EF_ARM_ABI_FLOAT_HARD tells armhf from armel.
        (40, false, true) => {
            if flags & 0x400 != 0 {
                "armhf"
            } else {
                "armel"
            }
        }
        (243, true, true) => "riscv64",
        (21, true, true) => "ppc64el",
        (21, true, false) => "ppc64",
        (20, false, false) => "powerpc",
        (22, true, false) => "s390x",
        (8, true, true) => "mips64el",
        (8, false, true) => "mipsel",
        (258, true, true) => "loong64",
        (2 | 43, true, false) => "sparc64",
        (4, false, false) => "m68k",
        (15, false, false) => "hppa",
        (41, true, true) => "alpha",
        (0x9026, true, true) => "alpha",
        _ => return None,
    })
}

/// The Debian architecture of the ELF file at `path` (`None` when it is not ELF).
pub fn architecture_of_file(path: &Path) -> std::io::Result<Option<&'static str>> {
    let mut header = [0u8; 64];
    let mut file = std::fs::File::open(path)?;
    let mut filled = 0;
    while filled < header.len() {
        let read = file.read(&mut header[filled..])?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    Ok(architecture_from_header(&header[..filled]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(class: u8, data: u8, file_type: u16, machine: u16, flags: u32) -> Vec<u8> {
        let mut bytes = vec![0u8; 64];
        bytes[0..4].copy_from_slice(b"\x7fELF");
        bytes[4] = class;
        bytes[5] = data;
        let little = data == 1;
        let put16 = |bytes: &mut Vec<u8>, offset: usize, value: u16| {
            let encoded = if little {
                value.to_le_bytes()
            } else {
                value.to_be_bytes()
            };
            bytes[offset..offset + 2].copy_from_slice(&encoded);
        };
        put16(&mut bytes, 16, file_type);
        put16(&mut bytes, 18, machine);
        let offset = if class == 2 { 48 } else { 36 };
        let encoded = if little {
            flags.to_le_bytes()
        } else {
            flags.to_be_bytes()
        };
        bytes[offset..offset + 4].copy_from_slice(&encoded);
        bytes
    }

    #[test]
    fn machines() {
        assert_eq!(
            architecture_from_header(&header(2, 1, 3, 62, 0)),
            Some("amd64")
        );
        assert_eq!(
            architecture_from_header(&header(2, 1, 2, 183, 0)),
            Some("arm64")
        );
        assert_eq!(
            architecture_from_header(&header(1, 1, 2, 40, 0x0500_0400)),
            Some("armhf")
        );
        assert_eq!(
            architecture_from_header(&header(1, 1, 2, 40, 0x0500_0200)),
            Some("armel")
        );
        assert_eq!(
            architecture_from_header(&header(1, 1, 2, 3, 0)),
            Some("i386")
        );
        assert_eq!(
            architecture_from_header(&header(2, 1, 2, 243, 0)),
            Some("riscv64")
        );
        assert_eq!(
            architecture_from_header(&header(2, 2, 2, 22, 0)),
            Some("s390x")
        );
        // A relocatable object (ET_REL) does not count.
        assert_eq!(architecture_from_header(&header(2, 1, 1, 62, 0)), None);
        assert_eq!(architecture_from_header(b"#!/bin/sh\n"), None);
    }

    #[test]
    fn this_test_binary_is_detected() {
        let exe = std::env::current_exe().unwrap();
        let expected = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => {
                eprintln!("no expectation for {other}");
                return;
            }
        };
        assert_eq!(architecture_of_file(&exe).unwrap(), Some(expected));
    }
}
