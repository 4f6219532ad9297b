//! Cron schedules as CronJobs use them: five fields (minute hour
//! day-of-month month day-of-week) with lists, ranges, steps and names,
//! the `@hourly`-style macros, and a time zone from `CRON_TZ=`/`TZ=` or the
//! CronJob's `timeZone`.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

#[derive(Debug, Clone)]
pub struct Schedule {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// Both day fields restricted: a day matches if either does (cron rule).
    day_or: bool,
    tz: TimeZone,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn value(s: &str, names: &[&str], base: u32) -> Result<u32, String> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(i as u32 + base);
    }
    s.parse().map_err(|_| format!("{s:?} is not a number"))
}

/// Bits `lo..=hi` set in a field; returns (bits, restricted).
fn field(
    spec: &str,
    lo: u32,
    hi: u32,
    names: &[&str],
    name_base: u32,
) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut restricted = true;
    for part in spec.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .map_err(|_| format!("bad step in {part:?}"))?,
            ),
            None => (part, 1),
        };
        if step == 0 {
            return Err(format!("zero step in {part:?}"));
        }
        let (a, b) = if range == "*" || range == "?" {
            if part == range {
                restricted = false;
            }
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, names, name_base)?, value(b, names, name_base)?)
        } else {
            let a = value(range, names, name_base)?;
            // "5/15" means 5-max every 15.
            (a, if part.contains('/') { hi } else { a })
        };
        if a < lo || b > hi || a > b {
            return Err(format!("{part:?} is out of range {lo}-{hi}"));
        }
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, restricted))
}

