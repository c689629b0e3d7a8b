//! The local cache directory of one vault: an exclusive lock, staging packs being filled
//! with sealed chunks, and the local journal of sealed metadata batches. Everything written
//! here is ciphertext handed in by the layers above; this module never sees a key.
//!
//! Layout: `<cache>/<vault-id hex>/{lock, staging/<pack-id hex>, journal-<seq as 16 hex>}`.
//! Lock order inside: `packer` before `journal` (callers hold the catalog lock outside both).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::format::{self, Id};

#[derive(Debug)]
pub enum CacheError {
    /// Another process has this vault's cache open.
    Busy(PathBuf),
    /// The vault's master key is not the one this cache pinned (a rekey, or a replaced vault).
    MasterKeyChanged(PathBuf),
    Io { what: String, source: io::Error },
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheError::Busy(p) => write!(
                f,
                "the cache directory {} is in use by another pgcryptfs process (is this vault already mounted?)",
                p.display()
            ),
            CacheError::MasterKeyChanged(p) => write!(
                f,
                "the vault's master key is not the one this cache last mounted ({}): either `pgcryptfs rekey` \
                 replaced it, or someone replaced the vault in the store with one the same key opens. If you \
                 ran a rekey, mount once with --accept-new-master-key; otherwise do not write to this vault",
                p.display()
            ),
            CacheError::Io { what, source } => write!(f, "cache: {what}: {source}"),
        }
    }
}

impl std::error::Error for CacheError {}

pub type Result<T> = std::result::Result<T, CacheError>;

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> CacheError {
    let what = what.into();
    move |source| CacheError::Io { what, source }
}

struct ActivePack {
    id: Id,
    file: File,
    len: u64,
}

struct Packer {
    active: Option<ActivePack>,
    /// Packs that are complete and fsynced, waiting for upload.
    closed: Vec<Id>,
}

struct Journal {
    seq: u64,
    file: File,
    batches: u32,
    /// Length of the file up to the last complete, synced batch.
    len: u64,
    /// A failed append could not be cut off: no batch may follow it.
    broken: bool,
}

pub struct Cache {
    dir: PathBuf,
    _lock: File,
    pack_target: u64,
    /// Bytes of sealed chunks in staging packs (not yet in the store).
    staged: std::sync::atomic::AtomicU64,
    packer: Mutex<Packer>,
    journal: Mutex<Option<Journal>>,
}

impl Cache {
    /// Opens (creating if needed) the cache of `vault_id` under `root` and locks it.
    pub fn open(root: &Path, vault_id: &Id, pack_target: u64) -> Result<Self> {
        let dir = root.join(format::hex(vault_id));
        fs::create_dir_all(dir.join("staging")).map_err(io_err(format!("creating {}", dir.display())))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(io_err("opening the lock file"))?;
        // SAFETY: valid fd owned by `lock`.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(CacheError::Busy(dir));
        }
        let mut staged = 0;
        if let Ok(entries) = fs::read_dir(dir.join("staging")) {
            for e in entries.flatten() {
                staged += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
        Ok(Self {
            dir,
            _lock: lock,
            pack_target,
            staged: std::sync::atomic::AtomicU64::new(staged),
            packer: Mutex::new(Packer { active: None, closed: Vec::new() }),
            journal: Mutex::new(None),
        })
    }

    /// Trust on first use: the first writable mount with this cache records a fingerprint of the
    /// vault's master key; later ones refuse a different key unless `accept` (after a rekey).
    pub fn check_master_pin(&self, pin: &[u8; 32], accept: bool) -> Result<()> {
        let path = self.dir.join("master-pin");
        let want = format::hex(pin);
        match fs::read_to_string(&path) {
            Ok(have) if have.trim() == want => return Ok(()),
            Ok(_) if !accept => return Err(CacheError::MasterKeyChanged(path)),
            Ok(_) | Err(_) => {}
        }
        let tmp = self.dir.join("master-pin.tmp");
        fs::write(&tmp, format!("{want}\n"))
            .and_then(|_| File::open(&tmp)?.sync_all())
            .and_then(|_| fs::rename(&tmp, &path))
            .map_err(io_err("recording the master key's fingerprint"))?;
        self.sync_dir()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn staging_path(&self, id: &Id) -> PathBuf {
        self.dir.join("staging").join(format::hex(id))
    }

    fn journal_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("journal-{seq:016x}"))
    }

