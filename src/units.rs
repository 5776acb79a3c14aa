//! Human units for operators: byte sizes written in configs (`"10MiB"`, `"50MB"`, `1048576`)
//! and bytes, rates and durations in log lines and progress (`5.4 MiB`, `1.2 MiB/s`).
//!
//! Data flow: config text → [`parse_size`] → bytes; counters → [`bytes`] / [`rate`] → text.
//! Decimal suffixes (`KB`, `MB`, `GB`, `TB`) are powers of 1000, binary ones (`KiB`, `MiB`,
//! `GiB`, `TiB`) powers of 1024, as in IEC 80000-13; a bare number is bytes.

use std::time::Duration;

/// Why a size could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SizeError {
    /// No number, or a number too large for 64 bits.
    #[error(
        "{0:?} is not a size: write bytes, or a number with KB, MB, GB, TB, KiB, MiB, GiB or TiB"
    )]
    Invalid(String),
    /// A suffix that is not one of the accepted units.
    #[error("{text:?}: unknown unit {unit:?} (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)")]
    Unit {
        /// The size as written.
        text: String,
        /// The unit as written.
        unit: String,
    },
}

/// Parses a size: `1048576`, `"512KiB"`, `"10 MB"`, `"1.5GiB"` (case-insensitive units).
///
/// # Errors
/// [`SizeError`] naming the text when it is not a size.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    let invalid = || SizeError::Invalid(text.to_string());
    let n: f64 = num.parse().map_err(|_| invalid())?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(SizeError::Unit {
                text: text.to_string(),
                unit: unit.to_string(),
            });
        }
    };
    let v = n * mult as f64;
    if !v.is_finite() || v >= u64::MAX as f64 {
        return Err(invalid());
    }
    Ok(v.round() as u64)
}

/// Bytes in binary units with one decimal: `512 B`, `5.4 MiB`, `1.0 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

/// A transfer rate: `bytes` moved in `elapsed`, as `1.2 MiB/s` (`0 B/s` for no time).
pub fn rate(n: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return "0 B/s".into();
    }
    format!("{}/s", bytes((n as f64 / secs) as u64))
}

/// A duration rounded to whole seconds (below a second: milliseconds), in humantime style
/// (`1m 5s`, `250ms`).
pub fn duration(d: Duration) -> String {
    let d = if d >= Duration::from_secs(1) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(d.as_millis() as u64)
    };
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_decimal_and_binary_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("50 MB"), Ok(50_000_000));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("4kb"), Ok(4000));
        assert!(matches!(
            parse_size("10 parsecs"),
            Err(SizeError::Unit { .. })
        ));
        assert!(matches!(parse_size(""), Err(SizeError::Invalid(_))));
        assert!(matches!(parse_size("MiB"), Err(SizeError::Invalid(_))));
        assert!(matches!(
            parse_size("99999999999 TiB"),
            Err(SizeError::Invalid(_))
        ));
    }

    #[test]
    fn human_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(5 << 20), "5.0 MiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(rate(10 << 20, Duration::from_secs(4)), "2.5 MiB/s");
        assert_eq!(rate(1, Duration::ZERO), "0 B/s");
        assert_eq!(duration(Duration::from_millis(65_400)), "1m 5s");
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
    }
}
