//! Update windows (`window = ["Mon-Fri 02:00-05:00 Europe/Berlin"]`): the times of the week
//! at which an app may be installed and restarted. Outside them a new release is downloaded
//! and verified, then waits; a pointer marked urgent (`ferry publish --urgent`) does not.
//!
//! A window is `[DAYS] START-END [ZONE]`: DAYS a list of days and day ranges (`Mon-Fri`,
//! `Sat,Sun`, `Fri-Mon`; every day when left out), START and END as `HH:MM` or `HH:MM:SS`
//! (an END before START runs past midnight, and DAYS names the day it starts), ZONE an IANA
//! name read from the system's zoneinfo (`Europe/Berlin`, `UTC`; the host's own zone when
//! left out). Times are wall-clock times in that zone, so a window keeps its hours across
//! daylight-saving changes.

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

const DAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Monday),
    ("tue", Weekday::Tuesday),
    ("wed", Weekday::Wednesday),
    ("thu", Weekday::Thursday),
    ("fri", Weekday::Friday),
    ("sat", Weekday::Saturday),
    ("sun", Weekday::Sunday),
];

/// One window, as parsed from its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The text it was parsed from (shown in reports).
    pub text: String,
    /// The days it opens on, Monday first.
    days: [bool; 7],
    start: Time,
    end: Time,
    /// The IANA zone name; `None` is the host's own zone.
    zone: Option<String>,
}

/// An app's windows: open when any one is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Windows(pub Vec<Window>);

fn day_index(name: &str) -> Option<usize> {
    let lower = name.trim().to_ascii_lowercase();
    let short = lower.get(..3)?;
    let index = DAYS.iter().position(|(day, _)| *day == short)?;
    // Accept "Mon", "Monday" (and "mon"), not "Monkey".
    let full = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ][index];
    (lower.len() == 3 || lower == full).then_some(index)
}

fn parse_days(text: &str) -> Result<[bool; 7], String> {
    let mut days = [false; 7];
    for part in text.split(',') {
        let (first, last) = match part.split_once('-') {
            Some((first, last)) => (first, last),
            None => (part, part),
        };
        let (Some(first), Some(last)) = (day_index(first), day_index(last)) else {
            return Err(format!(
                "{part:?} is not a day or a range of days (write e.g. Mon-Fri or Sat,Sun)"
            ));
        };
        let mut day = first;
        loop {
            days[day] = true;
            if day == last {
                break;
            }
            day = (day + 1) % 7;
        }
    }
    Ok(days)
}

fn parse_time(text: &str) -> Result<Time, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let number = |part: &str, most: i8| {
        part.parse::<i8>()
            .ok()
            .filter(|value| (0..=most).contains(value) && part.len() == 2)
    };
    let parsed = match parts.as_slice() {
        [hour, minute] => number(hour, 23)
            .zip(number(minute, 59))
            .map(|(h, m)| (h, m, 0)),
        [hour, minute, second] => number(hour, 23)
            .zip(number(minute, 59))
            .zip(number(second, 59))
            .map(|((h, m), s)| (h, m, s)),
        _ => None,
    };
    let (hour, minute, second) =
        parsed.ok_or_else(|| format!("{text:?} is not a time of day (write HH:MM or HH:MM:SS)"))?;
    Time::new(hour, minute, second, 0).map_err(|error| error.to_string())
}