    /// Appends one sealed chunk to the active staging pack; returns its pack and offset.
    /// A pack that reaches the target size is fsynced and queued for upload.
    pub fn append_chunk(&self, sealed: &[u8]) -> Result<(Id, u64)> {
        let mut p = self.packer.lock().unwrap();
        if p.active.is_none() {
            let id = crate::crypto::random_id();
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(self.staging_path(&id))
                .map_err(io_err("creating a staging pack"))?;
            // The pack's directory entry must survive a crash as well as its bytes.
            File::open(self.dir.join("staging"))
                .and_then(|d| d.sync_all())
                .map_err(io_err("syncing the staging directory"))?;
            p.active = Some(ActivePack { id, file, len: 0 });
        }
        let a = p.active.as_mut().expect("just set");
        if let Err(e) = a.file.write_all(sealed) {
            // Cut a partial write off so the next chunk lands at the offset we record.
            if a.file.set_len(a.len).is_err() {
                // The pack's tail is unknown: stop appending to it.
                let _ = Self::close_active(&mut p);
            }
            return Err(io_err("writing a staging pack")(e));
        }
        let at = (a.id, a.len);
        a.len += sealed.len() as u64;
        self.staged.fetch_add(sealed.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if a.len >= self.pack_target {
            Self::close_active(&mut p)?;
        }
        Ok(at)
    }

    /// Closes the active pack. It joins the upload queue even if its fsync fails, so the
    /// chunks the metadata may already reference are never left behind.
    fn close_active(p: &mut Packer) -> Result<()> {
        if let Some(a) = p.active.take() {
            p.closed.push(a.id);
            a.file.sync_all().map_err(io_err("syncing a staging pack"))?;
        }
        Ok(())
    }

    /// Makes every chunk appended so far durable in the cache.
    pub fn sync_packs(&self) -> Result<()> {
        let p = self.packer.lock().unwrap();
        if let Some(a) = &p.active {
            a.file.sync_data().map_err(io_err("syncing a staging pack"))?;
        }
        Ok(())
    }

    /// Closes the active pack and hands over every closed pack for upload. On an error the
    /// packs stay queued for the next call.
    pub fn take_closed_packs(&self, close_active: bool) -> Result<Vec<Id>> {
        let mut p = self.packer.lock().unwrap();
        if close_active {
            Self::close_active(&mut p)?;
        }
        Ok(std::mem::take(&mut p.closed))
    }

    /// Reads a range of a staging pack; `None` if the pack is no longer staged.
    pub fn read_staging(&self, id: &Id, offset: u64, len: usize) -> Result<Option<Vec<u8>>> {
        let f = match File::open(self.staging_path(id)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("opening a staging pack")(e)),
        };
        let mut buf = vec![0u8; len];
        match f.read_exact_at(&mut buf, offset) {
            Ok(()) => Ok(Some(buf)),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(io_err("reading a staging pack")(e)),
        }
    }

    pub fn staging_file(&self, id: &Id) -> PathBuf {
        self.staging_path(id)
    }