impl Schedule {
    /// Parses `schedule`; `time_zone` is the CronJob's `spec.timeZone`.
    pub fn parse(schedule: &str, time_zone: Option<&str>) -> Result<Self, String> {
        let mut s = schedule.trim();
        let mut tz_name = time_zone.map(str::to_string);
        for prefix in ["CRON_TZ=", "TZ="] {
            if let Some(rest) = s.strip_prefix(prefix) {
                let (tz, rest) = rest
                    .split_once(char::is_whitespace)
                    .ok_or("time zone without schedule")?;
                tz_name = Some(tz.to_string());
                s = rest.trim();
            }
        }
        let tz = match tz_name.as_deref() {
            None | Some("") | Some("UTC") | Some("Etc/UTC") => TimeZone::UTC,
            Some(name) => {
                TimeZone::get(name).map_err(|e| format!("unknown time zone {name:?}: {e}"))?
            }
        };
        let expanded = match s.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
            "@monthly" => "0 0 1 * *".into(),
            "@weekly" => "0 0 * * 0".into(),
            "@daily" | "@midnight" => "0 0 * * *".into(),
            "@hourly" => "0 * * * *".into(),
            _ => s.to_string(),
        };
        let f: Vec<&str> = expanded.split_whitespace().collect();
        if f.len() != 5 {
            return Err(format!(
                "expected 5 fields, found {} in {schedule:?}",
                f.len()
            ));
        }
        let (minutes, _) = field(f[0], 0, 59, &[], 0)?;
        let (hours, _) = field(f[1], 0, 23, &[], 0)?;
        let (days, dom_r) = field(f[2], 1, 31, &[], 0)?;
        let (months, _) = field(f[3], 1, 12, &MONTHS, 1)?;
        let (mut weekdays, dow_r) = field(f[4], 0, 7, &WEEKDAYS, 0)?;
        // Day-of-week 7 is Sunday too.
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        Ok(Self {
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: weekdays as u8,
            day_or: dom_r && dow_r,
            tz,
        })
    }

    fn day_matches(&self, d: Date) -> bool {
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        if self.day_or { dom || dow } else { dom && dow }
    }

    /// The first scheduled time strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let local = t.to_zoned(self.tz.clone()).datetime();
        let mut dt = local
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let limit = dt.year() + 5;
        while dt.year() <= limit {
            if self.months & (1 << dt.month()) == 0 {
                let first = Date::new(dt.year(), dt.month(), 1)
                    .ok()?
                    .checked_add(1.month())
                    .ok()?;
                dt = DateTime::from_parts(first, jiff::civil::Time::midnight());
                continue;
            }
            if !self.day_matches(dt.date()) {
                dt =
                    DateTime::from_parts(dt.date().tomorrow().ok()?, jiff::civil::Time::midnight());
                continue;
            }
            if self.hours & (1 << dt.hour()) == 0 {
                dt = dt
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if self.minutes & (1 << dt.minute()) == 0 {
                dt = dt.checked_add(1.minute()).ok()?;
                continue;
            }
            let ts = self
                .tz
                .to_ambiguous_zoned(dt)
                .compatible()
                .ok()?
                .timestamp();
            if ts > t {
                return Some(ts);
            }
            dt = dt.checked_add(1.minute()).ok()?;
        }
        None
    }

    /// The latest scheduled time in `(after, now]`, and how many were missed
    /// in between (capped at `cap`).
    pub fn most_recent(
        &self,
        after: Timestamp,
        now: Timestamp,
        cap: usize,
    ) -> (Option<Timestamp>, usize) {
        let mut last = None;
        let mut count = 0;
        let mut t = after;
        while let Some(n) = self.next_after(t) {
            if n > now {
                break;
            }
            last = Some(n);
            count += 1;
            if count >= cap {
                break;
            }
            t = n;
        }
        (last, count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn every_minute_and_steps() {
        let s = Schedule::parse("* * * * *", None).unwrap();
        assert_eq!(
            s.next_after(ts("2025-01-01T10:00:30Z")),
            Some(ts("2025-01-01T10:01:00Z"))
        );
        let s = Schedule::parse("*/15 9-17 * * mon-fri", None).unwrap();
        // Saturday → Monday 09:00.
        assert_eq!(
            s.next_after(ts("2025-01-04T12:00:00Z")),
            Some(ts("2025-01-06T09:00:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2025-01-06T09:00:00Z")),
            Some(ts("2025-01-06T09:15:00Z"))
        );
    }

    #[test]
    fn macros() {
        let s = Schedule::parse("@hourly", None).unwrap();
        assert_eq!(
            s.next_after(ts("2025-03-01T10:59:59Z")),
            Some(ts("2025-03-01T11:00:00Z"))
        );
        let s = Schedule::parse("@monthly", None).unwrap();
        assert_eq!(
            s.next_after(ts("2025-03-15T00:00:00Z")),
            Some(ts("2025-04-01T00:00:00Z"))
        );
        let s = Schedule::parse("@weekly", None).unwrap();
        assert_eq!(
            s.next_after(ts("2025-01-01T00:00:00Z")),
            Some(ts("2025-01-05T00:00:00Z"))
        );
        let s = Schedule::parse("@yearly", None).unwrap();
        assert_eq!(
            s.next_after(ts("2025-06-01T00:00:00Z")),
            Some(ts("2026-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // The 13th or any Friday.
        let s = Schedule::parse("0 0 13 * 5", None).unwrap();
        assert_eq!(
            s.next_after(ts("2025-01-01T00:00:00Z")),
            Some(ts("2025-01-03T00:00:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2025-01-11T00:00:00Z")),
            Some(ts("2025-01-13T00:00:00Z"))
        );
        // Sunday as 7.
        let s = Schedule::parse("0 0 * * 7", None).unwrap();
        assert_eq!(
            s.next_after(ts("2025-01-01T00:00:00Z")),
            Some(ts("2025-01-05T00:00:00Z"))
        );
    }

    #[test]
    fn time_zones() {
        let s = Schedule::parse("CRON_TZ=Europe/Berlin 0 9 * * *", None).unwrap();
        // 09:00 in Berlin in winter is 08:00 UTC.
        assert_eq!(
            s.next_after(ts("2025-01-01T00:00:00Z")),
            Some(ts("2025-01-01T08:00:00Z"))
        );
        let s = Schedule::parse("0 9 * * *", Some("America/New_York")).unwrap();
        assert_eq!(
            s.next_after(ts("2025-07-01T00:00:00Z")),
            Some(ts("2025-07-01T13:00:00Z"))
        );
        assert!(Schedule::parse("0 9 * * *", Some("Mars/Olympus")).is_err());
    }

    #[test]
    fn rejects_bad_schedules() {
        for bad in [
            "* * * *",
            "60 * * * *",
            "* 24 * * *",
            "*/0 * * * *",
            "a b c d e",
        ] {
            assert!(Schedule::parse(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn most_recent_counts_misses() {
        let s = Schedule::parse("*/10 * * * *", None).unwrap();
        let (last, n) = s.most_recent(ts("2025-01-01T00:00:00Z"), ts("2025-01-01T01:05:00Z"), 100);
        assert_eq!(last, Some(ts("2025-01-01T01:00:00Z")));
        assert_eq!(n, 6);
    }
}
