//! Bad input: the one error type that means "the user asked for something wrong". `main` prints
//! it as one line and exits 2; it is raised before anything is loaded or attached.

use std::time::Duration;

/// Bad input: printed as one line, exit code 2, nothing attached.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub String);

/// `500ms`, `10s`, `2m`, `1h`, or plain seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, UsageError> {
    let bad = || UsageError(format!("--duration {text}: expected a duration such as 500ms, 10s, 2m or 1h"));
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 366.0 * 86400.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}
