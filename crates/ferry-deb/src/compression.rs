//! The compressions of control.tar and data.tar: zstd (multi-threaded), xz (liblzma,
//! multi-threaded), gzip (fixed header, so output is reproducible) and none — for writing;
//! for reading also the legacy lzma format that old Debian packages used.

use std::io::{self, BufReader, Read, Write};

use serde::Serialize;

use crate::error::{Error, Result};

/// How a tar member of the package is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Compression {
    /// Zstandard (`.zst`), ferry's default: fast and multi-threaded.
    Zstd,
    /// xz (`.xz`), Debian's own default.
    Xz,
    /// gzip (`.gz`).
    Gzip,
    /// The legacy `.lzma` format (read only).
    Lzma,
    /// No compression.
    None,
}

impl Compression {
    /// The compressions ferry can write.
    pub const WRITABLE: [Compression; 4] = [
        Compression::Zstd,
        Compression::Xz,
        Compression::Gzip,
        Compression::None,
    ];

    /// The lowercase name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
            Compression::Gzip => "gzip",
            Compression::Lzma => "lzma",
            Compression::None => "none",
        }
    }

    /// The suffix of the ar member name (`data.tar` + suffix).
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Zstd => ".zst",
            Compression::Xz => ".xz",
            Compression::Gzip => ".gz",
            Compression::Lzma => ".lzma",
            Compression::None => "",
        }
    }

    /// Parse a name as given on the command line.
    pub fn from_name(name: &str) -> Option<Compression> {
        match name {
            "zstd" | "zst" => Some(Compression::Zstd),
            "xz" => Some(Compression::Xz),
            "gzip" | "gz" => Some(Compression::Gzip),
            "none" => Some(Compression::None),
            _ => None,
        }
    }

    /// The level used when none is given: the same defaults as dpkg-deb.
    pub fn default_level(self) -> u32 {
        match self {
            Compression::Zstd => 3,
            Compression::Xz | Compression::Lzma => 6,
            Compression::Gzip => 9,
            Compression::None => 0,
        }
    }

    /// The accepted levels, inclusive.
    pub fn level_range(self) -> (u32, u32) {
        match self {
            Compression::Zstd => (1, 19),
            Compression::Xz | Compression::Lzma => (0, 9),
            Compression::Gzip => (1, 9),
            Compression::None => (0, 0),
        }
    }

    /// Check a level against [`Compression::level_range`].
    pub fn check_level(self, level: u32) -> Result<()> {
        let (low, high) = self.level_range();
        if level < low || level > high {
            let range = match self {
                Compression::Zstd => "1 to 19",
                Compression::Xz | Compression::Lzma => "0 to 9",
                Compression::Gzip => "1 to 9",
                Compression::None => "no levels; leave the level out",
            };
            return Err(Error::Level {
                compression: self.name().to_string(),
                level,
                range,
            });
        }
        Ok(())
    }

    /// Which compression an ar member named `<base><suffix>` uses.
    pub fn from_member_name(name: &str, base: &str) -> Result<Compression> {
        let suffix = name.strip_prefix(base).unwrap_or_default();
        match suffix {
            "" => Ok(Compression::None),
            ".gz" => Ok(Compression::Gzip),
            ".xz" => Ok(Compression::Xz),
            ".zst" => Ok(Compression::Zstd),
            ".lzma" => Ok(Compression::Lzma),
            _ => Err(Error::UnsupportedCompression {
                member: name.to_string(),
            }),
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

/// The size of each multi-threaded zstd job.
const ZSTD_JOB_SIZE: u32 = 2 << 20;

/// A streaming compressor writing into `W`; call [`Compressor::finish`] at the end.
pub struct Compressor<W: Write>(CompressorInner<W>);

enum CompressorInner<W: Write> {
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Xz(liblzma::write::XzEncoder<W>),
    Gzip(flate2::write::GzEncoder<W>),
    None(W),
}

impl<W: Write> Compressor<W> {
    /// Start compressing into `writer`. `threads` is the number of worker threads for
    /// zstd and xz (at least 1; the output does not depend on it, so packs are
    /// reproducible across machines).
    pub fn new(writer: W, compression: Compression, level: u32, threads: u32) -> Result<Self> {
        compression.check_level(level)?;
        let threads = threads.max(1);
        let inner = match compression {
            Compression::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(writer, level as i32)
                    .map_err(Error::io("starting the zstd compressor"))?;
                // Always multi-threaded (even with one worker) because zstd's output
                // differs between its single- and multi-threaded modes but not between
                // worker counts.
                encoder
                    .multithread(threads)
                    .map_err(Error::io("starting zstd worker threads"))?;
                // Fixed 2 MiB jobs (not zstd's level-dependent default of several window
                // sizes): the last job is what the other workers wait for at the end, and
                // a fixed size keeps the output independent of the worker count.
                encoder
                    .set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE))
                    .map_err(Error::io("configuring zstd"))?;
                encoder
                    .include_checksum(true)
                    .map_err(Error::io("configuring zstd"))?;
                CompressorInner::Zstd(encoder)
            }
            Compression::Xz => {
                let stream = liblzma::stream::MtStreamBuilder::new()
                    .threads(threads)
                    .preset(level)
                    .check(liblzma::stream::Check::Crc64)
                    .encoder()
                    .map_err(|error| Error::Io {
                        action: "starting the xz compressor".into(),
                        source: io::Error::other(error),
                    })?;
                CompressorInner::Xz(liblzma::write::XzEncoder::new_stream(writer, stream))
            }
            Compression::Gzip => {
                // No file name, mtime 0 and a fixed OS byte (3 = Unix, like `gzip -n`):
                // the header carries nothing that changes between runs.
                let encoder = flate2::GzBuilder::new()
                    .mtime(0)
                    .operating_system(3)
                    .write(writer, flate2::Compression::new(level));
                CompressorInner::Gzip(encoder)
            }
            Compression::None => CompressorInner::None(writer),
            Compression::Lzma => {
                return Err(Error::UnsupportedCompression {
                    member: "lzma (ferry reads it but writes zstd, xz, gzip or none)".into(),
                });
            }
        };
        Ok(Compressor(inner))
    }

    /// Finish the stream and hand back the writer.
    pub fn finish(self) -> io::Result<W> {
        match self.0 {
            CompressorInner::Zstd(encoder) => encoder.finish(),
            CompressorInner::Xz(encoder) => encoder.finish(),
            CompressorInner::Gzip(encoder) => encoder.finish(),
            CompressorInner::None(mut writer) => {
                writer.flush()?;
                Ok(writer)
            }
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            CompressorInner::Zstd(encoder) => encoder.write(buffer),
            CompressorInner::Xz(encoder) => encoder.write(buffer),
            CompressorInner::Gzip(encoder) => encoder.write(buffer),
            CompressorInner::None(writer) => writer.write(buffer),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.0 {
            CompressorInner::Zstd(encoder) => encoder.flush(),
            CompressorInner::Xz(encoder) => encoder.flush(),
            CompressorInner::Gzip(encoder) => encoder.flush(),
            CompressorInner::None(writer) => writer.flush(),
        }
    }
}

