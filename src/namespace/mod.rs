//! Format 2's namespace: the catalog's operations (records applied, live changes logged) over
//! the items of a B-tree (`items`), with only the working set in memory: the inodes in use and
//! the items changed since the last commit. No I/O of its own and no keys: the committed tree
//! is reached through `Base`, and `vault` persists the records and batches this module emits.
//!
//! Layers, newest first: the working set (decoded inodes, authoritative while loaded), the
//! overlay (items changed since the last freeze, `None` = deleted), the frozen batch (a commit
//! under way), the base (the committed tree). A commit is `freeze` → the vault applies the
//! batch to the tree → `committed(new base)`; a failed commit keeps its batch, and the next
//! `freeze` hands it out again with everything after it on top.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::ControlFlow;
use std::sync::Arc;

use crate::catalog::{CatalogError, SetAttr, FIRST_COOKIE, ROOT};
use crate::format::{self, Attr, FormatError, Id, Kind, Limits, Record, Time};
use crate::items::{self, ChunkItem, DirIndex, Dirent, InodeItem};

/// A cause from below (a tree node that could not be read or authenticated).
pub type BaseError = Box<dyn std::error::Error + Send + Sync>;

/// The committed tree, read-only.
pub trait Base: Send {
    fn get(&self, key: &[u8]) -> std::result::Result<Option<Vec<u8>>, BaseError>;
    /// Items with start <= key < end in key order; the visitor may stop early.
    fn scan(&self, start: &[u8], end: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> ControlFlow<()>) -> std::result::Result<(), BaseError>;
}

/// A base held in memory: an empty vault, format 1 vaults (whose records are replayed over an
/// empty base), and tests.
#[derive(Default, Clone)]
pub struct MapBase(pub BTreeMap<Vec<u8>, Vec<u8>>);

impl Base for MapBase {
    fn get(&self, key: &[u8]) -> std::result::Result<Option<Vec<u8>>, BaseError> {
        Ok(self.0.get(key).cloned())
    }
    fn scan(&self, start: &[u8], end: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> ControlFlow<()>) -> std::result::Result<(), BaseError> {
        for (k, v) in self.0.range::<[u8], _>((std::ops::Bound::Included(start), std::ops::Bound::Excluded(end))) {
            if f(k, v).is_break() {
                break;
            }
        }
        Ok(())
    }
}

/// A committed tree of sealed nodes (`btree`) as a namespace's base.
pub struct TreeBase {
    pub tree: crate::btree::Tree,
    pub io: Arc<dyn crate::btree::NodeIo + Send + Sync>,
    pub cache: Arc<crate::btree::NodeCache>,
}

impl Base for TreeBase {
    fn get(&self, key: &[u8]) -> std::result::Result<Option<Vec<u8>>, BaseError> {
        Ok(self.tree.get(&*self.io, &self.cache, key)?)
    }
    fn scan(&self, start: &[u8], end: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> ControlFlow<()>) -> std::result::Result<(), BaseError> {
        Ok(self.tree.scan(&*self.io, &self.cache, start, Some(end), f)?)
    }
}

/// Items changed by a commit: `Some` = put, `None` = delete.
pub type Batch = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

#[derive(Debug)]
pub enum NsError {
    /// What the catalog's operations refuse (errno-mapped by the fs layer).
    Op(CatalogError),
    /// The committed tree could not be read.
    Base(BaseError),
    /// An item of the committed tree does not decode or contradicts the others.
    Damaged { key: Vec<u8>, cause: FormatError },
}

impl fmt::Display for NsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NsError::Op(e) => write!(f, "{e}"),
            NsError::Base(e) => write!(f, "metadata unreadable: {e}"),
            NsError::Damaged { key, cause } => write!(f, "metadata item {} is damaged: {cause}", format::hex(key)),
        }
    }
}

impl std::error::Error for NsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NsError::Op(e) => Some(e),
            NsError::Base(e) => Some(&**e),
            NsError::Damaged { cause, .. } => Some(cause),
        }
    }
}

impl From<CatalogError> for NsError {
    fn from(e: CatalogError) -> Self {
        NsError::Op(e)
    }
}

impl NsError {
    /// The catalog error, if this is one.
    pub fn op(&self) -> Option<&CatalogError> {
        if let NsError::Op(e) = self { Some(e) } else { None }
    }
}

pub type Result<T> = std::result::Result<T, NsError>;

fn corrupt(m: String) -> NsError {
    NsError::Op(CatalogError::Corrupt(m))
}

/// An inode of the working set.
#[derive(Debug)]
pub struct Inode {
    pub ino: u64,
    /// Current state; for a file being written, `item.attr` is ahead of `logged`.
    pub item: InodeItem,
    /// Attributes as the journal has them (what a commit stores).
    pub logged: Attr,
    /// Open file handles.
    pub open: u32,
    /// References the kernel holds (entries replied minus forgets).
    pub lookups: u64,
    /// Chunks written but not yet sealed (held by the fs layer).
    pub unsealed: u32,
    /// The stored item differs from what the last freeze took.
    dirty: bool,
    /// A tail marker was put since this inode was loaded.
    tail_marked: bool,
}

