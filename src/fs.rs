//! POSIX behaviour over the vault: inodes and handles, bounded per-file plaintext buffers of
//! dirty chunks handed to the sealer pool, read-modify-write, truncate, fsync, and the one
//! errno table.
//!
//! Lock order: `files` map → one file's `FileData` → catalog (inside `vault`) → cache.
//! A `FileData` lock is never taken while the catalog lock is held. A thread holding a
//! `FileData` lock may wait for the sealers (a full queue, a file's tickets); a sealing job
//! takes the catalog and cache locks, an `InFlight` state and a file's `Tickets`, never a
//! `FileData` lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::cache::CacheError;
use crate::catalog::{self, CatalogError, SetAttr};
use crate::crypto;
use crate::format::{self, ChunkRef, Id, Kind, Time};
use crate::sealing::{Pool, Tickets};
use crate::vault::{Vault, VaultError};

/// A POSIX error number. `errno_of` is the only place errors become one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl From<CatalogError> for Errno {
    fn from(e: CatalogError) -> Self {
        errno_of(&FsError::Catalog(e))
    }
}

/// What can go wrong below the fs layer.
#[derive(Debug)]
pub enum FsError {
    Catalog(CatalogError),
    Vault(VaultError),
    /// The handle table is at its bound (`Fs::max_handles`).
    TooManyHandles,
}

/// The errno table.
pub fn errno_of(e: &FsError) -> Errno {
    Errno(match e {
        FsError::Catalog(c) => match c {
            CatalogError::NotFound => libc::ENOENT,
            CatalogError::Exists => libc::EEXIST,
            CatalogError::NotDir => libc::ENOTDIR,
            CatalogError::IsDir => libc::EISDIR,
            CatalogError::NotEmpty => libc::ENOTEMPTY,
            CatalogError::Invalid => libc::EINVAL,
            CatalogError::NameTooLong => libc::ENAMETOOLONG,
            CatalogError::NoSpace => libc::ENOSPC,
            CatalogError::Corrupt(_) => libc::EIO,
        },
        FsError::TooManyHandles => libc::ENFILE,
        FsError::Vault(v) => match v {
            VaultError::ReadOnly => libc::EROFS,
            VaultError::CacheFull(_) => libc::ENOSPC,
            VaultError::Cache(CacheError::JournalFull { .. }) => libc::ENOSPC,
            VaultError::Cache(CacheError::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOSPC) => {
                libc::ENOSPC
            }
            VaultError::Cache(CacheError::Io { source, .. }) if source.raw_os_error() == Some(libc::EDQUOT) => {
                libc::EDQUOT
            }
            _ => libc::EIO,
        },
    })
}

pub type Result<T> = std::result::Result<T, Errno>;

/// What getattr returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub ino: u64,
    pub kind: Kind,
    pub perm: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub blocks: u64,
    /// Device number of a device node (FUSE's 32-bit encoding), else 0.
    pub rdev: u32,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
}

/// One directory entry as readdir returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub cookie: u64,
    pub ino: u64,
    pub kind: Kind,
    pub name: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
}

/// Plaintext of chunks written but not yet sealed, for one inode.
struct FileData {
    file_id: Id,
    dirty: BTreeMap<u64, Dirty>,
    /// Chunks handed to the sealers whose outcome this file has not taken in yet (`reap`):
    /// readable while being sealed, at most one per index.
    sealing: BTreeMap<u64, Arc<InFlight>>,
    /// The file's sealing jobs, by ticket: flush, fsync, close, setattr and commit wait for
    /// those handed over before them.
    tickets: Arc<Tickets>,
    /// The first seal that failed since the last report: the next write that hands over
    /// chunks, flush, fsync, close, setattr or commit reports it (its data is back in `dirty`).
    error: Option<Errno>,
    /// Counts writes, to find the least recently written buffer.
    writes: u64,
}

impl FileData {
    fn new(file_id: Id) -> Self {
        FileData { file_id, dirty: BTreeMap::new(), sealing: BTreeMap::new(), tickets: Arc::default(), error: None, writes: 0 }
    }
}

/// Plaintext handed to the sealers (a whole chunk buffer); wiped when its last holder (the
/// job, the file's `InFlight`, a reader) lets go of it, and kept for a new dirty chunk.
struct Plain(Vec<u8>, Arc<Buffers>);

impl Drop for Plain {
    fn drop(&mut self) {
        self.1.give(std::mem::take(&mut self.0));
    }
}

/// Wiped chunk buffers (zeros, a whole chunk long) kept for new dirty chunks: a sealed
/// chunk's buffer becomes the next one's, so writers and sealers do not churn the allocator
/// (whose per-thread arenas kept freed buffers resident: 42 MiB peak against 24 for a
/// pg_basebackup with two sealers) and a new chunk needs no zeroing of its own.
struct Buffers {
    free: Mutex<Vec<Vec<u8>>>,
    chunk: usize,
    /// Most buffers kept (the sealer queue's bound and one per sealer and writer more).
    keep: usize,
}

impl Buffers {
    fn new(chunk: usize, keep: usize) -> Self {
        Buffers { free: Mutex::new(Vec::new()), chunk, keep }
    }

    /// A buffer of zeros, a whole chunk long.
    fn take(&self) -> Vec<u8> {
        self.free.lock().unwrap().pop().unwrap_or_else(|| vec![0; self.chunk])
    }

    /// Wipes `buf` and keeps it if it is a whole chunk long and there is room.
    fn give(&self, mut buf: Vec<u8>) {
        crypto::wipe(&mut buf);
        if buf.len() == self.chunk && buf.capacity() == self.chunk {
            let mut free = self.free.lock().unwrap();
            if free.len() < self.keep {
                free.push(buf);
            }
        }
    }
}

/// One chunk handed to the sealers.
struct InFlight {
    ticket: u64,
    /// What was known of the chunk when it was handed over (a new buffer of the chunk, or the
    /// buffer put back after a failure, starts from it).
    known: Coverage,
    state: Mutex<SealState>,
}

enum SealState {
    /// Being sealed: reads and new writes of the chunk use these bytes.
    Sealing(Arc<Plain>),
    /// Sealed and its chunk record logged: the catalog has it.
    Sealed,
    /// Sealing or appending failed: the bytes go back to the file's dirty buffers (unless a
    /// newer buffer of the chunk is there) and the error to the next report.
    Failed(Arc<Plain>, Errno),
}

impl InFlight {
    /// The chunk's bytes while they are not in the catalog yet.
    fn bytes(&self) -> Option<Arc<Plain>> {
        match &*self.state.lock().unwrap() {
            SealState::Sealing(p) | SealState::Failed(p, _) => Some(p.clone()),
            SealState::Sealed => None,
        }
    }
}

impl Drop for FileData {
    fn drop(&mut self) {
        for d in self.dirty.values_mut() {
            crypto::wipe(&mut d.buf);
        }
    }
}

/// One dirty chunk: its whole plaintext (chunk size, zero-padded), which of its bytes are
/// known, and when it was last written.
struct Dirty {
    buf: Vec<u8>,
    known: Coverage,
    /// `FileData::writes` at its last write.
    touched: u64,
}

/// The byte ranges of a dirty chunk that hold what the file will have there: written, or
/// loaded from the chunk's sealed version. Zeros of a hole or past the old end of file are not
/// known (writeback may not have delivered those pages yet). A chunk is complete when its
/// known bytes reach its length at the file size; only then is it sealed before it must be.
#[derive(Default, Clone)]
struct Coverage {
    /// Disjoint, sorted, non-adjacent half-open ranges.
    spans: Vec<(u32, u32)>,
    /// Too fragmented to track (more than `max_spans`): counts as complete, so the chunk is
    /// sealed once the writer moves past it, as without tracking.
    untracked: bool,
}

/// Most ranges the coverage of a chunk of `cs` bytes keeps: 4 KiB pages in any order make at
/// most one per two pages (8 bytes a range: at most 1/1024 of the chunk, 128 bytes for the
/// smallest chunks).
fn max_spans(cs: usize) -> usize {
    (cs / 8192).max(16)
}

impl Coverage {
    /// Adds `start..end` of a chunk of `cs` bytes.
    fn add(&mut self, start: usize, end: usize, cs: usize) {
        if self.untracked || start >= end {
            return;
        }
        let (mut s, mut e) = (start as u32, end as u32);
        // Ranges that overlap or touch [s, e) merge into it.
        let first = self.spans.partition_point(|&(_, b)| b < s);
        let last = self.spans.partition_point(|&(a, _)| a <= e);
        if first < last {
            s = s.min(self.spans[first].0);
            e = e.max(self.spans[last - 1].1);
        }
        self.spans.splice(first..last, [(s, e)]);
        if self.spans.len() > max_spans(cs) {
            self.spans = Vec::new();
            self.untracked = true;
        }
    }

    /// Forgets what lies at and past `len` (a truncation zeroed it).
    fn cut(&mut self, len: usize) {
        let len = len as u32;
        self.spans.retain(|&(a, _)| a < len);
        if let Some(last) = self.spans.last_mut() {
            last.1 = last.1.min(len);
        }
    }

    /// True if bytes `0..len` are all known.
    fn covers(&self, len: usize) -> bool {
        self.untracked || len == 0 || self.spans.first().is_some_and(|&(a, b)| a == 0 && b as usize >= len)
    }
}

/// Most dirty chunks one file may hold; past it, the least recently written are sealed,
/// complete or not.
const MAX_DIRTY_CHUNKS: usize = 32;

/// Most open file handles; an open beyond is refused with ENFILE (a handle costs about 40
/// bytes here and keeps its inode in the catalog).
pub const MAX_HANDLES: usize = 1 << 20;

/// Most plaintext in dirty chunk buffers over all files (256 MiB), counting the buffers being
/// sealed. Past it, a write seals its file's buffers (all but the chunk it ended in, or that
/// one too if it is the only one) and waits for them, so writes into many open files cannot
/// make the daemon hold a buffer for each.
pub const MAX_DIRTY_BYTES: u64 = 256 << 20;

/// Plaintext the sealer pool's queue holds at most (besides the chunk each sealer works on),
/// and never fewer than two chunks per sealer.
const SEAL_QUEUE_BYTES: usize = 4 << 20;