/// A streaming decompressor over `R`.
pub struct Decompressor<R: Read>(DecompressorInner<R>);

enum DecompressorInner<R: Read> {
    Zstd(zstd::stream::read::Decoder<'static, BufReader<R>>),
    Xz(liblzma::read::XzDecoder<R>),
    Gzip(flate2::read::MultiGzDecoder<R>),
    None(R),
}

/// liblzma's memory limit when decoding: generous for any real package (xz -9 needs
/// 65 MiB), small enough that a hostile header cannot exhaust memory.
const XZ_MEMORY_LIMIT: u64 = 512 << 20;

impl<R: Read> Decompressor<R> {
    /// Start decompressing `reader`.
    pub fn new(reader: R, compression: Compression) -> Result<Self> {
        let inner = match compression {
            Compression::Zstd => DecompressorInner::Zstd(
                zstd::stream::read::Decoder::new(reader)
                    .map_err(Error::io("starting the zstd decompressor"))?,
            ),
            Compression::Xz | Compression::Lzma => {
                let stream = if compression == Compression::Xz {
                    liblzma::stream::Stream::new_stream_decoder(
                        XZ_MEMORY_LIMIT,
                        liblzma::stream::CONCATENATED,
                    )
                } else {
                    liblzma::stream::Stream::new_lzma_decoder(XZ_MEMORY_LIMIT)
                }
                .map_err(|error| Error::Io {
                    action: "starting the xz decompressor".into(),
                    source: io::Error::other(error),
                })?;
                DecompressorInner::Xz(liblzma::read::XzDecoder::new_stream(reader, stream))
            }
            Compression::Gzip => DecompressorInner::Gzip(flate2::read::MultiGzDecoder::new(reader)),
            Compression::None => DecompressorInner::None(reader),
        };
        Ok(Decompressor(inner))
    }
}

impl<R: Read> Read for Decompressor<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match &mut self.0 {
            DecompressorInner::Zstd(decoder) => decoder.read(buffer),
            DecompressorInner::Xz(decoder) => decoder.read(buffer),
            DecompressorInner::Gzip(decoder) => decoder.read(buffer),
            DecompressorInner::None(reader) => reader.read(buffer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_writable_compression_round_trips() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|n| (n % 251).to_le_bytes())
            .collect();
        for compression in Compression::WRITABLE {
            let level = compression.default_level();
            let mut compressor = Compressor::new(Vec::new(), compression, level, 2).unwrap();
            compressor.write_all(&data).unwrap();
            let compressed = compressor.finish().unwrap();
            let mut decoded = Vec::new();
            Decompressor::new(&compressed[..], compression)
                .unwrap()
                .read_to_end(&mut decoded)
                .unwrap();
            assert_eq!(decoded, data, "{compression}");
        }
    }

    #[test]
    fn output_does_not_depend_on_thread_count() {
        let data: Vec<u8> = (0..3_000_000u32).map(|n| (n * 7 % 253) as u8).collect();
        for compression in [Compression::Zstd, Compression::Xz] {
            let pack = |threads| {
                let mut compressor = Compressor::new(Vec::new(), compression, 1, threads).unwrap();
                compressor.write_all(&data).unwrap();
                compressor.finish().unwrap()
            };
            assert_eq!(pack(1), pack(3), "{compression}");
        }
    }

    #[test]
    fn levels_are_checked() {
        assert!(Compression::Zstd.check_level(20).is_err());
        assert!(Compression::Gzip.check_level(0).is_err());
        assert!(Compression::Xz.check_level(9).is_ok());
        let error = Compression::None.check_level(3).unwrap_err();
        assert!(error.to_string().contains("none"), "{error}");
    }
}
