//! Wall-clock time and durations for records and messages (UTC, no time-zone database).

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `2024-05-01 13:45:07 UTC` (no time-zone database needed; logs and messages all use UTC).
pub(crate) fn format_utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// `x` rounded to 0.1, for log fields: a number (JSON logs keep numbers as numbers), short.
pub(crate) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `2024-05-01T13:45:07.123Z`, the timestamp form of the JSON log lines.
pub(crate) fn rfc3339_now() -> String {
    let now = unix_now();
    let secs = now as u64;
    let millis = ((now - secs as f64) * 1000.0) as u64;
    let t = format_utc(secs); // "YYYY-MM-DD HH:MM:SS UTC"
    format!("{}T{}.{millis:03}Z", &t[..10], &t[11..19])
}

/// A duration for people: `42s`, `5m 03s`, `1h 02m` (an ETA, a run's wall time, an age).
pub(crate) fn format_duration(secs: f64) -> String {
    let t = secs.max(0.0).round() as u64;
    match (t / 3600, t / 60 % 60, t % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s:02}s"),
        (h, m, _) => format!("{h}h {m:02}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(format_duration(-3.0), "0s");
        assert_eq!(format_duration(42.4), "42s");
        assert_eq!(format_duration(303.0), "5m 03s");
        assert_eq!(format_duration(3725.0), "1h 02m");
    }
}
