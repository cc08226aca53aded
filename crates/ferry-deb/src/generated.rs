//! The files a package gets when its manifest gives none: the Debian changelog and copyright
//! (with dates computed here, no time crate), and the conventional .deb file name.

use std::io::Write;

use crate::compression::{Compression, Compressor};
use crate::control::Control;
use crate::error::{Error, Result};

/// The conventional file name `<package>_<version>_<arch>.deb` (the epoch is dropped,
/// as Debian's tools do).
pub fn package_file_name(control: &Control) -> String {
    let version = control.version().unwrap_or_default();
    let version = version.split_once(':').map_or(version, |(_, rest)| rest);
    format!(
        "{}_{}_{}.deb",
        control.package().unwrap_or_default(),
        version,
        control.architecture().unwrap_or_default()
    )
}

/// A minimal `changelog.Debian` entry, gzipped reproducibly (level 9, no name, mtime 0).
/// Native versions (without a `-revision`) are named `changelog.gz` by Debian policy; the
/// caller picks the name with [`changelog_name`].
pub fn generated_changelog(
    package: &str,
    version: &str,
    maintainer: &str,
    mtime: u64,
) -> Result<Vec<u8>> {
    let text = format!(
        "{package} ({version}) unstable; urgency=medium\n\n  * Packaged with ferry.\n\n -- {maintainer}  {}\n",
        rfc2822(mtime)
    );
    let mut compressor = Compressor::new(Vec::new(), Compression::Gzip, 9, 1)?;
    compressor
        .write_all(text.as_bytes())
        .map_err(Error::io("compressing the changelog"))?;
    compressor
        .finish()
        .map_err(Error::io("compressing the changelog"))
}

/// `changelog.Debian.gz` for versions with a Debian revision, `changelog.gz` otherwise.
pub fn changelog_name(version: &str) -> &'static str {
    if version.contains('-') {
        "changelog.Debian.gz"
    } else {
        "changelog.gz"
    }
}

/// A machine-readable `copyright` file naming the maintainer and license.
pub fn generated_copyright(
    package: &str,
    maintainer: &str,
    license: &str,
    homepage: Option<&str>,
    year: u64,
) -> String {
    let mut text = format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: {package}\n"
    );
    if let Some(homepage) = homepage {
        text.push_str(&format!("Source: {homepage}\n"));
    }
    text.push_str(&format!(
        "\nFiles: *\nCopyright: {year} {maintainer}\nLicense: {license}\n\nLicense: {license}\n This package is distributed under the terms of the {license} license.\n"
    ));
    text
}

/// The calendar year of a Unix timestamp.
pub fn year_of(timestamp: u64) -> u64 {
    civil_from_days((timestamp / 86_400) as i64).0 as u64
}

/// `Fri, 27 Nov 2026 09:00:00 +0000`.
pub(crate) fn rfc2822(timestamp: u64) -> String {
    let days = (timestamp / 86_400) as i64;
    let seconds = timestamp % 86_400;
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday.
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let month_name = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!(
        "{weekday}, {day:02} {month_name} {year} {:02}:{:02}:{:02} +0000",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// well-known algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
