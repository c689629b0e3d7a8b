//! One open vault: header and keys, the catalog loaded from the hash-chained metadata
//! segments, chunk sealing and authenticated chunk reads, and the commit pipeline
//! (journal → packs uploaded → segment) that makes the cache's contents durable in the store.
//!
//! Lock order: `commit` → `catalog` → cache internals → `head` (the fs layer never holds a
//! file lock while calling `commit`). Across store writes only `commit` and `head` are held
//! (and the catalog during recovery, before any other thread exists).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::cache::{Cache, CacheError, KnownHead, MasterPin};
use crate::catalog::{Catalog, CatalogError};
use crate::crypto::{self, Secret32};
use crate::format::{self, ChunkRef, FormatError, Id, Kind, Limits, Record, SegmentPrefix, VaultHeader};
use crate::audit;
use crate::codec::{ChunkCodec, Compression};
use crate::keys::{self, KeyError, NewSlot, Opened, Unlock, VaultKeys};
use crate::lease::{Lease, LeaseError};
use crate::pins::{Expect, Fingerprint, PinError, Pins, Receipt};
use crate::packs::{PackError, Packs};
use crate::readcache::ReadCache;
use crate::store::{Store, StoreError};
use crate::uploads::Uploads;

#[derive(Debug)]
pub enum VaultError {
    NotAVault(String),
    NotEmpty(String),
    Key(KeyError),
    Store(StoreError),
    Cache(CacheError),
    /// Metadata failed authentication, the chain is broken, or a segment is missing.
    Metadata(String),
    /// A data chunk failed verification.
    Chunk(String),
    ReadOnly,
    Lease(LeaseError),
    /// The cache stayed full of unstored data for longer than the write timeout.
    CacheFull(String),
    /// Not the vault expected or pinned, or an older or forked state of it.
    Pin(PinError),
    /// The cache holds acknowledged writes that another writer's commits passed by.
    Uncommitted(String),
}

impl From<PinError> for VaultError {
    fn from(e: PinError) -> Self {
        VaultError::Pin(e)
    }
}

impl fmt::Display for VaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VaultError::NotAVault(m) => write!(f, "{m}"),
            VaultError::NotEmpty(m) => write!(f, "{m}"),
            VaultError::Key(e) => write!(f, "{e}"),
            VaultError::Store(e) => write!(f, "{e}"),
            VaultError::Cache(e) => write!(f, "{e}"),
            VaultError::Metadata(m) => write!(f, "vault metadata is damaged or was tampered with: {m}"),
            VaultError::Chunk(m) => write!(f, "{m}"),
            VaultError::ReadOnly => write!(f, "the vault is open read-only"),
            VaultError::Lease(e) => write!(f, "{e}"),
            VaultError::CacheFull(m) => write!(f, "{m}"),
            VaultError::Pin(e) => write!(f, "{e}"),
            VaultError::Uncommitted(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for VaultError {}

impl From<KeyError> for VaultError {
    fn from(e: KeyError) -> Self {
        VaultError::Key(e)
    }
}
impl From<StoreError> for VaultError {
    fn from(e: StoreError) -> Self {
        VaultError::Store(e)
    }
}
impl From<CacheError> for VaultError {
    fn from(e: CacheError) -> Self {
        VaultError::Cache(e)
    }
}
impl From<PackError> for VaultError {
    fn from(e: PackError) -> Self {
        match e {
            PackError::Cache(e) => VaultError::Cache(e),
            // A chunk or node that cannot be read: EIO, naming the pack.
            e @ PackError::Store { .. } => VaultError::Chunk(e.to_string()),
            PackError::ReadOnly => VaultError::ReadOnly,
        }
    }
}

pub type Result<T> = std::result::Result<T, VaultError>;

/// Checkpoint after this many delta segments.
const CHECKPOINT_EVERY: u64 = 16;

/// The last committed segment.
#[derive(Debug, Clone, Copy)]
struct Head {
    seq: u64,
    hash: [u8; 32],
    deltas_since_checkpoint: u64,
}

/// A commit that froze a journal but has not finished (retried first, resuming where it
/// stopped).
struct FrozenCommit {
    seq: u64,
    checkpoint: Option<Vec<u8>>,
    /// The delta's records as the live catalog applied them (validated), not as the cache's
    /// journal file reads back: the cache is untrusted, and a journal cut at a batch boundary
    /// would otherwise become a segment that no later load can replay.
    records: Vec<Record>,
    packs: Vec<Id>,
    /// The sealed segment, made once, so a retry writes the very same bytes.
    object: Option<(u8, Vec<u8>)>,
    segment_written: bool,
}

/// Counters for status, benchmarks and notes.
#[derive(Debug, Default)]
pub struct VaultStats {
    pub puts: AtomicU64,
    pub uploaded_bytes: AtomicU64,
    pub segments: AtomicU64,
}

pub struct OpenOptions<'a> {
    pub read_only: bool,
    pub cache_root: Option<&'a Path>,
    pub pack_target: u64,
    /// Break an expired writer lease of another mount.
    pub break_lease: bool,
    /// Most bytes staged in the cache and not yet in the store; writes wait beyond it.
    pub dirty_max: u64,
    /// How long a write waits for room, and a commit for its uploads, before failing.
    pub store_timeout: std::time::Duration,
    /// The whole cache's bound (staged plus clean bytes); 0 keeps no clean data. Clean data
    /// is kept only for remote stores.
    pub cache_size: u64,
    /// Bytes read ahead of a sequential reader of a remote store.
    pub readahead: u64,
    /// A writable open checks the master key against the fingerprint its cache pinned.
    pub master_pin: bool,
    /// ... and accepts (and pins) a different one: after a rekey. Only together with
    /// `expect.fingerprint` (the fingerprint the rekey printed), and only once the vault's
    /// fingerprint matched it; a key the cache or this host retired is refused regardless.
    pub accept_new_master_key: bool,
    /// The cache root whose `pins/` remember what this host has seen of each vault location:
    /// an older or forked head, or another vault at a known location, is refused.
    pub pins: Option<&'a Path>,
    /// What the caller demands of the vault (a restore host's fingerprint or receipt).
    pub expect: Expect,
    /// The stated bounds of the catalog, the journal and the segments (`format::Limits`).
    pub limits: Limits,
    /// How new chunks are compressed (vaults with the chunk codec flag).
    pub compression: Compression,
}

impl Default for OpenOptions<'_> {
    fn default() -> Self {
        OpenOptions {
            read_only: true,
            cache_root: None,
            pack_target: 16 << 20,
            break_lease: false,
            dirty_max: 1 << 30,
            store_timeout: std::time::Duration::from_secs(300),
            cache_size: 2 << 30,
            readahead: 8 << 20,
            master_pin: true,
            accept_new_master_key: false,
            pins: None,
            expect: Expect::default(),
            limits: Limits::default(),
            compression: Compression::DEFAULT,
        }
    }
}

/// How long a writer lease lasts without renewal; the daemon renews it every third of this.
pub const LEASE_TTL_SECS: i64 = 60;
/// A commit needs at least this much of the lease left (else it renews first, or waits).
const LEASE_MARGIN: std::time::Duration = std::time::Duration::from_secs(15);

pub struct Vault {
    pub header: VaultHeader,
    keys: VaultKeys,
    /// Seals and opens chunks (compression, padding, AEAD) under the data subkey.
    codec: ChunkCodec,
    store: Arc<dyn Store>,
    /// The staging packs and the cache they live in; ranges of stored packs.
    packs: Arc<Packs>,
    catalog: Mutex<Catalog>,
    head: Mutex<Head>,
    commit: Mutex<Option<FrozenCommit>>,
    /// Since when the cache has been at its dirty bound (writes waiting for room), if it is.
    full_since: Mutex<Option<std::time::Instant>>,
    /// Records appended to the current cache journal, in order: the next delta segment.
    /// Lock order: catalog → journaled.
    journaled: Mutex<Vec<Record>>,
    lease: Mutex<Option<Lease>>,
    fingerprint: Fingerprint,
    /// Until when the writer lease is surely ours (monotonic clock), if this is a writer.
    lease_valid_until: Mutex<Option<std::time::Instant>>,
    /// This host's pins and the location they are kept under: moved forward by every commit.
    pins: Option<(Pins, String)>,
    /// Set when a renewal found the lease taken: no further commits (no split brain).
    lease_lost: std::sync::atomic::AtomicBool,
    uploads: Uploads,
    dirty_max: u64,
    store_timeout: std::time::Duration,
    /// The bounds this vault was opened with (its catalog has them too).
    limits: Limits,
    pub stats: VaultStats,
}

fn meta_err(m: impl Into<String>) -> VaultError {
    VaultError::Metadata(m.into())
}

/// Reads and checks the vault header.
pub fn read_header(store: &dyn Store) -> Result<VaultHeader> {
    // One byte past a header at most: a planted huge object is not downloaded.
    let bytes = match store.get_range_upto(format::HEADER_OBJECT, 0, format::HEADER_LEN + 1) {
        Ok(b) => b,
        Err(StoreError::NotFound(_)) => {
            return Err(VaultError::NotAVault(format!(
                "{} is not a pgcryptfs vault (no {} object; create one with `pgcryptfs init`)",
                store.describe(),
                format::HEADER_OBJECT
            )));
        }
        Err(e) => return Err(e.into()),
    };
    VaultHeader::decode(&bytes).map_err(|e: FormatError| {
        VaultError::NotAVault(format!("{}: the vault header is unreadable: {e}", store.describe()))
    })
}

/// Creates a new vault in an empty store with one sodium key slot (see `init_with`).
pub fn init(store: &dyn Store, user_key: &Secret32, chunk_size: u32, uid: u32, gid: u32) -> Result<VaultHeader> {
    let first = NewSlot::Sodium(user_key.duplicate());
    init_with(store, &first, Some("sodium"), chunk_size, uid, gid).map(|(header, _)| header)
}

/// Creates a new vault in an empty store: header, its first key slot, first checkpoint.
/// Returns the header and the new vault's first state (its fingerprint, for the operator to
/// keep: restore hosts check it).
pub fn init_with(
    store: &dyn Store,
    first: &NewSlot,
    label: Option<&str>,
    chunk_size: u32,
    uid: u32,
    gid: u32,
) -> Result<(VaultHeader, Receipt)> {
    format::validate_chunk_size(chunk_size).map_err(|e| VaultError::NotAVault(e.to_string()))?;
    if store.get_range_upto(format::HEADER_OBJECT, 0, 1).is_ok() {
        return Err(VaultError::NotEmpty(format!("{} is already a pgcryptfs vault", store.describe())));
    }
    if !store.is_empty()? {
        return Err(VaultError::NotEmpty(format!(
            "{} is not empty and not a vault; refusing to initialise it",
            store.describe()
        )));
    }
    let header = VaultHeader {
        vault_id: crypto::random_id(),
        aead: format::AEAD_XCHACHA20POLY1305,
        chunk_size,
        flags: format::FLAG_CHUNK_CODEC,
    };
    let master = Secret32::random();
    let now = format::Time::now();
    let slot = keys::make_slot(&header, &master, first, label, now.secs)?;
    store.put_new(&format::slot_name(&slot.slot_id), &slot.encode())?;
    let keys = VaultKeys::derive(&master);
    let body = format::encode_records(&Catalog::root_records(uid, gid, now));
    let object = seal_segment(&header, &keys.meta, format::SEGMENT_CHECKPOINT, 1, [0; 32], &body);
    store.put_new(&format::segment_name(1), &object)?;
    // The header goes last: a crash during init leaves no half-made vault that mounts.
    store.put_new(format::HEADER_OBJECT, &header.encode())?;
    log::info!("initialised vault {} in {}", format::hex(&header.vault_id), store.describe());
    audit::event("slot added (init)", &header.vault_id, &slot.slot_id, keys::method_name(slot.method), "");
    let first = Receipt { fingerprint: Fingerprint::of(&header.vault_id, &keys.meta), seq: 1, hash: crypto::hash32(&object) };
    Ok((header, first))
}