impl Inode {
    pub fn attr(&self) -> &Attr {
        &self.item.attr
    }
    pub fn file_id(&self) -> &Id {
        &self.item.file_id
    }
    pub fn target(&self) -> &[u8] {
        &self.item.target
    }
    pub fn is_dir(&self) -> bool {
        self.item.attr.kind == Kind::Dir
    }
    pub fn nlink(&self) -> u32 {
        if self.is_dir() { 2 + self.item.subdirs } else { self.item.links }
    }
    /// Entries of a directory (0 for anything else).
    pub fn entries(&self) -> u64 {
        self.item.entries
    }
    fn in_use(&self) -> bool {
        self.dirty || self.open > 0 || self.lookups > 0 || self.unsealed > 0
    }
}

pub struct Namespace {
    chunk_size: u32,
    base: Box<dyn Base>,
    frozen: Option<Arc<Batch>>,
    overlay: Batch,
    /// Approximate bytes of `overlay` (keys, values, per-entry cost).
    overlay_bytes: u64,
    inodes: HashMap<u64, Box<Inode>>,
    next_ino: u64,
    /// Inodes in the vault (the root counts).
    inode_count: u64,
    pending: Vec<Record>,
    pending_bytes: u64,
    attr_dirty: BTreeSet<u64>,
    attr_dirty_bytes: u64,
    unsealed_total: u64,
    limits: Limits,
}

/// What an overlay entry costs beyond its key and value (map node share, vectors).
const ENTRY_COST: u64 = 64;

fn inode_rec_len(target: &[u8]) -> u64 {
    (format::INODE_RECORD_LEN + target.len()) as u64
}

fn link_rec_len(name: &[u8]) -> u64 {
    (format::LINK_RECORD_LEN + name.len()) as u64
}

const CHUNK_REC: u64 = format::CONTENT_RECORD_LEN as u64;

/// Where a committed state stands: the counters a root stores beside the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub next_ino: u64,
    pub inodes: u64,
}

impl Namespace {
    /// The namespace of a committed tree and its counters.
    pub fn new(chunk_size: u32, base: Box<dyn Base>, counters: Counters, limits: Limits) -> Self {
        Namespace {
            chunk_size,
            base,
            frozen: None,
            overlay: Batch::new(),
            overlay_bytes: 0,
            inodes: HashMap::new(),
            next_ino: counters.next_ino.max(ROOT + 1),
            inode_count: counters.inodes,
            pending: Vec::new(),
            pending_bytes: 0,
            attr_dirty: BTreeSet::new(),
            attr_dirty_bytes: 0,
            unsealed_total: 0,
            limits,
        }
    }

    /// An empty namespace (no root directory yet: apply `Catalog::root_records`).
    pub fn empty(chunk_size: u32) -> Self {
        Self::new(chunk_size, Box::new(MapBase::default()), Counters { next_ino: ROOT + 1, inodes: 0 }, Limits::default())
    }

    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    pub fn counters(&self) -> Counters {
        Counters { next_ino: self.next_ino, inodes: self.inode_count }
    }

    pub fn inode_count(&self) -> u64 {
        self.inode_count
    }

    /// Inodes held decoded in memory.
    pub fn working_set(&self) -> usize {
        self.inodes.len()
    }

    /// Approximate bytes of items changed since the last freeze (a commit should start early
    /// when this grows past the vault's budget).
    pub fn overlay_bytes(&self) -> u64 {
        self.overlay_bytes
    }

    // -- layered items ------------------------------------------------------------------------

