//! `pgcryptfs export`, `ls` and `cat`: the decrypted tree without FUSE (a container, a rescue
//! shell). Files stream in batches of chunks, so memory stays bounded whatever their size; a
//! file whose chunks fail authentication is reported and not left behind.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::format::{Attr, ChunkRef, Id, Kind, Time};
use crate::offline::{self, Progress};
use crate::vault::Vault;

/// Chunks decrypted per batch (64 × 64 KiB = 4 MiB of plaintext at the default chunk size).
const BATCH: usize = 64;

/// What `export` did.
#[derive(Default)]
pub struct ExportReport {
    pub files: usize,
    pub dirs: usize,
    pub symlinks: usize,
    pub hard_links: usize,
    pub bytes: u64,
    pub skipped: Vec<String>,
    /// Path and reason of each entry that could not be exported.
    pub failures: Vec<(String, String)>,
}

impl ExportReport {
    pub fn summary(&self, dest: &Path) -> String {
        let mut s = format!(
            "exported {} files ({:.1} MB), {} directories, {} symlinks, {} hard links to {}",
            self.files,
            self.bytes as f64 / 1e6,
            self.dirs,
            self.symlinks,
            self.hard_links,
            dest.display()
        );
        if !self.skipped.is_empty() {
            s.push_str(&format!("; skipped {} sockets and device nodes (device nodes need --keep-setid)", self.skipped.len()));
        }
        if !self.failures.is_empty() {
            s.push_str(&format!("; {} entries FAILED", self.failures.len()));
        }
        s
    }
}

struct Item {
    rel: PathBuf,
    ino: u64,
    attr: Attr,
    file_id: Id,
    target: Vec<u8>,
}

fn cstr(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| format!("{}: NUL in path", p.display()))
}

fn timespec(t: &Time) -> libc::timespec {
    libc::timespec { tv_sec: t.secs as libc::time_t, tv_nsec: t.nanos as libc::c_long }
}

/// What `export` may do beyond writing the tree.
#[derive(Default, Clone, Copy)]
pub struct ExportOptions {
    /// Replace files that already exist in DEST.
    pub overwrite: bool,
    /// Keep the setuid and setgid bits and make device nodes (by default the bits are cleared
    /// and device nodes skipped: an export made as root must not leave setuid-root programs or
    /// open devices from a store on the disk).
    pub keep_setid: bool,
}

/// The mode an exported entry gets: the recorded one, without setuid/setgid unless kept.
fn export_mode(a: &Attr, keep_setid: bool) -> u32 {
    let mode = a.mode & 0o7777;
    if keep_setid { mode } else { mode & !0o6000 }
}

/// Sets owner (as root), mode (not for symlinks) and times of `p`, without following symlinks.
fn set_meta(p: &Path, a: &Attr, keep_setid: bool) -> Result<(), String> {
    let c = cstr(p)?;
    let err = |what: &str| format!("{what} {}: {}", p.display(), std::io::Error::last_os_error());
    // SAFETY: c is a valid C string; the calls do not keep pointers.
    unsafe {
        if libc::geteuid() == 0 && libc::lchown(c.as_ptr(), a.uid, a.gid) != 0 {
            return Err(err("chown"));
        }
        // After the chown (which clears setid bits itself), so the final mode is exactly this.
        // AT_SYMLINK_NOFOLLOW: a link swapped in for the entry is never chmod'ed through.
        if a.kind != Kind::Symlink
            && libc::fchmodat(libc::AT_FDCWD, c.as_ptr(), export_mode(a, keep_setid), libc::AT_SYMLINK_NOFOLLOW) != 0
        {
            return Err(err("chmod"));
        }
        let times = [timespec(&a.atime), timespec(&a.mtime)];
        if libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) != 0 {
            return Err(err("set times of"));
        }
    }
    Ok(())
}

