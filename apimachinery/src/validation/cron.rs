//! CronJob schedules, accepted exactly as upstream's parser (robfig/cron v3
//! `ParseStandard`) accepts them, with its error texts, so `spec.schedule`
//! errors read the same as on a real cluster.
//!
//! Five fields (minute hour day-of-month month day-of-week) with `*`/`?`,
//! `a-b` ranges, `/step`, `,` lists and month/weekday names; or a descriptor
//! (`@hourly`, `@daily`, `@midnight`, `@weekly`, `@monthly`, `@yearly`,
//! `@annually`, `@every <duration>`); optionally prefixed by `TZ=<zone> ` or
//! `CRON_TZ=<zone> ` (which CronJob validation then rejects on its own).

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Field bit sets (bit n = value n allowed).
    Spec(CronSpec),
    /// `@every <duration>`, in whole seconds (at least 1, as upstream rounds).
    Every(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSpec {
    /// `TZ=`/`CRON_TZ=` zone when given.
    pub time_zone: Option<String>,
    pub minute: u64,
    pub hour: u64,
    pub dom: u64,
    pub month: u64,
    pub dow: u64,
    /// Whether day-of-month / day-of-week were `*` (or `?`): upstream then
    /// matches days with AND instead of OR.
    pub dom_star: bool,
    pub dow_star: bool,
}

impl CronSpec {
    /// Whether a wall-clock time matches (`month` 1-12, `dow` 0 = Sunday).
    pub fn matches(&self, minute: u32, hour: u32, dom: u32, month: u32, dow: u32) -> bool {
        let has = |set: u64, v: u32| v < 64 && set & (1u64 << v) != 0;
        let dom_ok = has(self.dom, dom);
        let dow_ok = has(self.dow, dow);
        // Upstream: if either day field is a wildcard, both must match;
        // otherwise either may.
        let day_ok = if self.dom_star || self.dow_star {
            dom_ok && dow_ok
        } else {
            dom_ok || dow_ok
        };
        has(self.minute, minute) && has(self.hour, hour) && has(self.month, month) && day_ok
    }
}

struct Bounds {
    min: u64,
    max: u64,
    names: &'static [(&'static str, u64)],
}

const MINUTES: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const HOURS: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
};
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        ("jan", 1),
        ("feb", 2),
        ("mar", 3),
        ("apr", 4),
        ("may", 5),
        ("jun", 6),
        ("jul", 7),
        ("aug", 8),
        ("sep", 9),
        ("oct", 10),
        ("nov", 11),
        ("dec", 12),
    ],
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &[
        ("sun", 0),
        ("mon", 1),
        ("tue", 2),
        ("wed", 3),
        ("thu", 4),
        ("fri", 5),
        ("sat", 6),
    ],
};

fn all_bits(min: u64, max: u64) -> u64 {
    (min..=max).fold(0, |acc, v| acc | (1u64 << v))
}

/// Parses a schedule the way `spec.schedule` is checked; the error is the
/// message upstream puts after `spec.schedule: Invalid value: "...": `.
pub fn parse_cron(spec: &str) -> Result<Schedule, String> {
    if spec.is_empty() {
        return Err("empty spec string".into());
    }
    let mut spec = spec;
    let mut time_zone = None;
    if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
        // Upstream slices up to the first space; without one it would
        // crash, so say what is missing instead.
        let Some(sp) = spec.find(' ') else {
            return Err(format!("missing schedule after time zone: {spec}"));
        };
        let eq = spec.find('=').unwrap_or(0);
        let zone = spec.get(eq + 1..sp).unwrap_or("");
        if !plausible_zone(zone) {
            return Err(format!(
                "provided bad location {zone}: unknown time zone {zone}"
            ));
        }
        time_zone = Some(zone.to_string());
        spec = spec[sp..].trim();
    }
    if spec.starts_with('@') {
        return parse_descriptor(spec, time_zone);
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    let (minute, _) = get_field(fields[0], &MINUTES)?;
    let (hour, _) = get_field(fields[1], &HOURS)?;
    let (dom, dom_star) = get_field(fields[2], &DOM)?;
    let (month, _) = get_field(fields[3], &MONTHS)?;
    let (dow, dow_star) = get_field(fields[4], &DOW)?;
    Ok(Schedule::Spec(CronSpec {
        time_zone,
        minute,
        hour,
        dom,
        month,
        dow,
        dom_star,
        dow_star,
    }))
}

