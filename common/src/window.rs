//! Maintenance windows: when a shard may be migrated. A window is recurring or one-off, always
//! in a time zone from the IANA database (bundled, so every host reads the same rules):
//!
//! - `Sat 02:00-04:00 Europe/Berlin`, `Mon-Fri 22:00-02:00 America/New_York` (an end at or
//!   before the start is on the next day), `Sat,Sun 01:00-05:00 UTC`, `daily 03:00-04:00 UTC`;
//! - `2026-12-24T01:00/2h UTC`: from that wall-clock time, for that long.
//!
//! Wall-clock times are read in the zone on each day, as iCalendar and most calendars read
//! them: a time the clocks skip moves forward by the jump (02:30 on the night they go from
//! 02:00 to 03:00 reads 03:30), a time they repeat is its first occurrence, and a recurring
//! window's length follows the wall clock (02:00-04:00 lasts one hour that night).

use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan as _};

#[cfg(test)]
mod tests;

/// Why a window cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "window {spec:?}: {problem}; write e.g. \"Sat 02:00-04:00 Europe/Berlin\" or \"2026-12-24T01:00/2h UTC\""
)]
pub struct WindowError {
    pub spec: String,
    pub problem: String,
}

/// A maintenance window.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    schedule: Schedule,
    zone: TimeZone,
    spec: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Schedule {
    /// On each of `days` (Monday first), from `start` to `end` wall-clock time.
    Weekly {
        days: [bool; 7],
        start: Time,
        end: Time,
    },
    /// Once, from `start` wall-clock time, for `length`.
    Once {
        start: DateTime,
        length: SignedDuration,
    },
}

/// One opening of a window: from `opens` (inclusive) to `closes` (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opening {
    pub opens: Timestamp,
    pub closes: Timestamp,
}

impl Window {
    pub fn parse(spec: &str) -> Result<Self, WindowError> {
        let fail = |problem: String| WindowError {
            spec: spec.to_owned(),
            problem,
        };
        let parts: Vec<&str> = spec.split_whitespace().collect();
        let (schedule, zone) = match parts.as_slice() {
            [once, zone] => (once_schedule(once).map_err(fail)?, *zone),
            [days, hours, zone] => (weekly_schedule(days, hours).map_err(fail)?, *zone),
            _ => {
                return Err(fail(
                    "expected `<days> HH:MM-HH:MM <zone>` or `<date>T<time>/<length> <zone>`"
                        .to_owned(),
                ));
            }
        };
        let zone = TimeZone::get(zone).map_err(|_| {
            fail(format!(
                "{zone:?} is not a time zone of the IANA database (e.g. Europe/Berlin, UTC)"
            ))
        })?;
        Ok(Self {
            schedule,
            zone,
            spec: spec.to_owned(),
        })
    }

    /// The window as it was written.
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// The opening that contains `at`, else the first one after it; none when the window
    /// never opens again.
    pub fn opening(&self, at: Timestamp) -> Option<Opening> {
        match &self.schedule {
            Schedule::Once { start, length } => {
                let opens = self.instant(*start)?;
                let closes = opens.checked_add(*length).ok()?;
                (at < closes).then_some(Opening { opens, closes })
            }
            Schedule::Weekly { days, start, end } => {
                let today = self.zone.to_datetime(at).date();
                // Yesterday's opening may run past midnight into today.
                (-1..=7_i64)
                    .filter_map(|offset| today.checked_add(offset.days()).ok())
                    .filter(|date| days[weekday_index(date.weekday())])
                    .filter_map(|date| self.daily(date, *start, *end))
                    .find(|opening| at < opening.closes)
            }
        }
    }

    /// The opening that starts on `date`.
    fn daily(&self, date: Date, start: Time, end: Time) -> Option<Opening> {
        let closing_day = if end <= start {
            date.tomorrow().ok()?
        } else {
            date
        };
        Some(Opening {
            opens: self.instant(date.to_datetime(start))?,
            closes: self.instant(closing_day.to_datetime(end))?,
        })
    }

    /// `wall` in the window's zone: in a gap, moved forward by the gap; when it occurs twice,
    /// the first.
    fn instant(&self, wall: DateTime) -> Option<Timestamp> {
        self.zone.to_ambiguous_timestamp(wall).compatible().ok()
    }
}

/// Monday is 0.
fn weekday_index(day: Weekday) -> usize {
    usize::from(day.to_monday_zero_offset().unsigned_abs())
}

/// `2026-12-24T01:00/2h`.
fn once_schedule(text: &str) -> Result<Schedule, String> {
    let (start, length) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} has no `/<length>` after its start"))?;
    let start: DateTime = start
        .parse()
        .map_err(|_| format!("{start:?} is not a date and time like 2026-12-24T01:00"))?;
    let length = crate::duration::parse(length)?;
    if length.is_zero() {
        return Err("its length is zero".to_owned());
    }
    let length = SignedDuration::try_from(length).map_err(|error| error.to_string())?;
    Ok(Schedule::Once { start, length })
}