/// Streams a file's plaintext to `out(offset, bytes)`, batch by batch. The error names the
/// chunk that failed.
pub fn stream_file(
    vault: &Vault,
    ino: u64,
    file_id: &Id,
    size: u64,
    mut out: impl FnMut(u64, &[u8]) -> std::io::Result<()>,
) -> Result<(), String> {
    let cs = vault.chunk_size() as u64;
    let chunks: Vec<(u64, ChunkRef)> = {
        let cat = vault.catalog();
        let i = cat.get(ino).map_err(|e| e.to_string())?;
        i.chunks().collect()
    };
    let mut io_err = None;
    for batch in chunks.chunks(BATCH) {
        vault
            .read_chunks(file_id, batch, |index, plain| {
                let at = index * cs;
                let n = (plain.len() as u64).min(size.saturating_sub(at)) as usize;
                if io_err.is_none()
                    && n > 0
                    && let Err(e) = out(at, &plain[..n])
                {
                    io_err = Some(e);
                }
            })
            .map_err(|(index, e)| format!("chunk {index}: {e}"))?;
        if let Some(e) = io_err.take() {
            return Err(format!("writing: {e}"));
        }
    }
    Ok(())
}

/// `export` as the CLI runs it: failures on stderr, the summary on stdout; exit 1 if any entry
/// failed.
pub fn run(t: &offline::Target, path: &str, dest: &Path, opts: ExportOptions) -> i32 {
    let report = offline::open_read_only(t).and_then(|vault| export_with(&vault, path, dest, opts));
    match report {
        Err(e) => {
            eprintln!("pgcryptfs: {e}");
            1
        }
        Ok(report) => {
            for (p, e) in &report.failures {
                eprintln!("pgcryptfs: export: {p}: {e}");
            }
            println!("{}", report.summary(dest));
            i32::from(!report.failures.is_empty())
        }
    }
}

/// Writes the tree under `path` ("" for all) into the directory `dest` (created if missing).
/// Existing files are refused unless `overwrite`; setuid/setgid bits are cleared.
pub fn export(vault: &Vault, path: &str, dest: &Path, overwrite: bool) -> Result<ExportReport, String> {
    export_with(vault, path, dest, ExportOptions { overwrite, keep_setid: false })
}