fn parse_descriptor(d: &str, time_zone: Option<String>) -> Result<Schedule, String> {
    let spec = |minute, hour, dom, month, dow, dom_star, dow_star| {
        Ok(Schedule::Spec(CronSpec {
            time_zone: time_zone.clone(),
            minute,
            hour,
            dom,
            month,
            dow,
            dom_star,
            dow_star,
        }))
    };
    let every_dom = all_bits(1, 31);
    let every_month = all_bits(1, 12);
    let every_dow = all_bits(0, 6);
    match d {
        "@yearly" | "@annually" => return spec(1, 1, 1 << 1, 1 << 1, every_dow, false, true),
        "@monthly" => return spec(1, 1, 1 << 1, every_month, every_dow, false, true),
        "@weekly" => return spec(1, 1, every_dom, every_month, 1, true, false),
        "@daily" | "@midnight" => return spec(1, 1, every_dom, every_month, every_dow, true, true),
        "@hourly" => {
            return spec(
                1,
                all_bits(0, 23),
                every_dom,
                every_month,
                every_dow,
                true,
                true,
            );
        }
        _ => {}
    }
    if let Some(dur) = d.strip_prefix("@every ") {
        return match parse_go_duration(dur) {
            // Upstream rounds to whole seconds with a minimum of one.
            Ok(nanos) => Ok(Schedule::Every(
                u64::try_from(nanos / 1_000_000_000).unwrap_or(0).max(1),
            )),
            Err(e) => Err(format!("failed to parse duration {d}: {e}")),
        };
    }
    Err(format!("unrecognized descriptor: {d}"))
}

/// A comma-separated list of ranges; returns the bits and whether the field
/// was a plain wildcard (upstream's "star bit").
fn get_field(field: &str, b: &Bounds) -> Result<(u64, bool), String> {
    let mut bits = 0;
    let mut star = false;
    for expr in field.split(',').filter(|e| !e.is_empty()) {
        let (bit, s) = get_range(expr, b)?;
        bits |= bit;
        star |= s;
    }
    Ok((bits, star))
}

fn get_range(expr: &str, b: &Bounds) -> Result<(u64, bool), String> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_high.len() == 1;
    let (start, mut end, mut star) = if low_high[0] == "*" || low_high[0] == "?" {
        (b.min, b.max, true)
    } else {
        let start = parse_int_or_name(low_high[0], b.names)?;
        let end = match low_high.len() {
            1 => start,
            2 => parse_int_or_name(low_high[1], b.names)?,
            _ => return Err(format!("too many hyphens: {expr}")),
        };
        (start, end, false)
    };
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = must_parse_int(range_and_step[1])?;
            // "N/step" means "N-max/step".
            if single {
                end = b.max;
            }
            if step > 1 {
                star = false;
            }
            step
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < b.min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            b.min
        ));
    }
    if end > b.max {
        return Err(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            b.max
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    let bits = (start..=end)
        .step_by(usize::try_from(step).unwrap_or(usize::MAX))
        .fold(0u64, |acc, v| acc | (1u64 << v));
    Ok((bits, star))
}

fn parse_int_or_name(expr: &str, names: &[(&str, u64)]) -> Result<u64, String> {
    let lower = expr.to_ascii_lowercase();
    if let Some((_, v)) = names.iter().find(|(n, _)| *n == lower) {
        return Ok(*v);
    }
    must_parse_int(expr)
}

/// Go's `strconv.Atoi` plus upstream's negative check, with their messages.
fn must_parse_int(expr: &str) -> Result<u64, String> {
    let digits = expr.strip_prefix(['+', '-']).unwrap_or(expr);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "failed to parse int from {expr}: strconv.Atoi: parsing {expr:?}: invalid syntax"
        ));
    }
    let Ok(n) = expr.parse::<i64>() else {
        return Err(format!(
            "failed to parse int from {expr}: strconv.Atoi: parsing {expr:?}: value out of range"
        ));
    };
    u64::try_from(n).map_err(|_| format!("negative number ({n}) not allowed: {expr}"))
}

/// An IANA zone name's shape (no tz database here): `UTC`, `Area/City`.
pub(crate) fn plausible_zone(tz: &str) -> bool {
    !tz.is_empty()
        && !tz.eq_ignore_ascii_case("local")
        && tz.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && !part.starts_with('-')
                && part.len() <= 14
                && part
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_' | b'+'))
        })
}