    /// Bytes staged and not yet in the store (the dirty bound applies to this).
    pub fn staged_bytes(&self) -> u64 {
        self.staged.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A staged pack of `bytes` reached the store.
    pub fn unstaged(&self, bytes: u64) {
        let _ = self.staged.fetch_update(std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed, |s| {
            Some(s.saturating_sub(bytes))
        });
    }

    pub fn remove_staging(&self, id: &Id) -> Result<()> {
        if let Ok(m) = fs::metadata(self.staging_path(id)) {
            self.unstaged(m.len());
        }
        match fs::remove_file(self.staging_path(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing an uploaded staging pack")(e)),
        }
    }

    /// Staging packs left by an earlier run (only valid before the first append).
    pub fn leftover_packs(&self) -> Result<Vec<Id>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.dir.join("staging")).map_err(io_err("listing staging packs"))? {
            let e = e.map_err(io_err("listing staging packs"))?;
            if let Some(id) = e.file_name().to_str().and_then(format::parse_hex_id) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// The writer lease this cache held last, if any.
    pub fn lease_id(&self) -> Option<Id> {
        fs::read_to_string(self.dir.join("lease")).ok().and_then(|s| format::parse_hex_id(s.trim()))
    }

    pub fn set_lease_id(&self, id: &Id) -> Result<()> {
        let tmp = self.dir.join("lease.tmp");
        fs::write(&tmp, format::hex(id))
            .and_then(|()| File::open(&tmp)?.sync_all())
            .and_then(|()| fs::rename(&tmp, self.dir.join("lease")))
            .map_err(io_err("recording the writer lease"))?;
        self.sync_dir()
    }

    /// Packs closed and waiting to be handed to the uploaders or a commit.
    pub fn closed_packs(&self) -> usize {
        self.packer.lock().unwrap().closed.len()
    }

    // -- journal ------------------------------------------------------------------------------

    /// Starts a fresh journal for segment `seq`, replacing any file of that name.
    pub fn start_journal(&self, seq: u64) -> Result<()> {
        let path = self.journal_path(seq);
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(io_err("creating the journal"))?;
        let header = format::journal_header(seq);
        file.write_all(&header).map_err(io_err("writing the journal"))?;
        file.sync_all().map_err(io_err("syncing the journal"))?;
        self.sync_dir()?;
        let file = OpenOptions::new().append(true).open(&path).map_err(io_err("opening the journal"))?;
        *self.journal.lock().unwrap() = Some(Journal { seq, file, batches: 0, len: header.len() as u64, broken: false });
        Ok(())
    }

    /// Appends one sealed batch (sealed by `seal(seq, batch_index)`) and fsyncs it.
    pub fn journal_append(&self, seal: impl FnOnce(u64, u32) -> Vec<u8>) -> Result<()> {
        let mut g = self.journal.lock().unwrap();
        let j = g.as_mut().expect("journal started before use");
        if j.broken {
            return Err(CacheError::Io {
                what: "the journal is damaged after a failed write; remount to recover".into(),
                source: io::Error::from_raw_os_error(libc::EIO),
            });
        }
        let sealed = seal(j.seq, j.batches);
        let mut rec = Vec::with_capacity(4 + sealed.len());
        rec.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        rec.extend_from_slice(&sealed);
        let written = j.file.write_all(&rec).and_then(|()| j.file.sync_data());
        if let Err(e) = written {
            // Cut a torn batch off so the next append starts at a batch boundary.
            if j.file.set_len(j.len).and_then(|()| j.file.sync_data()).is_err() {
                j.broken = true;
            }
            return Err(io_err("appending to the journal")(e));
        }
        j.len += rec.len() as u64;
        j.batches += 1;
        Ok(())
    }

    /// Freezes the current journal (if it holds anything) and starts the next one.
    /// Returns the frozen journal's segment seq.
    pub fn rotate_journal(&self) -> Result<Option<u64>> {
        let (seq, batches) = {
            let g = self.journal.lock().unwrap();
            let j = g.as_ref().expect("journal started before use");
            (j.seq, j.batches)
        };
        if batches == 0 {
            return Ok(None);
        }
        self.start_journal(seq + 1)?;
        Ok(Some(seq))
    }

    /// Journal files on disk, by seq.
    pub fn journal_files(&self) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir).map_err(io_err("listing journals"))? {
            let e = e.map_err(io_err("listing journals"))?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if let Some(hex) = name.strip_prefix("journal-")
                && let Ok(seq) = u64::from_str_radix(hex, 16)
            {
                out.push(seq);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    pub fn read_journal(&self, seq: u64) -> Result<Vec<u8>> {
        fs::read(self.journal_path(seq)).map_err(io_err("reading the journal"))
    }

    pub fn remove_journal(&self, seq: u64) -> Result<()> {
        match fs::remove_file(self.journal_path(seq)) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing a committed journal")(e)),
        }
    }

    fn sync_dir(&self) -> Result<()> {
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io_err("syncing the cache directory"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path(), &[1; 16], 1 << 20).unwrap();
        assert!(matches!(Cache::open(d.path(), &[1; 16], 1 << 20), Err(CacheError::Busy(_))));
        drop(c);
        Cache::open(d.path(), &[1; 16], 1 << 20).unwrap();
    }

    #[test]
    fn packs_fill_close_and_read_back() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path(), &[1; 16], 100).unwrap();
        let (p1, o1) = c.append_chunk(&[1; 60]).unwrap();
        let (p2, o2) = c.append_chunk(&[2; 60]).unwrap();
        assert_eq!((p1, o1, o2), (p2, 0, 60));
        let (p3, o3) = c.append_chunk(&[3; 10]).unwrap();
        assert_ne!(p3, p1);
        assert_eq!(o3, 0);
        assert_eq!(c.read_staging(&p1, 60, 60).unwrap().unwrap(), vec![2; 60]);
        assert_eq!(c.take_closed_packs(false).unwrap(), vec![p1]);
        assert_eq!(c.take_closed_packs(true).unwrap(), vec![p3]);
        c.remove_staging(&p1).unwrap();
        assert!(c.read_staging(&p1, 0, 1).unwrap().is_none());
        assert_eq!(c.leftover_packs().unwrap(), vec![p3]);
    }

    #[test]
    fn journal_rotates() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path(), &[1; 16], 100).unwrap();
        c.start_journal(5).unwrap();
        assert_eq!(c.rotate_journal().unwrap(), None);
        c.journal_append(|seq, b| format!("{seq}:{b}").into_bytes()).unwrap();
        c.journal_append(|seq, b| format!("{seq}:{b}").into_bytes()).unwrap();
        assert_eq!(c.rotate_journal().unwrap(), Some(5));
        c.journal_append(|seq, b| format!("{seq}:{b}").into_bytes()).unwrap();
        assert_eq!(c.journal_files().unwrap(), vec![5, 6]);
        let j5 = c.read_journal(5).unwrap();
        let (seq, batches) = format::split_journal(&j5).unwrap();
        assert_eq!((seq, batches), (5, vec![&b"5:0"[..], &b"5:1"[..]]));
        let j6 = c.read_journal(6).unwrap();
        assert_eq!(format::split_journal(&j6).unwrap().1, vec![&b"6:0"[..]]);
        c.remove_journal(5).unwrap();
        assert_eq!(c.journal_files().unwrap(), vec![6]);
    }
}