/// `export` with all its options.
pub fn export_with(vault: &Vault, path: &str, dest: &Path, opts: ExportOptions) -> Result<ExportReport, String> {
    let overwrite = opts.overwrite;
    let items: Vec<Item> = {
        let cat = vault.catalog();
        let start = offline::resolve(&cat, path)?;
        let start_is_dir = cat.get(start).map_err(|e| e.to_string())?.attr.kind == Kind::Dir;
        let base = if start_is_dir {
            PathBuf::new()
        } else {
            PathBuf::from(path.trim_end_matches('/').rsplit('/').next().unwrap_or("file"))
        };
        offline::walk(&cat, start)
            .into_iter()
            .filter_map(|e| {
                let i = cat.get(e.ino).ok()?;
                let rel = if e.rel.as_os_str().is_empty() { base.clone() } else { base.join(&e.rel) };
                Some(Item { rel, ino: e.ino, attr: i.attr.clone(), file_id: i.file_id, target: i.target.clone() })
            })
            .collect()
    };
    fs::create_dir_all(dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    let mut report = ExportReport::default();
    let total = items.iter().filter(|i| i.attr.kind == Kind::File).map(|i| i.attr.size).sum();
    let mut progress = Progress::new("exported", total);
    let mut first_path: HashMap<u64, PathBuf> = HashMap::new();
    let mut dirs = Vec::new();
    for it in &items {
        let to = dest.join(&it.rel);
        let shown = it.rel.display().to_string();
        let result = match it.attr.kind {
            Kind::Dir => {
                dirs.push((to.clone(), &it.attr));
                match fs::create_dir(&to) {
                    Ok(()) => {
                        // Writable for us until its children are in; its mode is set last.
                        let _ = fs::set_permissions(&to, fs::Permissions::from_mode(0o700));
                        report.dirs += 1;
                        Ok(())
                    }
                    // An existing directory is filled in; a symlink there is never followed.
                    Err(_) if to.symlink_metadata().is_ok_and(|m| m.is_dir()) => Ok(()),
                    Err(e) => Err(format!("cannot create directory: {e}")),
                }
            }
            _ if first_path.contains_key(&it.ino) => {
                let first = &first_path[&it.ino];
                replace_check(&to, overwrite).and_then(|_| {
                    fs::hard_link(first, &to).map_err(|e| format!("cannot link to {}: {e}", first.display()))?;
                    report.hard_links += 1;
                    Ok(())
                })
            }
            Kind::File => replace_check(&to, overwrite).and_then(|_| {
                export_file(vault, it, &to, &mut progress, opts.keep_setid)?;
                report.files += 1;
                report.bytes += it.attr.size;
                Ok(())
            }),
            Kind::Symlink => replace_check(&to, overwrite).and_then(|_| {
                std::os::unix::fs::symlink(OsStr::from_bytes(&it.target), &to).map_err(|e| format!("cannot create symlink: {e}"))?;
                set_meta(&to, &it.attr, opts.keep_setid)?;
                report.symlinks += 1;
                Ok(())
            }),
            Kind::Fifo => replace_check(&to, overwrite).and_then(|_| {
                let c = cstr(&to)?;
                // SAFETY: c is a valid C string.
                if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
                    return Err(format!("cannot create FIFO: {}", std::io::Error::last_os_error()));
                }
                set_meta(&to, &it.attr, opts.keep_setid)
            }),
            // A device node from the store is as dangerous as a setuid file (a world-writable
            // disk): made only when asked, like the setid bits.
            Kind::CharDev | Kind::BlockDev if !opts.keep_setid => {
                report.skipped.push(shown.clone());
                Ok(())
            }
            Kind::CharDev | Kind::BlockDev => replace_check(&to, overwrite).and_then(|_| {
                let c = cstr(&to)?;
                let (major, minor) = crate::format::rdev_split(crate::format::rdev_of(&it.target).unwrap_or(0));
                let kind = if it.attr.kind == Kind::CharDev { libc::S_IFCHR } else { libc::S_IFBLK };
                // SAFETY: c is a valid C string.
                if unsafe { libc::mknod(c.as_ptr(), kind | 0o600, libc::makedev(major, minor)) } != 0 {
                    return Err(format!("cannot create device node: {}", std::io::Error::last_os_error()));
                }
                set_meta(&to, &it.attr, opts.keep_setid)
            }),
            Kind::Socket => {
                report.skipped.push(shown.clone());
                Ok(())
            }
        };
        match result {
            Ok(()) => {
                if it.attr.kind != Kind::Dir {
                    first_path.entry(it.ino).or_insert(to);
                }
            }
            Err(e) => report.failures.push((if shown.is_empty() { ".".into() } else { shown }, e)),
        }
    }
    // Directory modes and times last, deepest first (writing into them changed their times).
    for (to, attr) in dirs.iter().rev() {
        if let Err(e) = set_meta(to, attr, opts.keep_setid) {
            report.failures.push((to.display().to_string(), e));
        }
    }
    progress.finish();
    Ok(report)
}

fn replace_check(to: &Path, overwrite: bool) -> Result<(), String> {
    match to.symlink_metadata() {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => Err("a directory is in the way".into()),
        Ok(_) if overwrite => fs::remove_file(to).map_err(|e| format!("cannot replace: {e}")),
        Ok(_) => Err("exists (pass --overwrite to replace it)".into()),
    }
}

/// Writes one file next to its final name, under a short random temporary name (any name up
/// to NAME_MAX fits, and nothing there is followed or replaced), and renames it into place only
/// once every chunk authenticated and the data is on disk.
fn export_file(vault: &Vault, it: &Item, to: &Path, progress: &mut Progress, keep_setid: bool) -> Result<(), String> {
    let partial = to.with_file_name(format!(".pgcryptfs-partial-{}", crate::format::hex(&crate::crypto::random_id()[..8])));
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&partial)
        .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
    let written = stream_file(vault, it.ino, &it.file_id, it.attr.size, |at, bytes| {
        progress.add(bytes.len() as u64);
        f.write_all_at(bytes, at)
    })
    .and_then(|_| f.set_len(it.attr.size).and_then(|_| f.sync_all()).map_err(|e| format!("writing: {e}")))
    .and_then(|_| set_meta(&partial, &it.attr, keep_setid))
    .and_then(|_| fs::rename(&partial, to).map_err(|e| format!("cannot rename into place: {e}")));
    if written.is_err() {
        let _ = fs::remove_file(&partial);
    }
    written
}

