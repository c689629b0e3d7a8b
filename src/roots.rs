//! Format 2 metadata in the store: tree nodes sealed into packs (the `NodeIo` the tree of items
//! reads and writes through) and root segments, one per commit, naming the committed tree.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::btree::{NodeIo, TreeError};
use crate::codec::{ChunkCodec, ChunkError, Compression, Place};
use crate::crypto::{self, Secret32};
use crate::format::{self, ChunkRef, FormatError, RootBody, SegmentPrefix, VaultHeader};
use crate::packs::{PackError, Packs};
use crate::store::{Store, StoreError};

/// Why a node could not be read or written.
#[derive(Debug)]
pub enum NodeError {
    Pack(PackError),
    Chunk(ChunkError),
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::Pack(e) => write!(f, "{e}"),
            NodeError::Chunk(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for NodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NodeError::Pack(e) => Some(e),
            NodeError::Chunk(e) => Some(e),
        }
    }
}

/// Tree nodes in the vault's packs: sealed with the metadata subkey (`Place::Node`),
/// compressed and padded like chunks, appended to the staging pack and read back from staging,
/// the clean cache or the store. The tag in a node's reference must match before it is opened.
pub struct NodeStore {
    packs: Arc<Packs>,
    codec: ChunkCodec,
    /// Sealed bytes of nodes written (metadata written per commit, for benches and notes).
    written: AtomicU64,
}

impl NodeStore {
    pub fn new(packs: Arc<Packs>, header: &VaultHeader, meta: &Secret32, compression: Compression) -> Self {
        NodeStore { packs, codec: ChunkCodec::new(header, meta.duplicate(), compression), written: AtomicU64::new(0) }
    }

    /// Sealed bytes of nodes written so far.
    pub fn written_bytes(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

impl NodeIo for NodeStore {
    fn read_node(&self, r: &ChunkRef) -> crate::btree::Result<Vec<u8>> {
        let node = |e: NodeError| TreeError::node(e);
        let (sealed, from_clean) = self.packs.range(&r.pack, r.offset, r.len as usize).map_err(|e| node(NodeError::Pack(e)))?;
        let mut out = Vec::new();
        match self.codec.open_at(Place::Node, r, &sealed, &mut out) {
            Ok(()) => Ok(out),
            Err(e) if from_clean => {
                // A damaged clean cache costs a GET, never an error.
                log::warn!("clean cache: a metadata node failed its check ({e}); reading the store");
                let fresh = self.packs.refetch(&r.pack, r.offset, r.len as usize).map_err(|e| node(NodeError::Pack(e)))?;
                self.codec.open_at(Place::Node, r, &fresh, &mut out).map_err(|e| node(NodeError::Chunk(e)))?;
                Ok(out)
            }
            Err(e) => Err(node(NodeError::Chunk(e))),
        }
    }

    fn write_node(&self, plain: &[u8]) -> crate::btree::Result<ChunkRef> {
        let mut sealed = Vec::with_capacity(plain.len() + format::SEAL_OVERHEAD);
        let tag = self.codec.seal_at(Place::Node, plain, &mut sealed);
        let (pack, offset) = self.packs.append(&sealed).map_err(|e| TreeError::node(NodeError::Pack(e)))?;
        self.written.fetch_add(sealed.len() as u64, Ordering::Relaxed);
        Ok(ChunkRef { pack, offset, len: sealed.len() as u32, tag })
    }
}

/// The largest root segment object: prefix, the body with both references, the seal.
pub const ROOT_MAX_OBJECT: usize = format::SEGMENT_PREFIX_LEN + 2 * (1 + format::LOC_LEN) + 8 + 8 + 2 + format::SEAL_OVERHEAD;

/// Why no root could be loaded. Each names the segment.
#[derive(Debug)]
pub enum RootError {
    Store(StoreError),
    /// `meta/` holds no segment.
    Empty,
    /// The object is larger than a root can be (refused unread).
    TooLarge { seq: u64, len: u64 },
    /// Its prefix or body breaks the format.
    Format { seq: u64, cause: FormatError },
    /// Not a root (a format 1 segment in a format 2 vault).
    NotRoot { seq: u64, kind: u8 },
    /// Its prefix names another seq than its object name.
    WrongSeq { seq: u64, claimed: u64 },
    /// It failed authentication (forged, damaged, or of another vault or key).
    Forged { seq: u64 },
    /// The previous root is present and is not the one this root chains to.
    Chain { seq: u64 },
}

impl fmt::Display for RootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |seq: &u64| format::segment_name(*seq);
        match self {
            RootError::Store(e) => write!(f, "{e}"),
            RootError::Empty => write!(f, "no metadata segments (meta/ is empty)"),
            RootError::TooLarge { seq, len } => {
                write!(f, "{} is {len} bytes, more than a root can be ({ROOT_MAX_OBJECT}): refused unread", name(seq))
            }
            RootError::Format { seq, cause } => write!(f, "{}: {cause}", name(seq)),
            RootError::NotRoot { seq, kind } => write!(f, "{} is a segment of kind {kind}, not a format 2 root", name(seq)),
            RootError::WrongSeq { seq, claimed } => write!(f, "{} claims to be segment {claimed}", name(seq)),
            RootError::Forged { seq } => write!(f, "{} failed authentication (forged, damaged, or of another key)", name(seq)),
            RootError::Chain { seq } => {
                write!(f, "{} does not chain to the root before it (the chain was forked or rewritten)", name(seq))
            }
        }
    }
}

