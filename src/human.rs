//! Figures as people read them in the start-up line: `30s`, `250ms`, `off`, `64 KiB`.

use std::time::Duration;

/// `30s`, `1m30s`, `250ms`, `1.5s`.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    if !ms.is_multiple_of(1000) {
        return format!("{}s", d.as_secs_f64());
    }
    let s = ms / 1000;
    match (s / 60, s % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

/// A duration, or `off` when there is none.
pub fn optional(d: Option<Duration>) -> String {
    d.map_or_else(|| "off".to_owned(), duration)
}

/// `64 KiB`, `1 MiB`, `1500 B`: binary units when the size is a whole number of them.
pub fn bytes(n: usize) -> String {
    for (unit, size) in [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n >= size && n.is_multiple_of(size) {
            return format!("{} {unit}", n / size);
        }
    }
    format!("{n} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_people_write_them() {
        let s = Duration::from_secs;
        assert_eq!(duration(s(30)), "30s");
        assert_eq!(duration(s(90)), "1m30s");
        assert_eq!(duration(s(300)), "5m");
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
        assert_eq!(duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(duration(Duration::ZERO), "0ms");
        assert_eq!(optional(None), "off");
        assert_eq!(bytes(64 * 1024), "64 KiB");
        assert_eq!(bytes(1 << 20), "1 MiB");
        assert_eq!(bytes(1500), "1500 B");
    }
}