/// Go's `time.ParseDuration` (`1h30m`, `90s`, `1.5h`, `-300ms`), in
/// nanoseconds; errors worded as Go words them.
pub fn parse_go_duration(s: &str) -> Result<i64, String> {
    let orig = s;
    let invalid = || format!("time: invalid duration {orig:?}");
    let mut s = s;
    let neg = match s.as_bytes().first() {
        Some(b'-') => {
            s = &s[1..];
            true
        }
        Some(b'+') => {
            s = &s[1..];
            false
        }
        _ => false,
    };
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &s[..int_len];
        s = &s[int_len..];
        let mut frac_part = "";
        if let Some(rest) = s.strip_prefix('.') {
            let n = rest.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &rest[..n];
            s = &rest[n..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = s
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(s.len(), |(i, _)| i);
        let unit = &s[..unit_len];
        s = &s[unit_len..];
        let scale: u128 = match unit {
            "" => return Err(format!("time: missing unit in duration {orig:?}")),
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(format!("time: unknown unit {unit:?} in duration {orig:?}")),
        };
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| invalid())?
        };
        let mut v = int.checked_mul(scale).ok_or_else(invalid)?;
        // Fractions truncate to the nanosecond as in Go.
        let mut frac_scale = scale;
        for d in frac_part.bytes() {
            frac_scale /= 10;
            if frac_scale == 0 {
                break;
            }
            v = v.saturating_add(u128::from(d - b'0') * frac_scale);
        }
        total = total.checked_add(v).ok_or_else(invalid)?;
        if total > i64::MAX as u128 {
            return Err(invalid());
        }
    }
    let total = i64::try_from(total).map_err(|_| invalid())?;
    Ok(if neg { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> String {
        parse_cron(s).unwrap_err()
    }

    #[test]
    fn accepts_standard_forms() {
        for s in [
            "* * * * *",
            "*/5 * * * *",
            "0 0 * * 0",
            "0 9-17 * * mon-fri",
            "15,45 */2 1 JAN,jul ?",
            "5/15 * * * *",
            "0 0 1-31/2 * SUN",
            "  0   0 * * *  ",
            "@hourly",
            "@daily",
            "@midnight",
            "@weekly",
            "@monthly",
            "@yearly",
            "@annually",
            "@every 1h30m",
            "TZ=UTC 0 0 * * *",
            "CRON_TZ=Europe/Berlin @daily",
        ] {
            assert!(parse_cron(s).is_ok(), "{s}: {:?}", parse_cron(s));
        }
    }

    #[test]
    fn rejects_like_upstream() {
        assert_eq!(err(""), "empty spec string");
        assert_eq!(
            err("* * * *"),
            "expected exactly 5 fields, found 4: [* * * *]"
        );
        assert_eq!(
            err("0 0 * * * *"),
            "expected exactly 5 fields, found 6: [0 0 * * * *]"
        );
        assert_eq!(
            err("60 * * * *"),
            "end of range (60) above maximum (59): 60"
        );
        assert_eq!(
            err("* * 0 * *"),
            "beginning of range (0) below minimum (1): 0"
        );
        assert_eq!(err("* * * * 7"), "end of range (7) above maximum (6): 7");
        assert_eq!(
            err("5-1 * * * *"),
            "beginning of range (5) beyond end of range (1): 5-1"
        );
        assert_eq!(
            err("*/0 * * * *"),
            "step of range should be a positive number: */0"
        );
        assert_eq!(err("1-2-3 * * * *"), "too many hyphens: 1-2-3");
        assert_eq!(err("*/2/3 * * * *"), "too many slashes: */2/3");
        assert_eq!(
            err("x * * * *"),
            "failed to parse int from x: strconv.Atoi: parsing \"x\": invalid syntax"
        );
        assert_eq!(err("@often"), "unrecognized descriptor: @often");
        assert_eq!(err("@Daily"), "unrecognized descriptor: @Daily");
        assert_eq!(
            err("@every 5"),
            "failed to parse duration @every 5: time: missing unit in duration \"5\""
        );
        assert_eq!(
            err("@every 5y"),
            "failed to parse duration @every 5y: time: unknown unit \"y\" in duration \"5y\""
        );
        assert!(err("TZ=Nowhere/../x * * * * *").starts_with("provided bad location"));
        assert!(parse_cron("TZ=UTC").is_err());
    }

    #[test]
    fn bits_and_matching() {
        let Ok(Schedule::Spec(s)) = parse_cron("*/15 9-17 * * mon-fri") else {
            panic!("parses");
        };
        assert_eq!(s.minute, 1 | 1 << 15 | 1 << 30 | 1 << 45);
        assert!(s.matches(30, 9, 3, 6, 1));
        assert!(!s.matches(30, 9, 3, 6, 0));
        // Both day fields restricted: either may match.
        let Ok(Schedule::Spec(s)) = parse_cron("0 0 1 * mon") else {
            panic!("parses");
        };
        assert!(s.matches(0, 0, 1, 5, 3));
        assert!(s.matches(0, 0, 2, 5, 1));
        assert!(!s.matches(0, 0, 2, 5, 2));
        assert_eq!(parse_cron("@every 90s"), Ok(Schedule::Every(90)));
        assert_eq!(parse_cron("@every 10ms"), Ok(Schedule::Every(1)));
        assert_eq!(parse_go_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("-2s"), Ok(-2_000_000_000));
        assert_eq!(parse_cron("@every -5m"), Ok(Schedule::Every(1)));
    }
}
