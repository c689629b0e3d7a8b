//! Typed, validated settings for each command, and the parsers of their value syntaxes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::keys::{NewSlotSpec, UnlockSpec};

/// What unlocks the vault (names sources; never a secret).
pub type KeyConfig = UnlockSpec;

#[derive(Debug, Clone)]
pub struct InitConfig {
    pub store: String,
    pub store_options: Vec<(String, String)>,
    /// The vault's first key slot.
    pub first_slot: NewSlotSpec,
    pub label: Option<String>,
    pub chunk_size: u32,
}

#[derive(Debug, Clone)]
pub struct MountConfig {
    pub store: String,
    pub store_options: Vec<(String, String)>,
    pub mountpoint: PathBuf,
    pub key: KeyConfig,
    pub cache_dir: PathBuf,
    pub read_only: bool,
    pub foreground: bool,
    pub allow_other: bool,
    pub writeback_cache: bool,
    pub threads: usize,
    pub commit_interval: Duration,
    pub pack_size: u64,
    pub log_file: Option<PathBuf>,
    /// Log to syslog/journald when daemonized (and no log file is named).
    pub syslog: bool,
    /// Log level, overriding RUST_LOG.
    pub log_level: Option<String>,
    pub break_lease: bool,
    /// Pack uploads at once.
    pub upload_parallelism: usize,
    /// Most unstored bytes in the cache before writes wait.
    pub cache_dirty_max: u64,
    /// How long writes wait for room, and commits for the store, before failing.
    pub store_timeout: Duration,
    /// fsync returns only once the data is in the store.
    pub sync_store: bool,
    /// Bound of the whole cache (staged plus clean bytes).
    pub cache_size: u64,
    /// Readahead for sequential reads of a remote store.
    pub readahead: u64,
    /// How new chunks are compressed.
    pub compression: crate::codec::Compression,
    /// Accept (and pin) a master key other than the one the cache pinned: after a rekey.
    pub accept_new_master_key: bool,
    /// Mount flags MS_NOEXEC and MS_NOATIME.
    pub noexec: bool,
    pub noatime: bool,
    /// What the vault must be (`--expect-fingerprint`, `--expect-receipt`).
    pub expect: crate::pins::Expect,
}

/// Pack size for a local directory store (packs move there by rename).
pub const DEFAULT_PACK_SIZE: u64 = 16 << 20;
/// Pack size for an object store: each upload in flight maps a whole pack, so
/// `--upload-parallelism` × this bounds those pages.
pub const DEFAULT_REMOTE_PACK_SIZE: u64 = 8 << 20;

/// The default pack size for a STORE argument.
pub fn default_pack_size(store: &str) -> u64 {
    if store.contains("://") && !store.starts_with("file://") { DEFAULT_REMOTE_PACK_SIZE } else { DEFAULT_PACK_SIZE }
}
pub const DEFAULT_COMMIT_SECS: u64 = 30;
pub const DEFAULT_THREADS: usize = 6;

/// The dirty bound: as given, else 1 GiB or the whole cache's bound if that is smaller. It
/// cannot exceed a non-zero `cache_size` (0 means no clean data, and bounds nothing else).
pub fn dirty_bound(dirty: Option<u64>, cache_size: u64) -> Result<u64, String> {
    const DEFAULT: u64 = 1 << 30;
    match dirty {
        Some(d) if cache_size != 0 && d > cache_size => Err(format!(
            "--cache-dirty-max ({d} bytes) cannot exceed --cache-size ({cache_size} bytes), which bounds the whole cache"
        )),
        Some(d) => Ok(d),
        None if cache_size != 0 => Ok(DEFAULT.min(cache_size)),
        None => Ok(DEFAULT),
    }
}

/// Parses "65536", "64K", "64KiB", "16M", "1G" (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid size '{s}'"))?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("invalid size unit in '{s}' (use K, M or G)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("size '{s}' is too large"))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The default cache root: `PGCRYPTFS_CACHE_DIR` if set, else /var/cache/pgcryptfs for root,
/// else the user's cache directory. Host pins (pins.rs) live there too.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PGCRYPTFS_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if is_root() {
        return PathBuf::from("/var/cache/pgcryptfs");
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("pgcryptfs");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache/pgcryptfs"),
        None => PathBuf::from("/tmp/pgcryptfs-cache"),
    }
}

/// The daemon's default log: /var/log/pgcryptfs.log for root, else in the user's state directory.
pub fn default_log_file() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/log/pgcryptfs.log");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/state/pgcryptfs.log"),
        None => PathBuf::from("/tmp/pgcryptfs.log"),
    }
}

/// Directory of control sockets: /run/pgcryptfs for root, else the user's runtime directory.
pub fn runtime_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PGCRYPTFS_RUNTIME_DIR") {
        return PathBuf::from(d);
    }
    if is_root() {
        return PathBuf::from("/run/pgcryptfs");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(x) => PathBuf::from(x).join("pgcryptfs"),
        // SAFETY: getuid has no preconditions.
        None => PathBuf::from(format!("/tmp/pgcryptfs-{}", unsafe { libc::getuid() })),
    }
}

/// Absolute, symlink-free form of a path whose last component may be a live mount: only the
/// parent is resolved, so a busy mount (all FUSE threads waiting) never blocks the caller.
pub fn mountpoint_path(p: &Path) -> Result<PathBuf, String> {
    let abs = std::path::absolute(p).map_err(|e| format!("mountpoint {}: {e}", p.display()))?;
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = std::fs::canonicalize(parent).map_err(|e| format!("mountpoint {}: {e}", p.display()))?;
            Ok(parent.join(name))
        }
        _ => Ok(abs),
    }
}

/// Absolute, symlink-free form of a mountpoint (it must exist).
pub fn canonical_mountpoint(p: &Path) -> Result<PathBuf, String> {
    let c = std::fs::canonicalize(p).map_err(|e| format!("mountpoint {}: {e}", p.display()))?;
    if !c.is_dir() {
        return Err(format!("mountpoint {} is not a directory", p.display()));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_size_defaults() {
        assert_eq!(default_pack_size("/srv/vault"), 16 << 20);
        assert_eq!(default_pack_size("file:///srv/vault"), 16 << 20);
        assert_eq!(default_pack_size("s3://b/p"), 8 << 20);
    }

    #[test]
    fn dirty_bound_fits_the_cache() {
        assert_eq!(dirty_bound(None, 2 << 30), Ok(1 << 30));
        assert_eq!(dirty_bound(None, 256 << 20), Ok(256 << 20));
        assert_eq!(dirty_bound(None, 0), Ok(1 << 30));
        assert_eq!(dirty_bound(Some(5), 0), Ok(5));
        assert_eq!(dirty_bound(Some(64 << 20), 64 << 20), Ok(64 << 20));
        assert!(dirty_bound(Some(65 << 20), 64 << 20).unwrap_err().contains("cannot exceed --cache-size"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("16m"), Ok(16 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("12Q").unwrap_err().contains("unit"));
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }
}
