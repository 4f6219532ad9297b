//! Kubernetes resource quantities (`100m`, `1.5Gi`, `1e3`).
//!
//! A quantity is held as a count of nano-units in an `i128`: upstream rounds
//! every parsed value up to nano precision, so this is exact for everything
//! upstream accepts up to ~1.7e29 units, and comparison is plain integer
//! comparison. The suffix family of the input is kept to print it back the
//! way upstream canonicalises it (`1024Mi` -> `1Gi`, `1500m` -> `1500m`).

use std::cmp::Ordering;
use std::fmt;

use serde_json::Value;

const NANO: i128 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantityFormat {
    /// `Ki`, `Mi`, ... (powers of 1024)
    BinarySI,
    /// `n`, `u`, `m`, ``, `k`, `M`, ... (powers of 1000)
    DecimalSI,
    /// `1e3`
    DecimalExponent,
}

#[derive(Debug, Clone, Copy)]
pub struct Quantity {
    nanos: i128,
    format: QuantityFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error(
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )]
    FormatWrong,
    #[error("unable to parse quantity's suffix")]
    Suffix,
    #[error("unable to parse numeric part of quantity")]
    Numeric,
    #[error("quantity is too large")]
    TooLarge,
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}
impl Eq for Quantity {}
impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

fn pow10(e: u32) -> Option<i128> {
    10i128.checked_pow(e)
}

/// `n / d` rounded away from zero (upstream rounds up to the nano unit).
fn div_away(n: i128, d: i128) -> i128 {
    let q = n / d;
    if n % d == 0 {
        q
    } else if n < 0 {
        q - 1
    } else {
        q + 1
    }
}

/// Splits `[+-]digits[.digits]suffix` like upstream's parser does.
fn split(s: &str) -> Result<(bool, &str, &str, &str), QuantityError> {
    let (neg, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let int_end = rest
        .bytes()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let int = &rest[..int_end];
    let mut pos = int_end;
    let mut frac = "";
    if rest.as_bytes().get(pos) == Some(&b'.') {
        let f = &rest[pos + 1..];
        let fend = f
            .bytes()
            .position(|c| !c.is_ascii_digit())
            .unwrap_or(f.len());
        frac = &f[..fend];
        pos += 1 + fend;
    }
    if int.is_empty() && frac.is_empty() {
        return Err(QuantityError::FormatWrong);
    }
    let suffix = &rest[pos..];
    // Suffix shape: letters from the set, optional sign, digits.
    let letters = suffix
        .bytes()
        .position(|c| !b"eEinumkKMGTP".contains(&c))
        .unwrap_or(suffix.len());
    let mut tail = &suffix[letters..];
    if let Some(t) = tail.strip_prefix(['+', '-']) {
        tail = t;
    }
    if !tail.bytes().all(|c| c.is_ascii_digit()) {
        return Err(QuantityError::FormatWrong);
    }
    Ok((neg, int, frac, suffix))
}

/// (base, exponent, format) of a suffix.
fn interpret(suffix: &str) -> Option<(i128, i32, QuantityFormat)> {
    use QuantityFormat::*;
    let dec = [
        ("n", -9),
        ("u", -6),
        ("m", -3),
        ("", 0),
        ("k", 3),
        ("M", 6),
        ("G", 9),
        ("T", 12),
        ("P", 15),
        ("E", 18),
    ];
    if let Some((_, e)) = dec.iter().find(|(s, _)| *s == suffix) {
        return Some((10, *e, DecimalSI));
    }
    let bin = [
        ("Ki", 10),
        ("Mi", 20),
        ("Gi", 30),
        ("Ti", 40),
        ("Pi", 50),
        ("Ei", 60),
    ];
    if let Some((_, e)) = bin.iter().find(|(s, _)| *s == suffix) {
        return Some((2, *e, BinarySI));
    }
    let rest = suffix.strip_prefix(['e', 'E'])?;
    let e: i32 = rest.parse().ok()?;
    Some((10, e, DecimalExponent))
}

pub fn parse_quantity(s: &str) -> Result<Quantity, QuantityError> {
    let (neg, int, frac, suffix) = split(s)?;
    let (base, exp, format) = interpret(suffix).ok_or(QuantityError::Suffix)?;
    let frac = frac.trim_end_matches('0');
    let digits = format!("{}{}", int.trim_start_matches('0'), frac);
    let digits = digits.trim_start_matches('0');
    let mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| QuantityError::TooLarge)?
    };
    // value = mantissa * base^exp / 10^len(frac); scaled to nanos.
    let frac_len = i64::try_from(frac.len()).map_err(|_| QuantityError::Numeric)?;
    let nanos = if mantissa == 0 {
        0
    } else if base == 10 {
        let shift = i64::from(exp) + 9 - frac_len;
        if shift >= 0 {
            let p = u32::try_from(shift)
                .ok()
                .and_then(pow10)
                .ok_or(QuantityError::TooLarge)?;
            mantissa.checked_mul(p).ok_or(QuantityError::TooLarge)?
        } else {
            match u32::try_from(-shift).ok().and_then(pow10) {
                Some(p) => div_away(mantissa, p),
                None => 1, // far below a nano: rounds up to 1n
            }
        }
    } else {
        let scaled = mantissa
            .checked_mul(1i128 << exp)
            .ok_or(QuantityError::TooLarge)?;
        let shift = 9 - frac_len;
        if shift >= 0 {
            let p = u32::try_from(shift)
                .ok()
                .and_then(pow10)
                .ok_or(QuantityError::TooLarge)?;
            scaled.checked_mul(p).ok_or(QuantityError::TooLarge)?
        } else {
            match u32::try_from(-shift).ok().and_then(pow10) {
                Some(p) => div_away(scaled, p),
                None => 1,
            }
        }
    };
    Ok(Quantity {
        nanos: if neg { -nanos } else { nanos },
        format,
    })
}