fn seal_segment(header: &VaultHeader, meta: &Secret32, kind: u8, seq: u64, prev_hash: [u8; 32], body: &[u8]) -> Vec<u8> {
    let prefix = SegmentPrefix { kind, seq, prev_hash }.encode();
    let aad = format::segment_aad(header, &prefix);
    let mut object = prefix;
    crypto::seal_into(meta, &aad, body, &mut object);
    object
}

/// Reads every key slot object: (object name, bytes).
pub fn read_slots(store: &dyn Store) -> Result<Vec<(String, Vec<u8>)>> {
    let mut slots = Vec::new();
    let listed = store.list(format::KEYS_PREFIX)?;
    if listed.len() > MAX_SLOTS {
        return Err(VaultError::NotAVault(format!(
            "{} has {} key slots, more than the {MAX_SLOTS} pgcryptfs reads (planted?)",
            store.describe(),
            listed.len()
        )));
    }
    for (name, size) in listed {
        if size > MAX_SLOT_BYTES {
            log::warn!("key slot {name} is {size} bytes, more than any slot can be; skipped");
            continue;
        }
        // Capped as listed: an object replaced by a larger one since the listing is not read.
        match store.get_range_upto(&name, 0, MAX_SLOT_BYTES as usize + 1) {
            Ok(b) if b.len() as u64 > MAX_SLOT_BYTES => log::warn!("key slot {name} grew past {MAX_SLOT_BYTES} bytes; skipped"),
            Ok(b) => slots.push((name, b)),
            Err(StoreError::NotFound(_)) => {} // removed since the listing
            Err(e) => return Err(e.into()),
        }
    }
    if slots.is_empty() {
        return Err(VaultError::NotAVault(format!("{} has no key slots", store.describe())));
    }
    Ok(slots)
}

/// Most key slots a vault may have, and the largest slot object (an OpenPGP message for an
/// RSA-4096 certificate is under 1 KiB): an attacker who can write `keys/` cannot make an unlock
/// read without bound.
pub const MAX_SLOTS: usize = 64;
pub const MAX_SLOT_BYTES: u64 = 64 << 10;

/// Opens the master key with what the user gave; logs the unlock for the audit trail.
pub fn unlock_master(store: &dyn Store, header: &VaultHeader, unlock: &Unlock) -> Result<Opened> {
    unlock_master_within(store, header, unlock, &Limits::default())
}

/// `unlock_master`, reading a metadata segment (when it must, see `choose_master`) within
/// `limits`.
fn unlock_master_within(store: &dyn Store, header: &VaultHeader, unlock: &Unlock, limits: &Limits) -> Result<Opened> {
    let slots = read_slots(store)?;
    let opened = match keys::open_every_slot(header, &slots, unlock) {
        Ok(o) => o,
        Err(e) => {
            audit::refused(&header.vault_id, &e.to_string());
            return Err(e.into());
        }
    };
    let opened = match choose_master(store, header, unlock, opened, limits) {
        Ok(o) => o,
        Err(e) => {
            audit::refused(&header.vault_id, &e.to_string());
            return Err(e);
        }
    };
    audit::event("unlock", &header.vault_id, &opened.slot.slot_id, keys::method_name(opened.slot.method), "");
    Ok(opened)
}

/// Of the slots that opened (in the order tried), the one to unlock with. When they all hold
/// the same master key (the common case: one slot opened) that is the first, and nothing more
/// is read. When they hold different master keys (key slots from before a rekey put back beside
/// the new one, whose master key sealed metadata that is gone), the one whose master key opens
/// the vault's newest metadata segment, which is read once within `limits`; each slot that
/// opened with a master key that does not is named in a warning. If none opens it, the
/// refusal names the segment and the slots tried. The chosen key is only a candidate: the
/// caller's checks (the whole metadata chain, fingerprint expectations, pins, master pin) all
/// still apply to it.
fn choose_master(store: &dyn Store, header: &VaultHeader, unlock: &Unlock, mut opened: Vec<(String, Opened)>, limits: &Limits) -> Result<Opened> {
    let same = |a: &Opened, b: &Opened| crypto::ct_eq(a.master.expose(), b.master.expose());
    if opened.iter().all(|(_, o)| same(o, &opened[0].1)) {
        return Ok(opened.swap_remove(0).1);
    }
    let seq = store
        .list(format::META_PREFIX)?
        .iter()
        .filter_map(|(n, _)| format::parse_segment_name(n))
        .max()
        .ok_or_else(|| meta_err("no metadata segments (meta/ is empty)"))?;
    let first = read_segment_prefix(store, seq)?;
    let (cap, what) = if first.kind == format::SEGMENT_CHECKPOINT {
        (limits.max_checkpoint_object(), "a checkpoint")
    } else {
        (limits.max_delta_object(), "a delta segment")
    };
    let object = read_segment(store, seq, listed_size(store, seq), cap, what)?;
    let (prefix, sealed) = SegmentPrefix::decode(&object).map_err(|e| meta_err(format!("segment {seq}: {e}")))?;
    if prefix.seq != seq || prefix.kind != first.kind {
        return Err(meta_err(format!("segment {seq} changed while it was read")));
    }
    let aad = format::segment_aad(header, &prefix.encode());
    // One trial per distinct master key.
    let mut opens: Vec<bool> = Vec::with_capacity(opened.len());
    for (i, (_, o)) in opened.iter().enumerate() {
        let verdict = match (0..i).find(|&j| same(&opened[j].1, o)) {
            Some(j) => opens[j],
            None => crypto::open(&VaultKeys::derive(&o.master).meta, &aad, sealed).is_ok(),
        };
        opens.push(verdict);
    }
    let Some(chosen) = opens.iter().position(|&v| v) else {
        let tried: Vec<String> = opened.iter().map(|(_, o)| format::hex(&o.slot.slot_id)).collect();
        return Err(meta_err(format!(
            "segment {seq} failed authentication under the master key of every key slot that opens with {} \
             (key slots {}; they hold different master keys and none of them opens the vault's newest metadata)",
            unlock.what(),
            tried.join(", ")
        )));
    };
    for (_, o) in &opened {
        if !same(o, &opened[chosen].1) {
            let id = format::hex(&o.slot.slot_id);
            log::warn!(
                "key slot {id} holds a master key that opens none of the vault's metadata: a slot from before a \
                 rekey put back? `pgcryptfs key remove {id}` removes it (the vault was unlocked with key slot {})",
                format::hex(&opened[chosen].1.slot.slot_id)
            );
        }
    }
    Ok(opened.swap_remove(chosen).1)
}

/// Unlocks the vault's subkeys.
pub fn unlock(store: &dyn Store, header: &VaultHeader, unlock: &Unlock) -> Result<VaultKeys> {
    Ok(VaultKeys::derive(&unlock_master(store, header, unlock)?.master))
}

/// The committed metadata as one checkpoint's worth of records, and the head segment's seq and
/// hash (for rekey, which rewrites it all under a new key).
pub fn load_records(store: &dyn Store, header: &VaultHeader, keys: &VaultKeys) -> Result<(Vec<Record>, u64, [u8; 32])> {
    let (catalog, head) = load_metadata(store, header, keys, &Limits::default())?;
    Ok((catalog.snapshot(), head.seq, head.hash))
}

/// Seals a checkpoint segment of `records` (for rekey).
pub fn seal_checkpoint(header: &VaultHeader, meta: &Secret32, seq: u64, prev_hash: [u8; 32], records: &[Record]) -> Vec<u8> {
    seal_segment(header, meta, format::SEGMENT_CHECKPOINT, seq, prev_hash, &format::encode_records(records))
}

/// The files that uncommitted records created or wrote, by inode, with their paths as far as
/// the records' links and the committed catalog name them (`<inode N>` where nothing does).
pub fn uncommitted_paths(recs: &[Record], committed: &Catalog) -> std::collections::BTreeMap<u64, String> {
    let mut links: HashMap<u64, (u64, Vec<u8>)> = HashMap::new();
    let mut written = std::collections::BTreeSet::new();
    for r in recs {
        match r {
            Record::Link { parent, name, ino } => {
                links.insert(*ino, (*parent, name.clone()));
            }
            Record::Chunk { ino, .. } => {
                written.insert(*ino);
            }
            Record::Inode { ino, attr, .. } if attr.kind != Kind::Dir => {
                written.insert(*ino);
            }
            _ => {}
        }
    }
    let path_of = |ino: u64| {
        let mut parts = Vec::new();
        let mut cur = ino;
        while let Some((parent, name)) = links.get(&cur).filter(|_| parts.len() < 256) {
            parts.push(String::from_utf8_lossy(name).into_owned());
            cur = *parent;
        }
        let base = match committed.get(cur) {
            Ok(_) if cur == crate::catalog::ROOT => String::new(),
            Ok(_) => committed.path_of(cur),
            Err(_) => format!("<inode {cur}>"),
        };
        parts.reverse();
        if parts.is_empty() { base } else { format!("{}/{}", base.trim_end_matches('/'), parts.join("/")) }
    };
    written.into_iter().map(|ino| (ino, path_of(ino))).collect()
}

/// Present while a rekey is under way or was interrupted (see `rekey`).
pub const REKEY_PENDING_OBJECT: &str = "rekey/slot";
/// The new master key of a rekey sealed under the old metadata subkey: only a holder of the
/// current master key can make it, so a planted `rekey/slot` is never resumed.
pub const REKEY_PROOF_OBJECT: &str = "rekey/proof";

impl Vault {
    /// Opens a vault with a 32-byte key (sodium or command slots); see `open_with`.
    pub fn open(store: Box<dyn Store>, user_key: &Secret32, opts: &OpenOptions) -> Result<Self> {
        Self::open_with(store, &Unlock::key(user_key), opts)
    }

