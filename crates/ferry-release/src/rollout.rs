//! Staged rollouts: the `--waves` text (`5%:0,25%:10m,100%:1h`), its validation, and the one
//! rule that decides when a host may take a channel's release. Agents, `ferry status` and
//! `ferry watch` all judge waves with these functions, so they agree on who is in which wave.
//!
//! The rule: a host has a stable percentile in `0..100` from its seed (`<host-id>/<app>/<channel>`);
//! it belongs to the first wave whose `percent` is above its percentile, and may update once
//! `published_at + after_s` of that wave has passed on the host's own clock. `published_at`
//! is the signed pointer's; `ferry pause`/`resume` keep it, so the time base survives them.
//!
//! Clock skew: a host whose clock is off by `s` joins its wave `s` early or late. Two hosts of
//! consecutive waves stay in order as long as the gap between the waves' delays is at least
//! twice the largest skew (the early host of the later wave still opens after the late host
//! of the earlier wave). `ferry publish` refuses waves closer than `2 × --max-clock-skew`
//! (default 5 minutes), which makes "±5 minutes of skew never reorders waves" true.

use sha2::Digest;
use time::OffsetDateTime;

use crate::Error;
use crate::document::{Rollout, Wave};

/// The seed a host's rollout position is computed from.
pub fn rollout_seed(host_id: &str, app: &str, channel: &str) -> String {
    format!("{host_id}/{app}/{channel}")
}

/// A host's stable place in every rollout of a channel, `0..100`: the first 8 bytes of
/// sha256(seed), big-endian, modulo 100.
pub fn host_percentile(seed: &str) -> u8 {
    let digest = sha2::Sha256::digest(seed.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % 100) as u8
}

fn invalid(spec: &str, message: impl Into<String>) -> Error {
    Error::InvalidRollout {
        spec: spec.to_owned(),
        message: message.into(),
    }
}

/// Seconds in a delay like `0`, `90`, `30s`, `10m`, `1h`, `2d`.
fn parse_delay(text: &str, spec: &str) -> Result<u64, Error> {
    let text = text.trim();
    let split = text
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| {
        invalid(
            spec,
            format!(
                "delay {text:?} is not a whole number with an optional unit s, m, h or d (e.g. 10m)"
            ),
        )
    })?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(invalid(
                spec,
                format!("delay {text:?} has unknown unit {unit:?}; use s, m, h or d"),
            ));
        }
    };
    number
        .checked_mul(scale)
        .filter(|seconds| *seconds <= MAX_DELAY_S)
        .ok_or_else(|| invalid(spec, format!("delay {text:?} is more than a year")))
}

/// The longest wave delay accepted: a year. Longer ones are typos, and times that far out
/// would overflow date arithmetic in older readers.
pub const MAX_DELAY_S: u64 = 366 * 86_400;

/// A delay in the short form `parse` reads (`0`, `45s`, `10m`, `1h`).
pub fn format_delay(seconds: u64) -> String {
    if seconds == 0 {
        "0".into()
    } else if seconds % 86_400 == 0 {
        format!("{}d", seconds / 86_400)
    } else if seconds % 3600 == 0 {
        format!("{}h", seconds / 3600)
    } else if seconds % 60 == 0 {
        format!("{}m", seconds / 60)
    } else {
        format!("{seconds}s")
    }
}

impl Rollout {
    /// Parse `PERCENT%:DELAY,…`, e.g. `5%:0,25%:10m,100%:1h`, and validate it.
    pub fn parse(spec: &str) -> Result<Rollout, Error> {
        if spec.trim().is_empty() {
            return Err(invalid(
                spec,
                "no waves given; write e.g. 5%:0,25%:10m,100%:1h",
            ));
        }
        let mut waves = Vec::new();
        for part in spec.split(',') {
            let part = part.trim();
            let Some((percent, delay)) = part.split_once(':') else {
                return Err(invalid(
                    spec,
                    format!("wave {part:?} is not PERCENT%:DELAY (e.g. 25%:10m)"),
                ));
            };
            let percent_text = percent.trim().trim_end_matches('%');
            let percent: u8 = percent_text
                .parse()
                .ok()
                .filter(|percent| (1..=100).contains(percent))
                .ok_or_else(|| {
                    invalid(
                        spec,
                        format!("wave {part:?}: percent must be a whole number from 1 to 100"),
                    )
                })?;
            waves.push(Wave {
                percent,
                after_s: parse_delay(delay, spec)?,
            });
        }
        let rollout = Rollout { waves };
        rollout.validate().map_err(|error| match error {
            Error::InvalidRollout { message, .. } => invalid(spec, message),
            other => other,
        })?;
        Ok(rollout)
    }