impl Window {
    /// Parse one window; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Window, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let (days, rest) = match words.first() {
            Some(first) if !first.contains(':') => (parse_days(first)?, &words[1..]),
            Some(_) => ([true; 7], &words[..]),
            None => return Err("the window is empty".into()),
        };
        let (range, zone) = match rest {
            [range] => (*range, None),
            [range, zone] => (*range, Some((*zone).to_owned())),
            _ => {
                return Err(
                    "expected [DAYS] START-END [ZONE], e.g. \"Mon-Fri 02:00-05:00 Europe/Berlin\""
                        .into(),
                );
            }
        };
        let Some((start, end)) = range.split_once('-') else {
            return Err(format!(
                "{range:?} is not a time range (write START-END, e.g. 02:00-05:00)"
            ));
        };
        let (start, end) = (parse_time(start)?, parse_time(end)?);
        if start == end {
            return Err(format!(
                "{range:?} opens and closes at the same time; leave `window` out to allow any time"
            ));
        }
        if let Some(zone) = &zone {
            TimeZone::get(zone).map_err(|error| {
                format!(
                    "time zone {zone:?} is unknown here ({error}); use an IANA name such as Europe/Berlin or UTC (the zoneinfo comes from Debian's tzdata)"
                )
            })?;
        }
        Ok(Window {
            text: text.trim().to_owned(),
            days,
            start,
            end,
            zone,
        })
    }

    fn zone(&self) -> TimeZone {
        match &self.zone {
            // Checked when parsed; a zone that vanished since (tzdata removed) falls back
            // to UTC rather than failing every cycle.
            Some(name) => TimeZone::get(name).unwrap_or(TimeZone::UTC),
            None => TimeZone::system(),
        }
    }

    fn opens_on(&self, date: Date) -> bool {
        self.days[date.weekday().to_monday_zero_offset() as usize]
    }

    /// The instants at which the window opening on `date` opens and closes.
    fn span_on(&self, date: Date, zone: &TimeZone) -> Option<(Timestamp, Timestamp)> {
        let open = date.to_datetime(self.start).to_zoned(zone.clone()).ok()?;
        let close_date = if self.end > self.start {
            date
        } else {
            date.tomorrow().ok()?
        };
        let close = close_date
            .to_datetime(self.end)
            .to_zoned(zone.clone())
            .ok()?;
        Some((open.timestamp(), close.timestamp()))
    }

    /// Whether the window is open at `now`.
    pub fn is_open(&self, now: Timestamp) -> bool {
        let zone = self.zone();
        let today = now.to_zoned(zone.clone()).date();
        // A window past midnight may have opened yesterday.
        [today.yesterday().ok(), Some(today)]
            .into_iter()
            .flatten()
            .filter(|date| self.opens_on(*date))
            .filter_map(|date| self.span_on(date, &zone))
            .any(|(open, close)| open <= now && now < close)
    }

    /// The next time after `now` the window opens (within the next eight days).
    pub fn next_open(&self, now: Timestamp) -> Option<Zoned> {
        let zone = self.zone();
        let mut date = now.to_zoned(zone.clone()).date();
        for _ in 0..9 {
            if self.opens_on(date) {
                if let Some((open, _)) = self.span_on(date, &zone) {
                    if open > now {
                        return Some(open.to_zoned(zone));
                    }
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }
}

impl Windows {
    /// Parse the `window` list of an agent file.
    pub fn parse(texts: &[String]) -> Result<Windows, String> {
        texts
            .iter()
            .map(|text| Window::parse(text).map_err(|error| format!("{text:?}: {error}")))
            .collect::<Result<Vec<_>, _>>()
            .map(Windows)
    }

    /// True when no window is set (any time is fine) or one is open at `now`.
    pub fn is_open(&self, now: Timestamp) -> bool {
        self.0.is_empty() || self.0.iter().any(|window| window.is_open(now))
    }

    /// Why an install must wait at `now`, or `None` when a window is open.
    pub fn wait_reason(&self, now: Timestamp) -> Option<String> {
        if self.is_open(now) {
            return None;
        }
        let next = self
            .0
            .iter()
            .filter_map(|window| window.next_open(now).map(|at| (at, &window.text)))
            .min_by_key(|(at, _)| at.timestamp());
        Some(match next {
            Some((at, text)) => format!(
                "waiting for the update window until {} ({text})",
                at.strftime("%Y-%m-%d %H:%M:%S %Z")
            ),
            None => "waiting for an update window (none opens within a week)".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn weekday_windows_open_and_close_in_their_zone() {
        let window = Window::parse("Mon-Fri 02:00-05:00 Europe/Berlin").unwrap();
        // 2026-12-02 is a Wednesday; Berlin is UTC+1 in December.
        assert!(window.is_open(at("2026-12-02T01:30:00Z")));
        assert!(!window.is_open(at("2026-12-02T04:00:00Z")), "05:00 Berlin");
        assert!(!window.is_open(at("2026-12-02T00:59:59Z")));
        // Saturday: closed all day, and it next opens on Monday.
        let saturday = at("2026-12-05T01:30:00Z");
        assert!(!window.is_open(saturday));
        let next = window.next_open(saturday).unwrap();
        assert_eq!(next.timestamp(), at("2026-12-07T01:00:00Z"));
    }

    #[test]
    fn a_window_past_midnight_belongs_to_the_day_it_starts() {
        let window = Window::parse("Fri 22:00-02:00 UTC").unwrap();
        assert!(window.is_open(at("2026-12-04T23:00:00Z")), "Friday night");
        assert!(window.is_open(at("2026-12-05T01:59:59Z")), "early Saturday");
        assert!(
            !window.is_open(at("2026-12-05T23:00:00Z")),
            "Saturday night"
        );
    }

    #[test]
    fn seconds_days_lists_and_every_day() {
        let window = Window::parse("10:00:05-10:00:10 UTC").unwrap();
        assert!(window.is_open(at("2026-12-06T10:00:07Z")));
        assert!(!window.is_open(at("2026-12-06T10:00:10Z")));
        let days = Window::parse("Sat,Sun,Wed 00:00-23:59").unwrap();
        assert!(days.is_open(at("2026-12-02T12:00:00Z")), "Wednesday");
        assert!(!days.is_open(at("2026-12-03T12:00:00Z")), "Thursday");
        let wrapping = Window::parse("Fri-Mon 00:00-23:59 UTC").unwrap();
        assert!(wrapping.is_open(at("2026-12-07T12:00:00Z")), "Monday");
        assert!(!wrapping.is_open(at("2026-12-08T12:00:00Z")), "Tuesday");
    }

    #[test]
    fn bad_windows_say_what_is_wrong() {
        for (text, says) in [
            ("Mon-Fry 02:00-05:00", "not a day"),
            ("Mon 2:00-05:00", "not a time of day"),
            ("Mon 02:00-25:00", "not a time of day"),
            ("Mon 02:00", "not a time range"),
            ("Mon 02:00-02:00", "same time"),
            ("Mon 02:00-05:00 Mars/Olympus", "unknown here"),
            ("", "empty"),
        ] {
            let error = Window::parse(text).unwrap_err();
            assert!(error.contains(says), "{text:?}: {error}");
        }
    }

    #[test]
    fn the_wait_reason_names_the_next_opening() {
        let windows = Windows::parse(&["Mon-Fri 02:00-05:00 UTC".into()]).unwrap();
        let reason = windows.wait_reason(at("2026-12-05T12:00:00Z")).unwrap();
        assert!(
            reason.contains("until 2026-12-07 02:00:00 UTC (Mon-Fri 02:00-05:00 UTC)"),
            "{reason}"
        );
        assert_eq!(windows.wait_reason(at("2026-12-07T03:00:00Z")), None);
        assert_eq!(
            Windows::default().wait_reason(at("2026-12-05T12:00:00Z")),
            None
        );
    }
}
