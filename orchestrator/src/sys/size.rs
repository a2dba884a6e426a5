//! Byte counts for people, in decimal units as disks and download tools show them.

/// `3.4 GB`, `1.2 MB`, `12 kB`: one decimal from MB up, whole kB below.
pub(crate) fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.0} kB", b / 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_decimal_units() {
        assert_eq!(human(0), "0 kB");
        assert_eq!(human(12_345), "12 kB");
        assert_eq!(human(1_234_567), "1.2 MB");
        assert_eq!(human(80_000_000_000), "80.0 GB");
    }
}
