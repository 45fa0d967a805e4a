//! Durations in policies: a whole number and a unit (`s`, `m`, `h`, `d`, `w`), combinable
//! (`"1d12h"`), as in `rotate = "90d"`.

use std::time::Duration;

/// Parses `"90d"`, `"12h"`, `"1d12h"`. The error says what was expected.
pub fn parse(text: &str) -> Result<Duration, String> {
    let expected = "expected a whole number followed by s, m, h, d or w, e.g. \"90d\" or \"1d12h\"";
    if text.is_empty() {
        return Err(format!("empty duration ({expected})"));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => {
                return Err(format!(
                    "bad duration {text:?}: unknown unit {c:?} ({expected})"
                ));
            }
        };
        let n: u64 = digits.parse().map_err(|_| {
            format!("bad duration {text:?}: a number must come before {c:?} ({expected})")
        })?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| format!("duration {text:?} is too long"))?;
    }
    if !digits.is_empty() {
        return Err(format!(
            "bad duration {text:?}: {digits} has no unit ({expected})"
        ));
    }
    if total == 0 {
        return Err(format!(
            "duration {text:?} is zero (expected a positive duration)"
        ));
    }
    Ok(Duration::from_secs(total))
}

/// Formats a duration the way policies write it (`90d`, `1d12h`, `45s`).
pub fn format(duration: Duration) -> String {
    let mut secs = duration.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("w", 604_800),
        ("d", 86_400),
        ("h", 3600),
        ("m", 60),
        ("s", 1),
    ] {
        // Weeks only when they divide evenly: "10d" reads better than "1w3d".
        let whole = unit != "w" || secs.is_multiple_of(604_800);
        if secs >= size && whole {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse("90d").unwrap(), Duration::from_secs(90 * 86_400));
        assert_eq!(parse("1d12h").unwrap(), Duration::from_secs(36 * 3600));
        assert_eq!(format(parse("1d12h").unwrap()), "1d12h");
        assert_eq!(format(parse("2w").unwrap()), "2w");
        assert_eq!(format(parse("90d").unwrap()), "90d");
        assert!(parse("90x").unwrap_err().contains("unknown unit 'x'"));
        assert!(parse("90").unwrap_err().contains("no unit"));
        assert!(parse("d").unwrap_err().contains("number must come before"));
        assert!(parse("0d").unwrap_err().contains("zero"));
    }
}
