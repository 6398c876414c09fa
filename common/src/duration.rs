//! Durations on command lines and in configuration files: `500ms`, `2s`, `15m`, `1h`.

use std::time::Duration;

pub fn parse(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit; write e.g. 500ms, 2s, 15m or 1h"))?;
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "s" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value * 60)),
        "h" => Ok(Duration::from_secs(value * 3600)),
        other => Err(format!(
            "unknown unit {other:?} in {text:?}; use ms, s, m or h"
        )),
    }
}

/// `duration` as [`parse`] reads it, in the largest unit that holds it whole: `30m`, `90s`,
/// `1500ms`.
pub fn format(duration: Duration) -> String {
    let millis = duration.as_millis();
    match millis {
        0 => "0s".to_owned(),
        _ if millis.is_multiple_of(3_600_000) => format!("{}h", millis / 3_600_000),
        _ if millis.is_multiple_of(60_000) => format!("{}m", millis / 60_000),
        _ if millis.is_multiple_of(1000) => format!("{}s", millis / 1000),
        _ => format!("{millis}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_refuses_nonsense() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("15m"), Ok(Duration::from_secs(900)));
        assert!(parse("15").is_err());
        assert!(parse("2 days").is_err());
    }

    #[test]
    fn formats_what_it_parses() {
        for text in ["30m", "1h", "90s", "1500ms", "0s"] {
            assert_eq!(format(parse(text).expect("parse")), text);
        }
    }
}
