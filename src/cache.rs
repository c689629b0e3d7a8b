//! The local cache directory of one vault: an exclusive lock, staging packs being filled
//! with sealed chunks, and the local journal of sealed metadata batches. Everything written
//! here is ciphertext handed in by the layers above; this module never sees a key.
//!
//! Layout: `<cache>/<vault-id hex>/{lock, staging/<pack-id hex>, journal-<seq as 16 hex>}`.
//! Lock order inside: `packer` before `journal` (callers hold the catalog lock outside both).
//!
//! The cache is untrusted and the daemon runs as root: the root and every directory in it must
//! be owned by the user running pgcryptfs and writable by nobody else, and every file is
//! reached through [`Dir`] (relative to a directory descriptor, never through a link).

use std::ffi::CString;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::format::{self, Id};

#[derive(Debug)]
pub enum CacheError {
    /// Another process has this vault's cache open.
    Busy(PathBuf),
    /// The vault's master key is not the one this cache pinned (a rekey, or a replaced vault).
    MasterKeyChanged(PathBuf),
    /// The vault's master key is one this cache retired when it accepted a rekey's new key: an
    /// old copy of the vault put back. Refused for good.
    MasterKeyRetired(PathBuf),
    /// The journal cannot take another batch without passing its bound: it must be committed
    /// (frozen, and a new one started) first.
    JournalFull { seq: u64, len: u64, max: u64 },
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
                 ran `pgcryptfs rekey`, it printed the new fingerprint: mount once with --accept-new-master-key \
                 --expect-fingerprint <that fingerprint>; otherwise do not write to this vault",
                p.display()
            ),
            CacheError::MasterKeyRetired(p) => write!(
                f,
                "the vault's master key is one that a rekey retired ({} lists it): the store holds an old copy \
                 of the vault, put back. It is refused for good, and no option accepts it: do not write to this \
                 vault, and find out who put the old copy back",
                p.display()
            ),
            CacheError::JournalFull { seq, len, max } => write!(
                f,
                "cache journal {seq} holds {len} bytes and cannot take more (at most {max}): the records wait \
                 for a commit to the store"
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

/// Largest `lease` or `head` file read (each holds a line or two).
const SMALL_FILE_MAX: usize = 4096;

/// The master-key pin's file: the pinned fingerprint, then `retired <hex>` lines.
const MASTER_PIN_FILE: &str = "master-pin";
/// Most retired master-key fingerprints a cache keeps (the oldest go first).
pub const MAX_RETIRED_PINS: usize = 64;
/// Largest `master-pin` read: 65 bytes and 64 lines of 73.
const MASTER_PIN_MAX: usize = 8192;

/// What a cache's `master-pin` says of the vault's master key (`Cache::master_pin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterPin {
    /// Nothing pinned yet (a first writable mount: trust on first use).
    Unpinned,
    /// The pinned key.
    Pinned,
    /// Another key than the pinned one (after a rekey, or a replaced vault).
    Changed,
}

/// The parsed `master-pin` file: the pinned fingerprint (none if the file is damaged) and those
/// retired. The first format was the fingerprint's line alone.
struct PinFile {
    current: Option<[u8; 32]>,
    retired: Vec<[u8; 32]>,
}

impl PinFile {
    fn parse(text: &str) -> PinFile {
        let mut f = PinFile { current: None, retired: Vec::new() };
        let mut damaged = false;
        for (n, line) in text.lines().enumerate() {
            match (line.strip_prefix("retired "), format::parse_hex_32(line.trim())) {
                (Some(hex), _) => match format::parse_hex_32(hex.trim()) {
                    Some(r) if f.retired.len() < MAX_RETIRED_PINS => f.retired.push(r),
                    _ => damaged = true,
                },
                (None, Some(p)) if n == 0 => f.current = Some(p),
                _ => damaged = true,
            }
        }
        if damaged {
            f.current = None;
        }
        f
    }

    fn encode(&self) -> String {
        let mut s = self.current.map(|p| format!("{}\n", format::hex(&p))).unwrap_or_default();
        for r in &self.retired {
            s.push_str(&format!("retired {}\n", format::hex(r)));
        }
        s
    }
}