/// A quantity from JSON: strings as written, numbers via their text.
pub fn quantity_from_value(v: &Value) -> Result<Quantity, QuantityError> {
    match v {
        Value::String(s) => parse_quantity(s),
        Value::Number(n) => parse_quantity(&n.to_string()),
        _ => Err(QuantityError::FormatWrong),
    }
}

impl Quantity {
    pub fn zero() -> Self {
        Self {
            nanos: 0,
            format: QuantityFormat::DecimalSI,
        }
    }
    pub fn from_nanos(nanos: i128, format: QuantityFormat) -> Self {
        Self { nanos, format }
    }
    pub fn from_milli(milli: i64, format: QuantityFormat) -> Self {
        Self::from_nanos(i128::from(milli) * 1_000_000, format)
    }
    pub fn from_units(units: i64, format: QuantityFormat) -> Self {
        Self::from_nanos(i128::from(units) * NANO, format)
    }
    pub fn nanos(&self) -> i128 {
        self.nanos
    }
    pub fn format(&self) -> QuantityFormat {
        self.format
    }
    /// Value in thousandths, rounded up (upstream `MilliValue`).
    pub fn milli_value(&self) -> i128 {
        div_up(self.nanos, 1_000_000)
    }
    /// Value in whole units, rounded up (upstream `Value`).
    pub fn value(&self) -> i128 {
        div_up(self.nanos, NANO)
    }
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }
    /// Sum keeping the left side's format (upstream `Add`).
    pub fn saturating_add(&self, other: &Quantity) -> Quantity {
        Quantity {
            nanos: self.nanos.saturating_add(other.nanos),
            format: self.format,
        }
    }
    pub fn saturating_sub(&self, other: &Quantity) -> Quantity {
        Quantity {
            nanos: self.nanos.saturating_sub(other.nanos),
            format: self.format,
        }
    }

    /// The canonical text upstream would serialise this quantity as.
    pub fn canonical(&self) -> String {
        if self.nanos == 0 {
            return "0".into();
        }
        let sign = if self.nanos < 0 { "-" } else { "" };
        let abs = self.nanos.unsigned_abs();
        let nano = NANO.unsigned_abs();
        // Binary only for whole values of at least 1024; anything else would
        // need a fraction, so upstream falls back to decimal.
        if self.format == QuantityFormat::BinarySI && abs >= 1024 * nano && abs.is_multiple_of(nano)
        {
            let mut v = abs / nano;
            let mut k = 0;
            while k < 6 && v.is_multiple_of(1024) {
                v /= 1024;
                k += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][k];
            return format!("{sign}{v}{suffix}");
        }
        // Largest exponent (multiple of 3, from -9) dividing the value.
        let mut m = abs;
        let mut e: i32 = -9;
        let max_e = if self.format == QuantityFormat::DecimalExponent {
            i32::MAX
        } else {
            18
        };
        while e < max_e && m.is_multiple_of(1000) {
            m /= 1000;
            e += 3;
        }
        let suffix = match self.format {
            QuantityFormat::DecimalExponent => {
                if e == 0 {
                    String::new()
                } else {
                    format!("e{e}")
                }
            }
            _ => match e {
                -9 => "n",
                -6 => "u",
                -3 => "m",
                0 => "",
                3 => "k",
                6 => "M",
                9 => "G",
                12 => "T",
                15 => "P",
                _ => "E",
            }
            .to_string(),
        };
        format!("{sign}{m}{suffix}")
    }
}