    fn lower_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(f) = &self.frozen
            && let Some(v) = f.get(key)
        {
            return Ok(v.clone());
        }
        self.base.get(key).map_err(NsError::Base)
    }

    fn item(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.overlay.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.lower_get(key),
        }
    }

    fn put(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let add = key.len() as u64 + value.as_ref().map_or(0, |v| v.len() as u64) + ENTRY_COST;
        let klen = key.len() as u64;
        if let Some(old) = self.overlay.insert(key, value) {
            self.overlay_bytes -= klen + old.map_or(0, |v| v.len() as u64) + ENTRY_COST;
        }
        self.overlay_bytes += add;
    }

    /// Deletes `key`, leaving no tombstone for a key the committed layers do not have (markers
    /// are put and taken back within one commit often: every rename of a file).
    fn delete_marker(&mut self, key: Vec<u8>) -> Result<()> {
        if self.lower_get(&key)?.is_some() {
            self.put(key, None);
        } else if let Some(old) = self.overlay.remove(&key) {
            self.overlay_bytes -= key.len() as u64 + old.map_or(0, |v| v.len() as u64) + ENTRY_COST;
        }
        Ok(())
    }

    /// Items with start <= key < end over all layers, in key order; the visitor may stop.
    fn scan(&self, start: &[u8], end: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> ControlFlow<()>) -> Result<()> {
        use std::ops::Bound::{Excluded, Included};
        let range = (Included(start), Excluded(end));
        // The layers above the base, merged (overlay wins); they are small.
        let mut upper: BTreeMap<&[u8], Option<&[u8]>> = BTreeMap::new();
        if let Some(fz) = &self.frozen {
            for (k, v) in fz.range::<[u8], _>(range) {
                upper.insert(k, v.as_deref());
            }
        }
        for (k, v) in self.overlay.range::<[u8], _>(range) {
            upper.insert(k, v.as_deref());
        }
        let mut upper = upper.into_iter().peekable();
        let mut stopped = false;
        self.base
            .scan(start, end, &mut |k, v| {
                while let Some((uk, uv)) = upper.peek() {
                    if *uk > k {
                        break;
                    }
                    let same = *uk == k;
                    if let Some(uv) = uv
                        && f(uk, uv).is_break()
                    {
                        stopped = true;
                        return ControlFlow::Break(());
                    }
                    upper.next();
                    if same {
                        return ControlFlow::Continue(());
                    }
                }
                if f(k, v).is_break() {
                    stopped = true;
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            })
            .map_err(NsError::Base)?;
        if !stopped {
            for (k, v) in upper {
                if let Some(v) = v
                    && f(k, v).is_break()
                {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Deletes every item in [start, end), all layers; returns how many there were.
    fn delete_range(&mut self, start: &[u8], end: &[u8]) -> Result<u64> {
        let mut keys = Vec::new();
        self.scan(start, end, &mut |k, _| {
            keys.push(k.to_vec());
            ControlFlow::Continue(())
        })?;
        let n = keys.len() as u64;
        for k in keys {
            self.put(k, None);
        }
        Ok(n)
    }

    fn damaged(key: &[u8], cause: FormatError) -> NsError {
        NsError::Damaged { key: key.to_vec(), cause }
    }

    // -- the working set ----------------------------------------------------------------------

    /// Loads `ino` into the working set if it exists.
    fn load(&mut self, ino: u64) -> Result<Option<&mut Inode>> {
        if !self.inodes.contains_key(&ino) {
            let key = items::inode_key(ino);
            let Some(v) = self.item(&key)? else { return Ok(None) };
            let item = InodeItem::decode(&v).map_err(|e| Self::damaged(&key, e))?;
            let logged = item.attr.clone();
            self.inodes.insert(ino, Box::new(Inode { ino, item, logged, open: 0, lookups: 0, unsealed: 0, dirty: false, tail_marked: false }));
        }
        Ok(self.inodes.get_mut(&ino).map(|b| &mut **b))
    }

    fn load_mut(&mut self, ino: u64) -> Result<&mut Inode> {
        self.load(ino)?.ok_or(NsError::Op(CatalogError::NotFound))
    }

    /// The inode `ino` (loaded into the working set).
    pub fn get(&mut self, ino: u64) -> Result<&Inode> {
        Ok(self.load_mut(ino)?)
    }

    /// Whether `ino` exists.
    pub fn exists(&mut self, ino: u64) -> Result<bool> {
        Ok(self.load(ino)?.is_some())
    }

    /// The inode if it is in the working set (no I/O).
    pub fn cached(&self, ino: u64) -> Option<&Inode> {
        self.inodes.get(&ino).map(|b| &**b)
    }

    /// Drops inodes nothing holds from the working set until at most `keep` remain (those
    /// still in use stay whatever their number).
    pub fn shrink_working_set(&mut self, keep: usize) {
        if self.inodes.len() <= keep {
            return;
        }
        let mut excess = self.inodes.len() - keep;
        let attr_dirty = &self.attr_dirty;
        self.inodes.retain(|ino, i| {
            if excess == 0 || i.in_use() || attr_dirty.contains(ino) || *ino == ROOT {
                return true;
            }
            excess -= 1;
            false
        });
    }

    fn dir_inode(&mut self, ino: u64) -> Result<&mut Inode> {
        let i = self.load_mut(ino)?;
        if !i.is_dir() {
            return Err(NsError::Op(CatalogError::NotDir));
        }
        Ok(i)
    }

    /// A directory that new entries may go into: not removed (a removed directory that is
    /// still open or referenced takes no entries: POSIX says ENOENT).
    fn live_dir(&mut self, ino: u64) -> Result<()> {
        let i = self.dir_inode(ino)?;
        if ino != ROOT && i.item.links == 0 {
            return Err(NsError::Op(CatalogError::NotFound));
        }
        Ok(())
    }

    /// The entry `name` of directory `parent`.
    pub fn entry(&mut self, parent: u64, name: &[u8]) -> Result<Option<Dirent>> {
        self.dir_inode(parent)?;
        let key = items::dirent_key(parent, name);
        match self.item(&key)? {
            None => Ok(None),
            Some(v) => Dirent::decode(&v).map(Some).map_err(|e| Self::damaged(&key, e)),
        }
    }

    pub fn lookup(&mut self, parent: u64, name: &[u8]) -> Result<&Inode> {
        check_name(name)?;
        let d = self.entry(parent, name)?.ok_or(NsError::Op(CatalogError::NotFound))?;
        match self.load(d.ino)? {
            Some(i) => Ok(i),
            None => Err(corrupt(format!("entry in directory {parent} names missing inode {}", d.ino))),
        }
    }

    /// Entries of directory `dir` with a cookie greater than `after`, in cookie order:
    /// f(cookie, name, ino); f may stop early.
    pub fn readdir(&mut self, dir: u64, after: u64, f: &mut dyn FnMut(u64, &[u8], u64) -> ControlFlow<()>) -> Result<()> {
        self.dir_inode(dir)?;
        let start = items::dirindex_key(dir, after.saturating_add(1).max(FIRST_COOKIE));
        let end = items::prefix(dir, items::T_DIRINDEX + 1);
        let mut bad = None;
        self.scan(&start, &end, &mut |k, v| {
            let parsed = items::parse_key(k).and_then(|key| Ok((key, DirIndex::decode(v)?)));
            match parsed {
                Ok((items::Key::DirIndex(_, cookie), e)) => f(cookie, &e.name, e.ino),
                Ok(_) => ControlFlow::Break(()),
                Err(e) => {
                    bad = Some(Self::damaged(k, e));
                    ControlFlow::Break(())
                }
            }
        })?;
        bad.map_or(Ok(()), Err)
    }

    /// Chunk `index` of `ino`.
    pub fn chunk(&self, ino: u64, index: u64) -> Result<Option<ChunkItem>> {
        let key = items::chunk_key(ino, index);
        match self.item(&key)? {
            None => Ok(None),
            Some(v) => ChunkItem::decode(&v).map(Some).map_err(|e| Self::damaged(&key, e)),
        }
    }

    /// The chunks of `ino` with index in `range`, in index order: f(index, chunk).
    pub fn chunks_in(&self, ino: u64, range: std::ops::RangeInclusive<u64>, f: &mut dyn FnMut(u64, ChunkItem) -> ControlFlow<()>) -> Result<()> {
        let start = items::chunk_key(ino, *range.start());
        let end = match range.end().checked_add(1) {
            Some(e) => items::chunk_key(ino, e),
            None => items::prefix(ino, items::T_CHUNK + 1),
        };
        let mut bad = None;
        self.scan(&start, &end, &mut |k, v| match (items::parse_key(k), ChunkItem::decode(v)) {
            (Ok(items::Key::Chunk(_, index)), Ok(c)) => f(index, c),
            (Err(e), _) | (_, Err(e)) => {
                bad = Some(Self::damaged(k, e));
                ControlFlow::Break(())
            }
            _ => ControlFlow::Break(()),
        })?;
        bad.map_or(Ok(()), Err)
    }

    /// A path to `ino` for log messages ("?" parts where unknown).
    pub fn path_of(&mut self, ino: u64) -> String {
        let mut parts = Vec::new();
        let mut cur = ino;
        for _ in 0..4096 {
            if cur == ROOT {
                break;
            }
            match self.load(cur) {
                Ok(Some(i)) if i.item.parent != 0 => {
                    parts.push(String::from_utf8_lossy(&i.item.name).into_owned());
                    cur = i.item.parent;
                }
                _ => {
                    parts.push(format!("<inode {cur}>"));
                    break;
                }
            }
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    /// The parent directory of `ino` (the root for itself and for unknown ones).
    pub fn parent_of(&mut self, ino: u64) -> u64 {
        match self.load(ino) {
            Ok(Some(i)) if i.item.parent != 0 => i.item.parent,
            _ => ROOT,
        }
    }

    // -- applying records (live and replay) ---------------------------------------------------

    /// Applies one record. During replay an error means the metadata is inconsistent.
    pub fn apply(&mut self, rec: &Record) -> Result<()> {
        match rec {
            Record::Inode { ino, file_id, attr, target } => self.apply_inode(*ino, file_id, attr, target),
            Record::Link { parent, name, ino } => self.apply_link(*parent, name, *ino),
            Record::Unlink { parent, name } => self.apply_unlink(*parent, name),
            Record::Drop { ino } => self.apply_drop(*ino),
            Record::Content { ino, index, id, chunk } => self.apply_chunk(*ino, *index, &ChunkItem { id: *id, loc: *chunk }),
            Record::Chunk { .. } => Err(corrupt("a format 1 chunk record (no content id) in a format 2 journal".into())),
        }
    }

    /// Applies a chunk record: chunk `index` of `ino` is now `chunk`.
    pub fn apply_chunk(&mut self, ino: u64, index: u64, chunk: &ChunkItem) -> Result<()> {
        let cs = self.chunk_size;
        let i = self.load(ino)?.ok_or_else(|| corrupt(format!("chunk of missing inode {ino}")))?;
        if i.item.attr.kind != Kind::File || index >= format::max_chunks(cs) {
            return Err(corrupt(format!("chunk record for non-file or absurd index in inode {ino}")));
        }
        let past_size = index >= format::chunk_count(i.logged.size, cs);
        let mark = past_size && !i.tail_marked;
        if mark {
            i.tail_marked = true;
        }
        if mark {
            self.put(items::tail_key(ino), Some(Vec::new()));
        }
        self.put(items::chunk_key(ino, index), Some(chunk.encode()));
        Ok(())
    }

    fn apply_inode(&mut self, ino: u64, file_id: &Id, attr: &Attr, target: &[u8]) -> Result<()> {
        if ino == u64::MAX || ino == 0 {
            return Err(corrupt(format!("inode number {ino} out of range")));
        }
        if attr.kind.is_device() && format::rdev_of(target).is_none() {
            return Err(corrupt(format!("device node {ino} without a 4-byte device number")));
        }
        if target.len() > format::TARGET_MAX {
            return Err(corrupt(format!("inode {ino}: symlink target too long")));
        }
        if attr.kind != Kind::File && *file_id != [0; 16] {
            return Err(corrupt(format!("inode {ino}: a file id on a non-file")));
        }
        let cs = self.chunk_size;
        if let Some(i) = self.load(ino)? {
            if i.item.attr.kind != attr.kind || i.item.file_id != *file_id {
                return Err(corrupt(format!("inode {ino} changes kind or file id")));
            }
            let old_size = i.logged.size;
            let marked = i.tail_marked;
            let old_len = inode_rec_len(&i.item.target);
            i.item.attr = attr.clone();
            i.logged = attr.clone();
            i.item.target = target.to_vec();
            i.dirty = true;
            i.tail_marked = false;
            if self.attr_dirty.contains(&ino) {
                self.attr_dirty_bytes = self.attr_dirty_bytes + inode_rec_len(target) - old_len;
            }
            if attr.kind == Kind::File {
                let tail_key = items::tail_key(ino);
                let has_tail = marked || self.item(&tail_key)?.is_some();
                if attr.size < old_size || has_tail {
                    let count = format::chunk_count(attr.size, cs);
                    self.delete_range(&items::chunk_key(ino, count), &items::prefix(ino, items::T_CHUNK + 1))?;
                }
                if has_tail {
                    self.delete_marker(tail_key)?;
                }
            }
        } else {
            let is_dir = attr.kind == Kind::Dir;
            let item = InodeItem {
                file_id: *file_id,
                attr: attr.clone(),
                links: 0,
                subdirs: 0,
                entries: 0,
                next_cookie: if is_dir { FIRST_COOKIE } else { 0 },
                parent: 0,
                name: Vec::new(),
                target: target.to_vec(),
            };
            self.inodes.insert(
                ino,
                Box::new(Inode { ino, item, logged: attr.clone(), open: 0, lookups: 0, unsealed: 0, dirty: true, tail_marked: false }),
            );
            // No orphan marker: `create` logs the inode and its entry in the same journal batch.
            self.inode_count += 1;
            self.next_ino = self.next_ino.max(ino + 1);
        }
        Ok(())
    }

    fn apply_link(&mut self, parent: u64, name: &[u8], ino: u64) -> Result<()> {
        if !format::valid_name(name) {
            return Err(corrupt(format!("invalid name linked in directory {parent}")));
        }
        let child_is_dir = match self.load(ino)? {
            Some(c) if c.is_dir() && (c.item.links > 0 || ino == ROOT) => return Err(corrupt(format!("directory {ino} linked twice"))),
            Some(c) => c.is_dir(),
            None => return Err(corrupt(format!("link to missing inode {ino}"))),
        };
        match self.load(parent)? {
            Some(p) if p.is_dir() => {}
            Some(_) => return Err(corrupt(format!("link in non-directory {parent}"))),
            None => return Err(corrupt(format!("link in missing dir {parent}"))),
        }
        if self.item(&items::dirent_key(parent, name))?.is_some() {
            return Err(corrupt(format!("duplicate entry in directory {parent}")));
        }
        let p = self.load_mut(parent)?;
        let cookie = p.item.next_cookie;
        p.item.next_cookie += 1;
        p.item.entries += 1;
        if child_is_dir {
            p.item.subdirs += 1;
        }
        p.dirty = true;
        self.put(items::dirent_key(parent, name), Some(Dirent { ino, cookie }.encode()));
        self.put(items::dirindex_key(parent, cookie), Some(DirIndex { ino, name: name.to_vec() }.encode()));
        let c = self.load_mut(ino)?;
        let was_unlinked = c.item.links == 0;
        if was_unlinked || c.item.parent == 0 {
            c.item.parent = parent;
            c.item.name = name.to_vec();
        }
        c.item.links += 1;
        c.dirty = true;
        if was_unlinked {
            self.delete_marker(items::orphan_key(ino))?;
        }
        Ok(())
    }

    fn apply_unlink(&mut self, parent: u64, name: &[u8]) -> Result<()> {
        match self.load(parent)? {
            Some(p) if p.is_dir() => {}
            Some(_) => return Err(corrupt(format!("unlink in non-directory {parent}"))),
            None => return Err(corrupt(format!("unlink in missing dir {parent}"))),
        }
        let key = items::dirent_key(parent, name);
        let d = match self.item(&key)? {
            Some(v) => Dirent::decode(&v).map_err(|e| Self::damaged(&key, e))?,
            None => return Err(corrupt(format!("unlink of missing entry in {parent}"))),
        };
        self.put(key, None);
        self.put(items::dirindex_key(parent, d.cookie), None);
        let c = self.load(d.ino)?.ok_or_else(|| corrupt(format!("entry for missing inode {}", d.ino)))?;
        if c.item.links == 0 {
            return Err(corrupt(format!("inode {} has more entries than links", d.ino)));
        }
        c.item.links -= 1;
        c.dirty = true;
        let was_dir = c.is_dir();
        if c.item.parent == parent && c.item.name == name {
            c.item.parent = 0;
            c.item.name.clear();
        }
        let unlinked = c.item.links == 0;
        let p = self.load_mut(parent)?;
        if p.item.entries == 0 || (was_dir && p.item.subdirs == 0) {
            return Err(corrupt(format!("directory {parent} counts fewer entries than it has")));
        }
        p.item.entries -= 1;
        if was_dir {
            p.item.subdirs -= 1;
        }
        p.dirty = true;
        if unlinked {
            self.put(items::orphan_key(d.ino), Some(Vec::new()));
        }
        Ok(())
    }

    fn apply_drop(&mut self, ino: u64) -> Result<()> {
        let i = self.load(ino)?.ok_or_else(|| corrupt(format!("drop of missing inode {ino}")))?;
        if i.item.links != 0 || i.item.entries != 0 || ino == ROOT {
            return Err(corrupt(format!("drop of inode {ino} that is still linked")));
        }
        let unsealed = i.unsealed as u64;
        self.clear_attr_dirty(ino);
        self.inodes.remove(&ino);
        self.unsealed_total = self.unsealed_total.saturating_sub(unsealed);
        self.inode_count = self.inode_count.saturating_sub(1);
        self.put(items::inode_key(ino), None);
        self.delete_marker(items::orphan_key(ino))?;
        self.delete_marker(items::tail_key(ino))?;
        self.delete_range(&items::prefix(ino, items::T_CHUNK), &items::prefix(ino, items::T_CHUNK + 1))?;
        Ok(())
    }

    fn log(&mut self, rec: Record) -> Result<()> {
        self.apply(&rec)?;
        self.pending_bytes += rec.encoded_len() as u64;
        self.pending.push(rec);
        Ok(())
    }

    /// After loading a committed tree and replaying the journal over it: trim files whose
    /// chunks went past their logged size, and drop orphans (unlinked while open, then the
    /// process died). Drops are logged so the next commit records them; trims are changes of
    /// the overlay only (replaying the same journal again trims the same).
    pub fn finish_load(&mut self) -> Result<()> {
        match self.load(ROOT)? {
            Some(r) if r.is_dir() => {}
            _ => return Err(corrupt("the root directory is missing".into())),
        }
        let cs = self.chunk_size;
        for ino in self.markers(items::T_TAIL)? {
            let size = self.load(ino)?.map(|i| i.logged.size);
            if let Some(size) = size {
                self.delete_range(&items::chunk_key(ino, format::chunk_count(size, cs)), &items::prefix(ino, items::T_CHUNK + 1))?;
                self.load_mut(ino)?.tail_marked = false;
            }
            self.delete_marker(items::tail_key(ino))?;
        }
        for ino in self.markers(items::T_ORPHAN)? {
            match self.load(ino)? {
                Some(i) if i.item.links == 0 && i.item.entries == 0 && i.open == 0 && i.lookups == 0 => self.log(Record::Drop { ino })?,
                Some(_) => {}
                None => self.put(items::orphan_key(ino), None),
            }
        }
        Ok(())
    }

    fn markers(&self, t: u8) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        let mut bad = None;
        self.scan(&items::prefix(0, t), &items::prefix(0, t + 1), &mut |k, _| {
            match items::parse_key(k) {
                Ok(items::Key::Orphan(ino) | items::Key::Tail(ino)) => out.push(ino),
                Ok(_) => {}
                Err(e) => {
                    bad = Some(Self::damaged(k, e));
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        })?;
        bad.map_or(Ok(out), Err)
    }

    // -- commits --------------------------------------------------------------------------------

    /// Takes everything not yet committed as one batch (the inodes' items as the journal has
    /// them, with every item change since the last commit). The batch stays visible to reads
    /// until `committed`; a later freeze without `committed` in between hands it out again
    /// with the newer changes on top.
    pub fn freeze(&mut self) -> Arc<Batch> {
        let dirty: Vec<u64> = self.inodes.iter().filter(|(_, i)| i.dirty).map(|(k, _)| *k).collect();
        for ino in dirty {
            let i = self.inodes.get_mut(&ino).expect("listed");
            i.dirty = false;
            let mut item = i.item.clone();
            item.attr = i.logged.clone();
            self.put(items::inode_key(ino), Some(item.encode()));
        }
        let mut batch = match self.frozen.take() {
            Some(f) => Arc::try_unwrap(f).unwrap_or_else(|a| (*a).clone()),
            None => Batch::new(),
        };
        batch.append(&mut std::mem::take(&mut self.overlay));
        self.overlay_bytes = 0;
        let batch = Arc::new(batch);
        self.frozen = Some(batch.clone());
        batch
    }

    /// The frozen batch is in the tree `base` now, with these counters' values stored beside it.
    pub fn committed(&mut self, base: Box<dyn Base>) {
        self.base = base;
        self.frozen = None;
    }

    /// The items of the committed tree plus the frozen batch, for checks in tests.
    pub fn is_frozen(&self) -> bool {
        self.frozen.is_some()
    }

    // -- live operations ----------------------------------------------------------------------

    fn due_bytes(&self) -> u64 {
        self.pending_bytes + self.attr_dirty_bytes + self.unsealed_total * CHUNK_REC
    }

    fn room_to_log(&self, more: u64) -> Result<()> {
        if self.due_bytes() + more > self.limits.max_pending_bytes { Err(NsError::Op(CatalogError::NoSpace)) } else { Ok(()) }
    }

    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }

    pub fn unsealed_total(&self) -> u64 {
        self.unsealed_total
    }

    /// Whether a write touching `chunks` chunks fits under the pending bound.
    pub fn admit_data(&self, chunks: u64) -> Result<()> {
        self.room_to_log(chunks * CHUNK_REC + inode_rec_len(&[]))
    }

    pub fn admit_attr_change(&mut self, ino: u64) -> Result<()> {
        let len = inode_rec_len(self.get(ino)?.target());
        self.room_to_log(len)
    }

    fn mark_attr_dirty(&mut self, ino: u64) {
        if let Some(i) = self.inodes.get(&ino)
            && self.attr_dirty.insert(ino)
        {
            self.attr_dirty_bytes += inode_rec_len(&i.item.target);
        }
    }

    fn clear_attr_dirty(&mut self, ino: u64) {
        if self.attr_dirty.remove(&ino) {
            let len = self.inodes.get(&ino).map_or(0, |i| inode_rec_len(&i.item.target));
            self.attr_dirty_bytes = self.attr_dirty_bytes.saturating_sub(len);
        }
    }

    fn inode_record(&self, ino: u64) -> Record {
        let i = &self.inodes[&ino];
        Record::Inode { ino, file_id: i.item.file_id, attr: i.item.attr.clone(), target: i.item.target.clone() }
    }

    fn touch_dir(&mut self, ino: u64, now: Time) {
        if let Some(d) = self.inodes.get_mut(&ino) {
            d.item.attr.mtime = now;
            d.item.attr.ctime = now;
            self.mark_attr_dirty(ino);
        }
    }

    /// Creates a file, directory, symlink, FIFO or socket named `name` in `parent`.
    #[allow(clippy::too_many_arguments)]
    pub fn create(&mut self, parent: u64, name: &[u8], kind: Kind, mode: u32, uid: u32, gid: u32, target: &[u8], now: Time) -> Result<u64> {
        check_name(name)?;
        self.live_dir(parent)?;
        if self.entry(parent, name)?.is_some() {
            return Err(NsError::Op(CatalogError::Exists));
        }
        if target.len() > format::TARGET_MAX {
            return Err(NsError::Op(CatalogError::NameTooLong));
        }
        if self.next_ino >= u64::MAX - 1 {
            return Err(NsError::Op(CatalogError::NoSpace));
        }
        let grows = inode_rec_len(target) + link_rec_len(name);
        self.room_to_log(grows + inode_rec_len(&[]))?;
        let ino = self.next_ino;
        self.next_ino += 1;
        let file_id = if kind == Kind::File { crate::crypto::random_id() } else { [0; 16] };
        let size = if kind == Kind::Symlink { target.len() as u64 } else { 0 };
        let attr = Attr { kind, mode: mode & 0o7777, uid, gid, size, atime: now, mtime: now, ctime: now };
        self.log(Record::Inode { ino, file_id, attr, target: target.to_vec() })?;
        self.log(Record::Link { parent, name: name.to_vec(), ino })?;
        self.touch_dir(parent, now);
        Ok(ino)
    }

    /// Adds a hard link to a non-directory.
    pub fn link(&mut self, ino: u64, parent: u64, name: &[u8], now: Time) -> Result<()> {
        check_name(name)?;
        let target_len = {
            let i = self.get(ino)?;
            if i.is_dir() {
                return Err(NsError::Op(CatalogError::IsDir));
            }
            inode_rec_len(i.target())
        };
        self.live_dir(parent)?;
        if self.entry(parent, name)?.is_some() {
            return Err(NsError::Op(CatalogError::Exists));
        }
        self.room_to_log(link_rec_len(name) + target_len + inode_rec_len(&[]))?;
        self.log(Record::Link { parent, name: name.to_vec(), ino })?;
        self.load_mut(ino)?.item.attr.ctime = now;
        self.mark_attr_dirty(ino);
        self.touch_dir(parent, now);
        Ok(())
    }

    /// Removes the entry `name` (known to exist) naming `ino`; drops the inode if nothing
    /// refers to it any more.
    fn remove_entry(&mut self, parent: u64, name: &[u8], ino: u64, now: Time) -> Result<()> {
        self.log(Record::Unlink { parent, name: name.to_vec() })?;
        let i = self.load_mut(ino)?;
        i.item.attr.ctime = now;
        if i.item.links > 0 {
            self.mark_attr_dirty(ino);
        }
        self.drop_if_unused(ino)
    }

    fn drop_if_unused(&mut self, ino: u64) -> Result<()> {
        if let Some(i) = self.inodes.get(&ino)
            && i.item.links == 0
            && i.open == 0
            && i.lookups == 0
            && ino != ROOT
        {
            self.log(Record::Drop { ino })?;
        }
        Ok(())
    }

    /// The kernel received an entry for `ino` (lookup, create, mkdir, ...).
    pub fn remember(&mut self, ino: u64) {
        if let Ok(Some(i)) = self.load(ino) {
            i.lookups += 1;
        }
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&mut self, ino: u64, n: u64) -> Result<()> {
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.lookups = i.lookups.saturating_sub(n);
            self.drop_if_unused(ino)?;
        }
        Ok(())
    }

    fn removal_log_len(name: &[u8], target: &[u8]) -> u64 {
        (format::UNLINK_RECORD_LEN + name.len() + format::DROP_RECORD_LEN) as u64 + inode_rec_len(target) + inode_rec_len(&[])
    }

    pub fn unlink(&mut self, parent: u64, name: &[u8], now: Time) -> Result<u64> {
        let (ino, target) = {
            let i = self.lookup(parent, name)?;
            if i.is_dir() {
                return Err(NsError::Op(CatalogError::IsDir));
            }
            (i.ino, i.item.target.clone())
        };
        self.room_to_log(Self::removal_log_len(name, &target))?;
        self.remove_entry(parent, name, ino, now)?;
        self.touch_dir(parent, now);
        Ok(ino)
    }

    pub fn rmdir(&mut self, parent: u64, name: &[u8], now: Time) -> Result<()> {
        let ino = {
            let i = self.lookup(parent, name)?;
            if !i.is_dir() {
                return Err(NsError::Op(CatalogError::NotDir));
            }
            if i.entries() != 0 {
                return Err(NsError::Op(CatalogError::NotEmpty));
            }
            i.ino
        };
        self.room_to_log(Self::removal_log_len(name, &[]))?;
        self.remove_entry(parent, name, ino, now)?;
        self.touch_dir(parent, now);
        Ok(())
    }

    /// rename(2) and renameat2(RENAME_NOREPLACE). Atomic: all records go out together.
    pub fn rename(&mut self, parent: u64, name: &[u8], new_parent: u64, new_name: &[u8], noreplace: bool, now: Time) -> Result<()> {
        let (src, src_is_dir, src_target) = {
            let i = self.lookup(parent, name)?;
            (i.ino, i.is_dir(), i.item.target.clone())
        };
        check_name(new_name)?;
        self.live_dir(new_parent)?;
        if src_is_dir {
            // Refuse to move a directory into itself or its own subtree.
            let mut cur = new_parent;
            for _ in 0..=u32::MAX {
                if cur == src {
                    return Err(NsError::Op(CatalogError::Invalid));
                }
                if cur == ROOT {
                    break;
                }
                cur = self.get(cur)?.item.parent;
                if cur == 0 {
                    break;
                }
            }
        }
        let mut logs = Self::removal_log_len(name, &src_target) + link_rec_len(new_name) + inode_rec_len(&[]);
        let replaced = self.entry(new_parent, new_name)?.map(|d| d.ino);
        if let Some(dst) = replaced {
            if noreplace {
                return Err(NsError::Op(CatalogError::Exists));
            }
            if dst == src {
                return Ok(()); // same inode: POSIX says do nothing
            }
            let d = self.get(dst)?;
            match (src_is_dir, d.is_dir()) {
                (true, false) => return Err(NsError::Op(CatalogError::NotDir)),
                (false, true) => return Err(NsError::Op(CatalogError::IsDir)),
                (true, true) if d.entries() != 0 => return Err(NsError::Op(CatalogError::NotEmpty)),
                _ => {}
            }
            logs += Self::removal_log_len(new_name, &d.item.target.clone());
        }
        self.room_to_log(logs)?;
        if let Some(dst) = replaced {
            self.remove_entry(new_parent, new_name, dst, now)?;
        }
        self.log(Record::Unlink { parent, name: name.to_vec() })?;
        self.log(Record::Link { parent: new_parent, name: new_name.to_vec(), ino: src })?;
        self.load_mut(src)?.item.attr.ctime = now;
        self.mark_attr_dirty(src);
        self.touch_dir(parent, now);
        self.touch_dir(new_parent, now);
        Ok(())
    }

    /// Applies a setattr (the caller has sealed the file's chunks first). A size change drops
    /// chunks past the new end.
    pub fn setattr(&mut self, ino: u64, s: &SetAttr, now: Time) -> Result<()> {
        let i = self.load_mut(ino)?;
        let a = &mut i.item.attr;
        if s.size.is_some() && a.kind != Kind::File {
            return Err(NsError::Op(if a.kind == Kind::Dir { CatalogError::IsDir } else { CatalogError::Invalid }));
        }
        if let Some(m) = s.mode {
            a.mode = m & 0o7777;
        }
        if let Some(u) = s.uid {
            a.uid = u;
        }
        if let Some(g) = s.gid {
            a.gid = g;
        }
        if let Some(size) = s.size {
            if size != a.size {
                a.mtime = now;
            }
            a.size = size;
        }
        if let Some(t) = s.atime {
            a.atime = t;
        }
        if let Some(t) = s.mtime {
            a.mtime = t;
        }
        a.ctime = now;
        let rec = self.inode_record(ino);
        self.log(rec)?;
        self.clear_attr_dirty(ino);
        Ok(())
    }

    /// A write reached `end`: grow the size, stamp mtime; logged at the next flush.
    pub fn note_write(&mut self, ino: u64, end: u64, now: Time) -> Result<()> {
        let a = &mut self.load_mut(ino)?.item.attr;
        a.size = a.size.max(end);
        a.mtime = now;
        a.ctime = now;
        self.mark_attr_dirty(ino);
        Ok(())
    }

    /// A truncation is under way: lengths of chunks sealed next follow `size`.
    pub fn note_truncate(&mut self, ino: u64, size: u64) -> Result<()> {
        self.load_mut(ino)?.item.attr.size = size;
        self.mark_attr_dirty(ino);
        Ok(())
    }

    /// Logs that chunk `index` of `ino` is now `chunk`.
    pub fn set_chunk(&mut self, ino: u64, index: u64, chunk: ChunkItem) -> Result<()> {
        self.log(Record::Content { ino, index, id: chunk.id, chunk: chunk.loc })
    }

    /// Hands out everything to journal: pending records plus the attributes of inodes whose
    /// data is fully sealed.
    pub fn take_pending(&mut self) -> Result<Vec<Record>> {
        let ready: Vec<u64> =
            self.attr_dirty.iter().copied().filter(|ino| self.inodes.get(ino).is_some_and(|i| i.unsealed == 0)).collect();
        for ino in ready {
            self.clear_attr_dirty(ino);
            let i = &self.inodes[&ino];
            if i.item.attr != i.logged {
                let rec = self.inode_record(ino);
                self.log(rec)?;
            }
        }
        self.pending_bytes = 0;
        Ok(std::mem::take(&mut self.pending))
    }

    /// Puts records back in front of the pending list after a failed journal append.
    pub fn requeue(&mut self, mut recs: Vec<Record>) {
        self.pending_bytes += recs.iter().map(|r| r.encoded_len() as u64).sum::<u64>();
        recs.append(&mut self.pending);
        self.pending = recs;
    }

    pub fn add_unsealed(&mut self, ino: u64, delta: i64) {
        if let Some(i) = self.inodes.get_mut(&ino) {
            let new = (i.unsealed as i64 + delta).max(0) as u32;
            self.unsealed_total = self.unsealed_total + new as u64 - i.unsealed as u64;
            i.unsealed = new;
        }
    }

    pub fn open(&mut self, ino: u64) -> Result<()> {
        self.load_mut(ino)?.open += 1;
        Ok(())
    }

    /// Closes a handle; an unlinked inode whose last handle closes is dropped.
    pub fn release(&mut self, ino: u64) -> Result<()> {
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.open = i.open.saturating_sub(1);
            self.drop_if_unused(ino)?;
        }
        Ok(())
    }
}

fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > format::NAME_MAX {
        return Err(NsError::Op(CatalogError::NameTooLong));
    }
    if !format::valid_name(name) {
        return Err(NsError::Op(CatalogError::Invalid));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