impl std::error::Error for RootError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RootError::Store(e) => Some(e),
            RootError::Format { cause, .. } => Some(cause),
            _ => None,
        }
    }
}

impl From<StoreError> for RootError {
    fn from(e: StoreError) -> Self {
        RootError::Store(e)
    }
}

/// Seals a root segment object: the clear prefix (version 2, kind 3), then the body sealed
/// with the metadata subkey under the segment AAD (FORMAT.md §8).
pub fn seal_root(header: &VaultHeader, meta: &Secret32, seq: u64, prev_hash: [u8; 32], body: &RootBody) -> Vec<u8> {
    let prefix = SegmentPrefix { kind: format::SEGMENT_ROOT, seq, prev_hash }.encode();
    let aad = format::segment_aad(header, &prefix);
    let mut object = prefix;
    crypto::seal_into(meta, &aad, &body.encode(), &mut object);
    object
}

/// Opens root segment object `seq`: its prefix, its seal, its body.
pub fn open_root(header: &VaultHeader, meta: &Secret32, seq: u64, object: &[u8]) -> Result<(SegmentPrefix, RootBody), RootError> {
    if object.len() > ROOT_MAX_OBJECT {
        return Err(RootError::TooLarge { seq, len: object.len() as u64 });
    }
    let (prefix, sealed) = SegmentPrefix::decode(object).map_err(|cause| RootError::Format { seq, cause })?;
    if prefix.seq != seq {
        return Err(RootError::WrongSeq { seq, claimed: prefix.seq });
    }
    if prefix.kind != format::SEGMENT_ROOT {
        return Err(RootError::NotRoot { seq, kind: prefix.kind });
    }
    let aad = format::segment_aad(header, &object[..format::SEGMENT_PREFIX_LEN]);
    let plain = crypto::open(meta, &aad, sealed).map_err(|_| RootError::Forged { seq })?;
    let body = RootBody::decode(&plain).map_err(|cause| RootError::Format { seq, cause })?;
    Ok((prefix, body))
}

/// The newest root of a vault: its seq, the hash of its object (what receipts and pins name),
/// and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedRoot {
    pub seq: u64,
    pub hash: [u8; 32],
    pub prev_hash: [u8; 32],
    pub body: RootBody,
}

/// Reads the newest root: one listing of `meta/`, the newest object (refused unread past
/// `ROOT_MAX_OBJECT`), and, when the root before it is still there, that one's hash against
/// the chain. Cost is constant in the vault's size and history (a writer keeps two roots).
pub fn load_newest(store: &dyn Store, header: &VaultHeader, meta: &Secret32) -> Result<LoadedRoot, RootError> {
    let listed: Vec<(u64, u64)> =
        store.list(format::META_PREFIX)?.iter().filter_map(|(n, size)| Some((format::parse_segment_name(n)?, *size))).collect();
    let &(seq, size) = listed.iter().max().ok_or(RootError::Empty)?;
    if size > ROOT_MAX_OBJECT as u64 {
        return Err(RootError::TooLarge { seq, len: size });
    }
    let object = store.get_range_upto(&format::segment_name(seq), 0, ROOT_MAX_OBJECT + 1)?;
    let (prefix, body) = open_root(header, meta, seq, &object)?;
    if seq > 1 && listed.iter().any(|&(s, _)| s == seq - 1) {
        let prev = match store.get_range_upto(&format::segment_name(seq - 1), 0, ROOT_MAX_OBJECT + 1) {
            Ok(p) => Some(p),
            Err(StoreError::NotFound(_)) => None, // deleted since the listing (a writer's cleanup)
            Err(e) => return Err(e.into()),
        };
        if prev.is_some_and(|p| !crypto::ct_eq(&crypto::hash32(&p), &prefix.prev_hash)) {
            return Err(RootError::Chain { seq });
        }
    } else if seq == 1 && prefix.prev_hash != [0; 32] {
        return Err(RootError::Chain { seq });
    }
    Ok(LoadedRoot { seq, hash: crypto::hash32(&object), prev_hash: prefix.prev_hash, body })
}

#[cfg(test)]
mod tests;