fn div_up(n: i128, d: i128) -> i128 {
    let q = n / d;
    if n % d > 0 { q + 1 } else { q }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

/// Canonical text of a JSON quantity, or the input text if it does not parse.
pub fn canonical_string(v: &Value) -> String {
    match quantity_from_value(v) {
        Ok(q) => q.canonical(),
        Err(_) => match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        parse_quantity(s).unwrap().canonical()
    }

    #[test]
    fn parses_and_compares() {
        assert_eq!(parse_quantity("100m").unwrap().milli_value(), 100);
        assert_eq!(parse_quantity("1").unwrap().milli_value(), 1000);
        assert_eq!(parse_quantity("1Ki").unwrap().value(), 1024);
        assert_eq!(parse_quantity("1.5Gi").unwrap().value(), 1_610_612_736);
        assert_eq!(parse_quantity("1e3").unwrap().value(), 1000);
        assert_eq!(parse_quantity("1E3").unwrap().value(), 1000);
        assert_eq!(
            parse_quantity("2E").unwrap().value(),
            2_000_000_000_000_000_000
        );
        assert_eq!(parse_quantity("-5").unwrap().value(), -5);
        assert_eq!(parse_quantity(".5").unwrap().milli_value(), 500);
        assert!(parse_quantity("1Gi").unwrap() > parse_quantity("1G").unwrap());
        assert_eq!(
            parse_quantity("1000m").unwrap(),
            parse_quantity("1").unwrap()
        );
        // Sub-nano precision rounds up.
        assert_eq!(parse_quantity("0.0000000001").unwrap().nanos(), 1);
        assert_eq!(parse_quantity("1e-20").unwrap().nanos(), 1);
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(parse_quantity(""), Err(QuantityError::FormatWrong));
        assert_eq!(parse_quantity("abc"), Err(QuantityError::FormatWrong));
        assert_eq!(parse_quantity("1x"), Err(QuantityError::FormatWrong));
        assert_eq!(parse_quantity("1Kii"), Err(QuantityError::Suffix));
        assert_eq!(parse_quantity("1 Gi"), Err(QuantityError::FormatWrong));
        assert_eq!(parse_quantity("1e100"), Err(QuantityError::TooLarge));
        assert!(quantity_from_value(&serde_json::json!(true)).is_err());
        assert_eq!(
            quantity_from_value(&serde_json::json!(2)).unwrap().value(),
            2
        );
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(canon("1024Mi"), "1Gi");
        assert_eq!(canon("1.5Gi"), "1536Mi");
        assert_eq!(canon("1000m"), "1");
        assert_eq!(canon("1500m"), "1500m");
        assert_eq!(canon("0.5"), "500m");
        assert_eq!(canon("2000"), "2k");
        assert_eq!(canon("1500"), "1500");
        assert_eq!(canon("512Ki"), "512Ki");
        assert_eq!(canon("100Ki"), "100Ki");
        assert_eq!(canon("0.5Ki"), "512");
        assert_eq!(canon("12e6"), "12e6");
        assert_eq!(canon("0"), "0");
        assert_eq!(canon("-1Gi"), "-1Gi");
        assert_eq!(canon("1e3"), "1e3");
        assert_eq!(
            Quantity::from_milli(250, QuantityFormat::DecimalSI).to_string(),
            "250m"
        );
    }
}