pub struct Fs {
    vault: Arc<Vault>,
    /// fsync waits for the store, not only the cache (`--sync-store`).
    sync_store: bool,
    /// `MAX_HANDLES` and `MAX_DIRTY_BYTES` (tests make them small).
    max_handles: usize,
    max_dirty_bytes: u64,
    files: Mutex<HashMap<u64, Arc<Mutex<FileData>>>>,
    handles: Mutex<HashMap<u64, u64>>,
    next_fh: AtomicU64,
    /// Where the last read of each recently read file ended (readahead's sequential test).
    read_ends: Mutex<lru::LruCache<u64, u64>>,
    /// Seals handed-over chunks (no threads: on the thread that hands them over).
    sealers: Pool,
    /// Chunk buffers for reuse.
    buffers: Arc<Buffers>,
    /// Tests: the next this many seals fail as an append to the cache would.
    #[cfg(test)]
    fail_seals: Arc<std::sync::atomic::AtomicU32>,
}

/// Files whose last read position is remembered for readahead.
const READ_ENDS: usize = 1024;

impl Fs {
    pub fn new(vault: Vault) -> Self {
        let vault_chunk = vault.chunk_size() as usize;
        Self {
            vault: Arc::new(vault),
            sync_store: false,
            max_handles: MAX_HANDLES,
            max_dirty_bytes: MAX_DIRTY_BYTES,
            files: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            read_ends: Mutex::new(lru::LruCache::new(std::num::NonZeroUsize::new(READ_ENDS).unwrap())),
            sealers: Pool::new(0, 1),
            buffers: Arc::new(Buffers::new(vault_chunk, 8)),
            #[cfg(test)]
            fail_seals: Arc::default(),
        }
    }

    /// Seals on `threads` sealer threads (0: on the thread that writes, flushes or commits),
    /// behind a queue of `SEAL_QUEUE_BYTES`. A read-only vault seals nothing and starts none.
    pub fn with_sealers(mut self, threads: usize) -> Self {
        let threads = if self.vault.read_only() { 0 } else { threads };
        let queue = Self::seal_queue(threads, self.vault.chunk_size());
        self.sealers = Pool::new(threads, queue);
        self.buffers = Arc::new(Buffers::new(self.vault.chunk_size() as usize, queue + 2 * threads + 8));
        self
    }

    fn seal_queue(threads: usize, chunk_size: u32) -> usize {
        (SEAL_QUEUE_BYTES / chunk_size as usize).max(2 * threads)
    }

    /// The sealer threads (0: sealing runs on the calling thread).
    pub fn sealer_threads(&self) -> usize {
        self.sealers.threads()
    }

    /// Tests: seal through this pool (one held before its first job, a small queue).
    #[cfg(test)]
    fn with_pool(mut self, pool: Pool) -> Self {
        self.sealers = pool;
        self
    }

    pub fn with_sync_store(mut self, on: bool) -> Self {
        self.sync_store = on;
        self
    }

    /// Other bounds than `MAX_HANDLES` and `MAX_DIRTY_BYTES` (tests).
    pub fn with_bounds(mut self, max_handles: usize, max_dirty_bytes: u64) -> Self {
        self.max_handles = max_handles;
        self.max_dirty_bytes = max_dirty_bytes;
        self
    }

    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    pub fn vault_arc(&self) -> Arc<Vault> {
        self.vault.clone()
    }

    fn writable(&self) -> Result<()> {
        if self.vault.read_only() { Err(Errno(libc::EROFS)) } else { Ok(()) }
    }

    /// Logs a vault error with what was being done (naming the file) and maps it.
    fn verr(&self, e: VaultError, what: impl FnOnce() -> String) -> Errno {
        log::error!("{}: {e}", what());
        errno_of(&FsError::Vault(e))
    }

    /// After a change: once the records waiting for the journal reach a quarter of their bound,
    /// they are appended (a full journal is committed first), so a burst of changes without
    /// fsync never reaches the bound while the cache and the store work. A failure here is
    /// not the change's: it stays pending, and the bound refuses changes if it persists.
    fn relieve(&self) {
        if self.vault.read_only() {
            return;
        }
        let due = {
            let cat = self.vault.catalog();
            cat.pending_bytes() >= cat.limits().max_pending_bytes / 4
        };
        if due && let Err(e) = self.vault.flush_journal() {
            log::debug!("appending pending records to the journal: {e}");
        }
    }

    pub fn stat(&self, ino: u64) -> Result<Stat> {
        let cat = self.vault.catalog();
        let i = cat.get(ino)?;
        Ok(Stat {
            ino,
            kind: i.attr.kind,
            perm: i.attr.mode,
            nlink: i.nlink(),
            uid: i.attr.uid,
            gid: i.attr.gid,
            size: i.attr.size,
            blocks: i.attr.size.div_ceil(512),
            rdev: if i.attr.kind.is_device() { format::rdev_of(&i.target).unwrap_or(0) } else { 0 },
            atime: i.attr.atime,
            mtime: i.attr.mtime,
            ctime: i.attr.ctime,
        })
    }

    /// Looks up an entry; the kernel now holds a reference to it (see `forget`).
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Stat> {
        let ino = self.vault.catalog().lookup(parent, name)?.ino;
        self.entry(ino)
    }

    /// Stat of an inode the kernel is being handed a reference to.
    fn entry(&self, ino: u64) -> Result<Stat> {
        self.vault.catalog().remember(ino);
        self.stat(ino)
    }

    /// The kernel was handed a reference to `ino` (a directory listing with attributes).
    pub fn remember(&self, ino: u64) {
        self.vault.catalog().remember(ino);
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        self.vault.catalog().forget(ino, n);
        self.forget_data_if_gone(ino);
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let cat = self.vault.catalog();
        let i = cat.get(ino)?;
        if i.attr.kind != Kind::Symlink {
            return Err(Errno(libc::EINVAL));
        }
        Ok(i.target.clone())
    }