    /// Opens a vault: unlock, load metadata, and (writable) lock the cache and recover it.
    pub fn open_with(store: Box<dyn Store>, user_key: &Unlock, opts: &OpenOptions) -> Result<Self> {
        // A new master key is accepted only as the fingerprint the operator names.
        let accept = opts.expect.accepting(opts.accept_new_master_key)?;
        let store: Arc<dyn Store> = Arc::from(store);
        let header = read_header(store.as_ref())?;
        match store.get_range_upto(REKEY_PENDING_OBJECT, 0, 1) {
            Ok(_) => {
                return Err(VaultError::NotAVault(format!(
                    "a rekey of {} is under way or was interrupted; run `pgcryptfs rekey` again (with the \
                     same key) to finish it before mounting",
                    store.describe()
                )));
            }
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let keys = VaultKeys::derive(&unlock_master_within(store.as_ref(), &header, user_key, &opts.limits)?.master);
        let cache = match (opts.read_only, opts.cache_root) {
            (false, Some(root)) => {
                Some(Cache::open(root, &header.vault_id, opts.pack_target)?.with_journal_max(opts.limits.max_journal_bytes))
            }
            (false, None) => return Err(VaultError::NotAVault("a writable mount needs a cache directory".into())),
            (true, _) => None,
        };
        // A fingerprint of the master key (through a subkey): new data is never written into a
        // vault that an OpenPGP certificate alone let someone replace (SECURITY.md §4). A key the
        // cache retired is refused here; a changed one only with `accept`, and it is pinned only
        // once the vault's fingerprint matched the one the operator named (below).
        let master_pin = match cache.as_ref().filter(|_| opts.master_pin) {
            Some(c) => {
                let mut input = crypto::SecretBytes(Vec::with_capacity(48));
                input.0.extend_from_slice(b"pgcfs-master-pin");
                input.0.extend_from_slice(keys.meta.expose());
                let pin = crypto::hash32(&input.0);
                match c.master_pin(&pin)? {
                    MasterPin::Pinned => None,
                    MasterPin::Changed if accept.is_none() => {
                        return Err(CacheError::MasterKeyChanged(c.dir().join("master-pin")).into());
                    }
                    MasterPin::Changed | MasterPin::Unpinned => Some(pin),
                }
            }
            None => None,
        };
        let read_cache = match (opts.cache_root, &cache) {
            _ if !store.is_remote() || opts.cache_size == 0 => None,
            (_, Some(c)) => Some(ReadCache::open(c.dir().join("clean"), store.clone(), opts.cache_size, opts.readahead)),
            (Some(root), None) => Some(ReadCache::open_private(
                &root.join(format::hex(&header.vault_id)),
                store.clone(),
                opts.cache_size,
                opts.readahead,
            )),
            (None, None) => None,
        }
        .transpose()
        .map_err(|source| CacheError::Io { what: "opening the clean read cache".into(), source })?;
        // A writer takes the lease before it reads the metadata it will extend.
        let lease = match &cache {
            Some(c) => {
                let l = Lease::acquire(store.as_ref(), &header, &keys.meta, LEASE_TTL_SECS, opts.break_lease, c.lease_id())
                    .map_err(VaultError::Lease)?;
                c.set_lease_id(&l.id())?;
                Some(l)
            }
            None => None,
        };
        let give_back = |lease: &Option<Lease>| {
            if let Some(l) = lease {
                let _ = l.release(store.as_ref(), &header, &keys.meta);
            }
        };
        let fingerprint = Fingerprint::of(&header.vault_id, &keys.meta);
        let loaded = load_metadata(store.as_ref(), &header, &keys, &opts.limits).and_then(|(catalog, head)| {
            // What the caller demands and what this host has seen, before anything is served
            // or written on top of this state.
            let found = Receipt { fingerprint, seq: head.seq, hash: head.hash };
            opts.expect.check(&found)?;
            let pins = match opts.pins {
                Some(root) => {
                    let pins = Pins::open(root)?;
                    let location = store.describe();
                    pins.check_and_record(&location, &found, accept)?;
                    Some((pins, location))
                }
                None => None,
            };
            // The vault is the one named (or the first this cache sees): pin its master key,
            // retiring the one pinned before.
            if let (Some(c), Some(pin)) = (&cache, &master_pin) {
                c.record_master_pin(pin)?;
            }
            Ok((catalog, head, pins))
        });
        let (catalog, head, pins) = match loaded {
            Ok(x) => x,
            Err(e) => {
                give_back(&lease);
                return Err(e);
            }
        };
        let lease_until = lease.as_ref().map(|_| std::time::Instant::now() + std::time::Duration::from_secs(LEASE_TTL_SECS as u64));
        let vault = Vault {
            header,
            codec: ChunkCodec::new(&header, keys.data.duplicate(), opts.compression),
            keys,
            packs: Arc::new(Packs::new(store.clone(), cache, read_cache, opts.cache_size, opts.store_timeout)),
            store,
            catalog: Mutex::new(catalog),
            head: Mutex::new(head),
            commit: Mutex::new(None),
            full_since: Mutex::new(None),
            journaled: Mutex::new(Vec::new()),
            lease: Mutex::new(lease),
            fingerprint,
            lease_valid_until: Mutex::new(lease_until),
            pins,
            lease_lost: std::sync::atomic::AtomicBool::new(false),
            uploads: Uploads::new(),
            dirty_max: opts.dirty_max,
            store_timeout: opts.store_timeout,
            limits: opts.limits,
            stats: VaultStats::default(),
        };
        if vault.packs.cache().is_some() {
            // A failed recovery keeps the lease: this cache holds data the store lacks.
            vault.recover()?;
        } else {
            vault.catalog.lock().unwrap().take_pending();
        }
        Ok(vault)
    }

    pub fn read_only(&self) -> bool {
        self.packs.cache().is_none()
    }

    /// The vault's fingerprint (a commitment to its id and master key).
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The committed state as a restore host can demand it: fingerprint, head seq and hash.
    pub fn receipt(&self) -> Receipt {
        let head = self.head.lock().unwrap();
        Receipt { fingerprint: self.fingerprint, seq: head.seq, hash: head.hash }
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    pub fn cache(&self) -> Option<&Cache> {
        self.packs.cache()
    }

    pub fn catalog(&self) -> MutexGuard<'_, Catalog> {
        self.catalog.lock().unwrap()
    }

    pub fn chunk_size(&self) -> u32 {
        self.header.chunk_size
    }

    /// Replays journals left by a process that died, uploads the packs they reference and
    /// writes a checkpoint, so the store holds every byte that was fsynced.
    fn recover(&self) -> Result<()> {
        let cache = self.packs.cache().expect("writable");
        let head = *self.head.lock().unwrap();
        let mut cat = self.catalog.lock().unwrap();
        let mut replayed = 0usize;
        let mut expect = head.seq + 1;
        let known = cache.known_head();
        let journals = cache.journal_files()?;
        // A journal the store's chain has passed is in the store only if this cache committed
        // it; otherwise another writer (after --break-lease) went on without it, and its
        // acknowledged writes exist nowhere else: refuse, delete nothing.
        // An empty journal (opened at mount, nothing written) holds nothing to lose.
        let mut superseded = Vec::new();
        for &seq in journals.iter().filter(|&&seq| seq <= head.seq && !self.committed_here(&known, seq, &head)) {
            match self.read_journal(cache, seq) {
                Ok(recs) if recs.is_empty() => {}
                read => superseded.push((seq, read)),
            }
        }
        if !superseded.is_empty() {
            return Err(self.uncommitted_error(cache, &cat, &superseded, &head));
        }
        for seq in journals {
            if seq <= head.seq {
                cache.remove_journal(seq)?;
                continue;
            }
            if seq != expect {
                return Err(meta_err(format!("cache journal {seq} follows a missing journal {expect}")));
            }
            expect += 1;
            for rec in self.read_journal(cache, seq)? {
                cat.replay(&rec).map_err(|e| meta_err(format!("cache journal {seq}: {e}")))?;
                replayed += 1;
            }
        }
        cat.finish_load().map_err(|e| meta_err(e.to_string()))?;
        let orphan_drops = cat.take_pending().len();
        let leftovers = cache.leftover_packs()?;
        if replayed > 0 || orphan_drops > 0 || !leftovers.is_empty() {
            log::warn!(
                "recovering the cache of an unclean shutdown: {replayed} journal records, {} staged packs",
                leftovers.len()
            );
            let referenced = cat.referenced_packs();
            for id in &leftovers {
                if referenced.contains_key(id) {
                    self.upload_pack(cache, id)?;
                } else {
                    cache.remove_staging(id)?;
                }
            }
            let body = cat.encode_snapshot();
            let object = seal_segment(&self.header, &self.keys.meta, format::SEGMENT_CHECKPOINT, head.seq + 1, head.hash, &body);
            self.write_segment(format::SEGMENT_CHECKPOINT, head.seq + 1, &object)?;
            for seq in cache.journal_files()? {
                cache.remove_journal(seq)?;
            }
        }
        let now = *self.head.lock().unwrap();
        cache.record_head(&KnownHead { committed: Some((now.seq, now.hash)), writing: None })?;
        cache.start_journal(now.seq + 1)?;
        Ok(())
    }

    /// Whether this cache's writer stored segment `seq` (so journal `seq` is in the store).
    fn committed_here(&self, known: &KnownHead, seq: u64, head: &Head) -> bool {
        if known.committed.is_some_and(|(c, _)| seq <= c) {
            return true;
        }
        // Died between storing the segment and recording it: the segment is the one it wrote.
        match known.writing {
            Some((w, hash)) if w == seq && head.seq == seq => head.hash == hash,
            Some((w, hash)) if w == seq => {
                let (store, cap) = (self.store.as_ref(), self.limits.max_checkpoint_object());
                read_segment(store, seq, listed_size(store, seq), cap, "a segment").is_ok_and(|o| crypto::hash32(&o) == hash)
            }
            _ => false,
        }
    }

    /// The refusal for journals another writer's segments passed by: what they hold, and how
    /// to save it.
    fn uncommitted_error(&self, cache: &Cache, cat: &Catalog, read: &[(u64, Result<Vec<Record>>)], head: &Head) -> VaultError {
        let mut names = Vec::new();
        let mut records = 0usize;
        for (seq, recs) in read {
            match recs {
                Ok(recs) => {
                    records += recs.len();
                    names.extend(uncommitted_paths(recs, cat).into_values());
                }
                Err(e) => names.push(format!("(journal {seq} unreadable: {e})")),
            }
        }
        let journals: Vec<u64> = read.iter().map(|(seq, _)| *seq).collect();
        names.sort();
        names.dedup();
        let shown = names.len().min(10);
        VaultError::Uncommitted(format!(
            "the cache {} holds {records} metadata records (journals {journals:?}) that never reached the store, \
             and the vault went on without them to segment {} (another writer, e.g. one that used --break-lease). \
             Nothing was deleted. Files written there: {}{}. Save them with `pgcryptfs salvage STORE DEST \
             --cache-dir DIR` (the same unlock options), then move {} aside to mount with this cache directory",
            cache.dir().display(),
            head.seq,
            names[..shown].join(", "),
            if names.len() > shown { format!(" and {} more", names.len() - shown) } else { String::new() },
            cache.dir().display()
        ))
    }

    /// The records of cache journal `seq`, authenticated (for recovery and `salvage`).
    pub fn read_journal(&self, cache: &Cache, seq: u64) -> Result<Vec<Record>> {
        let bytes = cache.read_journal(seq)?;
        let (hseq, batches) =
            format::split_journal(&bytes).map_err(|e| meta_err(format!("cache journal {seq}: {e}")))?;
        if hseq != seq {
            return Err(meta_err(format!("cache journal {seq} claims to be journal {hseq}")));
        }
        let mut out = Vec::new();
        for (i, b) in batches.iter().enumerate() {
            let aad = format::journal_aad(&self.header, seq, i as u32);
            let plain = crypto::open(&self.keys.meta, &aad, b)
                .map_err(|_| meta_err(format!("cache journal {seq} batch {i} failed authentication")))?;
            out.extend(format::decode_records(&plain).map_err(|e| meta_err(format!("cache journal {seq}: {e}")))?);
        }
        Ok(out)
    }

    // -- data ------------------------------------------------------------------------------------

    /// Seals one chunk into the active staging pack.
    pub fn seal_chunk(&self, file_id: &Id, index: u64, plain: &[u8]) -> Result<ChunkRef> {
        let cache = self.packs.cache().ok_or(VaultError::ReadOnly)?;
        let pipelined = self.uploads.workers() > 0;
        // Back-pressure: with the cache's unstored bytes at the bound, wait for uploads. The
        // timeout runs from the moment the cache filled, not per chunk: a request sealing many
        // chunks (a 1 MiB write, an fsync) fails at --store-timeout, never a multiple of it,
        // and at once while the store refuses uploads.
        if pipelined && cache.staged_bytes() >= self.dirty_max {
            let deadline = *self.full_since.lock().unwrap().get_or_insert_with(std::time::Instant::now) + self.store_timeout;
            let refused = self.uploads.status().refused;
            let room = refused.is_none()
                && self.uploads.wait_until(deadline.saturating_duration_since(std::time::Instant::now()), || {
                    cache.staged_bytes() < self.dirty_max
                });
            if !room {
                let why = match refused {
                    Some(r) => format!("the store refuses uploads: {r}"),
                    None => format!(
                        "the store took none for {:?}{}",
                        self.store_timeout,
                        self.uploads.status().last_error.map(|e| format!(": {e}")).unwrap_or_default()
                    ),
                };
                return Err(VaultError::CacheFull(format!(
                    "the cache holds {} unstored bytes (bound {}) and {why}",
                    cache.staged_bytes(),
                    self.dirty_max
                )));
            }
            *self.full_since.lock().unwrap() = None;
        } else if pipelined {
            let mut since = self.full_since.lock().unwrap();
            if since.is_some() {
                *since = None;
            }
        }
        let mut sealed = Vec::with_capacity(plain.len() + format::SEAL_OVERHEAD);
        let tag = self.codec.seal(file_id, index, plain, &mut sealed);
        let (pack, offset) = self.packs.append(&sealed)?;
        if pipelined {
            self.uploads.enqueue(cache.take_closed_packs(false)?);
        }
        Ok(ChunkRef { pack, offset, len: sealed.len() as u32, tag })
    }

    /// Runs one upload worker until `stop_uploads` (the daemon starts several).
    pub fn run_uploader(&self) {
        let Some(cache) = self.packs.cache() else { return };
        self.uploads.work(|id| {
            self.upload_pack(cache, id).map_err(|e| crate::uploads::Failure {
                permanent: matches!(&e, VaultError::Store(s) if s.is_permanent()),
                message: e.to_string(),
            })
        });
    }

    pub fn stop_uploads(&self) {
        self.uploads.stop();
    }

    pub fn upload_status(&self) -> crate::uploads::UploadStatus {
        self.uploads.status()
    }

    /// Fetches these chunks into the clean cache in the background (readahead), skipping
    /// chunks still staged here; adjacent chunks become one range.
    pub fn prefetch(&self, chunks: &[ChunkRef]) {
        self.packs.prefetch(chunks)
    }

    /// The clean read cache, if this mount keeps one.
    pub fn read_cache(&self) -> Option<&ReadCache> {
        self.packs.read_cache()
    }

    /// The pack layer (shared with the readers of the metadata tree).
    pub fn packs(&self) -> &Arc<Packs> {
        &self.packs
    }

    /// Reads now waiting for a store outage to pass.
    pub fn reads_waiting(&self) -> u64 {
        self.packs.reads_waiting()
    }

    /// Reads and authenticates several chunks of one file, fetching runs that are adjacent in
    /// a pack with one ranged read; `visit(index, plaintext)` sees each in order (and sees a
    /// chunk again if its run is reread from the store after the clean cache failed it). An
    /// error names the chunk index it failed on.
    pub fn read_chunks(
        &self,
        file_id: &Id,
        chunks: &[(u64, ChunkRef)],
        mut visit: impl FnMut(u64, &[u8]),
    ) -> std::result::Result<(), (u64, VaultError)> {
        let mut plain = Vec::new();
        let mut i = 0;
        while i < chunks.len() {
            let first = chunks[i].1;
            let mut j = i + 1;
            let mut end = first.offset + first.len as u64;
            while j < chunks.len() && chunks[j].1.pack == first.pack && chunks[j].1.offset == end && end - first.offset < (4 << 20) {
                end += chunks[j].1.len as u64;
                j += 1;
            }
            let len = (end - first.offset) as usize;
            let (run, from_clean) = self.packs.range(&first.pack, first.offset, len).map_err(|e| (chunks[i].0, e.into()))?;
            let mut r = self.open_run(file_id, &chunks[i..j], &run, &mut plain, &mut visit);
            if let (Err((_, e)), true) = (&r, from_clean) {
                // A damaged clean cache costs a GET, never an EIO: drop its blocks, ask the store.
                log::warn!(
                    "clean cache: pack {} offset {} failed authentication ({e}); reading the store",
                    format::hex(&first.pack),
                    first.offset
                );
                let fresh = self.packs.refetch(&first.pack, first.offset, len).map_err(|e| (chunks[i].0, e.into()))?;
                r = self.open_run(file_id, &chunks[i..j], &fresh, &mut plain, &mut visit);
            }
            r?;
            i = j;
        }
        crypto::wipe(&mut plain);
        Ok(())
    }

    /// Opens the chunks of one run (`run` starts at the first chunk's offset) and visits them.
    fn open_run(
        &self,
        file_id: &Id,
        chunks: &[(u64, ChunkRef)],
        run: &[u8],
        plain: &mut Vec<u8>,
        visit: &mut impl FnMut(u64, &[u8]),
    ) -> std::result::Result<(), (u64, VaultError)> {
        let base = chunks[0].1.offset;
        for (index, c) in chunks {
            let at = (c.offset - base) as usize;
            if let Err(e) = self.open_sealed_chunk(file_id, *index, c, &run[at..at + c.len as usize], plain) {
                crypto::wipe(plain);
                return Err((*index, e));
            }
            visit(*index, plain);
        }
        Ok(())
    }

    /// Reads and authenticates one chunk into `out`. The error names the pack and what failed.
    pub fn read_chunk(&self, file_id: &Id, index: u64, c: &ChunkRef, out: &mut Vec<u8>) -> Result<()> {
        out.clear();
        self.read_chunks(file_id, &[(index, *c)], |_, plain| {
            out.clear();
            out.extend_from_slice(plain);
        })
        .map_err(|(_, e)| e)
    }


    /// Authenticates one sealed chunk (length, tag, AEAD, body encoding) keeping no plaintext.
    pub fn authenticate(&self, file_id: &Id, index: u64, c: &ChunkRef, sealed: &[u8]) -> Result<()> {
        self.codec.authenticate(file_id, index, c, sealed).map_err(|e| VaultError::Chunk(e.to_string()))
    }

    /// The chunk codec (rekey re-seals chunks from one vault key to another through it).
    pub fn codec(&self) -> &ChunkCodec {
        &self.codec
    }

    /// Appends an already sealed chunk (ciphertext copied from another pack, by gc) to the
    /// active staging pack; returns where it now lives. Its tag and AAD are unchanged: the AAD
    /// binds the file and chunk index, not the pack.
    /// Past a quarter of the pending bound (the records of chunks moved so far), they go to the
    /// journal first (committing a full one), so a run of moves never outgrows a journal.
    pub fn append_sealed(&self, sealed: &[u8]) -> Result<(Id, u64)> {
        if self.read_only() {
            return Err(VaultError::ReadOnly);
        }
        if self.catalog.lock().unwrap().pending_bytes() >= self.limits.max_pending_bytes / 4 {
            self.flush_journal()?;
        }
        Ok(self.packs.append(sealed)?)
    }

    /// Checks a sealed chunk against what the metadata records, then opens and decodes it
    /// (reads, and `salvage`, which reads chunks from a cache of its own).
    pub fn open_sealed_chunk(&self, file_id: &Id, index: u64, c: &ChunkRef, sealed: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.codec.open(file_id, index, c, sealed, out).map_err(|e| VaultError::Chunk(e.to_string()))
    }

    // -- metadata --------------------------------------------------------------------------------

    /// Writes pending catalog records to the local journal and fsyncs it (after the packs).
    /// The caller has sealed the chunks it wants covered.
    /// A journal at its bound is committed (frozen, stored, and a new one started) and the
    /// records go into the next one; if that commit fails (the store is out), the journal's
    /// refusal is the error (ENOSPC), and the records stay pending.
    pub fn flush_journal(&self) -> Result<()> {
        let Some(cache) = self.packs.cache() else { return Ok(()) };
        let appended = {
            let mut cat = self.catalog.lock().unwrap();
            self.append_pending(cache, &mut cat)
        };
        match appended {
            // After a failed commit the committer retries it; an operation here does not wait
            // for the store: it gets the journal's refusal (ENOSPC) at once.
            Err(full @ VaultError::Cache(CacheError::JournalFull { .. })) if self.commit.lock().unwrap().is_some() => Err(full),
            Err(full @ VaultError::Cache(CacheError::JournalFull { .. })) => match self.commit() {
                Ok(_) => Ok(()),
                Err(e) => {
                    log::warn!("the cache journal is full and committing it failed: {e}");
                    Err(full)
                }
            },
            other => other,
        }
    }

    fn append_pending(&self, cache: &Cache, cat: &mut Catalog) -> Result<()> {
        // A journal that cannot take what is due is told so before anything is sealed.
        if let Some(full) = cache.journal_full_for(cat.due_bytes()) {
            return Err(full.into());
        }
        let recs = cat.take_pending();
        if recs.is_empty() {
            return Ok(());
        }
        let plain = format::encode_records(&recs);
        let header = self.header;
        let appended = cache.sync_packs().and_then(|()| {
            cache.journal_append(|seq, batch| {
                crypto::seal(&self.keys.meta, &format::journal_aad(&header, seq, batch), &plain)
            })
        });
        if let Err(e) = appended {
            // Nothing is lost: the records go out with the next successful append.
            cat.requeue(recs);
            return Err(e.into());
        }
        self.journaled.lock().unwrap().extend(recs);
        Ok(())
    }

    /// Makes everything journaled so far durable in the store. Returns whether a segment was
    /// written.
    pub fn commit(&self) -> Result<bool> {
        let Some(cache) = self.packs.cache() else { return Ok(false) };
        if self.lease_lost.load(Ordering::SeqCst) {
            return Err(VaultError::Lease(LeaseError::Lost(
                "another mount took this vault's writer lease; commits stop, the data stays in the cache".into(),
            )));
        }
        self.lease_holds_for_a_commit()?;
        // Packs the store refused get one more try per commit (the bucket may exist by now).
        self.uploads.retry_parked();
        let mut frozen = self.commit.lock().unwrap();
        if let Some(f) = frozen.as_mut() {
            self.finish_commit(cache, f)?;
            *frozen = None;
        }
        let mut wrote = false;
        loop {
            // A journal at its bound takes no more: it is committed as it is, and the records
            // that did not fit go into the next journal, committed in the next round.
            let (next, full) = self.freeze_journal(cache, &mut frozen)?;
            let Some(mut f) = next else {
                return match full {
                    Some(e) => Err(e), // a batch larger than a whole journal: cannot happen within the bounds
                    None => Ok(wrote),
                };
            };
            if let Err(e) = self.finish_commit(cache, &mut f) {
                *frozen = Some(f);
                return Err(e);
            }
            wrote = true;
            if full.is_none() {
                return Ok(true);
            }
        }
    }

    /// Appends the pending records and freezes the journal for a commit (steps 3–5 of a commit,
    /// under the catalog lock). Returns the frozen commit (none if the journal is empty), and
    /// the journal's refusal if the pending records did not fit.
    fn freeze_journal(&self, cache: &Cache, frozen: &mut Option<FrozenCommit>) -> Result<(Option<FrozenCommit>, Option<VaultError>)> {
        let mut cat = self.catalog.lock().unwrap();
        let full = match self.append_pending(cache, &mut cat) {
            Ok(()) => None,
            Err(e @ VaultError::Cache(CacheError::JournalFull { .. })) => Some(e),
            Err(e) => return Err(e),
        };
        let next = match cache.rotate_journal()? {
            None => {
                // Nothing new in the journal; closed packs hold only unreferenced data.
                None
            }
            Some(seq) => {
                let deltas = self.head.lock().unwrap().deltas_since_checkpoint;
                let checkpoint = (deltas + 1 >= CHECKPOINT_EVERY).then(|| cat.encode_snapshot());
                let journaled = std::mem::take(&mut *self.journaled.lock().unwrap());
                let records = if checkpoint.is_some() { Vec::new() } else { journaled };
                let mut f =
                    FrozenCommit { seq, checkpoint, records, packs: Vec::new(), object: None, segment_written: false };
                match cache.take_closed_packs(true) {
                    Ok(packs) => f.packs = packs,
                    Err(e) => {
                        // The packs stay queued in the cache; the retry takes them.
                        *frozen = Some(f);
                        return Err(e.into());
                    }
                }
                if self.uploads.workers() > 0 {
                    // Everything closed so far, also packs already on their way.
                    self.uploads.enqueue(f.packs.clone());
                    f.packs = self.uploads.in_flight().into_iter().collect();
                }
                Some(f)
            }
        };
        Ok((next, full))
    }

    /// Bytes in the cache's current journal (the daemon commits early past half its bound).
    pub fn journal_bytes(&self) -> u64 {
        self.packs.cache().map_or(0, |c| c.journal_len())
    }

    /// The bounds this vault was opened with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Uploads the frozen commit's packs (each leaves the list once stored, so a retry resumes)
    /// and writes its segment.
    fn finish_commit(&self, cache: &Cache, f: &mut FrozenCommit) -> Result<()> {
        if !f.segment_written {
            // Packs an earlier attempt could not close or hand over are still queued.
            let late = cache.take_closed_packs(false)?;
            if self.uploads.workers() > 0 {
                self.uploads.enqueue(late.iter().copied());
                f.packs.extend(late);
                let wanted = f.packs.iter().copied().collect();
                self.uploads.wait_for(&wanted, self.store_timeout).map_err(|e| {
                    VaultError::Store(StoreError::Io { key: "packs".into(), source: std::io::Error::other(e) })
                })?;
                f.packs.clear();
            } else {
                f.packs.extend(late);
                while let Some(id) = f.packs.last().copied() {
                    self.upload_pack(cache, &id)?;
                    f.packs.pop();
                }
            }
            if f.object.is_none() {
                // The body is sealed once and kept as the object: the checkpoint's plaintext goes.
                let (kind, body) = match f.checkpoint.take() {
                    Some(cp) => (format::SEGMENT_CHECKPOINT, cp),
                    None => (format::SEGMENT_DELTA, format::encode_records(&f.records)),
                };
                let prev = self.head.lock().unwrap().hash;
                f.object = Some((kind, seal_segment(&self.header, &self.keys.meta, kind, f.seq, prev, &body)));
            }
            let (kind, object) = f.object.as_ref().expect("made above");
            self.write_segment(*kind, f.seq, object)?;
            f.segment_written = true;
        }
        cache.remove_journal(f.seq)?;
        Ok(())
    }

    /// Stores one staged pack; returns its size.
    fn upload_pack(&self, cache: &Cache, id: &Id) -> Result<u64> {
        let path = cache.staging_file(id);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        // The staging file leaves the cache; readers that raced with it fall back to the store.
        self.store.put_moving(&format::pack_name(id), &path)?;
        cache.unstaged(size);
        self.stats.puts.fetch_add(1, Ordering::Relaxed);
        self.stats.uploaded_bytes.fetch_add(size, Ordering::Relaxed);
        Ok(size)
    }

    /// Stores a sealed segment object (conditional create) and advances the head. Finding the
    /// very same bytes already there (a retry after a lost acknowledgement) counts as success.
    fn write_segment(&self, kind: u8, seq: u64, object: &[u8]) -> Result<()> {
        let mut head = self.head.lock().unwrap();
        if seq != head.seq + 1 {
            return Err(meta_err(format!("segment {seq} does not follow the head {}", head.seq)));
        }
        let name = format::segment_name(seq);
        let hash = crypto::hash32(object);
        if let Some(cache) = self.packs.cache() {
            // Before the segment can exist: recovery then knows a journal of this seq whose
            // segment holds these bytes is in the store, not passed by another writer. What
            // this cache committed is the head it extends (recorded at mount and each commit).
            let committed = Some((head.seq, head.hash));
            cache.record_head(&KnownHead { committed, writing: Some((seq, hash)) })?;
        }
        match self.store.put_new(&name, object) {
            Ok(()) => {}
            Err(StoreError::AlreadyExists(_))
                if self.store.get_range_upto(&name, 0, object.len() + 1).is_ok_and(|o| o == object) => {}
            Err(StoreError::AlreadyExists(_)) => {
                return Err(meta_err(format!(
                    "segment {seq} was written by someone else: another writer is using this vault"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        self.stats.puts.fetch_add(1, Ordering::Relaxed);
        self.stats.segments.fetch_add(1, Ordering::Relaxed);
        head.seq = seq;
        head.hash = hash;
        if let Some(cache) = self.packs.cache()
            && let Err(e) = cache.record_head(&KnownHead { committed: Some((seq, hash)), writing: None })
        {
            // Only a later recovery's certainty suffers: it then refuses rather than guesses.
            log::warn!("could not record segment {seq} as committed in the cache: {e}");
        }
        if let Some((pins, location)) = &self.pins {
            let now = Receipt { fingerprint: self.fingerprint, seq, hash: head.hash };
            if let Err(e) = pins.check_and_record(location, &now, None) {
                log::warn!("could not move this host's pin of {location} to segment {seq}: {e}");
            }
        }
        if kind == format::SEGMENT_CHECKPOINT {
            head.deltas_since_checkpoint = 0;
            drop(head);
            // Older segments are superseded; a failure here only leaves garbage behind.
            let old = self.store.list(format::META_PREFIX).map(|l| {
                l.into_iter().filter(|(n, _)| format::parse_segment_name(n).is_some_and(|s| s < seq)).collect::<Vec<_>>()
            });
            match old {
                Ok(names) => {
                    for (name, _) in names {
                        if let Err(e) = self.store.delete(&name) {
                            log::warn!("could not delete superseded segment {name}: {e}");
                        }
                    }
                }
                Err(e) => log::warn!("could not list superseded segments: {e}"),
            }
        } else {
            head.deltas_since_checkpoint += 1;
        }
        log::debug!("committed metadata segment {seq} ({} bytes)", object.len());
        Ok(())
    }

    /// Commits stop before the lease can lapse: with less than `LEASE_MARGIN` of it left (the
    /// renewals failed, e.g. the store is out), one renewal is tried now, and if it fails the
    /// commit is refused (the data stays in the cache; the next commit tries again). Another
    /// host may break a lapsed lease, so no segment is written on one.
    fn lease_holds_for_a_commit(&self) -> Result<()> {
        let until = *self.lease_valid_until.lock().unwrap();
        let Some(until) = until else { return Ok(()) };
        if std::time::Instant::now() + LEASE_MARGIN < until {
            return Ok(());
        }
        match self.renew_lease() {
            Ok(()) => Ok(()),
            Err(e @ VaultError::Lease(LeaseError::Lost(_))) => Err(e),
            Err(e) => Err(VaultError::Lease(LeaseError::Lapsing(format!(
                "{e}; with less than {LEASE_MARGIN:?} of the lease left, commits wait for a renewal (the data stays in the cache)"
            )))),
        }
    }

    /// Renews the writer lease; on loss, further commits are refused.
    pub fn renew_lease(&self) -> Result<()> {
        let mut g = self.lease.lock().unwrap();
        let Some(l) = g.as_mut() else { return Ok(()) };
        // Valid from before the request: the store may have taken the renewal at its start.
        let asked = std::time::Instant::now();
        let renewed = l.renew(self.store.as_ref(), &self.header, &self.keys.meta);
        if renewed.is_ok() {
            *self.lease_valid_until.lock().unwrap() = Some(asked + std::time::Duration::from_secs(LEASE_TTL_SECS as u64));
        }
        match renewed {
            Err(LeaseError::Lost(m)) => {
                self.lease_lost.store(true, Ordering::SeqCst);
                Err(VaultError::Lease(LeaseError::Lost(m)))
            }
            r => r.map_err(VaultError::Lease),
        }
    }

    /// Runs `work` while a thread renews the writer lease every third of its lifetime, for work
    /// that may outlast the lease (gc, prune, the drain at unmount).
    pub fn with_lease_renewed<T>(&self, work: impl FnOnce() -> T) -> T {
        let every = std::time::Duration::from_secs((LEASE_TTL_SECS / 3) as u64);
        let renew = || {
            if let Err(e) = self.renew_lease() {
                log::error!("renewing the writer lease failed: {e}");
            }
        };
        crate::ticker::while_working(every, renew, work)
    }

    /// Gives the lease back (after everything is in the store).
    pub fn release_lease(&self) -> Result<()> {
        let mut g = self.lease.lock().unwrap();
        if let Some(l) = g.take() {
            l.release(self.store.as_ref(), &self.header, &self.keys.meta).map_err(VaultError::Lease)?;
        }
        Ok(())
    }

    /// Bytes staged but not yet in the store, and packs not yet in the store.
    pub fn backlog(&self) -> (u64, usize) {
        match self.packs.cache() {
            Some(c) => (c.staged_bytes(), self.uploads.in_flight().len() + c.closed_packs()),
            None => (0, 0),
        }
    }
}

/// Reads segment object `seq` whole, refusing (before reading it whole) one larger than `cap`:
/// by its listed size, and again by what the read returns.
fn read_segment(store: &dyn Store, seq: u64, listed: Option<u64>, cap: u64, what: &str) -> Result<Vec<u8>> {
    let name = format::segment_name(seq);
    let too_large = |size: String| {
        meta_err(format!("{name} is {size} bytes, more than the {cap} bytes {what} can be: refused without reading it whole"))
    };
    if let Some(size) = listed.filter(|&l| l > cap) {
        return Err(too_large(size.to_string()));
    }
    // As listed (plus a byte to see it grew), never more than one byte past the cap.
    let want = listed.map_or(cap, |l| l.min(cap)) + 1;
    let mut object = store.get_range_upto(&name, 0, want as usize)?;
    if object.len() as u64 == want && want <= cap {
        object = store.get_range_upto(&name, 0, cap as usize + 1)?;
    }
    if object.len() as u64 > cap {
        return Err(too_large(format!("more than {cap}")));
    }
    Ok(object)
}

/// The listed size of segment `seq` (`None` if the listing fails or does not name it).
fn listed_size(store: &dyn Store, seq: u64) -> Option<u64> {
    let name = format::segment_name(seq);
    store.list(&name).ok()?.into_iter().find(|(n, _)| *n == name).map(|(_, size)| size)
}

/// The clear prefix of segment `seq` (its first 52 bytes only).
fn read_segment_prefix(store: &dyn Store, seq: u64) -> Result<SegmentPrefix> {
    let bytes = store.get_range_upto(&format::segment_name(seq), 0, format::SEGMENT_PREFIX_LEN)?;
    let prefix = SegmentPrefix::decode_prefix(&bytes).map_err(|e| meta_err(format!("segment {seq}: {e}")))?;
    if prefix.seq != seq {
        return Err(meta_err(format!("segment {seq} claims to be segment {}", prefix.seq)));
    }
    if prefix.kind == format::SEGMENT_ROOT {
        return Err(meta_err(format!("segment {seq} is a format 2 root in a format 1 vault")));
    }
    Ok(prefix)
}

/// Loads the newest checkpoint and the deltas after it, checking names, seqs, the hash chain
/// and every seal. Only prefixes are read on the walk back; the walk forward reads one segment
/// at a time, each within its bound (`Limits`), and applies its records as they are decoded.
fn load_metadata(store: &dyn Store, header: &VaultHeader, keys: &VaultKeys, limits: &Limits) -> Result<(Catalog, Head)> {
    let mut listed: Vec<(u64, u64)> =
        store.list(format::META_PREFIX)?.iter().filter_map(|(n, size)| Some((format::parse_segment_name(n)?, *size))).collect();
    listed.sort_unstable();
    if listed.is_empty() {
        return Err(meta_err("no metadata segments (meta/ is empty)"));
    }
    // Walk back from the newest to the newest checkpoint, by prefixes.
    let mut chain: Vec<(u64, u64, u8)> = Vec::new();
    let mut expect = listed.last().expect("non-empty").0;
    for &(seq, size) in listed.iter().rev() {
        if seq != expect {
            return Err(meta_err(format!("metadata segment {expect} is missing")));
        }
        let prefix = read_segment_prefix(store, seq)?;
        chain.push((seq, size, prefix.kind));
        if prefix.kind == format::SEGMENT_CHECKPOINT || seq == 0 {
            break;
        }
        if chain.len() > format::MAX_CHAIN_DELTAS {
            return Err(meta_err(format!(
                "more than {} delta segments follow the newest checkpoint (before segment {seq}): not a chain \
                 pgcryptfs writes (it checkpoints every {CHECKPOINT_EVERY}th segment)",
                format::MAX_CHAIN_DELTAS
            )));
        }
        expect = seq - 1;
    }
    chain.reverse();
    if chain[0].2 != format::SEGMENT_CHECKPOINT {
        return Err(meta_err(format!("no checkpoint at or before segment {}", chain[0].0)));
    }
    let mut catalog = Catalog::with_limits(header.chunk_size, *limits);
    let mut prev_hash: Option<[u8; 32]> = None;
    let mut deltas = 0;
    for &(seq, size, kind) in &chain {
        let (cap, what) = if kind == format::SEGMENT_CHECKPOINT {
            (limits.max_checkpoint_object(), "a checkpoint")
        } else {
            (limits.max_delta_object(), "a delta segment")
        };
        let object = read_segment(store, seq, Some(size), cap, what)?;
        let (prefix, sealed) = SegmentPrefix::decode(&object).map_err(|e| meta_err(format!("segment {seq}: {e}")))?;
        if prefix.seq != seq || prefix.kind != kind {
            return Err(meta_err(format!("segment {seq} changed while it was read")));
        }
        if let Some(h) = prev_hash
            && !crypto::ct_eq(&h, &prefix.prev_hash)
        {
            return Err(meta_err(format!("segment {seq} does not chain to segment {}", seq - 1)));
        }
        let aad = format::segment_aad(header, &prefix.encode());
        let plain = crypto::open(&keys.meta, &aad, sealed)
            .map_err(|_| meta_err(format!("segment {seq} failed authentication")))?;
        let hash = crypto::hash32(&object);
        drop(object);
        for r in format::records(&plain) {
            let r = r.map_err(|e| meta_err(format!("segment {seq}: {e}")))?;
            catalog.replay(&r).map_err(|e: CatalogError| meta_err(format!("segment {seq}: {e}")))?;
        }
        if kind == format::SEGMENT_DELTA {
            deltas += 1;
        }
        prev_hash = Some(hash);
    }
    catalog.finish_load().map_err(|e| meta_err(e.to_string()))?;
    let seq = chain.last().expect("non-empty").0;
    let hash = prev_hash.expect("one segment at least");
    Ok((catalog, Head { seq, hash, deltas_since_checkpoint: deltas }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Kind;
    use crate::store::MemStore;
    use std::sync::Arc;

    fn err_of(r: Result<Vault>) -> VaultError {
        match r {
            Err(e) => e,
            Ok(_) => panic!("the vault opened"),
        }
    }

    fn ro(mem: &Arc<MemStore>) -> Result<Vault> {
        Vault::open(Box::new(mem.clone()), &key(), &OpenOptions { read_only: true, ..Default::default() })
    }

    fn key() -> Secret32 {
        Secret32::from_bytes([5; 32])
    }

    fn open(mem: &Arc<MemStore>, cache: &Path) -> Result<Vault> {
        Vault::open(
            Box::new(mem.clone()),
            &key(),
            &OpenOptions { read_only: false, cache_root: Some(cache), pack_target: 1 << 20, ..Default::default() },
        )
    }

    use crate::gc::testing::write_file;

    /// A new vault in `mem` holding file `a` ("alpha"), committed by a writer with cache
    /// `cache` that then let go of the lease.
    fn committed_alpha(mem: &Arc<MemStore>, cache: &Path) {
        init(mem.as_ref(), &key(), 65536, 0, 0).unwrap();
        let v = open(mem, cache).unwrap();
        write_file(&v, b"a", b"alpha");
        assert!(v.commit().unwrap());
        v.release_lease().unwrap();
    }

    fn read_file(v: &Vault, name: &[u8]) -> Result<Vec<u8>> {
        let (fid, c) = {
            let cat = v.catalog();
            let i = cat.lookup(crate::catalog::ROOT, name).unwrap();
            (i.file_id, i.chunk(0).unwrap())
        };
        let mut out = Vec::new();
        v.read_chunk(&fid, 0, &c, &mut out)?;
        Ok(out)
    }

    /// The cache is untrusted: its journal cut at a batch boundary while the writer runs (the
    /// records of file b gone), then an unlink of b. The commit stores what the live catalog
    /// validated, never the cut journal, so a fresh mount loads the vault.
    #[test]
    fn a_cut_cache_journal_never_becomes_a_segment() {
        let mem = Arc::new(MemStore::new());
        init(mem.as_ref(), &key(), 4096, 0, 0).unwrap();
        let cache = tempfile::tempdir().unwrap();
        let v = open(&mem, cache.path()).unwrap();
        write_file(&v, b"a", b"first");
        v.flush_journal().unwrap();
        write_file(&v, b"b", b"second");
        v.flush_journal().unwrap();
        let dir = cache.path().join(format::hex(&v.header.vault_id));
        let journal = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("journal-"))
            .unwrap();
        let bytes = std::fs::read(&journal).unwrap();
        let last = format::split_journal(&bytes).unwrap().1.last().unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&journal).unwrap().set_len((bytes.len() - 4 - last) as u64).unwrap();
        v.catalog().unlink(crate::catalog::ROOT, b"b", format::Time::now()).unwrap();
        assert!(v.commit().unwrap());
        drop(v);
        let r = ro(&mem).unwrap();
        assert_eq!(read_file(&r, b"a").unwrap(), b"first");
        assert!(r.catalog().lookup(crate::catalog::ROOT, b"b").is_err());
    }

    #[test]
    fn init_refuses_non_empty_and_wrong_key() {
        let mem = Arc::new(MemStore::new());
        mem.put("junk", b"x").unwrap();
        assert!(matches!(init(mem.as_ref(), &key(), 65536, 0, 0), Err(VaultError::NotEmpty(_))));
        let mem = Arc::new(MemStore::new());
        init(mem.as_ref(), &key(), 65536, 0, 0).unwrap();
        assert!(matches!(init(mem.as_ref(), &key(), 65536, 0, 0), Err(VaultError::NotEmpty(_))));
        let wrong = err_of(Vault::open(
            Box::new(mem.clone()),
            &Secret32::from_bytes([6; 32]),
            &OpenOptions { read_only: true, ..Default::default() },
        ));
        assert!(matches!(wrong, VaultError::Key(KeyError::Refused(_))), "{wrong}");
        let empty = Arc::new(MemStore::new());
        assert!(matches!(err_of(ro(&empty)), VaultError::NotAVault(_)));
    }

    /// Every object of `mem`, to put back later (an old copy of the vault).
    fn copy_of(mem: &MemStore) -> Vec<(String, Vec<u8>)> {
        mem.list("").unwrap().into_iter().map(|(n, _)| (n.clone(), mem.get(&n).unwrap())).collect()
    }

    fn put_back(mem: &MemStore, copy: &[(String, Vec<u8>)]) {
        for (n, _) in mem.list("").unwrap() {
            mem.delete(&n).unwrap();
        }
        for (n, b) in copy {
            mem.put(n, b).unwrap();
        }
    }

    /// The cache pins the master key: after the vault's key changed (here by a rekey; an
    /// attacker replacing the vault looks the same), a writable open is refused until the
    /// operator accepts the change naming the fingerprint the rekey printed; a wrong one changes
    /// nothing; the accepted key is pinned and the old one retired, so an old copy of the vault
    /// put back is refused for good, whatever is accepted.
    #[test]
    fn a_cache_refuses_a_changed_master_key_until_told() {
        let mem = Arc::new(MemStore::new());
        let c = tempfile::tempdir().unwrap();
        committed_alpha(&mem, c.path());
        open(&mem, c.path()).unwrap().release_lease().unwrap(); // the same key opens again
        let old_fp = ro(&mem).unwrap().fingerprint();
        let old_copy = copy_of(&mem);
        crate::rekey::rekey(mem.as_ref(), &Unlock::key(&key()), &Default::default()).map_err(|e| e.to_string()).unwrap();
        let new_fp = ro(&mem).unwrap().fingerprint();
        let pin_file = c.path().join(format::hex(&ro(&mem).unwrap().header.vault_id)).join("master-pin");
        let pinned_before = std::fs::read(&pin_file).unwrap();
        let refused = err_of(open(&mem, c.path()));
        assert!(matches!(refused, VaultError::Cache(CacheError::MasterKeyChanged(_))), "{refused}");
        assert!(refused.to_string().contains("--accept-new-master-key --expect-fingerprint"), "{refused}");
        // Read-only opens and the offline writer (gc) do not look at the pin.
        assert!(ro(&mem).is_ok());
        let accept = |expect: Option<Fingerprint>| OpenOptions {
            read_only: false,
            cache_root: Some(c.path()),
            pack_target: 1 << 20,
            accept_new_master_key: true,
            expect: Expect { fingerprint: expect, receipt: None },
            ..Default::default()
        };
        let open_accepting = |expect| Vault::open(Box::new(mem.clone()), &key(), &accept(expect));
        // Accepting without naming the fingerprint: refused up front.
        let e = err_of(open_accepting(None));
        assert!(matches!(e, VaultError::Pin(PinError::AcceptNeedsFingerprint)), "{e}");
        // Naming another fingerprint (the old one, or any): refused, and the pin is unchanged.
        for wrong in [old_fp, Fingerprint([7; 16])] {
            let e = err_of(open_accepting(Some(wrong)));
            assert!(matches!(e, VaultError::Pin(PinError::Replaced { .. })), "{e}");
            assert_eq!(std::fs::read(&pin_file).unwrap(), pinned_before);
        }
        assert!(matches!(err_of(open(&mem, c.path())), VaultError::Cache(CacheError::MasterKeyChanged(_))));
        // Naming the new fingerprint: accepted and pinned.
        let v = open_accepting(Some(new_fp)).unwrap();
        assert_eq!(read_file(&v, b"a").unwrap(), b"alpha");
        v.release_lease().unwrap();
        drop(v);
        open(&mem, c.path()).unwrap().release_lease().unwrap(); // the new key is pinned now
        // The old copy put back (by someone with store write access): refused for good, even
        // when the operator names its fingerprint to accept it.
        put_back(&mem, &old_copy);
        assert_eq!(ro(&mem).unwrap().fingerprint(), old_fp);
        for e in [err_of(open(&mem, c.path())), err_of(open_accepting(Some(old_fp)))] {
            assert!(matches!(e, VaultError::Cache(CacheError::MasterKeyRetired(_))), "{e}");
            assert!(!e.to_string().contains("--"), "{e}");
        }
    }

    #[test]
    fn commit_then_reopen_from_empty_cache() {
        let mem = Arc::new(MemStore::new());
        init(mem.as_ref(), &key(), 65536, 0, 0).unwrap();
        let c1 = tempfile::tempdir().unwrap();
        let v = open(&mem, c1.path()).unwrap();
        write_file(&v, b"a", b"alpha");
        assert!(v.commit().unwrap());
        assert!(!v.commit().unwrap());
        write_file(&v, b"b", b"beta");
        assert!(v.commit().unwrap());
        v.release_lease().unwrap();
        drop(v);
        let c2 = tempfile::tempdir().unwrap();
        let v = open(&mem, c2.path()).unwrap();
        assert_eq!(read_file(&v, b"a").unwrap(), b"alpha");
        assert_eq!(read_file(&v, b"b").unwrap(), b"beta");
        assert_eq!(v.catalog().lookup(crate::catalog::ROOT, b"b").unwrap().attr.size, 4);
    }

    /// Commits stop before the lease can lapse: with little of it left and the renewal failing
    /// (the store out), a commit is refused and nothing is lost; once a renewal works, it goes on.
    #[test]
    fn commits_wait_while_the_lease_cannot_be_renewed() {
        let mem = Arc::new(MemStore::new());
        init(mem.as_ref(), &key(), 65536, 0, 0).unwrap();
        let c = tempfile::tempdir().unwrap();
        let v = open(&mem, c.path()).unwrap();
        write_file(&v, b"a", b"alpha");
        *v.lease_valid_until.lock().unwrap() = Some(std::time::Instant::now());
        mem.set_reads_down(true); // the renewal reads the lease object first
        let e = v.commit().unwrap_err();
        assert!(matches!(e, VaultError::Lease(LeaseError::Lapsing(_))), "{e}");
        mem.set_reads_down(false);
        assert!(v.commit().unwrap());
        assert!(v.lease_valid_until.lock().unwrap().is_some_and(|t| t > std::time::Instant::now() + LEASE_MARGIN));
        v.release_lease().unwrap();
        drop(v);
        assert_eq!(read_file(&ro(&mem).unwrap(), b"a").unwrap(), b"alpha");
    }

    /// A store outage delays a read that must go to the store (a write's read-modify-write of a
    /// chunk already uploaded): it waits within --store-timeout and succeeds once the store is
    /// back, instead of failing at once; past the timeout it fails.
    #[test]
    fn reads_wait_for_a_store_outage_within_the_timeout() {
        let mem = Arc::new(MemStore::remote());
        committed_alpha(&mem, tempfile::tempdir().unwrap().path());
        let root = tempfile::tempdir().unwrap();
        let opts = |secs| OpenOptions {
            read_only: true,
            cache_root: Some(root.path()),
            readahead: 0,
            store_timeout: std::time::Duration::from_secs(secs),
            ..Default::default()
        };
        let v = Arc::new(Vault::open(Box::new(mem.clone()), &key(), &opts(30)).unwrap());
        mem.set_reads_down(true);
        let reader = {
            let v = v.clone();
            std::thread::spawn(move || read_file(&v, b"a"))
        };
        std::thread::sleep(std::time::Duration::from_millis(700));
        assert!(!reader.is_finished(), "the read waits while the store is out");
        assert_eq!(v.reads_waiting(), 1);
        mem.set_reads_down(false);
        assert_eq!(reader.join().unwrap().unwrap(), b"alpha");
        assert_eq!(v.reads_waiting(), 0);
        drop(v);
        let v = Vault::open(Box::new(mem.clone()), &key(), &opts(1)).unwrap();
        mem.set_reads_down(true);
        let t = std::time::Instant::now();
        assert!(matches!(read_file(&v, b"a"), Err(VaultError::Chunk(_))));
        assert!(t.elapsed() < std::time::Duration::from_secs(5), "{:?}", t.elapsed());
    }

    #[test]
    fn a_damaged_clean_cache_is_refetched_but_a_damaged_store_is_an_error() {
        let mem = Arc::new(MemStore::remote()); // a vault keeps a clean read cache only for remote stores
        committed_alpha(&mem, tempfile::tempdir().unwrap().path());
        let root = tempfile::tempdir().unwrap();
        let opts = OpenOptions { read_only: true, cache_root: Some(root.path()), readahead: 0, ..Default::default() };
        let v = Vault::open(Box::new(mem.clone()), &key(), &opts).unwrap();
        assert_eq!(read_file(&v, b"a").unwrap(), b"alpha");
        let rc = v.read_cache().expect("a remote store gets a clean cache");
        assert_eq!((rc.stats().misses.load(Ordering::Relaxed), rc.bytes() > 0), (1, true));
        // Flip a bit in every cached block: the read still returns the right bytes, from the store.
        let vault_dir = root.path().join(format::hex(&v.header.vault_id));
        let private = std::fs::read_dir(&vault_dir).unwrap().next().unwrap().unwrap().path();
        let mut flipped = 0;
        for e in std::fs::read_dir(&private).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().unwrap() != "lock" {
                let mut b = std::fs::read(&p).unwrap();
                let last = b.len() - 1;
                b[last] ^= 1;
                std::fs::write(&p, b).unwrap();
                flipped += 1;
            }
        }
        assert_eq!(flipped, 1);
        assert_eq!(read_file(&v, b"a").unwrap(), b"alpha");
        // Damage in the store itself is an error, whatever the cache holds.
        let (name, mut pack) = mem.list("packs/").unwrap().into_iter().map(|(n, _)| (n.clone(), mem.get(&n).unwrap())).next().unwrap();
        let last = pack.len() - 1;
        pack[last] ^= 1;
        mem.put(&name, &pack).unwrap();
        rc.invalidate(&format::parse_hex_id(name.trim_start_matches("packs/")).unwrap(), 0, 1 << 20);
        assert!(matches!(read_file(&v, b"a"), Err(VaultError::Chunk(_))));
        drop(v);
        assert!(!private.exists(), "a read-only mount's clean cache goes with it");
    }

    #[test]
    fn checkpoints_replace_old_segments() {
        let mem = Arc::new(MemStore::new());
        init(mem.as_ref(), &key(), 65536, 0, 0).unwrap();
        let c1 = tempfile::tempdir().unwrap();
        let v = open(&mem, c1.path()).unwrap();
        for i in 0..40u32 {
            write_file(&v, format!("f{i}").as_bytes(), &i.to_le_bytes());
            v.commit().unwrap();
        }
        v.release_lease().unwrap();
        drop(v);
        let segs = mem.list("meta/").unwrap().len();
        assert!(segs <= CHECKPOINT_EVERY as usize, "{segs} segments");
        let c2 = tempfile::tempdir().unwrap();
        let v = open(&mem, c2.path()).unwrap();
        for i in 0..40u32 {
            assert_eq!(read_file(&v, format!("f{i}").as_bytes()).unwrap(), i.to_le_bytes());
        }
    }

    #[test]
    fn journal_recovery_after_crash() {
        let mem = Arc::new(MemStore::new());
        init(mem.as_ref(), &key(), 65536, 0, 0).unwrap();
        let c1 = tempfile::tempdir().unwrap();
        let v = open(&mem, c1.path()).unwrap();
        write_file(&v, b"synced", b"durable");
        v.flush_journal().unwrap();
        write_file(&v, b"unsynced", b"lost");
        // "kill -9": drop without commit. Nothing is in the store yet.
        drop(v);
        assert!(mem.list("packs/").unwrap().is_empty());
        let v = open(&mem, c1.path()).unwrap();
        assert_eq!(read_file(&v, b"synced").unwrap(), b"durable");
        assert!(v.catalog().lookup(crate::catalog::ROOT, b"unsynced").is_err());
        v.release_lease().unwrap();
        drop(v);
        // Recovery committed to the store: an empty cache sees it too.
        let c2 = tempfile::tempdir().unwrap();
        let v = open(&mem, c2.path()).unwrap();
        assert_eq!(read_file(&v, b"synced").unwrap(), b"durable");
    }

    #[test]
    fn tampering_is_detected() {
        let mem = Arc::new(MemStore::new());
        init(mem.as_ref(), &key(), 65536, 0, 0).unwrap();
        let c1 = tempfile::tempdir().unwrap();
        let v = open(&mem, c1.path()).unwrap();
        write_file(&v, b"a", b"alpha");
        write_file(&v, b"b", b"bravo");
        v.commit().unwrap();
        let old_a = {
            let cat = v.catalog();
            cat.lookup(crate::catalog::ROOT, b"a").unwrap().chunk(0).unwrap()
        };
        // Rewrite a: the old chunk stays in its pack (garbage) and can be replayed.
        let ino = v.catalog().lookup(crate::catalog::ROOT, b"a").unwrap().ino;
        let fid = v.catalog().get(ino).unwrap().file_id;
        let new_a = v.seal_chunk(&fid, 0, b"ALPHA").unwrap();
        v.catalog().set_chunk(ino, 0, new_a).unwrap();
        v.commit().unwrap();
        drop(v);
        let pack_a = format::pack_name(&new_a.pack);
        let pristine = mem.get(&pack_a).unwrap();

        let reopen = || ro(&mem).ok().unwrap();

        // Flipped bit.
        let mut t = pristine.clone();
        t[new_a.offset as usize + 26] ^= 1; // inside the ciphertext
        mem.put(&pack_a, &t).unwrap();
        assert!(matches!(read_file(&reopen(), b"a"), Err(VaultError::Chunk(m)) if m.contains("modified")));
        // Replay of the older version of the chunk in place of the new one.
        let old_bytes = mem.get_range(&format::pack_name(&old_a.pack), old_a.offset, old_a.len as usize).unwrap();
        let mut t = pristine.clone();
        t.splice(new_a.offset as usize..(new_a.offset + new_a.len as u64) as usize, old_bytes);
        mem.put(&pack_a, &t).unwrap();
        assert!(matches!(read_file(&reopen(), b"a"), Err(VaultError::Chunk(m)) if m.contains("replaced or replayed")));
        // Deleted pack.
        mem.delete(&pack_a).unwrap();
        assert!(matches!(read_file(&reopen(), b"a"), Err(VaultError::Chunk(m)) if m.contains("does not exist")));
        mem.put(&pack_a, &pristine).unwrap();
        assert_eq!(read_file(&reopen(), b"a").unwrap(), b"ALPHA");
        assert_eq!(read_file(&reopen(), b"b").unwrap(), b"bravo");

        // Metadata: a flipped bit, a missing segment, a swapped segment.
        let segs = mem.list("meta/").unwrap();
        let (last, _) = segs.last().unwrap().clone();
        let orig = mem.get(&last).unwrap();
        let mut t = orig.clone();
        let n = t.len();
        t[n - 20] ^= 1;
        mem.put(&last, &t).unwrap();
        let e = err_of(ro(&mem));
        assert!(matches!(&e, VaultError::Metadata(m) if m.contains("failed authentication")), "{e}");
        mem.put(&last, &orig).unwrap();
        let (middle, _) = segs[segs.len() - 2].clone();
        let mid = mem.get(&middle).unwrap();
        mem.delete(&middle).unwrap();
        let e = err_of(ro(&mem));
        assert!(matches!(&e, VaultError::Metadata(m) if m.contains("missing")), "{e}");
        mem.put(&middle, &orig).unwrap();
        let e = err_of(ro(&mem));
        assert!(matches!(&e, VaultError::Metadata(m) if m.contains("chain") || m.contains("claims")), "{e}");
        mem.put(&middle, &mid).unwrap();
        reopen();
    }

    /// Small bounds for tests: a reader and a writer built from them agree.
    fn small_limits() -> Limits {
        Limits {
            max_inodes: 8,
            max_catalog_bytes: 2048,
            catalog_slack_bytes: 1024,
            max_pending_bytes: 1024,
            max_journal_bytes: 4096,
        }
    }

    fn open_limited(mem: &Arc<MemStore>, cache: Option<&Path>, limits: Limits) -> Result<Vault> {
        let opts = OpenOptions { read_only: cache.is_none(), cache_root: cache, pack_target: 1 << 20, limits, ..Default::default() };
        Vault::open(Box::new(mem.clone()), &key(), &opts)
    }

    /// A segment object of `len` bytes with a valid prefix (as a store could hold one).
    fn planted_segment(kind: u8, seq: u64, len: usize) -> Vec<u8> {
        let mut o = SegmentPrefix { kind, seq, prev_hash: [0; 32] }.encode();
        o.resize(len, 0);
        o
    }

    /// Segments larger than a writer with the same bounds makes are refused by their size,
    /// naming them, before they are read; so is a chain of deltas longer than any writer makes.
    #[test]
    fn oversized_segments_are_refused_unread() {
        let mem = Arc::new(MemStore::new());
        committed_alpha(&mem, tempfile::tempdir().unwrap().path()); // checkpoint 1, delta 2
        let limits = small_limits();
        open_limited(&mem, None, limits).unwrap();
        // A checkpoint one byte past the bound.
        let cap = limits.max_checkpoint_object() as usize;
        mem.put(&format::segment_name(3), &planted_segment(format::SEGMENT_CHECKPOINT, 3, cap + 1)).unwrap();
        let e = err_of(open_limited(&mem, None, limits)).to_string();
        assert!(e.contains("meta/0000000000000003") && e.contains("a checkpoint can be") && e.contains(&cap.to_string()), "{e}");
        // A delta one byte past its bound (a delta holds one journal's records).
        let cap = limits.max_delta_object() as usize;
        mem.put(&format::segment_name(3), &planted_segment(format::SEGMENT_DELTA, 3, cap + 1)).unwrap();
        let e = err_of(open_limited(&mem, None, limits)).to_string();
        assert!(e.contains("meta/0000000000000003") && e.contains("a delta segment can be"), "{e}");
        // The same at the production bound of a delta.
        let cap = Limits::default().max_delta_object() as usize;
        mem.put(&format::segment_name(3), &planted_segment(format::SEGMENT_DELTA, 3, cap + 1)).unwrap();
        let e = err_of(ro(&mem)).to_string();
        assert!(e.contains("meta/0000000000000003") && e.contains(&format!("more than the {cap} bytes")), "{e}");
        // A format 2 root in a format 1 vault is refused by its kind, naming it.
        mem.put(&format::segment_name(3), &planted_segment(format::SEGMENT_ROOT, 3, 200)).unwrap();
        let e = err_of(ro(&mem)).to_string();
        assert!(e.contains("segment 3 is a format 2 root in a format 1 vault"), "{e}");
        // Within the bounds a planted segment is read and fails authentication, as before.
        mem.put(&format::segment_name(3), &planted_segment(format::SEGMENT_DELTA, 3, 200)).unwrap();
        let e = err_of(ro(&mem)).to_string();
        assert!(e.contains("chain") || e.contains("authentication"), "{e}");
        // A chain of more deltas than a writer leaves is refused from the prefixes alone.
        for seq in 3..(4 + format::MAX_CHAIN_DELTAS as u64) {
            mem.put(&format::segment_name(seq), &planted_segment(format::SEGMENT_DELTA, seq, 100)).unwrap();
        }
        let e = err_of(ro(&mem)).to_string();
        assert!(e.contains("delta segments follow the newest checkpoint"), "{e}");
    }

    /// A catalog past the bounds of the reader (more inodes, more bytes) is refused as damage;
    /// within them it loads.
    #[test]
    fn catalogs_past_the_bounds_are_refused_on_load() {
        let mem = Arc::new(MemStore::new());
        init(mem.as_ref(), &key(), 65536, 0, 0).unwrap();
        let c = tempfile::tempdir().unwrap();
        let v = open(&mem, c.path()).unwrap();
        for i in 0..8u8 {
            write_file(&v, &[b'f', b'0' + i], b"x");
        }
        assert!(v.commit().unwrap());
        v.release_lease().unwrap();
        drop(v);
        let e = err_of(open_limited(&mem, None, small_limits())).to_string(); // 9 inodes
        assert!(e.contains("more than 8 inodes"), "{e}");
        let tight = Limits { max_inodes: 100, max_catalog_bytes: 512, catalog_slack_bytes: 0, ..small_limits() };
        let e = err_of(open_limited(&mem, None, tight)).to_string();
        assert!(e.contains("exceed 512 bytes"), "{e}");
        open_limited(&mem, None, Limits { max_inodes: 9, ..small_limits() }).unwrap();
    }

    /// A journal at its bound: `flush_journal` commits it and goes on in the next journal,
    /// `commit` commits in rounds until everything pending is stored, and a writer at the
    /// catalog's bounds refuses to grow it (ENOSPC) but a reader with the same bounds loads
    /// everything it wrote.
    #[test]
    fn a_full_journal_is_committed_and_the_catalog_stays_within_its_bounds() {
        let mem = Arc::new(MemStore::new());
        init(mem.as_ref(), &key(), 4096, 0, 0).unwrap();
        let limits = Limits { max_inodes: 1000, max_catalog_bytes: 64 << 10, ..small_limits() };
        let c = tempfile::tempdir().unwrap();
        let v = open_limited(&mem, Some(c.path()), limits).unwrap();
        let segments = |m: &MemStore| m.list("meta/").unwrap().len();
        let mut made = 0u32;
        loop {
            let name = format!("file-{made:04}");
            let r = v.catalog().create(crate::catalog::ROOT, name.as_bytes(), Kind::File, 0o644, 0, 0, b"", format::Time::now());
            match r {
                Ok(_) => made += 1,
                Err(e) => {
                    assert_eq!(e, CatalogError::NoSpace);
                    break;
                }
            }
            v.flush_journal().unwrap();
            assert!(v.journal_bytes() <= limits.max_journal_bytes);
        }
        assert!(made > 100, "{made}");
        assert!(segments(&mem) > 1, "full journals were committed on the way");
        let cat_bytes = v.catalog().encoded_bytes();
        assert!(cat_bytes <= limits.max_catalog_bytes, "{cat_bytes}");
        // Renames pile up pending records without a flush: past the pending bound, refused.
        let mut renamed = 0;
        let refused = loop {
            let (from, to) = (format!("file-{:04}", renamed % made), format!("File-{:04}", renamed % made));
            match v.catalog().rename(crate::catalog::ROOT, from.as_bytes(), crate::catalog::ROOT, to.as_bytes(), false, format::Time::now()) {
                Ok(()) => renamed += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(refused, CatalogError::NoSpace);
        assert!(v.catalog().due_bytes() <= limits.max_pending_bytes + 1024);
        // One commit stores it all, in as many journals as it takes.
        assert!(v.commit().unwrap());
        assert_eq!(v.catalog().pending_bytes(), 0);
        v.release_lease().unwrap();
        drop(v);
        let r = open_limited(&mem, None, limits).unwrap();
        assert_eq!(r.catalog().inode_count() as u32, made + 1);
        assert!(r.catalog().lookup(crate::catalog::ROOT, format!("File-{:04}", renamed - 1).as_bytes()).is_ok());
        assert_eq!(r.catalog().encoded_bytes(), cat_bytes);
    }
}