    /// The waves in the `--waves` form.
    pub fn to_spec(&self) -> String {
        self.waves
            .iter()
            .map(|wave| format!("{}%:{}", wave.percent, format_delay(wave.after_s)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Check the plan makes sense: at least one wave, percents strictly increasing and
    /// ending at 100, delays never decreasing.
    pub fn validate(&self) -> Result<(), Error> {
        let spec = self.to_spec();
        let Some(last) = self.waves.last() else {
            return Err(invalid(&spec, "a rollout needs at least one wave"));
        };
        if self.waves.iter().any(|wave| wave.after_s > MAX_DELAY_S) {
            return Err(invalid(&spec, "a wave delay is more than a year"));
        }
        for pair in self.waves.windows(2) {
            if pair[1].percent <= pair[0].percent {
                return Err(invalid(
                    &spec,
                    format!(
                        "percents must increase from wave to wave ({}% is followed by {}%)",
                        pair[0].percent, pair[1].percent
                    ),
                ));
            }
            if pair[1].after_s < pair[0].after_s {
                return Err(invalid(
                    &spec,
                    format!(
                        "delays must not decrease from wave to wave ({} is followed by {})",
                        format_delay(pair[0].after_s),
                        format_delay(pair[1].after_s)
                    ),
                ));
            }
        }
        if last.percent != 100 {
            return Err(invalid(
                &spec,
                format!(
                    "the last wave must reach 100% (it reaches {}%), or some hosts never update",
                    last.percent
                ),
            ));
        }
        Ok(())
    }

    /// Refuse waves that hosts whose clocks differ by up to `max_skew_s` seconds (either way)
    /// could take out of order: consecutive delays must differ by at least twice the skew.
    pub fn check_clock_skew(&self, max_skew_s: u64) -> Result<(), Error> {
        for pair in self.waves.windows(2) {
            let gap = pair[1].after_s - pair[0].after_s.min(pair[1].after_s);
            if gap < max_skew_s.saturating_mul(2) {
                return Err(invalid(
                    &self.to_spec(),
                    format!(
                        "waves {}% at {} and {}% at {} are {} apart; with clocks up to {} off, hosts of the two waves could update out of order. Space the waves at least {} apart, or lower --max-clock-skew if your hosts' clocks are closer",
                        pair[0].percent,
                        format_delay(pair[0].after_s),
                        pair[1].percent,
                        format_delay(pair[1].after_s),
                        format_delay(gap),
                        format_delay(max_skew_s),
                        format_delay(max_skew_s.saturating_mul(2))
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The index of the wave a host at `percentile` belongs to (`None` only for a plan that
    /// does not reach 100%).
    pub fn wave_of(&self, percentile: u8) -> Option<usize> {
        self.waves.iter().position(|wave| percentile < wave.percent)
    }

    /// When wave `index` opens for a pointer published at `published_at`.
    pub fn opens_at(&self, index: usize, published_at: OffsetDateTime) -> Option<OffsetDateTime> {
        let wave = self.waves.get(index)?;
        let seconds = i64::try_from(wave.after_s).unwrap_or(i64::MAX / 2);
        published_at.checked_add(time::Duration::seconds(seconds))
    }

    /// True when a host at `percentile` may take the release at `now` (its own clock). An
    /// empty plan lets everyone update at once.
    pub fn host_may_update(
        &self,
        percentile: u8,
        published_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> bool {
        if self.waves.is_empty() {
            return true;
        }
        self.waves.iter().enumerate().any(|(index, wave)| {
            percentile < wave.percent
                && self
                    .opens_at(index, published_at)
                    .is_some_and(|opens| opens <= now)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn waves_parse_in_the_documented_form() {
        let rollout = Rollout::parse("5%:0,25%:10m,100%:1h").unwrap();
        assert_eq!(
            rollout.waves,
            vec![
                Wave {
                    percent: 5,
                    after_s: 0
                },
                Wave {
                    percent: 25,
                    after_s: 600
                },
                Wave {
                    percent: 100,
                    after_s: 3600
                },
            ]
        );
        assert_eq!(rollout.to_spec(), "5%:0,25%:10m,100%:1h");
        assert_eq!(
            Rollout::parse(" 50 : 30s , 100%:2d ").unwrap().to_spec(),
            "50%:30s,100%:2d"
        );
    }

    #[test]
    fn bad_waves_are_refused_with_the_reason() {
        for (spec, expected) in [
            ("", "no waves"),
            ("50%", "PERCENT%:DELAY"),
            ("0%:0,100%:1m", "1 to 100"),
            ("101%:0", "1 to 100"),
            ("x%:0,100%:1m", "1 to 100"),
            ("50%:10m,40%:20m,100%:1h", "must increase"),
            ("50%:10m,50%:20m,100%:1h", "must increase"),
            ("50%:20m,100%:10m", "must not decrease"),
            ("50%:0,90%:1h", "must reach 100%"),
            ("50%:10y,100%:1h", "unknown unit"),
            ("50%:-1,100%:1h", "whole number"),
            ("50%:99999999999999999999d,100%:1h", "whole number"),
            ("50%:0,100%:99999999999d", "more than a year"),
            ("50%:0,100%:367d", "more than a year"),
        ] {
            let error = Rollout::parse(spec).unwrap_err().to_string();
            assert!(error.contains(expected), "{spec:?}: {error}");
            assert!(error.contains("waves"), "{spec:?} names the flag: {error}");
        }
    }

    #[test]
    fn percentile_is_stable_and_spread() {
        let seed = rollout_seed("web-1", "hello", "stable");
        assert_eq!(seed, "web-1/hello/stable");
        assert_eq!(host_percentile(&seed), host_percentile(&seed));
        let mut buckets = [0u32; 10];
        for index in 0..10_000 {
            buckets[host_percentile(&format!("host-{index}/a/c")) as usize / 10] += 1;
        }
        assert!(
            buckets.iter().all(|count| (800..1200).contains(count)),
            "{buckets:?}"
        );
    }

    #[test]
    fn a_host_updates_when_its_wave_opens() {
        let rollout = Rollout::parse("10%:0,50%:10m,100%:1h").unwrap();
        let published = at(0);
        assert_eq!(rollout.wave_of(0), Some(0));
        assert_eq!(rollout.wave_of(9), Some(0));
        assert_eq!(rollout.wave_of(10), Some(1));
        assert_eq!(rollout.wave_of(99), Some(2));
        assert!(rollout.host_may_update(9, published, at(0)));
        assert!(!rollout.host_may_update(10, published, at(599)));
        assert!(rollout.host_may_update(10, published, at(600)));
        assert!(!rollout.host_may_update(99, published, at(3599)));
        assert!(rollout.host_may_update(99, published, at(3600)));
        assert!(Rollout { waves: vec![] }.host_may_update(99, published, at(-5)));
        assert_eq!(rollout.opens_at(1, published), Some(at(600)));
    }

    /// The documented clock-skew rule: with waves at least 2 × skew apart, every host of an
    /// earlier wave (judging on a clock up to `skew` off either way) is allowed to update no
    /// later than any host of a later wave, in true time.
    #[test]
    fn clock_skew_of_five_minutes_never_reorders_waves_that_pass_the_check() {
        let skew = 300;
        let rollout = Rollout::parse("5%:0,25%:10m,100%:1h").unwrap();
        rollout.check_clock_skew(skew).unwrap();
        let published = at(0);
        // For each host (percentile) and each clock offset, the first true second at which
        // the host's skewed clock lets it update.
        let first_true_second = |percentile: u8, offset: i64| -> i64 {
            (-400..4000)
                .find(|second| rollout.host_may_update(percentile, published, at(second + offset)))
                .expect("every host updates within the plan")
        };
        let offsets = [-(skew as i64), -120, -1, 0, 1, 120, skew as i64];
        let mut latest_of_wave = [i64::MIN; 3];
        let mut earliest_of_wave = [i64::MAX; 3];
        for percentile in 0..100u8 {
            let wave = rollout.wave_of(percentile).unwrap();
            for offset in offsets {
                let second = first_true_second(percentile, offset);
                latest_of_wave[wave] = latest_of_wave[wave].max(second);
                earliest_of_wave[wave] = earliest_of_wave[wave].min(second);
            }
        }
        for wave in 1..3 {
            assert!(
                latest_of_wave[wave - 1] <= earliest_of_wave[wave],
                "wave {} can finish at {} s but wave {wave} can start at {} s",
                wave - 1,
                latest_of_wave[wave - 1],
                earliest_of_wave[wave]
            );
        }
        // And the check is what makes it true: waves 2 minutes apart are refused at 5 minutes
        // of skew, and would indeed reorder.
        let tight = Rollout::parse("5%:0,100%:2m").unwrap();
        let error = tight.check_clock_skew(skew).unwrap_err().to_string();
        assert!(error.contains("out of order"), "{error}");
        assert!(tight.check_clock_skew(60).is_ok());
        let late_first_wave_host = (-400..4000)
            .find(|second| tight.host_may_update(0, published, at(second - skew as i64)))
            .unwrap();
        let early_second_wave_host = (-400..4000)
            .find(|second| tight.host_may_update(99, published, at(second + skew as i64)))
            .unwrap();
        assert!(early_second_wave_host < late_first_wave_host);
    }

    #[test]
    fn delays_format_back_to_their_short_form() {
        assert_eq!(format_delay(0), "0");
        assert_eq!(format_delay(45), "45s");
        assert_eq!(format_delay(90), "90s");
        assert_eq!(format_delay(600), "10m");
        assert_eq!(format_delay(7200), "2h");
        assert_eq!(format_delay(86_400), "1d");
    }
}