/// The head segments a cache knows of: the newest this cache's writer saw in the store, and
/// the one it is writing (its seq and the hash of its bytes), if a commit is under way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KnownHead {
    pub committed: Option<(u64, [u8; 32])>,
    pub writing: Option<(u64, [u8; 32])>,
}

pub struct Cache {
    dir: Dir,
    staging: Dir,
    _lock: File,
    pack_target: u64,
    /// Largest journal file (`format::MAX_JOURNAL_BYTES`).
    journal_max: u64,
    /// Bytes of sealed chunks in staging packs (not yet in the store).
    staged: std::sync::atomic::AtomicU64,
    packer: Mutex<Packer>,
    journal: Mutex<Option<Journal>>,
}

impl Cache {
    /// Opens (creating if needed) the cache of `vault_id` under `root` and locks it. The root,
    /// the vault's directory and `staging/` are refused if they are links, belong to another
    /// user, or are writable by group or others (a missing root is made 0700).
    pub fn open(root: &Path, vault_id: &Id, pack_target: u64) -> Result<Self> {
        let checked = |r: io::Result<Dir>| r.map_err(io_err("the cache directory"));
        let root = checked(Dir::private(root))?;
        let dir = checked(root.sub(&format::hex(vault_id)))?;
        let staging = checked(dir.sub("staging"))?;
        let lock = dir.open_or_create("lock").map_err(io_err("opening the lock file"))?;
        // SAFETY: valid fd owned by `lock`.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(CacheError::Busy(dir.path().to_path_buf()));
        }
        // Temporaries a crashed mount left (only this process holds the lock now).
        for e in dir.list().map_err(io_err("listing the cache directory"))? {
            if e.name.starts_with(".tmp-") && !e.is_dir() {
                let _ = dir.remove(&e.name);
            }
        }
        let staged = staging.list().map(|l| l.iter().filter(|e| e.is_file()).map(|e| e.len).sum()).unwrap_or(0);
        Ok(Self {
            dir,
            staging,
            _lock: lock,
            pack_target,
            journal_max: format::MAX_JOURNAL_BYTES,
            staged: std::sync::atomic::AtomicU64::new(staged),
            packer: Mutex::new(Packer { active: None, closed: Vec::new() }),
            journal: Mutex::new(None),
        })
    }

    /// Another journal bound than `format::MAX_JOURNAL_BYTES` (a vault opened with other
    /// `format::Limits`).
    pub fn with_journal_max(mut self, max: u64) -> Self {
        self.journal_max = max;
        self
    }

    /// The `master-pin` file, if it can be read (an unreadable one is as good as none: whoever
    /// can replace it could as well remove it).
    fn pin_file(&self) -> Option<PinFile> {
        let bytes = self.dir.read_small(MASTER_PIN_FILE, MASTER_PIN_MAX).ok()?;
        Some(PinFile::parse(&String::from_utf8_lossy(&bytes)))
    }

    /// Trust on first use: what this cache's pin says of the master key fingerprint `pin`. A
    /// fingerprint the cache retired (it accepted a rekey's new key after it) is refused here,
    /// whatever the caller would accept.
    pub fn master_pin(&self, pin: &[u8; 32]) -> Result<MasterPin> {
        let Some(f) = self.pin_file() else { return Ok(MasterPin::Unpinned) };
        if f.retired.contains(pin) {
            return Err(CacheError::MasterKeyRetired(self.dir.path().join(MASTER_PIN_FILE)));
        }
        Ok(if f.current == Some(*pin) { MasterPin::Pinned } else { MasterPin::Changed })
    }

    /// Pins `pin` (after the vault's checks passed); the fingerprint pinned before is retired
    /// (at most `MAX_RETIRED_PINS` are kept, the newest).
    pub fn record_master_pin(&self, pin: &[u8; 32]) -> Result<()> {
        let mut f = self.pin_file().unwrap_or(PinFile { current: None, retired: Vec::new() });
        if let Some(old) = f.current.filter(|old| old != pin && !f.retired.contains(old)) {
            f.retired.push(old);
        }
        f.retired.retain(|r| r != pin);
        let excess = f.retired.len().saturating_sub(MAX_RETIRED_PINS);
        f.retired.drain(..excess);
        f.current = Some(*pin);
        self.dir
            .write_atomic(MASTER_PIN_FILE, f.encode().as_bytes())
            .map_err(io_err("recording the master key's fingerprint"))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn staging_path(&self, id: &Id) -> PathBuf {
        self.staging.path().join(format::hex(id))
    }

    fn journal_name(seq: u64) -> String {
        format!("journal-{seq:016x}")
    }

    /// Appends one sealed chunk to the active staging pack; returns its pack and offset.
    /// A pack that reaches the target size is fsynced and queued for upload.
    pub fn append_chunk(&self, sealed: &[u8]) -> Result<(Id, u64)> {
        let mut p = self.packer.lock().unwrap();
        if p.active.is_none() {
            let id = crate::crypto::random_id();
            let file = self.staging.create_new(&format::hex(&id), true).map_err(io_err("creating a staging pack"))?;
            // The pack's directory entry must survive a crash as well as its bytes.
            self.staging.sync().map_err(io_err("syncing the staging directory"))?;
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
        let f = match self.staging.open_read(&format::hex(id)) {
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

    /// The path of a staging pack, for the store's `put_moving` (which opens it by path).
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
        let name = format::hex(id);
        if let Ok(e) = self.staging.stat(&name) {
            self.unstaged(e.len);
        }
        match self.staging.remove(&name) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing an uploaded staging pack")(e)),
        }
    }

    /// Staging packs left by an earlier run (only valid before the first append).
    pub fn leftover_packs(&self) -> Result<Vec<Id>> {
        let mut out = Vec::new();
        for e in self.staging.list().map_err(io_err("listing staging packs"))? {
            // Only the names this module makes, and only regular files.
            if let Some(id) = format::parse_hex_id(&e.name).filter(|id| format::hex(id) == e.name && e.is_file()) {
                out.push(id);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// What this cache knows of the store's metadata chain (`head` file): how recovery tells
    /// a journal that is in the store from one that another writer's segments passed by.
    pub fn known_head(&self) -> KnownHead {
        let text = self.dir.read_small("head", SMALL_FILE_MAX).map(|b| String::from_utf8_lossy(&b).into_owned());
        let mut h = KnownHead::default();
        for line in text.unwrap_or_default().lines() {
            let mut w = line.split(' ');
            let (Some(what), Some(seq), Some(hash), None) = (w.next(), w.next(), w.next(), w.next()) else { continue };
            let Some(at) = seq.parse().ok().zip(format::parse_hex_32(hash)) else { continue };
            match what {
                "committed" => h.committed = Some(at),
                "writing" => h.writing = Some(at),
                _ => {}
            }
        }
        h
    }

    pub fn record_head(&self, h: &KnownHead) -> Result<()> {
        let mut text = String::new();
        for (what, at) in [("committed", h.committed), ("writing", h.writing)] {
            if let Some((seq, hash)) = at {
                text.push_str(&format!("{what} {seq} {}\n", format::hex(&hash)));
            }
        }
        self.dir.write_atomic("head", text.as_bytes()).map_err(io_err("recording the committed head"))
    }

    /// The writer lease this cache held last, if any.
    pub fn lease_id(&self) -> Option<Id> {
        let s = self.dir.read_small("lease", SMALL_FILE_MAX).ok()?;
        format::parse_hex_id(String::from_utf8_lossy(&s).trim())
    }

    pub fn set_lease_id(&self, id: &Id) -> Result<()> {
        self.dir.write_atomic("lease", format::hex(id).as_bytes()).map_err(io_err("recording the writer lease"))
    }

    /// Packs closed and waiting to be handed to the uploaders or a commit.
    pub fn closed_packs(&self) -> usize {
        self.packer.lock().unwrap().closed.len()
    }

    // -- journal ------------------------------------------------------------------------------

    /// Starts a fresh journal for segment `seq`, replacing any file of that name: written under
    /// a random temporary name (`O_EXCL`), fsynced and renamed into place, so a link planted at
    /// the journal's name is replaced, never written through.
    pub fn start_journal(&self, seq: u64) -> Result<()> {
        let header = format::journal_header(seq);
        let name = Self::journal_name(seq);
        let tmp = Dir::temp_name(&name);
        let mut file = self.dir.create_new(&tmp, true).map_err(io_err("creating the journal"))?;
        let written = file
            .write_all(&header)
            .and_then(|()| file.sync_all())
            .and_then(|()| self.dir.rename(&tmp, &name))
            .and_then(|()| self.dir.sync());
        if let Err(e) = written {
            let _ = self.dir.remove(&tmp);
            return Err(io_err("writing the journal")(e));
        }
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
        if j.len + 4 + sealed.len() as u64 > self.journal_max {
            return Err(CacheError::JournalFull { seq: j.seq, len: j.len, max: self.journal_max });
        }
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
        for e in self.dir.list().map_err(io_err("listing journals"))? {
            // Only the names `start_journal` makes (16 lowercase hex digits).
            if let Some(hex) = e.name.strip_prefix("journal-")
                && let Ok(seq) = u64::from_str_radix(hex, 16)
                && Self::journal_name(seq) == e.name
            {
                out.push(seq);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// The bytes of journal `seq`; a file larger than any journal a writer makes is refused
    /// without reading it whole.
    pub fn read_journal(&self, seq: u64) -> Result<Vec<u8>> {
        let name = Self::journal_name(seq);
        self.dir.read_small(&name, self.journal_max as usize).map_err(|source| CacheError::Io {
            what: if source.kind() == io::ErrorKind::InvalidData {
                format!(
                    "the journal {} is larger than any journal pgcryptfs writes ({} bytes): refused",
                    self.dir.path().join(&name).display(),
                    self.journal_max
                )
            } else {
                format!("reading the journal {}", self.dir.path().join(&name).display())
            },
            source,
        })
    }

    /// Bytes in the current journal file (0 before the first is started).
    pub fn journal_len(&self) -> u64 {
        self.journal.lock().unwrap().as_ref().map_or(0, |j| j.len)
    }

    /// The refusal an append of at most `plain` bytes of records would meet (a batch adds 44
    /// bytes to them), told before anything is sealed. Only for a journal that holds batches
    /// already: an empty one takes what fits its bound, and the append itself refuses the rest.
    pub fn journal_full_for(&self, plain: u64) -> Option<CacheError> {
        let g = self.journal.lock().unwrap();
        let j = g.as_ref()?;
        (j.batches > 0 && j.len + 4 + (format::SEAL_OVERHEAD as u64) + plain > self.journal_max)
            .then_some(CacheError::JournalFull { seq: j.seq, len: j.len, max: self.journal_max })
    }

    pub fn remove_journal(&self, seq: u64) -> Result<()> {
        match self.dir.remove(&Self::journal_name(seq)) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing a committed journal")(e)),
        }
    }

    fn sync_dir(&self) -> Result<()> {
        self.dir.sync().map_err(io_err("syncing the cache directory"))
    }
}

// ---------------------------------------------------------------------------------------------
// Link-safe directory access

/// A directory the daemon writes in (the cache is untrusted: anyone who can write it may plant
/// links). It is opened once with `O_DIRECTORY|O_NOFOLLOW` and checked (owned by this process's
/// user, writable by no one else); every file in it is then created, opened, renamed, listed and
/// removed relative to that descriptor (`openat` and friends) and never through a link: new files
/// are `O_CREAT|O_EXCL` (under a random temporary name, then renamed), existing ones are opened
/// `O_NOFOLLOW` and must be regular files. A link planted at any name, or a directory swapped
/// for a link after it was opened, is never followed.
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// One directory entry as `lstat` sees it (links are not followed).
pub struct Entry {
    pub name: String,
    pub mode: u32,
    pub len: u64,
    pub mtime: i64,
}

impl Entry {
    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
}

fn cname(name: &str) -> io::Result<CString> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad file name {name:?}")));
    }
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a file name"))
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

fn refuse(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, msg)
}

/// Checks an opened directory: owned by this process's user, writable by nobody else. Read and
/// search bits for group and others are removed (the cache holds nothing they need).
fn check_private(fd: &OwnedFd, path: &Path) -> io::Result<()> {
    // SAFETY: valid fd; st is a valid out-pointer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    let me = euid();
    if st.st_uid != me {
        return Err(refuse(format!(
            "{} is owned by uid {}, not by uid {me} (the user running pgcryptfs): refused; use a directory of your own",
            path.display(),
            st.st_uid
        )));
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(refuse(format!(
            "{} is writable by group or others (mode {mode:04o}): refused; run chmod 700 {}",
            path.display(),
            path.display()
        )));
    }
    if mode & 0o077 != 0 {
        // SAFETY: valid fd.
        cvt(unsafe { libc::fchmod(fd.as_raw_fd(), 0o700) })?;
    }
    Ok(())
}

fn open_dir_nofollow(at: libc::c_int, name: &CString, path: &Path) -> io::Result<OwnedFd> {
    // SAFETY: name is a valid C string; the fd returned is owned below.
    let fd = unsafe { libc::openat(at, name.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => {
                refuse(format!("{} is a symbolic link or not a directory: refused", path.display()))
            }
            _ => io::Error::new(e.kind(), format!("{}: {e}", path.display())),
        });
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Dir {
    /// Opens the private directory `path`, creating it (mode 0700, and its missing parents) if
    /// it does not exist. Refused: a symlink, another owner, write access for group or others.
    pub fn private(path: &Path) -> io::Result<Dir> {
        if fs::symlink_metadata(path).is_err() {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent)?;
            }
            match fs::DirBuilder::new().mode(0o700).create(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("creating {}: {e}", path.display()))),
            }
        }
        let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::other("NUL in a path"))?;
        let fd = open_dir_nofollow(libc::AT_FDCWD, &c, path)?;
        check_private(&fd, path)?;
        Ok(Dir { fd, path: path.to_path_buf() })
    }

    /// The subdirectory `name`, created (0700) if missing, with the same checks.
    pub fn sub(&self, name: &str) -> io::Result<Dir> {
        let c = cname(name)?;
        let path = self.path.join(name);
        // SAFETY: valid fd and C string.
        if unsafe { libc::mkdirat(self.raw(), c.as_ptr(), 0o700) } != 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(io::Error::new(e.kind(), format!("creating {}: {e}", path.display())));
            }
        }
        let fd = open_dir_nofollow(self.raw(), &c, &path)?;
        check_private(&fd, &path)?;
        Ok(Dir { fd, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn raw(&self) -> libc::c_int {
        self.fd.as_raw_fd()
    }

    fn openat(&self, name: &str, flags: libc::c_int) -> io::Result<File> {
        let c = cname(name)?;
        // SAFETY: valid fd and C string; the fd returned is owned below.
        let fd = unsafe { libc::openat(self.raw(), c.as_ptr(), flags | libc::O_NOFOLLOW | libc::O_CLOEXEC, 0o600 as libc::c_uint) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just opened, owned by nobody else.
        let f = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        if flags & libc::O_EXCL == 0 && !f.metadata()?.is_file() {
            return Err(refuse(format!("{} is not a regular file: refused", self.path.join(name).display())));
        }
        Ok(f)
    }

    /// Opens an existing regular file for reading (never through a link; a FIFO is refused
    /// without blocking).
    pub fn open_read(&self, name: &str) -> io::Result<File> {
        self.openat(name, libc::O_RDONLY | libc::O_NONBLOCK)
    }

    /// Creates a new file (0600); fails if anything, a link included, has that name.
    pub fn create_new(&self, name: &str, append: bool) -> io::Result<File> {
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | if append { libc::O_APPEND } else { 0 };
        self.openat(name, flags)
    }

    /// Opens (creating if needed, 0600) a regular file for writing without truncating it.
    pub fn open_or_create(&self, name: &str) -> io::Result<File> {
        self.openat(name, libc::O_RDWR | libc::O_CREAT | libc::O_NONBLOCK)
    }

    /// A fresh temporary name in this directory, for `create_new` and then `rename`.
    pub fn temp_name(prefix: &str) -> String {
        format!(".tmp-{prefix}-{}", format::hex(&crate::crypto::random_id()[..8]))
    }

    /// The same directory under the name it now has (after a rename of it).
    pub fn with_path(mut self, path: PathBuf) -> Dir {
        self.path = path;
        self
    }

    /// Creates a new file under a random temporary name, fills it, fsyncs it; returns the name.
    pub fn write_temp(&self, prefix: &str, fill: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<(String, File)> {
        let tmp = Self::temp_name(prefix);
        let mut f = self.create_new(&tmp, false)?;
        if let Err(e) = fill(&mut f).and_then(|()| f.sync_all()) {
            let _ = self.remove(&tmp);
            return Err(e);
        }
        Ok((tmp, f))
    }

    /// Replaces `name` with `data` atomically (temporary file, fsync, rename, directory fsync).
    /// A link at `name` is replaced, never written through.
    pub fn write_atomic(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let (tmp, _f) = self.write_temp(name, |f| f.write_all(data))?;
        if let Err(e) = self.rename(&tmp, name) {
            let _ = self.remove(&tmp);
            return Err(e);
        }
        self.sync()
    }

    /// Reads a small file: at most `max` bytes, and an error if it holds more (a planted huge
    /// file is not read into memory).
    pub fn read_small(&self, name: &str, max: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        io::Read::read_to_end(&mut io::Read::take(self.open_read(name)?, max as u64 + 1), &mut out)?;
        if out.len() > max {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{name} is larger than {max} bytes")));
        }
        Ok(out)
    }

    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (f, t) = (cname(from)?, cname(to)?);
        // SAFETY: valid fds and C strings.
        cvt(unsafe { libc::renameat(self.raw(), f.as_ptr(), self.raw(), t.as_ptr()) }).map(|_| ())
    }

    /// Removes a file (a link itself, never its target).
    pub fn remove(&self, name: &str) -> io::Result<()> {
        let c = cname(name)?;
        // SAFETY: valid fd and C string.
        cvt(unsafe { libc::unlinkat(self.raw(), c.as_ptr(), 0) }).map(|_| ())
    }

    /// `lstat` of one entry.
    pub fn stat(&self, name: &str) -> io::Result<Entry> {
        let c = cname(name)?;
        // SAFETY: valid fd and C string; st is a valid out-pointer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        cvt(unsafe { libc::fstatat(self.raw(), c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
        Ok(Entry { name: name.to_string(), mode: st.st_mode, len: st.st_size as u64, mtime: st.st_mtime })
    }

    /// Every entry (but `.` and `..`), as `lstat` sees it; names that are not UTF-8 are skipped.
    pub fn list(&self) -> io::Result<Vec<Entry>> {
        // SAFETY: dup of a valid fd; fdopendir takes ownership of the duplicate and closedir
        // frees it; readdir's entries are read before the next call.
        unsafe {
            let dup = cvt(libc::fcntl(self.raw(), libc::F_DUPFD_CLOEXEC, 0))?;
            let d = libc::fdopendir(dup);
            if d.is_null() {
                let e = io::Error::last_os_error();
                libc::close(dup);
                return Err(e);
            }
            libc::rewinddir(d);
            let mut names = Vec::new();
            loop {
                *libc::__errno_location() = 0;
                let ent = libc::readdir64(d);
                if ent.is_null() {
                    let errno = *libc::__errno_location();
                    libc::closedir(d);
                    if errno != 0 {
                        return Err(io::Error::from_raw_os_error(errno));
                    }
                    break;
                }
                let name = std::ffi::CStr::from_ptr((*ent).d_name.as_ptr());
                if let Ok(n) = name.to_str()
                    && n != "."
                    && n != ".."
                {
                    names.push(n.to_string());
                }
            }
            Ok(names.into_iter().filter_map(|n| self.stat(&n).ok()).collect())
        }
    }

    /// Removes the subdirectory `name` and everything under it, never following a link.
    pub fn remove_tree(&self, name: &str) -> io::Result<()> {
        let sub = match self.stat(name) {
            Ok(e) if e.is_dir() => {
                let c = cname(name)?;
                open_dir_nofollow(self.raw(), &c, &self.path.join(name))?
            }
            Ok(_) => return self.remove(name),
            Err(e) => return Err(e),
        };
        let sub = Dir { fd: sub, path: self.path.join(name) };
        for e in sub.list()? {
            if e.is_dir() { sub.remove_tree(&e.name)? } else { sub.remove(&e.name)? }
        }
        let c = cname(name)?;
        // SAFETY: valid fd and C string.
        cvt(unsafe { libc::unlinkat(self.raw(), c.as_ptr(), libc::AT_REMOVEDIR) }).map(|_| ())
    }

    /// fsync of the directory itself (new, renamed and removed entries survive a crash).
    pub fn sync(&self) -> io::Result<()> {
        // SAFETY: valid fd.
        cvt(unsafe { libc::fsync(self.raw()) }).map(|_| ())
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

    /// A victim outside the cache, and a link to it planted at `name` in the vault's directory.
    fn plant(cache_dir: &Path, name: &str) -> (tempfile::TempDir, PathBuf) {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, cache_dir.join(name)).unwrap();
        (outside, victim)
    }

    #[test]
    fn planted_links_are_never_written_through() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path(), &[1; 16], 100).unwrap();
        let dir = c.dir().to_path_buf();
        // The names today's code wrote through, and the files themselves.
        let mut victims = Vec::new();
        for name in ["lease.tmp", "master-pin.tmp", "lease", "master-pin", "journal-0000000000000007"] {
            victims.push(plant(&dir, name));
        }
        c.set_lease_id(&[7; 16]).unwrap();
        assert_eq!(c.lease_id(), Some([7; 16]));
        assert_eq!(c.master_pin(&[8; 32]).unwrap(), MasterPin::Unpinned);
        c.record_master_pin(&[8; 32]).unwrap();
        assert_eq!(c.master_pin(&[8; 32]).unwrap(), MasterPin::Pinned);
        c.start_journal(7).unwrap();
        c.journal_append(|_, _| b"batch".to_vec()).unwrap();
        assert_eq!(format::split_journal(&c.read_journal(7).unwrap()).unwrap().1, vec![&b"batch"[..]]);
        for (_keep, v) in &victims {
            assert_eq!(fs::read(v).unwrap(), b"precious", "{} was written through a link", v.display());
        }
        for name in ["lease", "master-pin", "journal-0000000000000007"] {
            assert!(!fs::symlink_metadata(dir.join(name)).unwrap().is_symlink(), "{name} still a link");
        }
        // A link at a staging pack's name is not read as the pack; a link in place of a journal
        // is refused on read, and removing it removes the link only.
        let (_keep, victim) = plant(&dir, "journal-0000000000000009");
        assert!(c.read_journal(9).is_err());
        c.remove_journal(9).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        let id = [5u8; 16];
        std::os::unix::fs::symlink(&victim, dir.join("staging").join(format::hex(&id))).unwrap();
        assert!(c.read_staging(&id, 0, 4).is_err());
        assert!(c.leftover_packs().unwrap().is_empty(), "a link is not a staged pack");
        c.remove_staging(&id).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn a_link_in_place_of_a_cache_directory_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), d.path().join(format::hex(&[2; 16]))).unwrap();
        let e = Cache::open(d.path(), &[2; 16], 100).err().expect("a linked vault directory is refused").to_string();
        assert!(e.contains("symbolic link"), "{e}");
        fs::create_dir(d.path().join(format::hex(&[3; 16]))).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), d.path().join(format::hex(&[3; 16])).join("staging")).unwrap();
        assert!(Cache::open(d.path(), &[3; 16], 100).is_err());
        let linked_root = d.path().join("root-link");
        std::os::unix::fs::symlink(elsewhere.path(), &linked_root).unwrap();
        assert!(Cache::open(&linked_root, &[4; 16], 100).is_err());
        assert_eq!(fs::read_dir(elsewhere.path()).unwrap().count(), 0, "nothing was made through a link");
    }

    #[test]
    fn the_cache_root_must_be_private() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let d = tempfile::tempdir().unwrap();
        // Missing: made 0700.
        let root = d.path().join("new/cache");
        Cache::open(&root, &[1; 16], 100).unwrap();
        assert_eq!(fs::metadata(&root).unwrap().mode() & 0o7777, 0o700);
        // Writable by others: refused, naming the path and the fix.
        let open = d.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let e = Cache::open(&open, &[1; 16], 100).err().expect("mode 0777 is refused").to_string();
        assert!(e.contains(&open.display().to_string()) && e.contains("0777") && e.contains("chmod 700"), "{e}");
        // Readable by others only: tightened to 0700.
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
        Cache::open(&open, &[1; 16], 100).unwrap();
        assert_eq!(fs::metadata(&open).unwrap().mode() & 0o7777, 0o700);
        // Owned by someone else (as root, the tests can make one): refused.
        if euid() == 0 {
            let theirs = d.path().join("theirs");
            fs::create_dir(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
            fs::set_permissions(&theirs, fs::Permissions::from_mode(0o700)).unwrap();
            let e = Cache::open(&theirs, &[1; 16], 100).err().expect("another owner is refused").to_string();
            assert!(e.contains("owned by uid 65534"), "{e}");
        }
    }

    /// The pin keeps the keys it retired: a retired key is refused for good (the caller cannot
    /// accept it), the first format (one line) still reads, and at most MAX_RETIRED_PINS are
    /// kept, the newest.
    #[test]
    fn master_pins_retire_and_never_take_back() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path(), &[1; 16], 100).unwrap();
        let pin_file = c.dir().join("master-pin");
        // The first format: the fingerprint's line alone.
        fs::write(&pin_file, format!("{}\n", format::hex(&[1; 32]))).unwrap();
        assert_eq!(c.master_pin(&[1; 32]).unwrap(), MasterPin::Pinned);
        assert_eq!(c.master_pin(&[2; 32]).unwrap(), MasterPin::Changed);
        // Key 2 accepted (by the vault, after its checks): key 1 is retired.
        c.record_master_pin(&[2; 32]).unwrap();
        assert_eq!(c.master_pin(&[2; 32]).unwrap(), MasterPin::Pinned);
        let e = c.master_pin(&[1; 32]).unwrap_err();
        assert!(matches!(e, CacheError::MasterKeyRetired(_)), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("no option accepts it") && !msg.contains("--"), "{msg}");
        assert_eq!(
            fs::read_to_string(&pin_file).unwrap(),
            format!("{}\nretired {}\n", format::hex(&[2; 32]), format::hex(&[1; 32]))
        );
        // A changed key's refusal names what to do after a rekey, never the key found.
        let changed = CacheError::MasterKeyChanged(pin_file.clone()).to_string();
        assert!(changed.contains("--accept-new-master-key --expect-fingerprint <that fingerprint>"), "{changed}");
        // Many rekeys: the oldest retired keys go, the newest stay.
        for k in 3..(MAX_RETIRED_PINS as u8 + 10) {
            c.record_master_pin(&[k; 32]).unwrap();
        }
        let newest_retired = MAX_RETIRED_PINS as u8 + 8;
        assert!(matches!(c.master_pin(&[newest_retired; 32]), Err(CacheError::MasterKeyRetired(_))));
        assert_eq!(c.master_pin(&[1; 32]).unwrap(), MasterPin::Changed, "the oldest was forgotten");
        let text = fs::read_to_string(&pin_file).unwrap();
        assert_eq!(text.lines().filter(|l| l.starts_with("retired ")).count(), MAX_RETIRED_PINS);
        assert!(text.len() <= MASTER_PIN_MAX, "{}", text.len());
        // A damaged pin pins nothing: another key is a change, not a first use.
        fs::write(&pin_file, "garbage\n").unwrap();
        assert_eq!(c.master_pin(&[2; 32]).unwrap(), MasterPin::Changed);
    }

    /// A journal never grows past its bound (the append is refused, the file stays as it was),
    /// and a journal file larger than the bound (planted, or from elsewhere) is refused without
    /// reading it whole.
    #[test]
    fn journals_stay_within_their_bound() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path(), &[1; 16], 100).unwrap().with_journal_max(100);
        c.start_journal(3).unwrap();
        c.journal_append(|_, _| vec![7; 50]).unwrap(); // 20 + 54
        let e = c.journal_append(|_, _| vec![8; 30]).unwrap_err(); // would be 108
        assert!(matches!(e, CacheError::JournalFull { seq: 3, len: 74, max: 100 }), "{e}");
        c.journal_append(|_, _| vec![9; 22]).unwrap(); // exactly 100
        assert_eq!(c.journal_len(), 100);
        assert_eq!(format::split_journal(&c.read_journal(3).unwrap()).unwrap().1, vec![&[7; 50][..], &[9; 22][..]]);
        // A planted journal of 101 bytes is refused, naming it.
        let big = c.dir().join("journal-0000000000000004");
        fs::File::create(&big).unwrap().set_len(101).unwrap();
        let e = c.read_journal(4).unwrap_err().to_string();
        assert!(e.contains("journal-0000000000000004") && e.contains("larger than any journal"), "{e}");
        // At the production bound: a sparse file one byte past it.
        let c = Cache::open(d.path(), &[2; 16], 100).unwrap();
        let huge = c.dir().join("journal-0000000000000001");
        fs::File::create(&huge).unwrap().set_len(format::MAX_JOURNAL_BYTES + 1).unwrap();
        assert!(c.read_journal(1).unwrap_err().to_string().contains("larger than any journal"));
    }
}
