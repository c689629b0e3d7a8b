//! The namespace: inodes, directories, attributes and chunk maps, kept in memory and changed
//! only through `Record`s, so that a live change and its replay from the journal are the same
//! code (`apply`). No I/O and no keys here; `vault` persists the records this module emits.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use crate::format::{self, Attr, ChunkRef, Id, Kind, Limits, Record, Time};

pub const ROOT: u64 = 1;
/// readdir cookies 1 and 2 are "." and ".."; entries start at 3.
pub const FIRST_COOKIE: u64 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogError {
    NotFound,
    Exists,
    NotDir,
    IsDir,
    NotEmpty,
    /// An argument POSIX calls invalid (rename into own subtree, unsupported flag, bad name).
    Invalid,
    NameTooLong,
    /// The catalog is at a stated bound (`format::Limits`): its inodes or bytes, or the records
    /// not yet in the journal. ENOSPC.
    NoSpace,
    /// Replayed metadata contradicts itself: the vault's metadata is damaged.
    Corrupt(String),
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CatalogError::Corrupt(m) => write!(f, "inconsistent metadata: {m}"),
            other => write!(f, "{other:?}"),
        }
    }
}

impl std::error::Error for CatalogError {}

pub type Result<T> = std::result::Result<T, CatalogError>;

#[derive(Debug, Default)]
pub struct Dir {
    entries: BTreeMap<u64, (Vec<u8>, u64)>,
    by_name: HashMap<Vec<u8>, u64>,
    next_cookie: u64,
}

impl Dir {
    fn new() -> Self {
        Self { next_cookie: FIRST_COOKIE, ..Default::default() }
    }
    pub fn get(&self, name: &[u8]) -> Option<u64> {
        self.by_name.get(name).map(|c| self.entries[c].1)
    }
    pub fn len(&self) -> usize {
        self.by_name.len()
    }
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
    fn insert(&mut self, name: Vec<u8>, ino: u64) {
        let c = self.next_cookie;
        self.next_cookie += 1;
        self.by_name.insert(name.clone(), c);
        self.entries.insert(c, (name, ino));
    }
    fn remove(&mut self, name: &[u8]) -> Option<u64> {
        let c = self.by_name.remove(name)?;
        self.entries.remove(&c).map(|(_, ino)| ino)
    }
    /// Entries with a cookie greater than `after`, in cookie order.
    pub fn after(&self, after: u64) -> impl Iterator<Item = (u64, &[u8], u64)> {
        self.entries.range(after + 1..).map(|(c, (n, i))| (*c, n.as_slice(), *i))
    }
}

#[derive(Debug)]
pub struct Inode {
    pub ino: u64,
    pub file_id: Id,
    /// Current attributes; for a file being written, ahead of `logged`.
    pub attr: Attr,
    /// Attributes as the journal has them.
    pub logged: Attr,
    pub target: Vec<u8>,
    /// Sealed chunks by index: sparse, so a file costs what was written to it, never what its
    /// size or highest offset is.
    chunks: BTreeMap<u64, ChunkRef>,
    pub links: u32,
    subdirs: u32,
    /// Boxed: most inodes are files, and a `Dir` inline would cost every one of them 80 bytes.
    pub dir: Option<Box<Dir>>,
    /// One (parent, name) that leads here, for messages.
    parent: u64,
    name: Vec<u8>,
    /// Open file handles.
    pub open: u32,
    /// References the kernel holds (entries replied minus forgets).
    pub lookups: u64,
    /// Chunks written but not yet sealed (held by the fs layer).
    pub unsealed: u32,
}

impl Inode {
    pub fn nlink(&self) -> u32 {
        if self.attr.kind == Kind::Dir { 2 + self.subdirs } else { self.links }
    }
    pub fn chunk(&self, index: u64) -> Option<ChunkRef> {
        self.chunks.get(&index).copied()
    }
    /// The sealed chunks in index order.
    pub fn chunks(&self) -> impl Iterator<Item = (u64, ChunkRef)> + '_ {
        self.chunks.iter().map(|(k, c)| (*k, *c))
    }
    /// The sealed chunks with index in `range`, in index order.
    pub fn chunks_in(&self, range: std::ops::RangeInclusive<u64>) -> impl Iterator<Item = (u64, ChunkRef)> + '_ {
        self.chunks.range(range).map(|(k, c)| (*k, *c))
    }
    /// How many chunks are sealed.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }
    /// Drops chunks at and past `count` (a file's size shrank to `count` chunks); returns how
    /// many went.
    fn trim_chunks(&mut self, count: u64) -> u64 {
        if self.chunks.range(count..).next().is_none() {
            return 0;
        }
        self.chunks.split_off(&count).len() as u64
    }
}

/// Attribute changes of a setattr call.
#[derive(Debug, Default, Clone)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<Time>,
    pub mtime: Option<Time>,
}

pub struct Catalog {
    chunk_size: u32,
    /// Boxed: the table then holds a pointer per inode, not 350 bytes (it runs half empty after
    /// each doubling).
    inodes: HashMap<u64, Box<Inode>>,
    next_ino: u64,
    pending: Vec<Record>,
    attr_dirty: BTreeSet<u64>,
    limits: Limits,
    /// Encoded size of this state's checkpoint records (`encoded_bytes`).
    bytes: u64,
    /// Encoded size of `pending`.
    pending_bytes: u64,
    /// Encoded size of the `Inode` records the inodes in `attr_dirty` will log.
    attr_dirty_bytes: u64,
    /// Chunk buffers written and not yet sealed, over all inodes (each becomes a `Chunk` record).
    unsealed_total: u64,
}

/// Encoded size of an inode's `Inode` record.
fn inode_rec_len(target: &[u8]) -> u64 {
    (format::INODE_RECORD_LEN + target.len()) as u64
}

/// Encoded size of a `Link` record.
fn link_rec_len(name: &[u8]) -> u64 {
    (format::LINK_RECORD_LEN + name.len()) as u64
}

const CHUNK_REC: u64 = format::CHUNK_RECORD_LEN as u64;

impl Catalog {
    /// An empty catalog with the stated bounds of format 1 (`format::Limits::default`).
    pub fn new(chunk_size: u32) -> Self {
        Self::with_limits(chunk_size, Limits::default())
    }