/// `Sat 02:00-04:00`, `Mon-Fri 22:00-02:00`, `Sat,Sun …`, `daily …`.
fn weekly_schedule(days: &str, hours: &str) -> Result<Schedule, String> {
    let (start, end) = hours
        .split_once('-')
        .ok_or_else(|| format!("{hours:?} is not a range like 02:00-04:00"))?;
    let time = |text: &str| {
        text.parse::<Time>()
            .map_err(|_| format!("{text:?} is not a time like 02:00"))
    };
    let (start, end) = (time(start)?, time(end)?);
    if start == end {
        return Err("it starts and ends at the same time".to_owned());
    }
    Ok(Schedule::Weekly {
        days: day_set(days)?,
        start,
        end,
    })
}

/// The days a window opens on: `daily`, `Sat`, `Sat,Sun`, `Mon-Fri` (wrapping: `Fri-Mon`).
fn day_set(text: &str) -> Result<[bool; 7], String> {
    if text.eq_ignore_ascii_case("daily") {
        return Ok([true; 7]);
    }
    let mut days = [false; 7];
    for part in text.split(',') {
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (day(first)?, day(last)?);
                let mut index = first;
                loop {
                    days[index] = true;
                    if index == last {
                        break;
                    }
                    index = (index + 1) % 7;
                }
            }
            None => days[day(part)?] = true,
        }
    }
    Ok(days)
}

/// `Mon` … `Sun` (any case, the full name too); Monday is 0.
fn day(text: &str) -> Result<usize, String> {
    const NAMES: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    let lower = text.to_ascii_lowercase();
    NAMES
        .iter()
        .position(|name| lower.len() >= 3 && name.starts_with(&lower))
        .ok_or_else(|| format!("{text:?} is not a day (Mon … Sun, or daily)"))
}

/// Where a shard stands against its windows at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// No window restricts it.
    Unrestricted,
    /// A window is open until `closes`.
    Open { closes: Timestamp },
    /// Every window is closed; the next opens at `opens`, if one ever does.
    Closed { opens: Option<Timestamp> },
}

/// A shard's windows: it may be migrated while any of them is open.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Windows(Vec<Window>);

impl Windows {
    /// Every spec read; the first that cannot be is the error.
    pub fn parse<S: AsRef<str>>(specs: &[S]) -> Result<Self, WindowError> {
        specs
            .iter()
            .map(|spec| Window::parse(spec.as_ref()))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Where they stand at `at`; an open window that another open or adjoining one extends
    /// closes with the last of them.
    pub fn standing(&self, at: Timestamp) -> Standing {
        if self.0.is_empty() {
            return Standing::Unrestricted;
        }
        let openings: Vec<Opening> = self.0.iter().filter_map(|w| w.opening(at)).collect();
        let Some(mut closes) = openings
            .iter()
            .filter(|opening| opening.opens <= at)
            .map(|opening| opening.closes)
            .max()
        else {
            let opens = openings.iter().map(|opening| opening.opens).min();
            return Standing::Closed { opens };
        };
        // An opening that starts before this one closes carries it on.
        while let Some(later) = self
            .0
            .iter()
            .filter_map(|w| w.opening(closes))
            .filter(|opening| opening.opens <= closes)
            .map(|opening| opening.closes)
            .max()
            .filter(|later| *later > closes)
        {
            closes = later;
        }
        Standing::Open { closes }
    }
}

/// `3h12m`, `45s`: how far away `then` is from `now`, for people (`0s` when it is past).
pub fn humane_until(now: Timestamp, then: Timestamp) -> String {
    humane(std::time::Duration::try_from(then.duration_since(now)).unwrap_or_default())
}

/// `3h12m`, `45s`, `2d5h`: a duration for people.
pub fn humane(duration: std::time::Duration) -> String {
    let seconds = duration.as_secs();
    let (days, hours, minutes) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, minutes) => format!("{minutes}m"),
        (0, hours, minutes) => format!("{hours}h{minutes:02}m"),
        (days, hours, _) => format!("{days}d{hours}h"),
    }
}

/// A moment as a command line gives it: RFC 3339 (`2026-12-24T01:00:00Z`,
/// `2026-12-24T02:00:00+01:00`) or a wall-clock time and a zone (`2026-12-24T01:00
/// Europe/Berlin`).
pub fn parse_instant(text: &str) -> Result<Timestamp, String> {
    if let Ok(instant) = text.parse::<Timestamp>() {
        return Ok(instant);
    }
    let refused = || {
        format!(
            "{text:?} is not a time: write 2026-12-24T01:00:00Z or \"2026-12-24T01:00 Europe/Berlin\""
        )
    };
    let (wall, zone) = text.split_once(' ').ok_or_else(refused)?;
    let wall: DateTime = wall.parse().map_err(|_| refused())?;
    let zone = TimeZone::get(zone.trim()).map_err(|_| {
        format!("{zone:?} is not a time zone of the IANA database (e.g. Europe/Berlin, UTC)")
    })?;
    zone.to_ambiguous_timestamp(wall)
        .compatible()
        .map_err(|error| format!("{text:?}: {error}"))
}
