//! The clean read cache: 1 MiB blocks of stored packs (ciphertext only, exactly the store's
//! bytes) kept on local disk, evicted least-recently-used within a byte budget, filled on
//! demand with one ranged GET per run of missing blocks, and in the background by a small pool
//! of prefetch threads for the ranges a sequential reader will want next (the file system
//! layer knows them: a file's chunks need not be in pack order).
//!
//! Nothing here is trusted: every chunk read through it is still authenticated by the vault,
//! which drops the blocks and refetches from the store if a cached block fails.
//!
//! Lock order: `state` is a leaf lock (no other lock is taken while it is held; the store is
//! never called under it). Block files are created outside it and deleted under it, so a
//! deletion never races with the rewrite of the same block.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::cache::Dir;
use crate::format::{self, Id};
use crate::store::{self, Store, StoreError};

/// Cache granularity: packs are cut into blocks of this many bytes at fixed offsets.
pub const BLOCK: u64 = 1 << 20;
/// Prefetch threads (each holds at most one block in memory).
const PREFETCH_THREADS: usize = 4;

type Key = (Id, u64);

struct State {
    /// Blocks on disk and how many bytes each holds (less than BLOCK only at a pack's end).
    lru: lru::LruCache<Key, u64>,
    bytes: u64,
    /// Blocks being fetched; readers of them wait on `changed`.
    inflight: HashSet<Key>,
}

/// Counters for `pgcryptfs status` and the benchmarks.
#[derive(Default)]
pub struct ReadCacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub fetched_bytes: AtomicU64,
    pub prefetched_blocks: AtomicU64,
    pub evicted_blocks: AtomicU64,
}

struct Inner {
    /// Opened without following links; every block is reached relative to it.
    dir: Dir,
    store: Arc<dyn Store>,
    budget: AtomicU64,
    state: Mutex<State>,
    changed: Condvar,
    stats: ReadCacheStats,
    /// Set at unmount: fetched blocks are no longer kept.
    closed: std::sync::atomic::AtomicBool,
}

/// A private directory of a read-only mount: locked while in use, removed when dropped.
struct PrivateDir {
    parent: Dir,
    name: String,
    _lock: File,
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = self.parent.remove_tree(&self.name);
    }
}

pub struct ReadCache {
    inner: Arc<Inner>,
    readahead: u64,
    tx: Option<crossbeam::channel::Sender<Key>>,
    workers: Vec<JoinHandle<()>>,
    _private: Option<PrivateDir>,
}

fn block_name(key: &Key) -> String {
    format!("{}-{}", format::hex(&key.0), key.1)
}

fn parse_block_name(name: &str) -> Option<Key> {
    let (pack, block) = name.split_once('-')?;
    Some((format::parse_hex_id(pack)?, block.parse().ok()?))
}