    /// An empty catalog with other bounds (tests; a writer and the reader of what it wrote must
    /// use the same ones).
    pub fn with_limits(chunk_size: u32, limits: Limits) -> Self {
        Self {
            chunk_size,
            inodes: HashMap::new(),
            next_ino: ROOT + 1,
            pending: Vec::new(),
            attr_dirty: BTreeSet::new(),
            limits,
            bytes: 0,
            pending_bytes: 0,
            attr_dirty_bytes: 0,
            unsealed_total: 0,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The encoded size of this state as checkpoint records (what `snapshot` encodes to).
    pub fn encoded_bytes(&self) -> u64 {
        self.bytes
    }

    /// Bytes of records logged and not yet handed out by `take_pending`.
    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }

    /// Bytes of records due: those pending, the attribute records of changed inodes, and a
    /// chunk record per unsealed buffer. The next `take_pending` hands out at most this much
    /// (plus chunk records of buffers sealed meanwhile, which this already counts).
    pub fn due_bytes(&self) -> u64 {
        self.pending_bytes + self.attr_dirty_bytes + self.unsealed_total * CHUNK_REC
    }

    /// Chunk buffers written and not yet sealed, over all inodes.
    pub fn unsealed_total(&self) -> u64 {
        self.unsealed_total
    }

    /// Refuses (NoSpace) a change that logs about `more` bytes of records while the records due
    /// already reach the pending bound (the journal is full and cannot take them, e.g. while
    /// the store is out).
    fn room_to_log(&self, more: u64) -> Result<()> {
        if self.due_bytes() + more > self.limits.max_pending_bytes { Err(CatalogError::NoSpace) } else { Ok(()) }
    }

    /// Refuses (NoSpace) growing the checkpoint records by `more` bytes past the catalog bound
    /// (buffers not yet sealed count as the chunk records they become).
    fn room_to_grow(&self, more: u64) -> Result<()> {
        if self.bytes + self.unsealed_total * CHUNK_REC + more > self.limits.max_catalog_bytes {
            Err(CatalogError::NoSpace)
        } else {
            Ok(())
        }
    }

    /// Whether a write that touches `chunks` chunks fits (the fs layer asks before it buffers
    /// anything): NoSpace past the catalog bound or the pending bound.
    pub fn admit_data(&self, chunks: u64) -> Result<()> {
        self.room_to_grow(chunks * CHUNK_REC)?;
        self.room_to_log(chunks * CHUNK_REC + inode_rec_len(&[]))
    }

    /// Whether an attribute change (setattr) fits: NoSpace past the pending bound. The fs layer
    /// asks before it changes anything (`setattr` itself never refuses for room).
    pub fn admit_attr_change(&self, ino: u64) -> Result<()> {
        self.room_to_log(inode_rec_len(&self.get(ino)?.target))
    }

    fn mark_attr_dirty(&mut self, ino: u64) {
        if let Some(i) = self.inodes.get(&ino)
            && self.attr_dirty.insert(ino)
        {
            self.attr_dirty_bytes += inode_rec_len(&i.target);
        }
    }

    fn clear_attr_dirty(&mut self, ino: u64) {
        if self.attr_dirty.remove(&ino) {
            let len = self.inodes.get(&ino).map_or(0, |i| inode_rec_len(&i.target));
            self.attr_dirty_bytes = self.attr_dirty_bytes.saturating_sub(len);
        }
    }

    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Records that create the root directory of a new vault.
    pub fn root_records(uid: u32, gid: u32, now: Time) -> Vec<Record> {
        vec![Record::Inode {
            ino: ROOT,
            file_id: [0; 16],
            attr: Attr { kind: Kind::Dir, mode: 0o755, uid, gid, size: 0, atime: now, mtime: now, ctime: now },
            target: Vec::new(),
        }]
    }

    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    pub fn get(&self, ino: u64) -> Result<&Inode> {
        self.inodes.get(&ino).map(|i| &**i).ok_or(CatalogError::NotFound)
    }

    fn get_mut(&mut self, ino: u64) -> Result<&mut Inode> {
        self.inodes.get_mut(&ino).map(|i| &mut **i).ok_or(CatalogError::NotFound)
    }

    fn dir(&self, ino: u64) -> Result<&Dir> {
        self.get(ino)?.dir.as_deref().ok_or(CatalogError::NotDir)
    }

    /// A directory that new entries may go into: not removed (a removed directory that is
    /// still open or referenced takes no entries: POSIX says ENOENT).
    fn live_dir(&self, ino: u64) -> Result<&Dir> {
        let i = self.get(ino)?;
        let d = i.dir.as_deref().ok_or(CatalogError::NotDir)?;
        if ino != ROOT && i.links == 0 {
            return Err(CatalogError::NotFound);
        }
        Ok(d)
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<&Inode> {
        check_name(name)?;
        let ino = self.dir(parent)?.get(name).ok_or(CatalogError::NotFound)?;
        self.get(ino)
    }

    /// A path to `ino` for log messages ("?" where unknown).
    pub fn path_of(&self, ino: u64) -> String {
        let mut parts = Vec::new();
        let mut cur = ino;
        for _ in 0..4096 {
            if cur == ROOT {
                break;
            }
            match self.inodes.get(&cur) {
                Some(i) if i.parent != 0 => {
                    parts.push(String::from_utf8_lossy(&i.name).into_owned());
                    cur = i.parent;
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

    // -- applying records (live and replay) -----------------------------------------------------

    /// Applies one record read from the store or a journal: `apply`, and the catalog must stay
    /// within what a writer with these bounds can make (`Limits::load_catalog_bytes`).
    pub fn replay(&mut self, rec: &Record) -> Result<()> {
        self.apply(rec)?;
        if self.bytes > self.limits.load_catalog_bytes() {
            return Err(CatalogError::Corrupt(format!(
                "the records exceed {} bytes, more than a catalog of format 1 holds (pgcryptfs refuses to grow \
                 one past {} bytes)",
                self.limits.load_catalog_bytes(),
                self.limits.max_catalog_bytes
            )));
        }
        Ok(())
    }

    /// Applies one record. During replay an error means the metadata is inconsistent.
    pub fn apply(&mut self, rec: &Record) -> Result<()> {
        let corrupt = |m: String| CatalogError::Corrupt(m);
        match rec {
            Record::Inode { ino, file_id, attr, target } => {
                if *ino == u64::MAX || *ino == 0 {
                    return Err(corrupt(format!("inode number {ino} out of range")));
                }
                if attr.kind.is_device() && format::rdev_of(target).is_none() {
                    return Err(corrupt(format!("device node {ino} without a 4-byte device number")));
                }
                let cs = self.chunk_size;
                match self.inodes.get_mut(ino) {
                    Some(i) => {
                        if i.attr.kind != attr.kind || i.file_id != *file_id {
                            return Err(corrupt(format!("inode {ino} changes kind or file id")));
                        }
                        let old_target = inode_rec_len(&i.target);
                        i.attr = attr.clone();
                        i.logged = attr.clone();
                        i.target = target.clone();
                        let trimmed = i.trim_chunks(format::chunk_count(attr.size, cs));
                        self.bytes = self.bytes + inode_rec_len(target) - old_target - trimmed * CHUNK_REC;
                        if self.attr_dirty.contains(ino) {
                            self.attr_dirty_bytes = self.attr_dirty_bytes + inode_rec_len(target) - old_target;
                        }
                    }
                    None => {
                        if self.inodes.len() as u64 >= self.limits.max_inodes {
                            return Err(corrupt(format!(
                                "more than {} inodes, the most a catalog of format 1 holds",
                                self.limits.max_inodes
                            )));
                        }
                        self.bytes += inode_rec_len(target);
                        self.inodes.insert(
                            *ino,
                            Box::new(Inode {
                                ino: *ino,
                                file_id: *file_id,
                                attr: attr.clone(),
                                logged: attr.clone(),
                                target: target.clone(),
                                chunks: BTreeMap::new(),
                                links: 0,
                                subdirs: 0,
                                dir: (attr.kind == Kind::Dir).then(|| Box::new(Dir::new())),
                                parent: 0,
                                name: Vec::new(),
                                open: 0,
                                lookups: 0,
                                unsealed: 0,
                            }),
                        );
                        self.next_ino = self.next_ino.max(ino + 1);
                    }
                }
            }
            Record::Link { parent, name, ino } => {
                let child_is_dir = match self.inodes.get(ino) {
                    Some(c) if c.attr.kind == Kind::Dir && (c.links > 0 || *ino == ROOT) => {
                        return Err(corrupt(format!("directory {ino} linked twice")));
                    }
                    Some(c) => c.attr.kind == Kind::Dir,
                    None => return Err(corrupt(format!("link to missing inode {ino}"))),
                };
                let p = self.inodes.get_mut(parent).ok_or_else(|| corrupt(format!("link in missing dir {parent}")))?;
                let d = p.dir.as_mut().ok_or_else(|| corrupt(format!("link in non-directory {parent}")))?;
                if d.by_name.contains_key(name) {
                    return Err(corrupt(format!("duplicate entry in directory {parent}")));
                }
                d.insert(name.clone(), *ino);
                if child_is_dir {
                    p.subdirs += 1;
                }
                self.bytes += link_rec_len(name);
                let c = self.inodes.get_mut(ino).expect("checked above");
                if c.links == 0 || c.parent == 0 {
                    c.parent = *parent;
                    c.name = name.clone();
                }
                c.links += 1;
            }
            Record::Unlink { parent, name } => {
                let p = self.inodes.get_mut(parent).ok_or_else(|| corrupt(format!("unlink in missing dir {parent}")))?;
                let d = p.dir.as_mut().ok_or_else(|| corrupt(format!("unlink in non-directory {parent}")))?;
                let ino = d.remove(name).ok_or_else(|| corrupt(format!("unlink of missing entry in {parent}")))?;
                self.bytes -= link_rec_len(name);
                let c = self.inodes.get_mut(&ino).ok_or_else(|| corrupt(format!("entry for missing inode {ino}")))?;
                c.links -= 1;
                let was_dir = c.attr.kind == Kind::Dir;
                if c.parent == *parent && c.name == *name {
                    c.parent = 0;
                }
                if was_dir {
                    self.inodes.get_mut(parent).expect("exists").subdirs -= 1;
                }
            }
            Record::Drop { ino } => {
                let i = self.inodes.get(ino).ok_or_else(|| corrupt(format!("drop of missing inode {ino}")))?;
                if i.links != 0 || i.dir.as_ref().is_some_and(|d| !d.is_empty()) || *ino == ROOT {
                    return Err(corrupt(format!("drop of inode {ino} that is still linked")));
                }
                self.clear_attr_dirty(*ino);
                let i = self.inodes.remove(ino).expect("checked above");
                self.bytes -= inode_rec_len(&i.target) + i.chunks.len() as u64 * CHUNK_REC;
                self.unsealed_total = self.unsealed_total.saturating_sub(i.unsealed as u64);
            }
            Record::Content { ino, .. } => {
                return Err(corrupt(format!("a content chunk record (format 2) for inode {ino} in a format 1 vault")));
            }
            Record::Chunk { ino, index, chunk } => {
                let i = self.inodes.get_mut(ino).ok_or_else(|| corrupt(format!("chunk of missing inode {ino}")))?;
                if i.attr.kind != Kind::File || *index >= format::max_chunks(self.chunk_size) {
                    return Err(corrupt(format!("chunk record for non-file or absurd index in inode {ino}")));
                }
                if i.chunks.insert(*index, *chunk).is_none() {
                    self.bytes += CHUNK_REC;
                }
            }
        }
        Ok(())
    }

    fn log(&mut self, rec: Record) {
        self.apply(&rec).expect("live records are validated before they are logged");
        self.pending_bytes += rec.encoded_len() as u64;
        self.pending.push(rec);
    }

    /// After replay: trim chunk maps to sizes, and drop orphans (unlinked while open, then
    /// the process died). Orphan drops are logged so the next commit records them.
    pub fn finish_load(&mut self) -> Result<()> {
        if self.inodes.get(&ROOT).is_none_or(|r| r.attr.kind != Kind::Dir) {
            return Err(CatalogError::Corrupt("the root directory is missing".into()));
        }
        let cs = self.chunk_size;
        let mut trimmed = 0;
        for i in self.inodes.values_mut() {
            trimmed += i.trim_chunks(format::chunk_count(i.attr.size, cs));
        }
        self.bytes -= trimmed * CHUNK_REC;
        let mut orphans: Vec<u64> =
            self.inodes.values().filter(|i| i.links == 0 && i.ino != ROOT && i.dir.as_ref().is_none_or(|d| d.is_empty())).map(|i| i.ino).collect();
        orphans.sort_unstable();
        for ino in orphans {
            self.log(Record::Drop { ino });
        }
        Ok(())
    }

    // -- live operations -----------------------------------------------------------------------

    fn inode_record(&self, ino: u64) -> Record {
        let i = &self.inodes[&ino];
        Record::Inode { ino, file_id: i.file_id, attr: i.attr.clone(), target: i.target.clone() }
    }

    fn touch_dir(&mut self, ino: u64, now: Time) {
        if let Some(d) = self.inodes.get_mut(&ino) {
            d.attr.mtime = now;
            d.attr.ctime = now;
            self.mark_attr_dirty(ino);
        }
    }

    /// Creates a file, directory, symlink, FIFO or socket named `name` in `parent`.
    #[allow(clippy::too_many_arguments)]
    pub fn create(&mut self, parent: u64, name: &[u8], kind: Kind, mode: u32, uid: u32, gid: u32, target: &[u8], now: Time) -> Result<u64> {
        check_name(name)?;
        if self.live_dir(parent)?.get(name).is_some() {
            return Err(CatalogError::Exists);
        }
        if target.len() > format::TARGET_MAX {
            return Err(CatalogError::NameTooLong);
        }
        if self.inodes.len() as u64 >= self.limits.max_inodes {
            return Err(CatalogError::NoSpace);
        }
        let grows = inode_rec_len(target) + link_rec_len(name);
        self.room_to_grow(grows)?;
        self.room_to_log(grows + inode_rec_len(&[]))?;
        let ino = self.next_ino;
        self.next_ino += 1;
        let file_id = if kind == Kind::File { crate::crypto::random_id() } else { [0; 16] };
        let size = if kind == Kind::Symlink { target.len() as u64 } else { 0 };
        let attr = Attr { kind, mode: mode & 0o7777, uid, gid, size, atime: now, mtime: now, ctime: now };
        self.log(Record::Inode { ino, file_id, attr, target: target.to_vec() });
        self.log(Record::Link { parent, name: name.to_vec(), ino });
        self.touch_dir(parent, now);
        Ok(ino)
    }

    /// Adds a hard link to a non-directory.
    pub fn link(&mut self, ino: u64, parent: u64, name: &[u8], now: Time) -> Result<()> {
        check_name(name)?;
        if self.get(ino)?.attr.kind == Kind::Dir {
            return Err(CatalogError::IsDir);
        }
        if self.live_dir(parent)?.get(name).is_some() {
            return Err(CatalogError::Exists);
        }
        self.room_to_grow(link_rec_len(name))?;
        self.room_to_log(link_rec_len(name) + inode_rec_len(&self.get(ino)?.target) + inode_rec_len(&[]))?;
        self.log(Record::Link { parent, name: name.to_vec(), ino });
        let i = self.get_mut(ino)?;
        i.attr.ctime = now;
        self.mark_attr_dirty(ino);
        self.touch_dir(parent, now);
        Ok(())
    }

    /// Removes a link; drops the inode if nothing refers to it any more. Returns the inode.
    fn remove_entry(&mut self, parent: u64, name: &[u8], now: Time) -> u64 {
        let ino = self.dir(parent).expect("checked").get(name).expect("checked");
        self.log(Record::Unlink { parent, name: name.to_vec() });
        let i = self.inodes.get_mut(&ino).expect("linked inode exists");
        i.attr.ctime = now;
        if i.links > 0 {
            self.mark_attr_dirty(ino);
        }
        self.drop_if_unused(ino);
        ino
    }

    /// Forgets an inode once nothing refers to it: no link, no open handle, no kernel reference.
    fn drop_if_unused(&mut self, ino: u64) {
        if let Some(i) = self.inodes.get(&ino)
            && i.links == 0
            && i.open == 0
            && i.lookups == 0
            && ino != ROOT
        {
            self.log(Record::Drop { ino });
        }
    }

    /// The kernel received an entry for `ino` (lookup, create, mkdir, ...).
    pub fn remember(&mut self, ino: u64) {
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.lookups += 1;
        }
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&mut self, ino: u64, n: u64) {
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.lookups = i.lookups.saturating_sub(n);
            self.drop_if_unused(ino);
        }
    }

    /// Bytes of records that removing the entry `name` of inode `i` logs at most (the entry, a
    /// drop, the attributes of the inode and of its directory).
    fn removal_log_len(name: &[u8], i: &Inode) -> u64 {
        (format::UNLINK_RECORD_LEN + name.len() + format::DROP_RECORD_LEN) as u64 + inode_rec_len(&i.target) + inode_rec_len(&[])
    }

    pub fn unlink(&mut self, parent: u64, name: &[u8], now: Time) -> Result<u64> {
        let i = self.lookup(parent, name)?;
        if i.attr.kind == Kind::Dir {
            return Err(CatalogError::IsDir);
        }
        self.room_to_log(Self::removal_log_len(name, i))?;
        let ino = self.remove_entry(parent, name, now);
        self.touch_dir(parent, now);
        Ok(ino)
    }

    pub fn rmdir(&mut self, parent: u64, name: &[u8], now: Time) -> Result<()> {
        let i = self.lookup(parent, name)?;
        let d = i.dir.as_ref().ok_or(CatalogError::NotDir)?;
        if !d.is_empty() {
            return Err(CatalogError::NotEmpty);
        }
        self.room_to_log(Self::removal_log_len(name, i))?;
        self.remove_entry(parent, name, now);
        self.touch_dir(parent, now);
        Ok(())
    }

    /// rename(2) and renameat2(RENAME_NOREPLACE). Atomic: all records go out together.
    pub fn rename(&mut self, parent: u64, name: &[u8], new_parent: u64, new_name: &[u8], noreplace: bool, now: Time) -> Result<()> {
        let src = self.lookup(parent, name)?.ino;
        check_name(new_name)?;
        self.live_dir(new_parent)?;
        let src_is_dir = self.get(src)?.attr.kind == Kind::Dir;
        if src_is_dir {
            // Refuse to move a directory into itself or its own subtree.
            let mut cur = new_parent;
            while cur != ROOT {
                if cur == src {
                    return Err(CatalogError::Invalid);
                }
                cur = self.get(cur)?.parent;
                if cur == 0 {
                    break;
                }
            }
        }
        let mut logs = Self::removal_log_len(name, self.get(src)?) + link_rec_len(new_name) + inode_rec_len(&[]);
        let replaced = self.dir(new_parent)?.get(new_name);
        if let Some(dst) = replaced {
            if noreplace {
                return Err(CatalogError::Exists);
            }
            if dst == src {
                return Ok(()); // same inode: POSIX says do nothing
            }
            let d = self.get(dst)?;
            match (src_is_dir, d.dir.as_ref()) {
                (true, None) => return Err(CatalogError::NotDir),
                (false, Some(_)) => return Err(CatalogError::IsDir),
                (true, Some(dd)) if !dd.is_empty() => return Err(CatalogError::NotEmpty),
                _ => {}
            }
            logs += Self::removal_log_len(new_name, d);
        } else {
            // A longer name is a longer Link record in every later checkpoint.
            self.room_to_grow(new_name.len().saturating_sub(name.len()) as u64)?;
        }
        self.room_to_log(logs)?;
        if replaced.is_some() {
            self.remove_entry(new_parent, new_name, now);
        }
        self.log(Record::Unlink { parent, name: name.to_vec() });
        self.log(Record::Link { parent: new_parent, name: new_name.to_vec(), ino: src });
        let s = self.get_mut(src)?;
        s.attr.ctime = now;
        self.mark_attr_dirty(src);
        self.touch_dir(parent, now);
        self.touch_dir(new_parent, now);
        Ok(())
    }

    /// Applies a setattr (the caller has sealed the file's chunks first). A size change
    /// drops chunks past the new end.
    pub fn setattr(&mut self, ino: u64, s: &SetAttr, now: Time) -> Result<()> {
        let i = self.get_mut(ino)?;
        if s.size.is_some() && i.attr.kind != Kind::File {
            return Err(if i.attr.kind == Kind::Dir { CatalogError::IsDir } else { CatalogError::Invalid });
        }
        if let Some(m) = s.mode {
            i.attr.mode = m & 0o7777;
        }
        if let Some(u) = s.uid {
            i.attr.uid = u;
        }
        if let Some(g) = s.gid {
            i.attr.gid = g;
        }
        if let Some(size) = s.size {
            if size != i.attr.size {
                i.attr.mtime = now;
            }
            i.attr.size = size;
        }
        if let Some(t) = s.atime {
            i.attr.atime = t;
        }
        if let Some(t) = s.mtime {
            i.attr.mtime = t;
        }
        i.attr.ctime = now;
        let rec = self.inode_record(ino);
        self.log(rec);
        self.clear_attr_dirty(ino);
        Ok(())
    }

    /// A write reached `end`: grow the size, stamp mtime; logged at the next flush.
    pub fn note_write(&mut self, ino: u64, end: u64, now: Time) -> Result<()> {
        let i = self.get_mut(ino)?;
        i.attr.size = i.attr.size.max(end);
        i.attr.mtime = now;
        i.attr.ctime = now;
        self.mark_attr_dirty(ino);
        Ok(())
    }

    /// A truncation is under way: lengths of chunks sealed next follow `size`.
    pub fn note_truncate(&mut self, ino: u64, size: u64) -> Result<()> {
        let i = self.get_mut(ino)?;
        i.attr.size = size;
        self.mark_attr_dirty(ino);
        Ok(())
    }

    /// The parent directory of `ino` (the root for itself and for unknown ones).
    pub fn parent_of(&self, ino: u64) -> u64 {
        self.inodes.get(&ino).map(|i| i.parent).filter(|p| *p != 0).unwrap_or(ROOT)
    }

    pub fn set_chunk(&mut self, ino: u64, index: u64, chunk: ChunkRef) -> Result<()> {
        self.get(ino)?;
        self.log(Record::Chunk { ino, index, chunk });
        Ok(())
    }

    pub fn add_unsealed(&mut self, ino: u64, delta: i64) {
        if let Some(i) = self.inodes.get_mut(&ino) {
            let new = (i.unsealed as i64 + delta).max(0) as u32;
            self.unsealed_total = self.unsealed_total + new as u64 - i.unsealed as u64;
            i.unsealed = new;
        }
    }

    pub fn open(&mut self, ino: u64) -> Result<()> {
        self.get_mut(ino)?.open += 1;
        Ok(())
    }

    /// Closes a handle; an unlinked inode whose last handle closes is dropped.
    pub fn release(&mut self, ino: u64) {
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.open = i.open.saturating_sub(1);
            self.drop_if_unused(ino);
        }
    }

    /// Hands out everything to journal: pending records plus the attributes of inodes
    /// whose data is fully sealed.
    pub fn take_pending(&mut self) -> Vec<Record> {
        let ready: Vec<u64> =
            self.attr_dirty.iter().copied().filter(|ino| self.inodes.get(ino).is_some_and(|i| i.unsealed == 0)).collect();
        for ino in ready {
            self.clear_attr_dirty(ino);
            if self.inodes[&ino].attr != self.inodes[&ino].logged {
                let rec = self.inode_record(ino);
                self.log(rec);
            }
        }
        self.pending_bytes = 0;
        std::mem::take(&mut self.pending)
    }

    /// Puts records back in front of the pending list after a failed journal append.
    pub fn requeue(&mut self, mut recs: Vec<Record>) {
        self.pending_bytes += recs.iter().map(|r| r.encoded_len() as u64).sum::<u64>();
        recs.append(&mut self.pending);
        self.pending = recs;
    }

    /// The whole logged state as records (a checkpoint): inodes, then chunks, then links.
    pub fn snapshot(&self) -> Vec<Record> {
        let mut out = Vec::with_capacity(self.inodes.len() * 2);
        self.for_each_snapshot_record(|r| out.push(r));
        out
    }

    /// The checkpoint records of `snapshot`, encoded one at a time (no list of records is held:
    /// a full catalog's list would take more memory than the catalog).
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut e = format::Enc { buf: Vec::with_capacity(self.bytes as usize) };
        self.for_each_snapshot_record(|r| r.encode_into(&mut e));
        e.buf
    }

    fn for_each_snapshot_record(&self, mut f: impl FnMut(Record)) {
        let mut inos: Vec<u64> = self.inodes.keys().copied().collect();
        inos.sort_unstable();
        for ino in &inos {
            let i = &self.inodes[ino];
            f(Record::Inode { ino: *ino, file_id: i.file_id, attr: i.logged.clone(), target: i.target.clone() });
        }
        // Every chunk, also past the logged size: a chunk sealed for a write whose size is not
        // logged yet is journaled already, and the delta that logs the size will not repeat it.
        // Loading trims chunk maps to the final sizes.
        for ino in &inos {
            let i = &self.inodes[ino];
            for (index, chunk) in i.chunks() {
                f(Record::Chunk { ino: *ino, index, chunk });
            }
        }
        for ino in &inos {
            if let Some(d) = &self.inodes[ino].dir {
                for (_, name, child) in d.after(0) {
                    f(Record::Link { parent: *ino, name: name.to_vec(), ino: child });
                }
            }
        }
    }

    /// Every chunk of every inode: (inode, chunk index, where it is).
    pub fn all_chunks(&self) -> impl Iterator<Item = (u64, u64, ChunkRef)> + '_ {
        self.inodes.values().flat_map(|i| i.chunks().map(move |(k, c)| (i.ino, k, c)))
    }

    /// Every pack some chunk refers to, with the bytes it references there.
    pub fn referenced_packs(&self) -> HashMap<Id, u64> {
        let mut out = HashMap::new();
        for (_, _, c) in self.all_chunks() {
            *out.entry(c.pack).or_insert(0) += c.len as u64;
        }
        out
    }
}

fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > format::NAME_MAX {
        return Err(CatalogError::NameTooLong);
    }
    if !format::valid_name(name) {
        return Err(CatalogError::Invalid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the fuzz target format_records: an inode number at the end of the range made
    /// `next_ino` overflow; such a record is damage.
    #[test]
    fn inode_numbers_at_the_limits_are_damage() {
        let now = Time::default();
        let attr = Attr { kind: Kind::File, mode: 0o644, uid: 0, gid: 0, size: 0, atime: now, mtime: now, ctime: now };
        for ino in [0, u64::MAX] {
            let mut c = Catalog::new(4096);
            let r = c.apply(&Record::Inode { ino, file_id: [1; 16], attr: attr.clone(), target: Vec::new() });
            assert!(matches!(r, Err(CatalogError::Corrupt(_))), "{ino}: {r:?}");
        }
    }

    fn t(s: i64) -> Time {
        Time { secs: s, nanos: 0 }
    }

    fn fresh() -> Catalog {
        let mut c = Catalog::new(4096);
        for r in Catalog::root_records(0, 0, t(1)) {
            c.apply(&r).unwrap();
        }
        c
    }

    /// Replaying what a catalog logged must rebuild the same tree.
    fn replayed(c: &mut Catalog, base: &[Record]) -> Catalog {
        let mut all = base.to_vec();
        all.extend(c.take_pending());
        let mut r = Catalog::new(4096);
        for rec in &all {
            r.apply(rec).unwrap();
        }
        r.finish_load().unwrap();
        r
    }

    fn names(c: &Catalog, dir: u64) -> Vec<String> {
        c.dir(dir).unwrap().after(0).map(|(_, n, _)| String::from_utf8_lossy(n).into_owned()).collect()
    }

    #[test]
    fn create_lookup_unlink_replay() {
        let mut c = fresh();
        let base = Catalog::root_records(0, 0, t(1));
        let d = c.create(ROOT, b"base", Kind::Dir, 0o700, 26, 26, b"", t(2)).unwrap();
        let f = c.create(d, b"PG_VERSION", Kind::File, 0o600, 26, 26, b"", t(3)).unwrap();
        assert_eq!(c.create(d, b"PG_VERSION", Kind::File, 0o600, 0, 0, b"", t(3)), Err(CatalogError::Exists));
        c.note_write(f, 3, t(4)).unwrap();
        c.set_chunk(f, 0, ChunkRef { pack: [9; 16], offset: 0, len: 43, tag: [1; 16] }).unwrap();
        let s = c.create(ROOT, b"link", Kind::Symlink, 0o777, 0, 0, b"base/PG_VERSION", t(5)).unwrap();
        assert_eq!(c.lookup(ROOT, b"base").unwrap().nlink(), 2);
        assert_eq!(c.get(ROOT).unwrap().nlink(), 3);
        assert_eq!(c.path_of(f), "/base/PG_VERSION");
        let r = replayed(&mut c, &base);
        assert_eq!(r.get(f).unwrap().attr.size, 3);
        assert_eq!(r.get(f).unwrap().chunk(0).unwrap().len, 43);
        assert_eq!(r.get(s).unwrap().target, b"base/PG_VERSION");
        assert_eq!(names(&r, ROOT), vec!["base", "link"]);
        assert_eq!(c.rmdir(ROOT, b"base", t(6)), Err(CatalogError::NotEmpty));
        assert_eq!(c.unlink(ROOT, b"base", t(6)), Err(CatalogError::IsDir));
        c.unlink(d, b"PG_VERSION", t(6)).unwrap();
        assert!(c.get(f).is_err());
        c.rmdir(ROOT, b"base", t(7)).unwrap();
        assert_eq!(c.get(ROOT).unwrap().nlink(), 2);
    }

    /// Found by the namespace's model test: an entry created in a removed directory that was
    /// still open made its last release drop a non-empty directory (a panic). POSIX: ENOENT.
    #[test]
    fn a_removed_directory_takes_no_new_entries() {
        let mut c = fresh();
        let d = c.create(ROOT, b"d", Kind::Dir, 0o755, 0, 0, b"", t(1)).unwrap();
        let f = c.create(ROOT, b"f", Kind::File, 0o644, 0, 0, b"", t(1)).unwrap();
        c.open(d).unwrap();
        c.rmdir(ROOT, b"d", t(2)).unwrap();
        assert_eq!(c.create(d, b"x", Kind::File, 0o644, 0, 0, b"", t(3)), Err(CatalogError::NotFound));
        assert_eq!(c.link(f, d, b"x", t(3)), Err(CatalogError::NotFound));
        assert_eq!(c.rename(ROOT, b"f", d, b"x", false, t(3)), Err(CatalogError::NotFound));
        c.release(d);
        assert!(c.get(d).is_err());
    }

    #[test]
    fn rename_cases() {
        let mut c = fresh();
        let a = c.create(ROOT, b"a", Kind::Dir, 0o755, 0, 0, b"", t(1)).unwrap();
        let b = c.create(a, b"b", Kind::Dir, 0o755, 0, 0, b"", t(1)).unwrap();
        let f = c.create(ROOT, b"f", Kind::File, 0o644, 0, 0, b"", t(1)).unwrap();
        let g = c.create(ROOT, b"g", Kind::File, 0o644, 0, 0, b"", t(1)).unwrap();
        assert_eq!(c.rename(ROOT, b"a", b, b"x", false, t(2)), Err(CatalogError::Invalid));
        assert_eq!(c.rename(ROOT, b"a", a, b"x", false, t(2)), Err(CatalogError::Invalid));
        assert_eq!(c.rename(ROOT, b"f", ROOT, b"a", false, t(2)), Err(CatalogError::IsDir));
        assert_eq!(c.rename(ROOT, b"a", ROOT, b"f", false, t(2)), Err(CatalogError::NotDir));
        assert_eq!(c.rename(ROOT, b"f", ROOT, b"g", true, t(2)), Err(CatalogError::Exists));
        // Over an existing file: the old target disappears.
        c.rename(ROOT, b"f", ROOT, b"g", false, t(2)).unwrap();
        assert!(c.get(g).is_err());
        assert_eq!(c.lookup(ROOT, b"g").unwrap().ino, f);
        // A directory over an empty directory, across parents.
        let e = c.create(ROOT, b"e", Kind::Dir, 0o755, 0, 0, b"", t(3)).unwrap();
        c.rename(a, b"b", ROOT, b"e", false, t(4)).unwrap();
        assert!(c.get(e).is_err());
        assert_eq!(c.lookup(ROOT, b"e").unwrap().ino, b);
        assert_eq!(c.get(a).unwrap().nlink(), 2);
        let r = replayed(&mut c, &Catalog::root_records(0, 0, t(1)));
        assert_eq!(names(&r, ROOT), vec!["a", "g", "e"]);
        assert_eq!(r.path_of(b), "/e");
    }

    #[test]
    fn unlinked_open_file_lives_until_release_and_orphans_are_dropped() {
        let mut c = fresh();
        let f = c.create(ROOT, b"f", Kind::File, 0o644, 0, 0, b"", t(1)).unwrap();
        c.open(f).unwrap();
        c.unlink(ROOT, b"f", t(2)).unwrap();
        assert!(c.get(f).is_ok());
        // A crash now: replay finds an orphan and drops it.
        let mut copy_pending = c.take_pending();
        let mut r = Catalog::new(4096);
        let mut all = Catalog::root_records(0, 0, t(1));
        all.append(&mut copy_pending);
        for rec in &all {
            r.apply(rec).unwrap();
        }
        r.finish_load().unwrap();
        assert!(r.get(f).is_err());
        c.release(f);
        assert!(c.get(f).is_err());
        // A kernel reference keeps an unlinked inode alive until it is forgotten.
        let g = c.create(ROOT, b"g", Kind::File, 0o644, 0, 0, b"", t(3)).unwrap();
        c.remember(g);
        c.unlink(ROOT, b"g", t(4)).unwrap();
        assert!(c.get(g).is_ok());
        c.forget(g, 1);
        assert!(c.get(g).is_err());
    }

    #[test]
    fn hard_links_and_truncate() {
        let mut c = fresh();
        let f = c.create(ROOT, b"f", Kind::File, 0o644, 0, 0, b"", t(1)).unwrap();
        c.link(f, ROOT, b"h", t(2)).unwrap();
        assert_eq!(c.get(f).unwrap().nlink(), 2);
        c.note_write(f, 10000, t(3)).unwrap();
        for i in 0..3 {
            c.set_chunk(f, i, ChunkRef { pack: [1; 16], offset: i * 100, len: 100, tag: [0; 16] }).unwrap();
        }
        c.setattr(f, &SetAttr { size: Some(4096), ..Default::default() }, t(4)).unwrap();
        assert_eq!(c.get(f).unwrap().chunk_count(), 1);
        c.unlink(ROOT, b"f", t(5)).unwrap();
        assert_eq!(c.lookup(ROOT, b"h").unwrap().nlink(), 1);
        let r = replayed(&mut c, &Catalog::root_records(0, 0, t(1)));
        assert_eq!(r.lookup(ROOT, b"h").unwrap().attr.size, 4096);
        assert_eq!(r.lookup(ROOT, b"h").unwrap().chunk_count(), 1);
    }

    #[test]
    fn attrs_wait_for_sealed_data_and_snapshot_replays() {
        let mut c = fresh();
        let f = c.create(ROOT, b"f", Kind::File, 0o644, 0, 0, b"", t(1)).unwrap();
        c.take_pending();
        c.add_unsealed(f, 1);
        c.note_write(f, 5000, t(2)).unwrap();
        assert!(c.take_pending().is_empty(), "size must not be logged before its data is sealed");
        assert_eq!(c.snapshot().iter().filter(|r| matches!(r, Record::Inode { attr, .. } if attr.size == 5000)).count(), 0);
        c.add_unsealed(f, -1);
        let p = c.take_pending();
        assert!(matches!(&p[..], [Record::Inode { attr, .. }] if attr.size == 5000));
        let snap = c.snapshot();
        let mut r = Catalog::new(4096);
        for rec in &snap {
            r.apply(rec).unwrap();
        }
        r.finish_load().unwrap();
        assert_eq!(r.lookup(ROOT, b"f").unwrap().attr.size, 5000);
    }

    #[test]
    fn replay_rejects_inconsistent_records() {
        let mut c = fresh();
        assert!(matches!(c.apply(&Record::Link { parent: ROOT, name: b"x".to_vec(), ino: 77 }), Err(CatalogError::Corrupt(_))));
        assert!(matches!(c.apply(&Record::Unlink { parent: ROOT, name: b"x".to_vec() }), Err(CatalogError::Corrupt(_))));
        assert!(matches!(c.apply(&Record::Drop { ino: ROOT }), Err(CatalogError::Corrupt(_))));
        let mut empty = Catalog::new(4096);
        assert!(matches!(empty.finish_load(), Err(CatalogError::Corrupt(_))));
    }

    #[test]
    fn readdir_cookies_are_stable() {
        let mut c = fresh();
        for n in ["a", "b", "c", "d"] {
            c.create(ROOT, n.as_bytes(), Kind::File, 0o644, 0, 0, b"", t(1)).unwrap();
        }
        let first: Vec<_> = c.dir(ROOT).unwrap().after(0).take(2).map(|(k, _, _)| k).collect();
        c.unlink(ROOT, b"a", t(2)).unwrap();
        c.create(ROOT, b"e", Kind::File, 0o644, 0, 0, b"", t(2)).unwrap();
        let rest: Vec<_> = c.dir(ROOT).unwrap().after(first[1]).map(|(_, n, _)| n.to_vec()).collect();
        assert_eq!(rest, vec![b"c".to_vec(), b"d".to_vec(), b"e".to_vec()]);
    }

    fn small(max_inodes: u64, max_catalog_bytes: u64, max_pending_bytes: u64) -> Catalog {
        let limits = Limits { max_inodes, max_catalog_bytes, catalog_slack_bytes: 0, max_pending_bytes, max_journal_bytes: 1 << 20 };
        let mut c = Catalog::with_limits(4096, limits);
        for r in Catalog::root_records(0, 0, t(1)) {
            c.apply(&r).unwrap();
        }
        c
    }

    fn chunk(n: u64) -> ChunkRef {
        ChunkRef { pack: [n as u8; 16], offset: n * 100, len: 100, tag: [0; 16] }
    }

    /// `encoded_bytes` is what a checkpoint of the catalog encodes to, through every kind of
    /// change, and after a replay of what was logged.
    #[test]
    fn encoded_bytes_track_the_checkpoint() {
        let mut c = fresh();
        let check = |c: &Catalog| {
            assert_eq!(c.encoded_bytes(), format::encode_records(&c.snapshot()).len() as u64);
            assert_eq!(c.encode_snapshot(), format::encode_records(&c.snapshot()));
        };
        check(&c);
        let d = c.create(ROOT, b"dir", Kind::Dir, 0o755, 0, 0, b"", t(2)).unwrap();
        let f = c.create(d, b"file", Kind::File, 0o644, 0, 0, b"", t(2)).unwrap();
        c.create(ROOT, b"sym", Kind::Symlink, 0o777, 0, 0, &[b'x'; 300], t(2)).unwrap();
        check(&c);
        c.note_write(f, 3 * 4096, t(3)).unwrap();
        for i in 0..3 {
            c.set_chunk(f, i, chunk(i)).unwrap();
        }
        c.set_chunk(f, 1, chunk(9)).unwrap(); // a rewrite: no new record in a checkpoint
        check(&c);
        c.link(f, ROOT, b"hard-link-with-a-long-name", t(4)).unwrap();
        c.rename(ROOT, b"sym", d, b"s", false, t(4)).unwrap();
        check(&c);
        c.setattr(f, &SetAttr { size: Some(4096), ..Default::default() }, t(5)).unwrap();
        check(&c);
        let g = c.create(ROOT, b"g", Kind::File, 0o644, 0, 0, b"", t(6)).unwrap();
        c.note_write(g, 1, t(6)).unwrap();
        c.set_chunk(g, 0, chunk(1)).unwrap();
        c.rename(ROOT, b"g", d, b"file", false, t(6)).unwrap(); // replaces (drops) the first link of f
        c.unlink(ROOT, b"hard-link-with-a-long-name", t(7)).unwrap(); // and its last: f is dropped
        assert!(c.get(f).is_err());
        check(&c);
        let r = replayed(&mut c, &Catalog::root_records(0, 0, t(1)));
        assert_eq!(r.encoded_bytes(), c.encoded_bytes());
        check(&r);
    }

    /// Past its inode bound a catalog refuses to create (ENOSPC) and a replay refuses the
    /// records (damage); past its byte bound the same, a symlink target and a longer name
    /// counting as what they cost.
    #[test]
    fn inode_and_byte_bounds() {
        let mut c = small(4, 1 << 20, 1 << 20);
        for n in [b"a", b"b", b"c"] {
            c.create(ROOT, n, Kind::File, 0o644, 0, 0, b"", t(1)).unwrap();
        }
        assert_eq!(c.create(ROOT, b"d", Kind::Dir, 0o755, 0, 0, b"", t(1)), Err(CatalogError::NoSpace));
        assert_eq!(c.create(ROOT, b"a", Kind::File, 0o644, 0, 0, b"", t(1)), Err(CatalogError::Exists), "EEXIST first");
        // An unlinked inode still open counts until it is released.
        let a = c.lookup(ROOT, b"a").unwrap().ino;
        c.open(a).unwrap();
        c.unlink(ROOT, b"a", t(2)).unwrap();
        assert_eq!(c.create(ROOT, b"d", Kind::File, 0o644, 0, 0, b"", t(2)), Err(CatalogError::NoSpace));
        c.release(a);
        c.create(ROOT, b"d", Kind::File, 0o644, 0, 0, b"", t(2)).unwrap();
        // A replay of more inodes than the bound is damage.
        let mut r = small(4, 1 << 20, 1 << 20);
        let attr = c.get(ROOT).unwrap().attr.clone();
        for ino in 2..5 {
            r.replay(&Record::Inode { ino, file_id: [0; 16], attr: attr.clone(), target: Vec::new() }).unwrap();
        }
        let e = r.replay(&Record::Inode { ino: 9, file_id: [0; 16], attr, target: Vec::new() }).unwrap_err();
        assert!(matches!(&e, CatalogError::Corrupt(m) if m.contains("more than 4 inodes")), "{e:?}");

        // Bytes: root 84; a file costs 84 + 19 + name.
        let mut c = small(100, 84 + 2 * 104 + 220, 1 << 20);
        c.create(ROOT, b"a", Kind::File, 0o644, 0, 0, b"", t(1)).unwrap();
        c.create(ROOT, b"b", Kind::File, 0o644, 0, 0, b"", t(1)).unwrap();
        assert_eq!(c.create(ROOT, b"s", Kind::Symlink, 0o777, 0, 0, &[b'x'; 400], t(1)), Err(CatalogError::NoSpace));
        assert_eq!(c.rename(ROOT, b"a", ROOT, &[b'n'; 255], false, t(2)), Err(CatalogError::NoSpace));
        c.rename(ROOT, b"a", ROOT, &[b'n'; 200], false, t(2)).unwrap();
        let b = c.lookup(ROOT, b"b").unwrap().ino;
        assert_eq!(c.link(b, ROOT, &[b'l'; 200], t(3)), Err(CatalogError::NoSpace));
        assert_eq!(c.encoded_bytes(), 84 + 2 * 104 + 199);
        // Data: each chunk a write may make counts, buffered or sealed.
        let mut c = small(100, 84 + 104 + 10 * 61, 1 << 20);
        let b = c.create(ROOT, b"b", Kind::File, 0o644, 0, 0, b"", t(1)).unwrap();
        c.note_write(b, 1 << 20, t(1)).unwrap();
        let room = (c.limits().max_catalog_bytes - c.encoded_bytes()) / format::CHUNK_RECORD_LEN as u64;
        assert_eq!(room, 10);
        c.admit_data(room).unwrap();
        assert_eq!(c.admit_data(room + 1), Err(CatalogError::NoSpace));
        c.add_unsealed(b, 1);
        assert_eq!(c.admit_data(room), Err(CatalogError::NoSpace));
        c.set_chunk(b, 0, chunk(0)).unwrap();
        c.add_unsealed(b, -1);
        assert_eq!(c.admit_data(room), Err(CatalogError::NoSpace));
        c.admit_data(room - 1).unwrap();
        // A replay past the bound (plus its slack, here none) is damage.
        let mut r = small(100, 84 + 103, 1 << 20);
        let recs = c.snapshot();
        let e = recs.iter().try_for_each(|rec| r.replay(rec)).unwrap_err();
        assert!(matches!(&e, CatalogError::Corrupt(m) if m.contains("exceed")), "{e:?}");
    }

    /// Records not yet handed to the journal are bounded: past the bound, changes are refused
    /// (ENOSPC) until `take_pending` hands them out; a failed append puts them back, counted.
    #[test]
    fn pending_records_are_bounded() {
        let mut c = small(1000, 1 << 20, 2000);
        let mut made = 0;
        while c.create(ROOT, format!("f{made}").as_bytes(), Kind::File, 0o644, 0, 0, b"", t(1)).is_ok() {
            made += 1;
        }
        assert!(made > 5, "{made}");
        assert!(c.due_bytes() <= 2000, "{}", c.due_bytes());
        // setattr never refuses (the fs layer asks `admit_attr_change` before it starts): it
        // takes the records due past the bound, and then every change is refused.
        while c.due_bytes() <= 2000 {
            c.setattr(ROOT, &SetAttr { mode: Some(0o700), ..Default::default() }, t(2)).unwrap();
        }
        assert_eq!(c.create(ROOT, b"x", Kind::File, 0o644, 0, 0, b"", t(1)), Err(CatalogError::NoSpace));
        assert_eq!(c.unlink(ROOT, b"f0", t(2)), Err(CatalogError::NoSpace));
        assert_eq!(c.rename(ROOT, b"f0", ROOT, b"g", false, t(2)), Err(CatalogError::NoSpace));
        assert_eq!(c.admit_attr_change(ROOT), Err(CatalogError::NoSpace));
        let due = c.due_bytes();
        let out = c.take_pending();
        assert_eq!(out.iter().map(|r| r.encoded_len() as u64).sum::<u64>(), due, "due_bytes is what is handed out");
        assert_eq!((c.pending_bytes(), c.due_bytes()), (0, 0));
        c.unlink(ROOT, b"f0", t(2)).unwrap();
        let p = c.take_pending();
        let len: u64 = p.iter().map(|r| r.encoded_len() as u64).sum();
        c.requeue(p);
        assert_eq!(c.pending_bytes(), len);
    }
}