    /// Creates a non-directory node; `mode` carries the S_IF* type bits. Device nodes are kept
    /// as metadata with their number (`rdev`), as tar and rsync expect; the mount is always
    /// `nodev`, so none of them opens a device (the kernel checks CAP_MKNOD before we see it).
    pub fn mknod(&self, parent: u64, name: &[u8], mode: u32, rdev: u32, uid: u32, gid: u32) -> Result<Stat> {
        self.writable()?;
        let kind = match mode & libc::S_IFMT {
            libc::S_IFREG | 0 => Kind::File,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFCHR => Kind::CharDev,
            libc::S_IFBLK => Kind::BlockDev,
            _ => return Err(Errno(libc::EINVAL)),
        };
        let target = if kind.is_device() { format::rdev_bytes(rdev) } else { Vec::new() };
        let ino = self.vault.catalog().create(parent, name, kind, mode, uid, gid, &target, Time::now())?;
        self.relieve();
        self.entry(ino)
    }

    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32, uid: u32, gid: u32) -> Result<Stat> {
        self.writable()?;
        let ino = self.vault.catalog().create(parent, name, Kind::Dir, mode, uid, gid, b"", Time::now())?;
        self.relieve();
        self.entry(ino)
    }

    pub fn symlink(&self, parent: u64, name: &[u8], target: &[u8], uid: u32, gid: u32) -> Result<Stat> {
        self.writable()?;
        let ino = self.vault.catalog().create(parent, name, Kind::Symlink, 0o777, uid, gid, target, Time::now())?;
        self.relieve();
        self.entry(ino)
    }

    pub fn link(&self, ino: u64, parent: u64, name: &[u8]) -> Result<Stat> {
        self.writable()?;
        self.vault.catalog().link(ino, parent, name, Time::now()).map_err(|e| match e {
            CatalogError::IsDir => Errno(libc::EPERM),
            e => e.into(),
        })?;
        self.relieve();
        self.entry(ino)
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> Result<()> {
        self.writable()?;
        let ino = self.vault.catalog().unlink(parent, name, Time::now())?;
        self.forget_data_if_gone(ino);
        self.relieve();
        Ok(())
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> Result<()> {
        self.writable()?;
        self.vault.catalog().rmdir(parent, name, Time::now())?;
        self.relieve();
        Ok(())
    }

    pub fn rename(&self, parent: u64, name: &[u8], new_parent: u64, new_name: &[u8], flags: u32) -> Result<()> {
        self.writable()?;
        if flags & !libc::RENAME_NOREPLACE != 0 {
            return Err(Errno(libc::EINVAL)); // RENAME_EXCHANGE and RENAME_WHITEOUT are not supported
        }
        let replaced = self.vault.catalog().lookup(new_parent, new_name).map(|i| i.ino).ok();
        self.vault.catalog().rename(
            parent,
            name,
            new_parent,
            new_name,
            flags & libc::RENAME_NOREPLACE != 0,
            Time::now(),
        )?;
        if let Some(ino) = replaced {
            self.forget_data_if_gone(ino);
        }
        self.relieve();
        Ok(())
    }

    /// True if nobody but the `files` map holds this FileData and it has no dirty data, no
    /// chunk being sealed and no failure to report (clones are only made under the `files`
    /// lock, which the caller holds).
    fn unused(f: &Arc<Mutex<FileData>>) -> bool {
        Arc::strong_count(f) == 1
            && f.try_lock().is_ok_and(|g| g.dirty.is_empty() && g.sealing.is_empty() && g.error.is_none())
    }

    /// Drops the dirty buffers of an inode that no longer exists.
    fn forget_data_if_gone(&self, ino: u64) {
        if self.vault.catalog().get(ino).is_err() {
            self.files.lock().unwrap().remove(&ino);
        }
    }

    // -- handles ----------------------------------------------------------------------------------

    pub fn open(&self, ino: u64, write: bool) -> Result<u64> {
        if write {
            self.writable()?;
        }
        {
            let mut cat = self.vault.catalog();
            let i = cat.get(ino)?;
            if i.attr.kind == Kind::Dir && write {
                return Err(Errno(libc::EISDIR));
            }
            cat.open(ino)?;
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let mut handles = self.handles.lock().unwrap();
        if handles.len() >= self.max_handles {
            drop(handles);
            self.vault.catalog().release(ino);
            return Err(errno_of(&FsError::TooManyHandles));
        }
        handles.insert(fh, ino);
        Ok(fh)
    }

    pub fn create(&self, parent: u64, name: &[u8], mode: u32, uid: u32, gid: u32) -> Result<(Stat, u64)> {
        // Before the file is made: a full handle table refuses the create, not just its open.
        if self.handles.lock().unwrap().len() >= self.max_handles {
            return Err(errno_of(&FsError::TooManyHandles));
        }
        let st = self.mknod(parent, name, (mode & 0o7777) | libc::S_IFREG, 0, uid, gid)?;
        let fh = self.open(st.ino, true)?;
        Ok((st, fh))
    }

    /// close(2) of one descriptor: seal what it wrote (errors reach close's caller).
    pub fn flush(&self, ino: u64) -> Result<()> {
        self.seal_file(ino)
    }

    pub fn release(&self, fh: u64) -> Result<()> {
        let Some(ino) = self.handles.lock().unwrap().remove(&fh) else { return Err(Errno(libc::EBADF)) };
        let sealed = self.seal_file(ino);
        let still_open = {
            let mut cat = self.vault.catalog();
            cat.release(ino);
            cat.get(ino).map(|i| i.open > 0).unwrap_or(false)
        };
        if !still_open {
            let mut files = self.files.lock().unwrap();
            if files.get(&ino).is_some_and(Self::unused) {
                files.remove(&ino);
            }
        }
        sealed
    }

    /// fsync(2)/fdatasync(2): the file's data and metadata (and everything logged before
    /// them) are durable in the local cache when this returns.
    pub fn fsync(&self, ino: u64) -> Result<()> {
        self.seal_file(ino)?;
        self.vault.flush_journal().map_err(|e| self.verr(e, || format!("fsync of {}", self.path(ino))))?;
        if self.sync_store {
            self.sync_to_store().map_err(|e| self.verr(e, || format!("fsync (to the store) of {}", self.path(ino))))?;
        }
        Ok(())
    }

    /// fsync of a directory: its entries are durable in the local cache (with `--sync-store`,
    /// in the store), like a file's fsync.
    pub fn fsyncdir(&self, ino: u64) -> Result<()> {
        self.vault.flush_journal().map_err(|e| self.verr(e, || format!("fsync of directory {}", self.path(ino))))?;
        if self.sync_store {
            self.sync_to_store().map_err(|e| self.verr(e, || format!("fsync (to the store) of directory {}", self.path(ino))))?;
        }
        Ok(())
    }

    fn path(&self, ino: u64) -> String {
        self.vault.catalog().path_of(ino)
    }

    // -- data ----------------------------------------------------------------------------------------

    fn file_data(&self, ino: u64, create: bool) -> Result<Option<Arc<Mutex<FileData>>>> {
        let mut files = self.files.lock().unwrap();
        if let Some(f) = files.get(&ino) {
            return Ok(Some(f.clone()));
        }
        if !create {
            return Ok(None);
        }
        let file_id = {
            let cat = self.vault.catalog();
            let i = cat.get(ino)?;
            match i.attr.kind {
                Kind::File => i.file_id,
                Kind::Dir => return Err(Errno(libc::EISDIR)),
                _ => return Err(Errno(libc::EINVAL)),
            }
        };
        let f = Arc::new(Mutex::new(FileData::new(file_id)));
        files.insert(ino, f.clone());
        Ok(Some(f))
    }

    /// Decrypts stored chunk `index` into a full-size zero-padded buffer (zeros if absent);
    /// returns the length of the stored plaintext.
    fn load_chunk(&self, ino: u64, file_id: &Id, index: u64, buf: &mut Vec<u8>) -> Result<usize> {
        let cs = self.vault.chunk_size() as usize;
        let c = self.vault.catalog().get(ino)?.chunk(index);
        buf.clear();
        buf.reserve(cs); // no reallocation (which would free plaintext unwiped) below
        if let Some(c) = c {
            self.vault.read_chunk(file_id, index, &c, buf).map_err(|e| {
                self.verr(e, || format!("reading {} (inode {ino}) chunk {index}", self.path(ino)))
            })?;
            if buf.len() > cs {
                crypto::wipe(buf);
                log::error!("reading {} chunk {index}: chunk longer than the chunk size", self.path(ino));
                return Err(Errno(libc::EIO));
            }
        }
        let stored = buf.len();
        buf.resize(cs, 0);
        Ok(stored)
    }

    pub fn read(&self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let mut out = vec![0u8; size as usize];
        let n = self.read_into(ino, offset, &mut out)?;
        out.truncate(n);
        Ok(out)
    }

    /// Reads up to `out.len()` bytes at `offset` into `out`, which must be all zeros (holes
    /// and the rest of short chunks are left as they are); returns how many bytes were read.
    /// On an error, `out` is all zeros again.
    pub fn read_into(&self, ino: u64, offset: u64, out: &mut [u8]) -> Result<usize> {
        let fd = self.file_data(ino, false)?;
        let guard = fd.as_ref().map(|f| f.lock().unwrap());
        let (fsize, file_id) = {
            let cat = self.vault.catalog();
            let i = cat.get(ino)?;
            if i.attr.kind == Kind::Dir {
                return Err(Errno(libc::EISDIR));
            }
            (i.attr.size, i.file_id)
        };
        if offset >= fsize {
            return Ok(0);
        }
        let end = fsize.min(offset + out.len() as u64);
        let out = &mut out[..(end - offset) as usize];
        let pieces: Vec<format::Piece> = format::pieces(offset, out.len(), self.vault.chunk_size()).collect();
        // Dirty buffers first, then chunks being sealed; the rest from sealed chunks (holes
        // stay zero). A chunk whose seal finished has its record in the catalog before its
        // state says so, and the catalog lock is held here.
        let mut stored = Vec::new();
        {
            let cat = self.vault.catalog();
            let i = cat.get(ino)?;
            for p in &pieces {
                let dst = &mut out[p.buf_off..p.buf_off + p.len];
                if let Some(d) = guard.as_ref().and_then(|g| g.dirty.get(&p.index)) {
                    dst.copy_from_slice(&d.buf[p.within..p.within + p.len]);
                } else if let Some(b) = guard.as_ref().and_then(|g| g.sealing.get(&p.index)).and_then(|s| s.bytes()) {
                    dst.copy_from_slice(&b.0[p.within..p.within + p.len]);
                } else if let Some(c) = i.chunk(p.index) {
                    stored.push((p.index, c));
                }
            }
        }
        let first = pieces[0].index;
        let read = self.vault.read_chunks(&file_id, &stored, |index, plain| {
            let p = &pieces[(index - first) as usize];
            let dst = &mut out[p.buf_off..p.buf_off + p.len];
            let have = plain.len().saturating_sub(p.within).min(p.len);
            if have > 0 {
                dst[..have].copy_from_slice(&plain[p.within..p.within + have]);
            }
        });
        if let Err((index, e)) = read {
            crypto::wipe(out);
            return Err(self.verr(e, || format!("reading {} (inode {ino}) chunk {index}", self.path(ino))));
        }
        self.read_ahead(ino, offset, end, fsize);
        Ok(out.len())
    }

    /// A sequential reader of a remote store gets the file's next chunks fetched ahead, by
    /// file position (a file's chunks need not be in pack order). The window is topped up once
    /// its middle is no longer in the clean cache.
    fn read_ahead(&self, ino: u64, offset: u64, end: u64, fsize: u64) {
        let window = self.vault.read_cache().map_or(0, |rc| rc.readahead());
        if window == 0 || end >= fsize {
            return;
        }
        // The kernel's own readahead reorders reads a little: near the last end counts.
        let prev = self.read_ends.lock().unwrap().put(ino, end);
        if offset != 0 && !prev.is_some_and(|p| offset.abs_diff(p) <= window) {
            return;
        }
        let cs = self.vault.chunk_size() as u64;
        let last = (end + window).min(fsize) - 1;
        let chunks: Vec<ChunkRef> = {
            let cat = self.vault.catalog();
            let Ok(i) = cat.get(ino) else { return };
            let probe = (end + window / 2).min(last) / cs;
            if let (Some(c), Some(rc)) = (i.chunk(probe), self.vault.read_cache())
                && rc.has(&c.pack, c.offset + c.len as u64 - 1)
            {
                return;
            }
            i.chunks_in(end / cs..=last / cs).map(|(_, c)| c).collect()
        };
        self.vault.prefetch(&chunks);
    }

    pub fn write(&self, ino: u64, offset: u64, data: &[u8]) -> Result<usize> {
        self.writable()?;
        let end = offset.checked_add(data.len() as u64).ok_or(Errno(libc::EFBIG))?;
        self.check_size(end)?;
        let cs = self.vault.chunk_size();
        if !data.is_empty() {
            // Room for the chunk records this write can make, before anything is buffered.
            let touched = (end - 1) / cs as u64 - offset / cs as u64 + 1;
            self.vault.catalog().admit_data(touched)?;
        }
        let fd = self.file_data(ino, true)?.expect("created");
        let mut f = fd.lock().unwrap();
        self.reap(ino, &mut f);
        let size = self.vault.catalog().get(ino)?.attr.size;
        let file_id = f.file_id;
        f.writes += 1;
        let now = f.writes;
        let mut new_dirty = 0i64;
        let filled = (|| -> Result<()> {
            let f = &mut *f;
            for p in format::pieces(offset, data.len(), cs) {
                let d = match f.dirty.entry(p.index) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        // A chunk only partly overwritten starts from its stored content: the
                        // version being sealed if there is one, else the catalog's.
                        let existing = format::chunk_len(p.index, size, cs);
                        let mut buf = self.buffers.take(); // zeros
                        let mut known = Coverage::default();
                        let sealing = f.sealing.get(&p.index).and_then(|s| s.bytes().map(|b| (b, s.known.clone())));
                        if let Some((b, k)) = sealing.filter(|_| !(p.within == 0 && p.len >= existing)) {
                            buf.copy_from_slice(&b.0);
                            known = k;
                        } else if existing > 0 && !(p.within == 0 && p.len >= existing) {
                            let stored = self.load_chunk(ino, &file_id, p.index, &mut buf)?;
                            known.add(0, stored, cs as usize);
                        }
                        new_dirty += 1;
                        e.insert(Dirty { buf, known, touched: now })
                    }
                };
                d.buf[p.within..p.within + p.len].copy_from_slice(&data[p.buf_off..p.buf_off + p.len]);
                d.known.add(p.within, p.within + p.len, cs as usize);
                d.touched = now;
            }
            Ok(())
        })();
        let over = {
            // Count every buffer taken, also when the write failed part-way. Buffers being
            // sealed still count (until their records are logged).
            let mut cat = self.vault.catalog();
            cat.add_unsealed(ino, new_dirty);
            filled?;
            cat.note_write(ino, end, Time::now())?;
            cat.unsealed_total() * cs as u64 > self.max_dirty_bytes
        };
        let to_seal: Vec<u64> = if over {
            // Buffers of all files reached their bound: this file keeps at most the chunk the
            // write ended in, and not even that if it holds nothing else.
            let last = end.saturating_sub(1) / cs as u64;
            let others: Vec<u64> = f.dirty.keys().copied().filter(|i| *i != last).collect();
            if others.is_empty() { f.dirty.keys().copied().collect() } else { others }
        } else {
            // Seal the complete chunks the writer has moved past (writeback delivers pages out
            // of order: one moved past may still miss some), and the least recently written
            // beyond the bound.
            let past = end / cs as u64;
            let mut to_seal: Vec<u64> =
                f.dirty.range(..past).filter(|(_, d)| d.known.covers(cs as usize)).map(|(i, _)| *i).collect();
            let excess = (f.dirty.len() - to_seal.len()).saturating_sub(MAX_DIRTY_CHUNKS);
            if excess > 0 {
                let mut kept: Vec<(u64, u64)> =
                    f.dirty.iter().filter(|(i, _)| !to_seal.contains(i)).map(|(i, d)| (d.touched, *i)).collect();
                kept.sort_unstable();
                to_seal.extend(kept.iter().take(excess).map(|(_, i)| *i));
            }
            to_seal
        };
        self.seal_chunks(ino, &mut f, &to_seal)?;
        if over {
            // Past the bound over all files, memory is given back before the write returns.
            self.settle(ino, &mut f)?;
        }
        drop(f);
        self.relieve();
        Ok(data.len())
    }

    /// Hands the given dirty chunks of `f` to the sealers (lengths from the current file size);
    /// each stays readable in `f.sealing` until its record is logged. Reports (and clears) the
    /// failure of an earlier seal of this file, whose data is back in `dirty` and is sealed
    /// again by a later call: nothing acknowledged is lost.
    fn seal_chunks(&self, ino: u64, f: &mut FileData, indices: &[u64]) -> Result<()> {
        if !indices.is_empty() {
            let cs = self.vault.chunk_size();
            let size = self.vault.catalog().get(ino)?.attr.size;
            for &index in indices {
                if !f.dirty.contains_key(&index) {
                    continue;
                }
                // An earlier version of this chunk still being sealed goes first: the records
                // of one chunk are logged in the order its versions were written.
                if let Some(ticket) = f.sealing.get(&index).map(|s| s.ticket) {
                    f.tickets.wait_for(ticket);
                    self.reap(ino, f);
                }
                let Some(mut d) = f.dirty.remove(&index) else { continue };
                let len = format::chunk_len(index, size, cs);
                if len == 0 {
                    self.buffers.give(std::mem::take(&mut d.buf));
                    self.vault.catalog().add_unsealed(ino, -1);
                    continue;
                }
                let plain = Arc::new(Plain(std::mem::take(&mut d.buf), self.buffers.clone()));
                let ticket = f.tickets.take();
                let slot = Arc::new(InFlight { ticket, known: d.known, state: Mutex::new(SealState::Sealing(plain.clone())) });
                f.sealing.insert(index, slot.clone());
                self.sealers.run(self.seal_job(ino, f, index, len, plain, slot));
            }
        }
        // Without sealer threads the jobs ran above: their failures are reported now.
        self.reap(ino, f);
        f.error.take().map_or(Ok(()), Err)
    }

    /// The sealing job of chunk `index` (its first `len` bytes): compress, pad, seal, append
    /// to the staging pack (`Vault::seal_chunk`, which waits for room under the dirty bound),
    /// then under the catalog lock log its record and count it sealed; then mark it sealed (or
    /// failed) and hand its ticket back. Takes no `FileData` lock.
    fn seal_job(&self, ino: u64, f: &FileData, index: u64, len: usize, plain: Arc<Plain>, slot: Arc<InFlight>) -> crate::sealing::Job {
        let vault = self.vault.clone();
        let tickets = f.tickets.clone();
        let file_id = f.file_id;
        #[cfg(test)]
        let fail = self.fail_seals.clone();
        Box::new(move || {
            let sealed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                #[cfg(test)]
                if fail.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                    let source = std::io::Error::from_raw_os_error(libc::EIO);
                    return Err(VaultError::Cache(CacheError::Io { what: "writing a staging pack (injected)".into(), source }));
                }
                vault.seal_chunk(&file_id, index, &plain.0[..len])
            }));
            let state = match sealed {
                Ok(Ok(c)) => {
                    let mut cat = vault.catalog();
                    // The inode may be gone, and its data with it (inode numbers are not
                    // reused; the file id is checked all the same).
                    if cat.get(ino).is_ok_and(|i| i.file_id == file_id) {
                        let _ = cat.set_chunk(ino, index, c);
                    }
                    cat.add_unsealed(ino, -1);
                    SealState::Sealed
                }
                Ok(Err(e)) => {
                    let path = vault.catalog().path_of(ino);
                    log::error!("writing {path} (inode {ino}) chunk {index}: {e}");
                    SealState::Failed(plain.clone(), errno_of(&FsError::Vault(e)))
                }
                Err(_) => {
                    log::error!("sealing chunk {index} of inode {ino} panicked");
                    SealState::Failed(plain.clone(), Errno(libc::EIO))
                }
            };
            *slot.state.lock().unwrap() = state;
            drop(plain);
            tickets.done(slot.ticket);
        })
    }

    /// Takes in the outcome of this file's finished seals: sealed chunks leave `sealing`; a
    /// failed one's bytes go back to `dirty` (unless a newer buffer of the chunk is there, made
    /// from them) and its error is kept for the next report.
    fn reap(&self, ino: u64, f: &mut FileData) {
        let FileData { sealing, dirty, error, writes, .. } = f;
        let mut superseded = 0i64;
        sealing.retain(|&index, s| {
            let mut st = s.state.lock().unwrap();
            if matches!(*st, SealState::Sealing(_)) {
                return true;
            }
            if let SealState::Failed(p, e) = std::mem::replace(&mut *st, SealState::Sealed) {
                error.get_or_insert(e);
                if dirty.contains_key(&index) {
                    superseded += 1;
                } else {
                    let buf = match Arc::try_unwrap(p) {
                        Ok(mut p) => std::mem::take(&mut p.0),
                        Err(p) => p.0.clone(),
                    };
                    dirty.insert(index, Dirty { buf, known: s.known.clone(), touched: *writes });
                }
            }
            false
        });
        if superseded > 0 {
            self.vault.catalog().add_unsealed(ino, -superseded);
        }
    }

    /// Waits for every seal this file handed over (holding its lock: no sealing job takes
    /// one), takes in their outcome, and reports a failure.
    fn settle(&self, ino: u64, f: &mut FileData) -> Result<()> {
        f.tickets.wait_upto(f.tickets.last());
        self.reap(ino, f);
        f.error.take().map_or(Ok(()), Err)
    }

    /// Seals every dirty chunk of `ino` and waits for its seals; reports a failure.
    fn seal_file(&self, ino: u64) -> Result<()> {
        let Some(fd) = self.file_data(ino, false)? else { return Ok(()) };
        let mut f = fd.lock().unwrap();
        self.reap(ino, &mut f);
        let all: Vec<u64> = f.dirty.keys().copied().collect();
        let handed = self.seal_chunks(ino, &mut f, &all);
        let settled = self.settle(ino, &mut f);
        handed.and(settled)
    }

    fn truncate_buffers(&self, ino: u64, f: &mut FileData, new: u64) -> Result<()> {
        let cs = self.vault.chunk_size();
        let old = self.vault.catalog().get(ino)?.attr.size;
        if new >= old {
            return Ok(());
        }
        let keep = format::chunk_count(new, cs);
        let dropped: Vec<u64> = f.dirty.range(keep..).map(|(i, _)| *i).collect();
        for i in &dropped {
            if let Some(mut d) = f.dirty.remove(i) {
                crypto::wipe(&mut d.buf);
            }
        }
        self.vault.catalog().add_unsealed(ino, -(dropped.len() as i64));
        let within = (new % cs as u64) as usize;
        if within != 0 {
            let tail = new / cs as u64;
            if !f.dirty.contains_key(&tail) {
                let mut buf = Vec::new();
                let stored = self.load_chunk(ino, &f.file_id.clone(), tail, &mut buf)?;
                let mut known = Coverage::default();
                known.add(0, stored, cs as usize);
                f.dirty.insert(tail, Dirty { buf, known, touched: f.writes });
                self.vault.catalog().add_unsealed(ino, 1);
            }
            let d = f.dirty.get_mut(&tail).expect("present");
            d.buf[within..].fill(0);
            d.known.cut(within);
        }
        // Lengths of sealed chunks follow the catalog size: shrink it before sealing.
        self.vault.catalog().note_truncate(ino, new)?;
        Ok(())
    }

    /// Largest file: `format::MAX_FILE_SIZE`.
    fn check_size(&self, size: u64) -> Result<()> {
        if size > format::MAX_FILE_SIZE { Err(Errno(libc::EFBIG)) } else { Ok(()) }
    }

    pub fn setattr(&self, ino: u64, s: &SetAttr) -> Result<Stat> {
        self.writable()?;
        if let Some(size) = s.size {
            self.check_size(size)?;
        }
        // Refused before anything changes (a truncate starts changing buffers at once).
        self.vault.catalog().admit_attr_change(ino)?;
        let (is_file, old_size) = {
            let cat = self.vault.catalog();
            let a = &cat.get(ino)?.attr;
            (a.kind == Kind::File, a.size)
        };
        let mut s = s.clone();
        if s.size.is_some_and(|n| n != old_size) && s.mtime.is_none() {
            s.mtime = Some(Time::now());
        }
        if is_file {
            // Hold the file's lock from sealing to logging, so no write slips in between and
            // the logged size is always backed by sealed chunks.
            // Seals in flight finish first: a truncation must not start from a chunk's older
            // version, nor may a record of a cut chunk be logged after it.
            let fd = self.file_data(ino, true)?.expect("created");
            let mut f = fd.lock().unwrap();
            self.settle(ino, &mut f)?;
            if let Some(new) = s.size {
                self.truncate_buffers(ino, &mut f, new)?;
            }
            let all: Vec<u64> = f.dirty.keys().copied().collect();
            self.seal_chunks(ino, &mut f, &all)?;
            self.settle(ino, &mut f)?;
            self.vault.catalog().setattr(ino, &s, Time::now())?;
        } else if s.size.is_some() {
            return Err(Errno(libc::EISDIR));
        } else {
            self.vault.catalog().setattr(ino, &s, Time::now())?;
        }
        self.relieve();
        self.stat(ino)
    }

    /// fallocate(2) mode 0: reserve by extending the size; other modes are not supported.
    pub fn fallocate(&self, ino: u64, offset: u64, len: u64, mode: i32) -> Result<()> {
        self.writable()?;
        if mode != 0 {
            return Err(Errno(libc::EOPNOTSUPP));
        }
        let end = offset.checked_add(len).ok_or(Errno(libc::EFBIG))?;
        self.check_size(end)?;
        let size = self.vault.catalog().get(ino)?.attr.size;
        if end > size {
            self.setattr(ino, &SetAttr { size: Some(end), ..Default::default() })?;
        }
        Ok(())
    }

    // -- directories ---------------------------------------------------------------------------------

    /// Entries after `offset` ("." is cookie 1, ".." cookie 2).
    pub fn readdir(&self, ino: u64, offset: u64, max: usize) -> Result<Vec<DirEntry>> {
        let cat = self.vault.catalog();
        let i = cat.get(ino)?;
        let d = i.dir.as_ref().ok_or(Errno(libc::ENOTDIR))?;
        let mut out = Vec::new();
        if offset < 1 {
            out.push(DirEntry { cookie: 1, ino, kind: Kind::Dir, name: b".".to_vec() });
        }
        if offset < 2 {
            out.push(DirEntry { cookie: 2, ino: cat.parent_of(ino), kind: Kind::Dir, name: b"..".to_vec() });
        }
        for (cookie, name, child) in d.after(offset.max(catalog::FIRST_COOKIE - 1)) {
            if out.len() >= max {
                break;
            }
            let kind = cat.get(child).map(|c| c.attr.kind).unwrap_or(Kind::File);
            out.push(DirEntry { cookie, ino: child, kind, name: name.to_vec() });
        }
        Ok(out)
    }

    pub fn statfs(&self) -> StatFs {
        let bsize = 4096u64;
        let (total, free) = self.vault.store().free_bytes().unwrap_or((1 << 50, 1 << 49));
        let (inodes, max) = {
            let cat = self.vault.catalog();
            (cat.inode_count() as u64, cat.limits().max_inodes)
        };
        StatFs {
            blocks: total / bsize,
            bfree: free / bsize,
            bavail: free / bsize,
            files: max,
            ffree: max.saturating_sub(inodes),
            bsize: bsize as u32,
            namelen: format::NAME_MAX as u32,
        }
    }

    // -- durability in the store --------------------------------------------------------------------

    /// Seals every file's dirty chunks and waits for every seal handed over before (not for
    /// those of writes that come meanwhile), and forgets buffers of files nobody has open.
    pub fn seal_all(&self) -> Result<()> {
        let files: Vec<(u64, Arc<Mutex<FileData>>)> = {
            let mut map = self.files.lock().unwrap();
            map.retain(|ino, f| !Self::unused(f) || self.vault.catalog().get(*ino).is_ok_and(|i| i.open > 0));
            map.iter().map(|(k, v)| (*k, v.clone())).collect()
        };
        let mut first_err = Ok(());
        let mut handed = Vec::new();
        for (ino, fd) in files {
            let mut f = fd.lock().unwrap();
            self.reap(ino, &mut f);
            let all: Vec<u64> = f.dirty.keys().copied().collect();
            if let Err(e) = self.seal_chunks(ino, &mut f, &all)
                && first_err.is_ok()
            {
                first_err = Err(e);
            }
            if !f.sealing.is_empty() {
                let (tickets, last) = (f.tickets.clone(), f.tickets.last());
                drop(f);
                handed.push((ino, fd, tickets, last));
            }
        }
        // All files' chunks seal together; then each file's outcome is taken in.
        for (ino, fd, tickets, last) in handed {
            tickets.wait_upto(last);
            let mut f = fd.lock().unwrap();
            self.reap(ino, &mut f);
            if let Some(e) = f.error.take()
                && first_err.is_ok()
            {
                first_err = Err(e);
            }
        }
        first_err
    }

    /// Makes everything written so far durable in the store.
    pub fn sync_to_store(&self) -> std::result::Result<bool, VaultError> {
        if self.vault.read_only() {
            return Ok(false);
        }
        self.seal_all().map_err(|e| VaultError::Chunk(format!("sealing buffered data failed: errno {}", e.0)))?;
        self.vault.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::ROOT;
    use crate::crypto::Secret32;
    use crate::store::LocalStore;
    use crate::vault::{self, OpenOptions};
    use std::path::Path;

    fn key() -> Secret32 {
        Secret32::from_bytes([9; 32])
    }

    fn open(store: &Path, cache: &Path, read_only: bool, chunk: u32) -> Fs {
        open_limited(store, cache, read_only, chunk, format::Limits::default())
    }

    fn open_limited(store: &Path, cache: &Path, read_only: bool, chunk: u32, limits: format::Limits) -> Fs {
        if !store.join(format::HEADER_OBJECT).exists() {
            vault::init(&LocalStore::new(store.to_path_buf()), &key(), chunk, 0, 0).unwrap();
        }
        let opts = OpenOptions { read_only, cache_root: Some(cache), pack_target: 1 << 20, limits, ..Default::default() };
        Fs::new(Vault::open(Box::new(LocalStore::new(store.to_path_buf())), &key(), &opts).ok().unwrap())
    }

    /// Writes, overwrites, truncates and reads against a model; then the same after a commit
    /// and a reopen from an empty cache. Sealing on the writing thread and on sealer threads.
    #[test]
    fn read_write_truncate_against_a_model() {
        for sealers in [0, 2] {
            model_test(sealers);
        }
    }

    fn model_test(sealers: usize) {
        let d = tempfile::tempdir().unwrap();
        let fs = open(&d.path().join("s"), &d.path().join("c1"), false, 4096).with_sealers(sealers);
        let (st, fh) = fs.create(ROOT, b"f", 0o644, 0, 0).unwrap();
        let mut model = vec![];
        let mut apply = |fs: &Fs, off: usize, data: &[u8]| {
            assert_eq!(fs.write(st.ino, off as u64, data).unwrap(), data.len());
            if model.len() < off + data.len() {
                model.resize(off + data.len(), 0);
            }
            model[off..off + data.len()].copy_from_slice(data);
        };
        apply(&fs, 0, &[1; 10_000]);
        apply(&fs, 5_000, &[2; 3]);
        apply(&fs, 50_000, &[3; 5]); // sparse gap
        apply(&fs, 4_090, &[4; 20]); // straddles a chunk boundary
        fs.setattr(st.ino, &SetAttr { size: Some(6_000), ..Default::default() }).unwrap();
        model.truncate(6_000);
        fs.setattr(st.ino, &SetAttr { size: Some(9_000), ..Default::default() }).unwrap();
        model.resize(9_000, 0);
        assert_eq!(fs.read(st.ino, 0, 100_000).unwrap(), model);
        assert_eq!(fs.read(st.ino, 8_990, 100).unwrap(), &model[8_990..]);
        assert!(fs.read(st.ino, 9_000, 10).unwrap().is_empty());
        fs.fsync(st.ino).unwrap();
        fs.release(fh).unwrap();
        assert!(fs.sync_to_store().unwrap());
        drop(fs);
        let fs = open(&d.path().join("s"), &d.path().join("c2"), true, 4096);
        let ino = fs.lookup(ROOT, b"f").unwrap().ino;
        assert_eq!(fs.read(ino, 0, 100_000).unwrap(), model);
        assert_eq!(fs.write(ino, 0, b"x"), Err(Errno(libc::EROFS)));
    }

    /// An unprivileged writer picks the offset: the daemon's memory and the committed metadata
    /// follow what was written, never the offset; past the stated maximum size is EFBIG.
    #[test]
    fn hostile_offsets_cost_what_was_written() {
        let d = tempfile::tempdir().unwrap();
        let fs = open(&d.path().join("s"), &d.path().join("c"), false, 4096);
        let (st, _fh) = fs.create(ROOT, b"f", 0o644, 65534, 65534).unwrap();
        let far = 1u64 << 42;
        assert_eq!(fs.write(st.ino, far, b"x"), Ok(1));
        assert_eq!(fs.write(st.ino, format::MAX_FILE_SIZE - 1, b"y"), Ok(1));
        for off in [format::MAX_FILE_SIZE, (1 << 56) - 1, u64::MAX - 1] {
            assert_eq!(fs.write(st.ino, off, b"z"), Err(Errno(libc::EFBIG)), "offset {off}");
        }
        let big = SetAttr { size: Some(format::MAX_FILE_SIZE + 1), ..Default::default() };
        assert_eq!(fs.setattr(st.ino, &big).map(|_| ()), Err(Errno(libc::EFBIG)));
        assert_eq!(fs.fallocate(st.ino, format::MAX_FILE_SIZE, 1, 0), Err(Errno(libc::EFBIG)));
        fs.fsync(st.ino).unwrap();
        assert_eq!(fs.vault().catalog().get(st.ino).unwrap().chunk_count(), 2);
        assert!(fs.sync_to_store().unwrap());
        drop(fs);
        let fs = open(&d.path().join("s"), &d.path().join("c2"), true, 4096);
        let ino = fs.lookup(ROOT, b"f").unwrap().ino;
        assert_eq!(fs.stat(ino).unwrap().size, format::MAX_FILE_SIZE);
        assert_eq!(fs.vault().catalog().get(ino).unwrap().chunk_count(), 2);
        assert_eq!(fs.read(ino, far - 2, 4).unwrap(), b"\0\0x\0");
        assert_eq!(fs.read(ino, 0, 3).unwrap(), b"\0\0\0");
        assert_eq!(fs.read(ino, format::MAX_FILE_SIZE - 2, 10).unwrap(), b"\0y");
    }

    #[test]
    fn errno_table() {
        let d = tempfile::tempdir().unwrap();
        let fs = open(&d.path().join("s"), &d.path().join("c"), false, 4096);
        let dir = fs.mkdir(ROOT, b"d", 0o755, 0, 0).unwrap().ino;
        fs.mknod(dir, b"f", libc::S_IFREG | 0o644, 0, 0, 0).unwrap();
        assert_eq!(fs.mkdir(ROOT, b"d", 0o755, 0, 0), Err(Errno(libc::EEXIST)));
        assert_eq!(fs.rmdir(ROOT, b"d"), Err(Errno(libc::ENOTEMPTY)));
        assert_eq!(fs.unlink(ROOT, b"d"), Err(Errno(libc::EISDIR)));
        assert_eq!(fs.lookup(ROOT, b"nope"), Err(Errno(libc::ENOENT)));
        assert_eq!(fs.lookup(ROOT, &[b'n'; 256]), Err(Errno(libc::ENAMETOOLONG)));
        assert_eq!(fs.mknod(ROOT, b"what", 0o170000 | 0o600, 0, 0, 0), Err(Errno(libc::EINVAL)));
        assert_eq!(fs.rename(ROOT, b"d", ROOT, b"e", libc::RENAME_EXCHANGE), Err(Errno(libc::EINVAL)));
        assert_eq!(fs.readlink(dir), Err(Errno(libc::EINVAL)));
        assert_eq!(fs.read(dir, 0, 1), Err(Errno(libc::EISDIR)));
        assert_eq!(fs.fallocate(dir, 0, 1, 1), Err(Errno(libc::EOPNOTSUPP)));
        let names: Vec<Vec<u8>> = fs.readdir(ROOT, 0, 100).unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, vec![b".".to_vec(), b"..".to_vec(), b"d".to_vec()]);
    }

    /// What tests/fixtures/v1-codec holds: compressible text across chunks, noise (stored raw)
    /// and a hole, in a vault with the chunk codec flag (4 KiB chunks).
    fn v1_codec_contents() -> (Vec<u8>, Vec<u8>) {
        let text: Vec<u8> = (0..700).flat_map(|i: u32| format!("INSERT INTO t VALUES ({i}, 'row {i}');\n").into_bytes()).collect();
        let mut noise = Vec::with_capacity(10_000);
        let mut x = 0x9e37_79b9_u32;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            noise.push((x >> 24) as u8);
        }
        (text, noise)
    }

    /// Makes tests/fixtures/v1-codec (run once, when the format changes):
    /// PGCRYPTFS_MAKE_FIXTURE=tests/fixtures/v1-codec cargo test --release --lib make_fixture_v1_codec -- --ignored
    #[test]
    #[ignore]
    fn make_fixture_v1_codec() {
        let dir = std::path::PathBuf::from(std::env::var("PGCRYPTFS_MAKE_FIXTURE").unwrap());
        let cache = tempfile::tempdir().unwrap();
        let hex = b"3c1f9a0e5b7d2468ace013579bdf2468ace013579bdf02468ace13579bdf0246";
        std::fs::create_dir_all(dir.join("vault")).unwrap();
        std::fs::write(dir.join("key.hex"), hex).unwrap();
        let k = crate::keys::apply_transform(hex, crate::keys::KeyTransform::Hex).ok().unwrap();
        let store = LocalStore::new(dir.join("vault"));
        vault::init(&store, &k, 4096, 0, 0).unwrap();
        let opts = OpenOptions { read_only: false, cache_root: Some(cache.path()), pack_target: 1 << 20, ..Default::default() };
        let fs = Fs::new(Vault::open(Box::new(store), &k, &opts).ok().unwrap());
        let (text, noise) = v1_codec_contents();
        let d = fs.mkdir(ROOT, b"dir", 0o750, 0, 0).unwrap();
        for (parent, name, data, offset) in [(d.ino, &b"text.sql"[..], &text, 0u64), (d.ino, b"noise.bin", &noise, 0), (ROOT, b"sparse", &text, 40_000)] {
            let (st, fh) = fs.create(parent, name, 0o640, 0, 0).unwrap();
            fs.write(st.ino, offset, data).unwrap();
            fs.release(fh).unwrap();
        }
        fs.symlink(ROOT, b"link", b"dir/text.sql", 0, 0).unwrap();
        assert!(fs.sync_to_store().unwrap());
        fs.vault().release_lease().unwrap();
    }

    /// The frozen vault with the chunk codec flag (tests/fixtures/v1-codec) keeps opening and
    /// reading byte for byte: compressed chunks, raw ones, a hole.
    #[test]
    fn fixture_vault_v1_codec_still_opens() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-codec");
        let hex = std::fs::read(dir.join("key.hex")).unwrap();
        let k = crate::keys::apply_transform(&hex, crate::keys::KeyTransform::Hex).ok().unwrap();
        let opts = OpenOptions { read_only: true, ..Default::default() };
        let fs = Fs::new(Vault::open(Box::new(LocalStore::new(dir.join("vault"))), &k, &opts).ok().unwrap());
        assert_eq!(fs.vault().header.flags, format::FLAG_CHUNK_CODEC);
        let (text, noise) = v1_codec_contents();
        let d = fs.lookup(ROOT, b"dir").unwrap();
        assert_eq!(fs.read(fs.lookup(d.ino, b"text.sql").unwrap().ino, 0, 1 << 20).unwrap(), text);
        assert_eq!(fs.read(fs.lookup(d.ino, b"noise.bin").unwrap().ino, 0, 1 << 20).unwrap(), noise);
        let mut sparse = vec![0u8; 40_000];
        sparse.extend_from_slice(&text);
        assert_eq!(fs.read(fs.lookup(ROOT, b"sparse").unwrap().ino, 0, 1 << 20).unwrap(), sparse);
        assert_eq!(fs.readlink(fs.lookup(ROOT, b"link").unwrap().ino).unwrap(), b"dir/text.sql");
        // The text is stored compressed: its packs hold far less than the plaintext.
        let packs: u64 = std::fs::read_dir(dir.join("vault/packs")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
        assert!(packs < (2 * text.len() + noise.len()) as u64, "packs hold {packs} bytes");
    }

    /// The frozen format-1 vault in tests/fixtures/v1 (made by the pgcryptfs of that format)
    /// must keep opening and reading byte for byte.
    #[test]
    fn fixture_vault_v1_still_opens() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
        let hex = std::fs::read(dir.join("key.hex")).unwrap();
        let k = crate::keys::apply_transform(&hex, crate::keys::KeyTransform::Hex).ok().unwrap();
        let opts = OpenOptions { read_only: true, ..Default::default() };
        let store = Box::new(LocalStore::new(dir.join("vault")));
        let fs = Fs::new(Vault::open(store, &k, &opts).ok().unwrap());
        assert_eq!(fs.vault().chunk_size(), 4096);
        let hello = fs.lookup(ROOT, b"hello.txt").unwrap();
        assert_eq!(hello.perm, 0o640);
        assert_eq!(fs.read(hello.ino, 0, 1000).unwrap(), b"hello, pgcryptfs\n");
        let d = fs.lookup(ROOT, b"dir").unwrap();
        let data = fs.lookup(d.ino, b"data.bin").unwrap();
        let want: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        assert_eq!(fs.read(data.ino, 0, 20_000).unwrap(), want);
        let link = fs.lookup(ROOT, b"link").unwrap();
        assert_eq!(fs.readlink(link.ino).unwrap(), b"hello.txt");
        let wrong = Vault::open(Box::new(LocalStore::new(dir.join("vault"))), &key(), &opts);
        assert!(matches!(wrong, Err(VaultError::Key(crate::keys::KeyError::Refused(_)))));
    }

    /// What a user of the mount can make it hold is bounded: inodes (ENOSPC, through the errno
    /// table; statfs tells), open handles (ENFILE), and plaintext buffered over all files (a
    /// write into one more file seals buffers instead of keeping them).
    #[test]
    fn the_mount_stays_within_its_bounds() {
        let d = tempfile::tempdir().unwrap();
        let limits = format::Limits { max_inodes: 5, ..Default::default() };
        let fs = open_limited(&d.path().join("s"), &d.path().join("c"), false, 4096, limits).with_bounds(3, 4 * 4096);
        let dir = fs.mkdir(ROOT, b"d", 0o755, 0, 0).unwrap().ino;
        fs.symlink(dir, b"l", b"target", 0, 0).unwrap();
        let (a, fa) = fs.create(ROOT, b"a", 0o644, 0, 0).unwrap();
        let (b, fb) = fs.create(ROOT, b"b", 0o644, 0, 0).unwrap();
        assert_eq!(fs.mknod(ROOT, b"c", libc::S_IFIFO | 0o644, 0, 0, 0), Err(Errno(libc::ENOSPC)));
        assert_eq!(fs.mkdir(dir, b"e", 0o755, 0, 0), Err(Errno(libc::ENOSPC)));
        assert_eq!(fs.create(ROOT, b"c", 0o644, 0, 0).map(|_| ()), Err(Errno(libc::ENOSPC)));
        let st = fs.statfs();
        assert_eq!((st.files, st.ffree), (5, 0));
        // Handles: the fourth is refused and leaves no count behind.
        let fa2 = fs.open(a.ino, false).unwrap();
        assert_eq!(fs.open(b.ino, false), Err(Errno(libc::ENFILE)));
        assert_eq!(fs.vault().catalog().get(b.ino).unwrap().open, 1);
        fs.release(fa2).unwrap();
        let fb2 = fs.open(b.ino, false).unwrap();
        fs.release(fb2).unwrap();
        fs.release(fb).unwrap();
        fs.unlink(ROOT, b"b").unwrap();
        fs.forget(b.ino, 1);
        assert_eq!(fs.statfs().ffree, 1);

        // Buffers over all files: at most 4 chunks of 4 KiB here, however many files are written
        // (buffers being sealed count: past the bound a write waits for its seals).
        let d = tempfile::tempdir().unwrap();
        let fs = open(&d.path().join("s"), &d.path().join("c"), false, 4096).with_bounds(64, 4 * 4096).with_sealers(2);
        let mut files = Vec::new();
        for n in 0..20u8 {
            let (st, fh) = fs.create(ROOT, &[b'f', b'a' + n], 0o644, 0, 0).unwrap();
            assert_eq!(fs.write(st.ino, 100, &[n; 10]).unwrap(), 10);
            assert!(fs.vault().catalog().unsealed_total() <= 4, "{}", fs.vault().catalog().unsealed_total());
            files.push((st.ino, fh));
        }
        for (n, (ino, fh)) in files.into_iter().enumerate() {
            assert_eq!(fs.read(ino, 95, 20).unwrap(), [&[0; 5][..], &[n as u8; 10][..]].concat());
            fs.release(fh).unwrap();
        }
        drop((fa, fs));
    }

    /// Data past the catalog's byte bound is refused before it is buffered (ENOSPC); what was
    /// written before stays readable.
    #[test]
    fn writes_past_the_catalog_bound_are_refused() {
        let d = tempfile::tempdir().unwrap();
        // The root (84), one file (84 + 19 + 1) and ten chunk records.
        let limits = format::Limits { max_catalog_bytes: 84 + 104 + 10 * 61, ..Default::default() };
        let fs = open_limited(&d.path().join("s"), &d.path().join("c"), false, 4096, limits);
        let (st, fh) = fs.create(ROOT, b"f", 0o644, 0, 0).unwrap();
        assert_eq!(fs.write(st.ino, 0, &[7; 8 * 4096]).unwrap(), 8 * 4096);
        assert_eq!(fs.write(st.ino, 8 * 4096, &[8; 3 * 4096]), Err(Errno(libc::ENOSPC)));
        assert_eq!(fs.write(st.ino, 8 * 4096, &[8; 2 * 4096]).unwrap(), 2 * 4096);
        assert_eq!(fs.write(st.ino, 1 << 30, b"x"), Err(Errno(libc::ENOSPC)));
        fs.release(fh).unwrap();
        assert_eq!(fs.read(st.ino, 0, 10 * 4096).unwrap(), [vec![7; 8 * 4096], vec![8; 2 * 4096]].concat());
        assert!(fs.sync_to_store().unwrap());
    }

    /// Pseudo-random (incompressible) bytes, so sealed lengths follow plaintext lengths.
    fn noise(n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 24) as u8
            })
            .collect()
    }

    /// Bytes appended to staging packs (nothing is uploaded in these tests) and the bytes of
    /// the chunks the file references: the difference is dead space in packs.
    fn sealed_and_live(fs: &Fs, ino: u64) -> (u64, u64) {
        let staged = fs.vault().cache().unwrap().staged_bytes();
        let live = fs.vault().catalog().get(ino).unwrap().chunks().map(|(_, c)| c.len as u64).sum();
        (staged, live)
    }

    /// Writeback delivers a file's pages out of order (pages of chunk i+1 before the tail of
    /// chunk i): every chunk is still sealed once, when complete, and reads back right (also
    /// with chunks sealing on sealer threads meanwhile).
    #[test]
    fn out_of_order_writeback_seals_each_chunk_once() {
        for sealers in [0, 2] {
            out_of_order_test(sealers);
        }
    }

    fn out_of_order_test(sealers: usize) {
        let d = tempfile::tempdir().unwrap();
        let fs = open(&d.path().join("s"), &d.path().join("c"), false, 65536).with_sealers(sealers);
        let (st, fh) = fs.create(ROOT, b"f", 0o644, 0, 0).unwrap();
        let data = noise(1 << 20, 7);
        // Each page is delayed by up to 24 pages (96 KiB): a sliding window across chunks.
        let mut x = 0x2545_f491_u32;
        let mut order: Vec<(usize, usize)> = (0..256)
            .map(|p| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (p + (x % 24) as usize, p)
            })
            .collect();
        order.sort();
        let mut max_dirty = 0;
        for &(_, p) in &order {
            let off = p * 4096;
            assert_eq!(fs.write(st.ino, off as u64, &data[off..off + 4096]).unwrap(), 4096);
            // Buffers waiting to be sealed (not those handed to the sealers).
            let waiting = fs.files.lock().unwrap()[&st.ino].lock().unwrap().dirty.len();
            max_dirty = max_dirty.max(waiting);
        }
        let before_fsync = sealed_and_live(&fs, st.ino);
        fs.fsync(st.ino).unwrap();
        let (sealed, live) = sealed_and_live(&fs, st.ino);
        eprintln!("shuffled 1 MiB: {sealed} bytes sealed, {live} live ({} dead); before fsync {before_fsync:?}; at most {max_dirty} dirty chunks", sealed - live);
        assert_eq!(fs.vault().catalog().get(st.ino).unwrap().chunk_count(), 16);
        assert_eq!(sealed, live, "a chunk was sealed more than once");
        assert!(max_dirty <= 3, "{max_dirty} dirty chunks");
        assert_eq!(fs.read(st.ino, 0, 2 << 20).unwrap(), data);
        fs.release(fh).unwrap();
        assert!(fs.sync_to_store().unwrap());
        drop(fs);
        let fs = open(&d.path().join("s"), &d.path().join("c2"), true, 65536);
        let ino = fs.lookup(ROOT, b"f").unwrap().ino;
        assert_eq!(fs.read(ino, 0, 2 << 20).unwrap(), data);
    }

    /// Sequential writes seal each chunk as soon as it is complete: one buffer at a time.
    #[test]
    fn sequential_writes_seal_complete_chunks_at_once() {
        let d = tempfile::tempdir().unwrap();
        let fs = open(&d.path().join("s"), &d.path().join("c"), false, 65536);
        let (st, fh) = fs.create(ROOT, b"f", 0o644, 0, 0).unwrap();
        let data = noise((1 << 20) + 1000, 11);
        for (n, page) in data.chunks(4096).enumerate() {
            fs.write(st.ino, n as u64 * 4096, page).unwrap();
            let (unsealed, count) = {
                let cat = fs.vault().catalog();
                let i = cat.get(st.ino).unwrap();
                (i.unsealed, i.chunk_count() as u64)
            };
            assert!(unsealed <= 1, "{unsealed} dirty after page {n}");
            assert_eq!(count, (n as u64 * 4096 + page.len() as u64) / 65536, "after page {n}");
        }
        fs.release(fh).unwrap();
        let (sealed, live) = sealed_and_live(&fs, st.ino);
        assert_eq!((sealed, fs.vault().catalog().get(st.ino).unwrap().chunk_count()), (live, 17));
        assert_eq!(fs.read(st.ino, 0, 2 << 20).unwrap(), data);
    }

    /// A partly written chunk the writer moved past waits for the rest (a hole's zeros are not
    /// written data); a chunk loaded from its sealed version is complete; the per-file bound
    /// seals the least recently written buffers; fsync seals everything.
    #[test]
    fn partial_chunks_wait_within_the_bound() {
        let d = tempfile::tempdir().unwrap();
        let fs = open(&d.path().join("s"), &d.path().join("c"), false, 4096);
        let (st, fh) = fs.create(ROOT, b"f", 0o644, 0, 0).unwrap();
        let ino = st.ino;
        let unsealed = |fs: &Fs| fs.vault().catalog().get(ino).unwrap().unsealed;
        let mut model = vec![0u8; 0];
        let mut apply = |fs: &Fs, off: usize, data: &[u8]| {
            fs.write(ino, off as u64, data).unwrap();
            if model.len() < off + data.len() {
                model.resize(off + data.len(), 0);
            }
            model[off..off + data.len()].copy_from_slice(data);
            model.clone()
        };
        let sealed = |fs: &Fs, i: u64| fs.vault().catalog().get(ino).unwrap().chunk(i).is_some();
        // Chunk 0 half written, then the writer moves on: chunk 1 (whole) is sealed, chunk 0
        // waits, and is sealed when its rest arrives.
        apply(&fs, 0, &[1; 2048]);
        apply(&fs, 4096, &[2; 4096]);
        assert_eq!((unsealed(&fs), sealed(&fs, 0), sealed(&fs, 1)), (1, false, true));
        apply(&fs, 2048, &[3; 2048]);
        assert_eq!((unsealed(&fs), sealed(&fs, 0)), (0, true));
        apply(&fs, 8192, &[4; 10]);
        assert_eq!(unsealed(&fs), 1);
        fs.fsync(ino).unwrap();
        // An overwrite of part of a sealed chunk is complete (the rest came from its sealed
        // version): sealed once the writer moves past it.
        apply(&fs, 100, &[5; 10]);
        apply(&fs, 8192 + 10, &[6; 10]);
        assert_eq!(unsealed(&fs), 1);
        // A chunk whose sealed version is shorter than the chunk (the old end of file) is not
        // complete past that end until written.
        let sealed2 = fs.vault().catalog().get(ino).unwrap().chunk(2);
        apply(&fs, 8192 + 3000, &[7; 10]); // chunk 2 now 3010 bytes, sealed with 10
        apply(&fs, 3 * 4096, &[8; 4096]);
        assert_eq!(unsealed(&fs), 1, "chunk 3 complete, chunk 2 was loaded but has a gap");
        assert_eq!(fs.vault().catalog().get(ino).unwrap().chunk(2), sealed2);
        apply(&fs, 8192 + 20, &[9; 2980]);
        apply(&fs, 8192 + 3010, &[10; 4096 - 3010]);
        let m = apply(&fs, 4 * 4096, &[11; 1]);
        assert_eq!(unsealed(&fs), 1);
        assert_ne!(fs.vault().catalog().get(ino).unwrap().chunk(2), sealed2);
        assert_eq!(fs.read(ino, 0, 1 << 20).unwrap(), m);
        // Sparse writes into a hole wait, within the per-file bound (least recently written
        // sealed first); reads see them; fsync seals them.
        for k in 0..(MAX_DIRTY_CHUNKS as u64 + 8) {
            apply(&fs, ((100 + 2 * k) * 4096 + 7) as usize, &[12 + k as u8; 100]);
            assert!(unsealed(&fs) as usize <= MAX_DIRTY_CHUNKS, "{}", unsealed(&fs));
        }
        assert_eq!(unsealed(&fs) as usize, MAX_DIRTY_CHUNKS);
        assert!(fs.vault().catalog().get(ino).unwrap().chunk(100).is_some(), "the oldest buffer was sealed");
        let m = apply(&fs, 1000 * 4096, b"far");
        assert_eq!(fs.read(ino, 0, 200 * 4096).unwrap(), &m[..200 * 4096]);
        fs.setattr(ino, &SetAttr { size: Some(150 * 4096 + 5), ..Default::default() }).unwrap();
        assert_eq!(unsealed(&fs), 0);
        let mut m = m;
        m.truncate(150 * 4096 + 5);
        fs.fsync(ino).unwrap();
        fs.release(fh).unwrap();
        assert_eq!(fs.read(ino, 0, 1 << 20).unwrap(), m);
        assert!(fs.sync_to_store().unwrap());
        drop(fs);
        let fs = open(&d.path().join("s"), &d.path().join("c2"), true, 4096);
        assert_eq!(fs.read(fs.lookup(ROOT, b"f").unwrap().ino, 0, 1 << 20).unwrap(), m);
    }

    /// Coverage merges overlapping and touching ranges, forgets what a truncation cut, and
    /// gives up (counting as complete) when too fragmented.
    #[test]
    fn coverage_merges_ranges() {
        let cs = 65536;
        let mut c = Coverage::default();
        for (a, b) in [(8192, 12288), (0, 4096), (16384, 20480), (4096, 6000), (7000, 8192)] {
            c.add(a, b, cs);
        }
        assert_eq!(c.spans, [(0, 6000), (7000, 12288), (16384, 20480)]);
        assert!(c.covers(6000) && !c.covers(6001));
        c.add(5000, 17000, cs);
        assert_eq!(c.spans, [(0, 20480)]);
        c.add(20480, 20480, cs);
        c.add(30000, 40000, cs);
        assert!(c.covers(20480) && !c.covers(20481) && Coverage::default().covers(0));
        c.cut(35000);
        assert_eq!(c.spans, [(0, 20480), (30000, 35000)]);
        c.cut(100);
        assert_eq!(c.spans, [(0, 100)]);
        let mut c = Coverage::default();
        for k in 0..16 {
            c.add(k * 8192, k * 8192 + 4096, cs);
        }
        assert!(!c.untracked && !c.covers(cs));
        c.add(cs - 10, cs - 5, cs);
        assert!(c.untracked && c.covers(cs) && c.spans.is_empty());
    }

    /// A file on a fresh vault (4 KiB chunks) whose sealers are `pool`, held before their
    /// first job.
    fn held(d: &Path, pool: Pool) -> (Fs, u64, u64) {
        let fs = open(&d.join("s"), &d.join("c"), false, 4096).with_pool(pool);
        let (st, fh) = fs.create(ROOT, b"f", 0o644, 0, 0).unwrap();
        (fs, st.ino, fh)
    }

    /// While chunks are being sealed, reads and new writes of them see the written bytes, the
    /// catalog has no record of them, they count as unsealed (so the file's size is not
    /// logged), and a truncation waits for them; once they are sealed, fsync logs everything
    /// and it reads back from the store.
    #[test]
    fn chunks_being_sealed_stay_readable_and_keep_the_size_unlogged() {
        let d = tempfile::tempdir().unwrap();
        let (fs, ino, fh) = held(d.path(), Pool::new_held(2, 16));
        let mut model = noise(3 * 4096 + 100, 3);
        fs.write(ino, 0, &model).unwrap();
        // Chunks 0..3 were complete and moved past: handed over, none sealed yet.
        let (unsealed, records, logged) = {
            let cat = fs.vault().catalog();
            let i = cat.get(ino).unwrap();
            (i.unsealed, i.chunk_count(), i.logged.size)
        };
        assert_eq!((unsealed, records, logged), (4, 0, 0));
        assert_eq!(fs.sealers.queued(), 3);
        assert_eq!(fs.read(ino, 0, 1 << 20).unwrap(), model);
        // A write into a chunk being sealed starts from the bytes handed over.
        fs.write(ino, 4096 + 10, b"again").unwrap();
        model[4096 + 10..4096 + 15].copy_from_slice(b"again");
        assert_eq!(fs.read(ino, 4000, 200).unwrap(), &model[4000..4200]);
        // The size waits for the data: a journal flush logs no size while chunks are unsealed.
        fs.vault().flush_journal().unwrap();
        assert_eq!(fs.vault().catalog().get(ino).unwrap().logged.size, 0);
        // A truncation waits for the seals in flight (here, until the sealers are let go).
        let fs = Arc::new(fs);
        let truncate = {
            let fs = fs.clone();
            std::thread::spawn(move || fs.setattr(ino, &SetAttr { size: Some(2 * 4096 + 7), ..Default::default() }))
        };
        fs.sealers.hold(false);
        truncate.join().unwrap().unwrap();
        model.truncate(2 * 4096 + 7);
        fs.fsync(ino).unwrap();
        let (unsealed, records, logged) = {
            let cat = fs.vault().catalog();
            let i = cat.get(ino).unwrap();
            (i.unsealed, i.chunk_count(), i.logged.size)
        };
        assert_eq!((unsealed, records, logged), (0, 3, model.len() as u64));
        assert_eq!(fs.read(ino, 0, 1 << 20).unwrap(), model);
        fs.release(fh).unwrap();
        assert!(fs.sync_to_store().unwrap());
        let fs = Arc::into_inner(fs).expect("the truncating thread is done");
        drop(fs);
        let fs = open(&d.path().join("s"), &d.path().join("c2"), true, 4096);
        assert_eq!(fs.read(fs.lookup(ROOT, b"f").unwrap().ino, 0, 1 << 20).unwrap(), model);
    }

    /// A seal that fails on a sealer thread (an append to the cache failing) is reported by the
    /// next fsync (EIO) or close, and its data is sealed again by the next one: nothing
    /// acknowledged is lost, and the size is logged only once the data is sealed.
    #[test]
    fn a_failed_seal_surfaces_at_fsync_and_close_and_loses_nothing() {
        let d = tempfile::tempdir().unwrap();
        let (fs, ino, fh) = held(d.path(), Pool::new_held(2, 16));
        let model = noise(3 * 4096, 5);
        fs.fail_seals.store(2, Ordering::SeqCst);
        fs.write(ino, 0, &model).unwrap(); // hands over chunks 0 and 1, which will fail
        fs.sealers.hold(false);
        assert_eq!(fs.fsync(ino), Err(Errno(libc::EIO)));
        assert_eq!(fs.read(ino, 0, 1 << 20).unwrap(), model);
        fs.fsync(ino).unwrap();
        {
            let cat = fs.vault().catalog();
            let i = cat.get(ino).unwrap();
            assert_eq!((i.unsealed, i.chunk_count(), i.logged.size), (0, 3, model.len() as u64));
        }
        // At close: the failure is reported, the data stays, and a commit seals it.
        fs.fail_seals.store(1, Ordering::SeqCst);
        fs.write(ino, 3 * 4096, &model[..100]).unwrap();
        assert_eq!(fs.release(fh), Err(Errno(libc::EIO)));
        assert_eq!(fs.vault().catalog().get(ino).unwrap().unsealed, 1);
        assert!(fs.sync_to_store().unwrap());
        let mut want = model.clone();
        want.extend_from_slice(&model[..100]);
        assert_eq!(fs.read(ino, 0, 1 << 20).unwrap(), want);
        drop(fs);
        let fs = open(&d.path().join("s"), &d.path().join("c2"), true, 4096);
        assert_eq!(fs.read(fs.lookup(ROOT, b"f").unwrap().ino, 0, 1 << 20).unwrap(), want);
    }

    /// The sealer queue is bounded: a writer handing over more chunks than it holds waits
    /// (here until the held sealers are let go), and every chunk arrives.
    #[test]
    fn a_full_seal_queue_makes_the_writer_wait() {
        let d = tempfile::tempdir().unwrap();
        let (fs, ino, fh) = held(d.path(), Pool::new_held(1, 2));
        let fs = Arc::new(fs);
        let model = noise(5 * 4096, 9);
        let writer = {
            let (fs, data) = (fs.clone(), model.clone());
            std::thread::spawn(move || fs.write(ino, 0, &data))
        };
        while fs.sealers.queued() < 2 {
            std::thread::yield_now();
        }
        assert!(!writer.is_finished(), "the writer waits while the queue is full");
        assert_eq!(fs.sealers.queued(), 2);
        fs.sealers.hold(false);
        assert_eq!(writer.join().unwrap(), Ok(model.len()));
        fs.release(fh).unwrap();
        assert_eq!(fs.vault().catalog().get(ino).unwrap().chunk_count(), 5);
        assert_eq!(fs.read(ino, 0, 1 << 20).unwrap(), model);
    }

    /// `read_into` fills a zeroed buffer without zeroing it: holes and the rest of a short last
    /// chunk stay as they were given (zeros), and only `n` bytes are touched.
    #[test]
    fn read_into_fills_a_zeroed_buffer() {
        let d = tempfile::tempdir().unwrap();
        let fs = open(&d.path().join("s"), &d.path().join("c"), false, 4096);
        let (st, fh) = fs.create(ROOT, b"f", 0o644, 0, 0).unwrap();
        fs.write(st.ino, 0, &[1; 100]).unwrap();
        fs.write(st.ino, 3 * 4096, &[2; 10]).unwrap();
        fs.release(fh).unwrap();
        let mut want = vec![0u8; 3 * 4096 + 10];
        want[..100].fill(1);
        want[3 * 4096..].fill(2);
        for sealed in [false, true] {
            if sealed {
                assert!(fs.sync_to_store().unwrap());
            }
            let mut buf = vec![0u8; 1 << 16];
            let n = fs.read_into(st.ino, 0, &mut buf).unwrap();
            assert_eq!(&buf[..n], &want[..]);
            assert!(buf[n..].iter().all(|b| *b == 0));
            let mut buf = vec![0u8; 1 << 16];
            let n = fs.read_into(st.ino, 50, &mut buf[..60]).unwrap();
            assert_eq!(&buf[..n], &want[50..110]);
            assert_eq!(fs.read_into(st.ino, 1 << 20, &mut buf).unwrap(), 0);
        }
    }
}
