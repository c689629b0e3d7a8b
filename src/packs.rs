//! The pack layer: sealed bytes appended to the cache's staging packs, and ranges of packs read
//! back from staging, the clean read cache or the store (waiting out a remote store's outage
//! within the store timeout). Chunks and metadata nodes both live here; what the bytes mean is
//! the codec's business.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::cache::{Cache, CacheError};
use crate::format::{self, ChunkRef, Id};
use crate::readcache::ReadCache;
use crate::store::{Store, StoreError};

/// Why a range of a pack could not be read or appended.
#[derive(Debug)]
pub enum PackError {
    /// The local cache failed (reading a staged pack, appending to one).
    Cache(CacheError),
    /// The store (or the clean cache in front of it) failed for this range.
    Store { pack: Id, offset: u64, source: StoreError },
    /// Appending needs a writable mount (a cache).
    ReadOnly,
}

impl fmt::Display for PackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PackError::Cache(e) => write!(f, "{e}"),
            PackError::Store { pack, offset, source } => write!(f, "pack {} offset {offset}: {source}", format::hex(pack)),
            PackError::ReadOnly => write!(f, "read-only mount"),
        }
    }
}

impl std::error::Error for PackError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PackError::Cache(e) => Some(e),
            PackError::Store { source, .. } => Some(source),
            PackError::ReadOnly => None,
        }
    }
}

impl From<CacheError> for PackError {
    fn from(e: CacheError) -> Self {
        PackError::Cache(e)
    }
}

pub type Result<T> = std::result::Result<T, PackError>;

/// Where a vault's packs are written and read. Shared (`Arc`) by the vault and the readers of
/// its metadata tree.
pub struct Packs {
    store: Arc<dyn Store>,
    /// The writer's cache (staging packs, journal); none on a read-only mount.
    cache: Option<Cache>,
    /// Clean blocks of stored packs (remote stores only).
    read_cache: Option<ReadCache>,
    /// The whole cache's bound (staged plus clean bytes).
    cache_size: u64,
    /// How long a read waits out a remote store that fails for a reason that may pass.
    store_timeout: Duration,
    /// Reads waiting for a store that fails for now (an outage).
    reads_waiting: AtomicU64,
}

impl Packs {
    pub fn new(
        store: Arc<dyn Store>,
        cache: Option<Cache>,
        read_cache: Option<ReadCache>,
        cache_size: u64,
        store_timeout: Duration,
    ) -> Self {
        Packs { store, cache, read_cache, cache_size, store_timeout, reads_waiting: AtomicU64::new(0) }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref()
    }

    pub fn read_cache(&self) -> Option<&ReadCache> {
        self.read_cache.as_ref()
    }

    /// Reads now waiting for the store.
    pub fn reads_waiting(&self) -> u64 {
        self.reads_waiting.load(Ordering::Relaxed)
    }

    /// Appends sealed bytes to the active staging pack; returns the pack and the offset.
    pub fn append(&self, sealed: &[u8]) -> Result<(Id, u64)> {
        let cache = self.cache.as_ref().ok_or(PackError::ReadOnly)?;
        let at = cache.append_chunk(sealed)?;
        if let Some(rc) = &self.read_cache {
            rc.set_budget(self.clean_budget()); // staged data takes room from clean data
        }
        Ok(at)
    }

    /// Sealed bytes of `len` bytes at `offset` of a pack: from the cache while it is staged,
    /// else through the clean read cache (remote stores), else from the store. The flag says
    /// the bytes came from the clean cache (which a failed check must drop: `refetch`).
    pub fn range(&self, pack: &Id, offset: u64, len: usize) -> Result<(Vec<u8>, bool)> {
        if let Some(cache) = &self.cache
            && let Some(s) = cache.read_staging(pack, offset, len)?
        {
            return Ok((s, false));
        }
        // A remote store that fails for a reason that may pass (an outage, a timeout) is
        // waited for within the store timeout: a write's read-modify-write during an outage
        // waits instead of failing. Missing, short or refused objects fail at once.
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        let mut waiting = false;
        let result = loop {
            let r = match &self.read_cache {
                Some(rc) => {
                    rc.set_budget(self.clean_budget());
                    rc.read(pack, offset, len).map(|b| (b, true))
                }
                None => self.store.get_range(&format::pack_name(pack), offset, len).map(|b| (b, false)),
            };
            match r {
                Err(e @ StoreError::Io { .. }) if self.store.is_remote() && started.elapsed() + backoff < self.store_timeout => {
                    if !waiting {
                        waiting = true;
                        self.reads_waiting.fetch_add(1, Ordering::Relaxed);
                        log::warn!("a read waits for the store (up to {:?}): {e}", self.store_timeout);
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                other => break other,
            }
        };
        if waiting {
            self.reads_waiting.fetch_sub(1, Ordering::Relaxed);
        }
        result.map_err(|source| PackError::Store { pack: *pack, offset, source })
    }

    /// After bytes from the clean cache failed their check: drops those blocks and reads the
    /// range from the store itself (a damaged clean cache costs a GET, never an EIO).
    pub fn refetch(&self, pack: &Id, offset: u64, len: usize) -> Result<Vec<u8>> {
        if let Some(rc) = &self.read_cache {
            rc.invalidate(pack, offset, len);
        }
        self.store.get_range(&format::pack_name(pack), offset, len).map_err(|source| PackError::Store { pack: *pack, offset, source })
    }

    /// Bytes the clean cache may hold: the cache's bound minus what is staged.
    pub fn clean_budget(&self) -> u64 {
        self.cache_size.saturating_sub(self.cache.as_ref().map_or(0, |c| c.staged_bytes()))
    }

    /// Fetches these ranges into the clean cache in the background (readahead), skipping packs
    /// still staged here; adjacent ranges become one.
    pub fn prefetch(&self, chunks: &[ChunkRef]) {
        let Some(rc) = &self.read_cache else { return };
        let staged = |p: &Id| self.cache.as_ref().is_some_and(|c| c.staging_file(p).exists());
        let mut i = 0;
        while i < chunks.len() {
            let (pack, start) = (chunks[i].pack, chunks[i].offset);
            let mut end = start + chunks[i].len as u64;
            i += 1;
            while i < chunks.len() && chunks[i].pack == pack && chunks[i].offset == end {
                end += chunks[i].len as u64;
                i += 1;
            }
            if !staged(&pack) {
                rc.prefetch(&pack, start, end - start);
            }
        }
    }
}