/// `ls`: the entries of a directory (or the file itself), one per line; `long` adds type and
/// mode, links, owner, size, modification time (UTC) and a symlink's target.
pub fn ls(vault: &Vault, path: &str, long: bool) -> Result<String, String> {
    let cat = vault.catalog();
    let ino = offline::resolve(&cat, path)?;
    let i = cat.get(ino).map_err(|e| e.to_string())?;
    let mut rows: Vec<(Vec<u8>, u64)> = match &i.dir {
        Some(d) => d.after(0).map(|(_, n, c)| (n.to_vec(), c)).collect(),
        None => vec![(path.trim_end_matches('/').rsplit('/').next().unwrap_or("").as_bytes().to_vec(), ino)],
    };
    rows.sort();
    let mut out = String::new();
    for (name, child) in rows {
        let c = cat.get(child).map_err(|e| e.to_string())?;
        let name = String::from_utf8_lossy(&name);
        if !long {
            out.push_str(&format!("{name}\n"));
            continue;
        }
        let a = &c.attr;
        let kind = match a.kind {
            Kind::Dir => 'd',
            Kind::Symlink => 'l',
            Kind::Fifo => 'p',
            Kind::Socket => 's',
            Kind::CharDev => 'c',
            Kind::BlockDev => 'b',
            Kind::File => '-',
        };
        let mut mode = String::new();
        for (bit, ch) in [(0o400, 'r'), (0o200, 'w'), (0o100, 'x'), (0o40, 'r'), (0o20, 'w'), (0o10, 'x'), (0o4, 'r'), (0o2, 'w'), (0o1, 'x')] {
            mode.push(if a.mode & bit != 0 { ch } else { '-' });
        }
        let target = if a.kind == Kind::Symlink { format!(" -> {}", String::from_utf8_lossy(&c.target)) } else { String::new() };
        out.push_str(&format!("{kind}{mode} {:>3} {:>5} {:>5} {:>12} {} {name}{target}\n", c.nlink(), a.uid, a.gid, a.size, minutes(a.mtime.secs)));
    }
    Ok(out)
}

/// `cat`: a file's plaintext to `out`.
pub fn cat(vault: &Vault, path: &str, out: &mut dyn Write) -> Result<(), String> {
    let (ino, file_id, size) = {
        let cat = vault.catalog();
        let ino = offline::resolve(&cat, path)?;
        let i = cat.get(ino).map_err(|e| e.to_string())?;
        if i.attr.kind != Kind::File {
            return Err(format!("{path}: not a regular file"));
        }
        (ino, i.file_id, i.attr.size)
    };
    // Holes (between chunks, and up to the size) read as zeros.
    let zeros = |out: &mut dyn Write, n: u64| std::io::copy(&mut std::io::repeat(0).take(n), out).map(|_| ());
    let mut pos = 0u64;
    stream_file(vault, ino, &file_id, size, |at, bytes| {
        zeros(out, at.saturating_sub(pos))?;
        out.write_all(bytes)?;
        pos = at + bytes.len() as u64;
        Ok(())
    })
    .map_err(|e| format!("{path}: {e}"))?;
    zeros(out, size.saturating_sub(pos))
        .and_then(|_| out.flush())
        .map_err(|e| format!("{path}: writing: {e}"))
}

/// "YYYY-MM-DD HH:MM" (UTC), as `ls -l` shows a time.
fn minutes(secs: i64) -> String {
    crate::audit::utc(secs)[..16].replace('T', " ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn ls_times() {
        assert_eq!(super::minutes(0), "1970-01-01 00:00");
        assert_eq!(super::minutes(1_795_378_855), "2026-11-22 20:20");
    }
}
