//! Audit log lines for key custody events (unlock, slot added or removed, rekey): slot id,
//! method, host, user and time; never key material.

use crate::format::{self, Id};

/// Log target of audit lines (`RUST_LOG=pgcryptfs::audit=info`).
pub const TARGET: &str = "pgcryptfs::audit";

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "?".into())
}

/// Logs `audit: <event> vault=… slot=… method=… host=… uid=… time=…[ <detail>]`.
pub fn event(event: &str, vault: &Id, slot: &Id, method: &str, detail: &str) {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    log::info!(
        target: TARGET,
        "audit: {event} vault={} slot={} method={method} host={} uid={uid} time={}{}{detail}",
        format::hex(vault),
        format::hex(slot),
        hostname(),
        utc(format::Time::now().secs),
        if detail.is_empty() { "" } else { " " },
    );
}

/// Logs `audit: unlock refused vault=… host=… uid=… time=… reason=<why>` (a warning).
pub fn refused(vault: &Id, reason: &str) {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    log::warn!(
        target: TARGET,
        "audit: unlock refused vault={} host={} uid={uid} time={} reason={reason}",
        format::hex(vault),
        hostname(),
        utc(format::Time::now().secs),
    );
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
pub fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Days to civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::utc(1_795_896_000 + 3661), "2026-11-28T21:01:01Z");
        assert_eq!(super::utc(-1), "1969-12-31T23:59:59Z");
    }
}
