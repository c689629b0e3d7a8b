//! Vault access without a mount, for the operator commands (verify, export, ls, cat, gc,
//! prune): opening the vault, resolving a path inside it, walking a subtree, and a progress
//! line on a terminal.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::catalog::{Catalog, ROOT};
use crate::config::KeyConfig;
use crate::format::Kind;
use crate::store;
use crate::vault::{OpenOptions, Vault};

/// Where the vault is and how to open it.
pub struct Target {
    pub store: String,
    pub store_options: Vec<(String, String)>,
    pub key: KeyConfig,
    /// What the operator demands of the vault (`--expect-fingerprint`, `--expect-receipt`).
    pub expect: crate::pins::Expect,
}

/// Opens the vault read-only: no cache, no lease, any number alongside a writer. This host's
/// pins (under the default cache root) refuse a state older than one it has seen.
pub fn open_read_only(t: &Target) -> Result<Vault, String> {
    let pins = crate::config::default_cache_dir();
    open(t, &OpenOptions { read_only: true, cache_size: 0, pins: Some(&pins), expect: t.expect, ..Default::default() })
}

/// Opens the vault as its writer (takes the lease; refused while a mount or another command
/// holds it), with `cache_root` for staged data and journals; refuses a state older than the
/// one this host pinned (gc must never delete what a newer state references).
pub fn open_writer(t: &Target, cache_root: &std::path::Path) -> Result<Vault, String> {
    // gc and prune copy ciphertext and delete; they do not check the mount's master-key pin.
    open(
        t,
        &OpenOptions {
            read_only: false,
            cache_root: Some(cache_root),
            cache_size: 0,
            master_pin: false,
            pins: Some(cache_root),
            expect: t.expect,
            ..Default::default()
        },
    )
}

fn open(t: &Target, opts: &OpenOptions) -> Result<Vault, String> {
    let key = t.key.load().map_err(|e| e.to_string())?;
    let store = store::open_store(&t.store, &t.store_options)?;
    Vault::open_with(store, &key, opts).map_err(|e| e.to_string())
}

/// Every pack object in the store, by id, with its size (one listing).
pub fn pack_sizes(vault: &Vault) -> Result<std::collections::HashMap<crate::format::Id, u64>, String> {
    Ok(vault
        .store()
        .list(crate::format::PACKS_PREFIX)
        .map_err(|e| format!("cannot list the packs: {e}"))?
        .into_iter()
        .filter_map(|(name, size)| Some((crate::format::parse_pack_name(&name)?, size)))
        .collect())
}

/// The inode at `path` ("" or "/" is the root); components are separated by '/'.
pub fn resolve(cat: &Catalog, path: &str) -> Result<u64, String> {
    let mut ino = ROOT;
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        let i = cat.get(ino).map_err(|_| format!("{path}: not found"))?;
        if i.attr.kind != Kind::Dir {
            return Err(format!("{path}: {} is not a directory", cat.path_of(ino)));
        }
        ino = cat.lookup(ino, part.as_bytes()).map_err(|_| format!("{path}: no such file or directory"))?.ino;
    }
    Ok(ino)
}

/// One entry of a walk: its path relative to the walk's start ("" for the start itself).
pub struct Entry {
    pub rel: PathBuf,
    pub ino: u64,
    pub kind: Kind,
}

/// Every entry under `start` (itself first), parents before children, names in byte order.
pub fn walk(cat: &Catalog, start: u64) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut stack = vec![(PathBuf::new(), start)];
    while let Some((rel, ino)) = stack.pop() {
        let Ok(i) = cat.get(ino) else { continue };
        if let Some(dir) = &i.dir {
            let mut children: Vec<(PathBuf, u64)> = dir
                .after(0)
                .map(|(_, name, child)| (rel.join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name)), child))
                .collect();
            children.sort();
            stack.extend(children.into_iter().rev());
        }
        out.push(Entry { rel, ino, kind: i.attr.kind });
    }
    out
}

/// A one-line progress report on stderr, when stderr is a terminal, at most every 250 ms.
pub struct Progress {
    what: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    shown: Option<Instant>,
    tty: bool,
}

impl Progress {
    pub fn new(what: &'static str, total: u64) -> Self {
        Progress { what, total, done: 0, started: Instant::now(), shown: None, tty: std::io::stderr().is_terminal() }
    }

    pub fn add(&mut self, bytes: u64) {
        self.done += bytes;
        if self.tty && self.shown.is_none_or(|t| t.elapsed() >= Duration::from_millis(250)) {
            self.show();
        }
    }

    fn show(&mut self) {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let pct = if self.total == 0 { 100.0 } else { self.done as f64 * 100.0 / self.total as f64 };
        eprint!(
            "\rpgcryptfs: {} {:.1} of {:.1} MB ({pct:.0}%), {:.1} MB/s   ",
            self.what,
            self.done as f64 / 1e6,
            self.total as f64 / 1e6,
            self.done as f64 / 1e6 / secs
        );
        let _ = std::io::stderr().flush();
        self.shown = Some(Instant::now());
    }

    /// Ends the line (if one was drawn).
    pub fn finish(mut self) {
        if self.tty {
            self.show();
            eprintln!();
        }
    }
}