fn try_lock(f: &File) -> bool {
    // SAFETY: valid fd owned by `f`.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

impl ReadCache {
    /// Opens the persistent clean cache of a writable mount in `dir` (the caller holds the
    /// vault's cache lock), keeping the blocks a previous mount left, oldest evicted first.
    pub fn open(dir: PathBuf, store: Arc<dyn Store>, budget: u64, readahead: u64) -> io::Result<Self> {
        let dir = Dir::private(&dir)?;
        let mut found = Vec::new();
        for e in dir.list()? {
            match parse_block_name(&e.name).filter(|k| block_name(k) == e.name) {
                Some(key) if e.is_file() && e.len > 0 && e.len <= BLOCK => found.push((e.mtime, key, e.len)),
                // Temporaries of a crashed mount and anything else that is not a block (a link
                // is removed itself, never followed; directories are left alone).
                _ if !e.is_dir() => {
                    let _ = dir.remove(&e.name);
                }
                _ => {}
            }
        }
        found.sort_by_key(|f| f.0);
        let cache = Self::start(dir, store, budget, readahead, None);
        {
            let mut st = cache.inner.state.lock().unwrap();
            for (_, key, len) in found {
                st.lru.put(key, len);
                st.bytes += len;
            }
            cache.inner.evict_to(&mut st, budget);
        }
        Ok(cache)
    }

    /// Opens a fresh clean cache for a read-only mount under `parent`, in a directory of its
    /// own (several read-only mounts may share a cache root); directories left by read-only
    /// mounts that are gone are removed.
    pub fn open_private(parent: &Path, store: Arc<dyn Store>, budget: u64, readahead: u64) -> io::Result<Self> {
        // The cache root and the vault's directory under it are checked like a writer's.
        let root = Dir::private(parent.parent().unwrap_or(Path::new("/")))?;
        let vault_dir = parent.file_name().and_then(|n| n.to_str()).ok_or_else(|| io::Error::other("bad cache path"))?;
        let parent = root.sub(vault_dir)?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        for e in parent.list()? {
            // A `.ro-` directory is one being set up: left alone unless a minute old (its maker died).
            let young = (now - e.mtime).abs() < 60;
            if !(e.name.starts_with("ro-") || (e.name.starts_with(".ro-") && !young)) {
                continue;
            }
            let stale = parent.sub(&e.name).and_then(|d| d.open_read("lock")).map(|f| try_lock(&f)).unwrap_or(true);
            if stale {
                let _ = parent.remove_tree(&e.name);
            }
        }
        // Made and locked under a name the clean-up above ignores, then renamed into place, so
        // another read-only mount starting now never sees it unlocked.
        let name = format!("ro-{}-{}", std::process::id(), format::hex(&crate::crypto::random_id()[..4]));
        let staging = format!(".{name}");
        let dir = parent.sub(&staging)?;
        let lock = dir.open_or_create("lock")?;
        if !try_lock(&lock) {
            return Err(io::Error::other(format!("cannot lock {}", dir.path().display())));
        }
        parent.rename(&staging, &name)?;
        let dir = dir.with_path(parent.path().join(&name));
        let private = PrivateDir { parent, name, _lock: lock };
        Ok(Self::start(dir, store, budget, readahead, Some(private)))
    }

    fn start(dir: Dir, store: Arc<dyn Store>, budget: u64, readahead: u64, private: Option<PrivateDir>) -> Self {
        let inner = Arc::new(Inner {
            dir,
            store,
            budget: AtomicU64::new(budget),
            state: Mutex::new(State {
                lru: lru::LruCache::unbounded(),
                bytes: 0,
                inflight: HashSet::new(),
            }),
            changed: Condvar::new(),
            stats: ReadCacheStats::default(),
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        let (tx, rx) = crossbeam::channel::unbounded::<Key>();
        let workers = if readahead == 0 {
            Vec::new()
        } else {
            (0..PREFETCH_THREADS)
                .map(|i| {
                    let (inner, rx) = (inner.clone(), rx.clone());
                    std::thread::Builder::new()
                        .name(format!("prefetch-{i}"))
                        .spawn(move || {
                            for key in rx {
                                if inner.closed.load(Relaxed) {
                                    // Unmounting: release the claim, fetch nothing more.
                                    inner.state.lock().unwrap().inflight.remove(&key);
                                    inner.changed.notify_all();
                                    continue;
                                }
                                inner.prefetch(key);
                            }
                        })
                        .expect("cannot start a prefetch thread")
                })
                .collect()
        };
        ReadCache { inner, readahead, tx: Some(tx), workers, _private: private }
    }

    /// At unmount: a read-only mount's blocks are removed now (the process may exit without
    /// dropping this); nothing is kept after.
    pub fn close(&self) {
        self.inner.closed.store(true, Relaxed);
        if let Some(p) = &self._private {
            let _ = p.parent.remove_tree(&p.name);
        }
    }

    pub fn stats(&self) -> &ReadCacheStats {
        &self.inner.stats
    }

    /// Bytes of clean blocks on disk.
    pub fn bytes(&self) -> u64 {
        self.inner.state.lock().unwrap().bytes
    }

    /// Sets the byte budget (the whole cache's size minus what is staged) and evicts down to it.
    pub fn set_budget(&self, budget: u64) {
        if self.inner.budget.swap(budget, Relaxed) > budget {
            let mut st = self.inner.state.lock().unwrap();
            self.inner.evict_to(&mut st, budget);
        }
    }

    /// Drops the blocks covering `[offset, offset + len)` of `pack` (they failed authentication).
    pub fn invalidate(&self, pack: &Id, offset: u64, len: usize) {
        let mut st = self.inner.state.lock().unwrap();
        for b in offset / BLOCK..=(offset + len.max(1) as u64 - 1) / BLOCK {
            self.inner.remove(&mut st, &(*pack, b));
        }
    }

    /// Reads `len` bytes at `offset` of `pack`: cached blocks from disk, missing ones with one
    /// ranged GET per run (kept for next time), then schedules readahead if the reader is
    /// sequential.
    pub fn read(&self, pack: &Id, offset: u64, len: usize) -> store::Result<Vec<u8>> {
        let end = offset + len as u64;
        let mut out = vec![0u8; len];
        if len == 0 {
            return Ok(out);
        }
        let (first, last) = (offset / BLOCK, (end - 1) / BLOCK);
        let mut b = first;
        while b <= last {
            let start = b * BLOCK;
            let need_end = end.min(start + BLOCK) - start;
            match self.inner.acquire(pack, b, last, need_end) {
                Acquired::Hit => {
                    let from = offset.max(start);
                    let dst = &mut out[(from - offset) as usize..(start + need_end - offset) as usize];
                    if self.inner.read_block(&(*pack, b), from - start, dst) {
                        self.inner.stats.hits.fetch_add(1, Relaxed);
                        b += 1;
                    }
                    // else: the block was dropped as unreadable; the next round fetches it.
                }
                Acquired::Fetch(run_last) => {
                    self.inner.stats.misses.fetch_add(run_last - b + 1, Relaxed);
                    let data = self.inner.fetch_run(pack, b, run_last)?;
                    let from = offset.max(start);
                    let to = end.min((run_last + 1) * BLOCK);
                    if ((to - start) as usize) > data.len() {
                        return Err(StoreError::ShortObject {
                            key: format::pack_name(pack),
                            want: to,
                            have: start + data.len() as u64,
                        });
                    }
                    out[(from - offset) as usize..(to - offset) as usize]
                        .copy_from_slice(&data[(from - start) as usize..(to - start) as usize]);
                    b = run_last + 1;
                }
            }
        }
        Ok(out)
    }

    /// How far ahead of a sequential reader to fetch (0: no readahead).
    pub fn readahead(&self) -> u64 {
        self.readahead
    }

    /// True if the block holding `offset` of `pack` is on disk or being fetched.
    pub fn has(&self, pack: &Id, offset: u64) -> bool {
        let st = self.inner.state.lock().unwrap();
        let key = (*pack, offset / BLOCK);
        st.lru.contains(&key) || st.inflight.contains(&key)
    }

    /// Fetches the blocks covering `[offset, offset + len)` of `pack` in the background,
    /// skipping those on disk or in flight.
    pub fn prefetch(&self, pack: &Id, offset: u64, len: u64) {
        let Some(tx) = &self.tx else { return };
        if self.workers.is_empty() || len == 0 {
            return;
        }
        let mut st = self.inner.state.lock().unwrap();
        for b in offset / BLOCK..=(offset + len - 1) / BLOCK {
            let key = (*pack, b);
            if st.lru.contains(&key) || !st.inflight.insert(key) {
                continue;
            }
            if tx.send(key).is_err() {
                st.inflight.remove(&key);
                return;
            }
        }
    }
}

impl Drop for ReadCache {
    fn drop(&mut self) {
        self.tx = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

enum Acquired {
    /// The block is on disk with the bytes needed.
    Hit,
    /// This reader fetches blocks `b ..= the given block` (claimed as in flight).
    Fetch(u64),
}

impl Inner {
    #[cfg(test)]
    fn path(&self, key: &Key) -> PathBuf {
        self.dir.path().join(block_name(key))
    }

    /// Waits out a fetch of block `b` by another reader; then reports a hit, or claims the
    /// run of missing blocks from `b` up to `last`.
    fn acquire(&self, pack: &Id, b: u64, last: u64, need_end: u64) -> Acquired {
        let mut st = self.state.lock().unwrap();
        loop {
            let key = (*pack, b);
            if let Some(&have) = st.lru.get(&key) {
                if have >= need_end {
                    return Acquired::Hit;
                }
                // A short block ends its pack; refetch to report the short object exactly.
                self.remove(&mut st, &key);
            }
            if st.inflight.contains(&key) {
                st = self.changed.wait(st).unwrap();
                continue;
            }
            st.inflight.insert(key);
            let mut run_last = b;
            while run_last < last {
                let next = (*pack, run_last + 1);
                if st.lru.contains(&next) || st.inflight.contains(&next) {
                    break;
                }
                st.inflight.insert(next);
                run_last += 1;
            }
            return Acquired::Fetch(run_last);
        }
    }

    /// Fetches blocks `first ..= last` of `pack` with one GET, keeps them, releases the claims.
    fn fetch_run(&self, pack: &Id, first: u64, last: u64) -> store::Result<Vec<u8>> {
        let start = first * BLOCK;
        let want = (last - first + 1) * BLOCK;
        log::debug!("clean cache: fetching {} blocks {first}..={last}", format::hex(pack));
        let got = self.store.get_range_upto(&format::pack_name(pack), start, want as usize);
        let data = match got {
            Ok(d) => d,
            Err(e) => {
                let mut st = self.state.lock().unwrap();
                for b in first..=last {
                    st.inflight.remove(&(*pack, b));
                }
                self.changed.notify_all();
                return Err(e);
            }
        };
        self.stats.fetched_bytes.fetch_add(data.len() as u64, Relaxed);
        for (i, b) in (first..=last).enumerate() {
            let from = (i as u64 * BLOCK) as usize;
            let block = &data[from.min(data.len())..(from + BLOCK as usize).min(data.len())];
            self.keep((*pack, b), block);
        }
        Ok(data)
    }

    fn prefetch(&self, key: Key) {
        log::debug!("clean cache: prefetching {}", block_name(&key));
        match self.store.get_range_upto(&format::pack_name(&key.0), key.1 * BLOCK, BLOCK as usize) {
            Ok(data) => {
                self.stats.fetched_bytes.fetch_add(data.len() as u64, Relaxed);
                self.stats.prefetched_blocks.fetch_add(1, Relaxed);
                self.keep(key, &data);
            }
            Err(e) => {
                log::debug!("readahead of {} block {}: {e}", format::pack_name(&key.0), key.1);
                let mut st = self.state.lock().unwrap();
                st.inflight.remove(&key);
                self.changed.notify_all();
            }
        }
    }

    /// Writes a fetched block to disk (best effort: a full or failing cache disk only costs
    /// the next read a GET), records it and wakes its waiters.
    fn keep(&self, key: Key, data: &[u8]) {
        let len = data.len() as u64;
        let budget = self.budget.load(Relaxed);
        let written = len > 0 && len <= budget && !self.closed.load(Relaxed) && self.write_block(&key, data);
        let mut st = self.state.lock().unwrap();
        st.inflight.remove(&key);
        if written {
            self.evict_to(&mut st, budget.saturating_sub(len));
            if let Some(old) = st.lru.put(key, len) {
                st.bytes -= old;
            }
            st.bytes += len;
        }
        self.changed.notify_all();
    }

    fn write_block(&self, key: &Key, data: &[u8]) -> bool {
        // The cache directory is untrusted: never write through a planted symlink.
        let tmp = Dir::temp_name(&block_name(key));
        let r = self
            .dir
            .create_new(&tmp, false)
            .and_then(|mut f| std::io::Write::write_all(&mut f, data))
            .and_then(|_| self.dir.rename(&tmp, &block_name(key)));
        if let Err(e) = r {
            log::warn!("clean cache: cannot keep {} in {}: {e}", block_name(key), self.dir.path().display());
            let _ = self.dir.remove(&tmp);
            return false;
        }
        true
    }

    /// Copies bytes of a cached block; false (and the block dropped) if it cannot be read.
    fn read_block(&self, key: &Key, within: u64, dst: &mut [u8]) -> bool {
        let ok = self.dir.open_read(&block_name(key)).and_then(|f| f.read_exact_at(dst, within));
        match ok {
            Ok(()) => true,
            Err(e) => {
                log::warn!("clean cache: block {} unreadable ({e}); fetching it again", block_name(key));
                let mut st = self.state.lock().unwrap();
                self.remove(&mut st, key);
                false
            }
        }
    }

    fn remove(&self, st: &mut State, key: &Key) {
        if let Some(len) = st.lru.pop(key) {
            st.bytes -= len;
            let _ = self.dir.remove(&block_name(key));
        }
    }

    fn evict_to(&self, st: &mut State, budget: u64) {
        while st.bytes > budget {
            let Some((key, len)) = st.lru.pop_lru() else { break };
            st.bytes -= len;
            let _ = self.dir.remove(&block_name(&key));
            log::debug!("clean cache: evicted {}", block_name(&key));
            self.stats.evicted_blocks.fetch_add(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;
    use std::fs;

    fn pack_of(store: &MemStore, id: &Id, len: usize) -> Vec<u8> {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 65536) as u8).collect();
        store.put(&format::pack_name(id), &data).unwrap();
        data
    }

    fn wait_idle(rc: &ReadCache) {
        for _ in 0..500 {
            if rc.inner.state.lock().unwrap().inflight.is_empty() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("prefetches never finished");
    }

    #[test]
    fn reads_are_exact_and_kept_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MemStore::new());
        let id = [9u8; 16];
        let data = pack_of(&store, &id, 5 * BLOCK as usize + 1234);
        let rc = ReadCache::open(dir.path().join("clean"), store.clone(), 3 * BLOCK, 0).unwrap();
        // Unaligned reads across block boundaries, and the short last block.
        for (off, len) in [(10u64, 100usize), (BLOCK - 5, 10), (3 * BLOCK + 7, 2 * BLOCK as usize), (0, 1)] {
            let got = rc.read(&id, off, len).unwrap();
            assert_eq!(got, &data[off as usize..off as usize + len], "read at {off}+{len}");
        }
        assert!(rc.bytes() <= 3 * BLOCK, "kept {} bytes over a budget of {}", rc.bytes(), 3 * BLOCK);
        // A read past the end of the pack is a short-object error, never zeros.
        let e = rc.read(&id, 5 * BLOCK + 1000, 500).unwrap_err();
        assert!(matches!(e, StoreError::ShortObject { .. }), "{e}");
        // Hits cost no GET.
        let before = store.range_reads();
        assert_eq!(rc.read(&id, 5, 50).unwrap(), &data[5..55]);
        assert_eq!(store.range_reads(), before);
        // Shrinking the budget evicts, and nothing on disk is left unaccounted.
        rc.set_budget(BLOCK);
        assert!(rc.bytes() <= BLOCK);
        let on_disk: u64 = fs::read_dir(dir.path().join("clean")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
        assert_eq!(on_disk, rc.bytes());
    }

    #[test]
    fn sequential_reads_are_prefetched_and_blocks_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MemStore::new());
        let id = [3u8; 16];
        let data = pack_of(&store, &id, 6 * BLOCK as usize + 99);
        {
            let rc = ReadCache::open(dir.path().join("clean"), store.clone(), 64 * BLOCK, 4 * BLOCK).unwrap();
            assert_eq!(rc.read(&id, 0, 4096).unwrap(), &data[..4096]);
            rc.prefetch(&id, 4096, 4 * BLOCK);
            wait_idle(&rc);
            assert_eq!(rc.stats().prefetched_blocks.load(Relaxed), 4);
            assert!(rc.has(&id, 4 * BLOCK + 5) && !rc.has(&id, 5 * BLOCK));
            let gets = store.range_reads();
            // The prefetched blocks are served without a GET.
            assert_eq!(rc.read(&id, BLOCK, 3 * BLOCK as usize).unwrap(), &data[BLOCK as usize..4 * BLOCK as usize]);
            assert_eq!(store.range_reads(), gets);
            let read_all = rc.read(&id, 0, data.len()).unwrap();
            assert_eq!(read_all, data);
            assert_eq!(store.range_reads(), gets + 1, "one GET for the two blocks left");
            assert_eq!(rc.stats().fetched_bytes.load(Relaxed), data.len() as u64, "every byte fetched once");
        }
        let gets = store.range_reads();
        let rc = ReadCache::open(dir.path().join("clean"), store.clone(), 64 * BLOCK, 0).unwrap();
        assert_eq!(rc.read(&id, 0, data.len()).unwrap(), data);
        assert_eq!(store.range_reads(), gets, "a reopened cache serves its blocks");
        // A damaged block file is noticed by the vault and dropped; a truncated one is refetched here.
        fs::write(rc.inner.path(&(id, 2)), b"short").unwrap();
        assert_eq!(rc.read(&id, 2 * BLOCK, 100).unwrap(), &data[2 * BLOCK as usize..2 * BLOCK as usize + 100]);
        rc.invalidate(&id, 0, 10);
        assert!(!fs::exists(rc.inner.path(&(id, 0))).unwrap());
    }

    #[test]
    fn private_directories_go_with_their_mount() {
        let root = tempfile::tempdir().unwrap();
        // The vault's directory under a cache root (both checked as private).
        let dir = root.path().join("vault");
        let store = Arc::new(MemStore::new());
        let a = ReadCache::open_private(dir.as_path(), store.clone(), BLOCK, 0).unwrap();
        let b = ReadCache::open_private(dir.as_path(), store.clone(), BLOCK, 0).unwrap();
        assert_eq!(fs::read_dir(dir.as_path()).unwrap().count(), 2, "a live read-only mount's directory stays");
        let a_dir = a.inner.dir.path().to_path_buf();
        drop(a);
        assert!(!a_dir.exists());
        // A directory whose owner died (no lock held) is removed by the next one.
        fs::create_dir(dir.as_path().join("ro-1-dead")).unwrap();
        fs::write(dir.as_path().join("ro-1-dead/lock"), b"").unwrap();
        let _c = ReadCache::open_private(dir.as_path(), store, BLOCK, 0).unwrap();
        assert!(!dir.as_path().join("ro-1-dead").exists());
        drop(b);
    }

    #[test]
    fn planted_links_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let store = Arc::new(MemStore::new());
        let id = [4u8; 16];
        let data = pack_of(&store, &id, 2 * BLOCK as usize);
        let clean = dir.path().join("clean");
        fs::create_dir(&clean).unwrap();
        // Links at a block's name and at names the start-up clean-up deletes.
        std::os::unix::fs::symlink(&victim, clean.join(block_name(&(id, 0)))).unwrap();
        std::os::unix::fs::symlink(outside.path(), clean.join("junk")).unwrap();
        let rc = ReadCache::open(clean.clone(), store.clone(), 64 * BLOCK, 0).unwrap();
        assert_eq!(rc.read(&id, 0, 100).unwrap(), &data[..100]);
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(!fs::symlink_metadata(clean.join(block_name(&(id, 0)))).unwrap().is_symlink());
        // A link swapped in for a kept block is refused on read (and the read still succeeds).
        fs::remove_file(clean.join(block_name(&(id, 0)))).unwrap();
        std::os::unix::fs::symlink(&victim, clean.join(block_name(&(id, 0)))).unwrap();
        assert_eq!(rc.read(&id, 0, 100).unwrap(), &data[..100]);
        drop(rc);
        // `clean` itself a link (to a directory full of files): refused, nothing there removed.
        fs::remove_dir_all(&clean).unwrap();
        std::os::unix::fs::symlink(outside.path(), &clean).unwrap();
        assert!(ReadCache::open(clean.clone(), store.clone(), BLOCK, 0).is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        // A read-only mount's vault directory as a link: refused.
        let linked = dir.path().join("vault-link");
        std::os::unix::fs::symlink(outside.path(), &linked).unwrap();
        assert!(ReadCache::open_private(&linked, store, BLOCK, 0).is_err());
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 1, "nothing made or removed through a link");
    }
}
