//! Format 2's metadata items: the keys and values of the file-system tree (inodes, directory
//! entries by name and by cookie, chunk map entries), byte-exact as docs/FORMAT.md §F2 says.
//!
//! Every item of a vault lives in one B-tree (`btree`), keyed `ino ‖ type ‖ sub-key` with the
//! integers big-endian so that key order is (inode, type, sub-key order): an inode's item comes
//! first, then its directory entries by name, then by cookie, then its chunks by index. Values
//! are little-endian like the rest of the format. Decoders validate everything and never panic.

use crate::format::{self, Attr, ChunkRef, Dec, Enc, FormatError, Id, Kind, Result, Time, ID_LEN};

/// Item types, the byte after the inode number in a key.
pub const T_INODE: u8 = 1;
pub const T_DIRENT: u8 = 2;
pub const T_DIRINDEX: u8 = 3;
pub const T_CHUNK: u8 = 4;
/// Marker types, kept under inode number 0 (no inode has it), sub-key = the inode's number
/// (8 bytes, big-endian), empty value: an inode with no directory entry left that must be
/// dropped once nothing holds it (after a crash, when the vault is next opened); and a file
/// with chunks journaled past its logged size (trimmed to the size when the vault is next
/// opened, unless an attribute record trims it first).
pub const T_ORPHAN: u8 = 5;
pub const T_TAIL: u8 = 6;

/// Length of a content id (keyed BLAKE2b-256 of a chunk's plaintext).
pub const CHUNK_ID_LEN: usize = 32;
pub type ChunkId = [u8; CHUNK_ID_LEN];

pub use crate::format::{decode_loc, encode_loc, LOC_LEN};

/// Key of inode `ino`'s attributes.
pub fn inode_key(ino: u64) -> Vec<u8> {
    prefix(ino, T_INODE)
}

/// Key of the entry `name` of directory `dir`.
pub fn dirent_key(dir: u64, name: &[u8]) -> Vec<u8> {
    let mut k = prefix(dir, T_DIRENT);
    k.extend_from_slice(name);
    k
}

/// Key of the entry with readdir cookie `cookie` of directory `dir`.
pub fn dirindex_key(dir: u64, cookie: u64) -> Vec<u8> {
    let mut k = prefix(dir, T_DIRINDEX);
    k.extend_from_slice(&cookie.to_be_bytes());
    k
}

/// Key of chunk `index` of file `ino`.
pub fn chunk_key(ino: u64, index: u64) -> Vec<u8> {
    let mut k = prefix(ino, T_CHUNK);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// Key of the orphan marker of `ino`.
pub fn orphan_key(ino: u64) -> Vec<u8> {
    let mut k = prefix(0, T_ORPHAN);
    k.extend_from_slice(&ino.to_be_bytes());
    k
}

/// Key of the tail marker of `ino`.
pub fn tail_key(ino: u64) -> Vec<u8> {
    let mut k = prefix(0, T_TAIL);
    k.extend_from_slice(&ino.to_be_bytes());
    k
}

/// The first key of type `t` of inode `ino` (a scan of one type starts here and ends at
/// `prefix(ino, t + 1)`).
pub fn prefix(ino: u64, t: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + 8);
    k.extend_from_slice(&ino.to_be_bytes());
    k.push(t);
    k
}

/// A key taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key<'a> {
    Inode(u64),
    Dirent(u64, &'a [u8]),
    DirIndex(u64, u64),
    Chunk(u64, u64),
    Orphan(u64),
    Tail(u64),
}

/// Parses a tree key; anything but the four shapes above is refused.
pub fn parse_key(k: &[u8]) -> Result<Key<'_>> {
    if k.len() < 9 {
        return Err(FormatError::Truncated("item key"));
    }
    let ino = u64::from_be_bytes(k[..8].try_into().expect("8 bytes"));
    let rest = &k[9..];
    let be = |r: &[u8]| -> Result<u64> {
        Ok(u64::from_be_bytes(r.try_into().map_err(|_| FormatError::Invalid("item key of the wrong length".into()))?))
    };
    Ok(match k[8] {
        T_ORPHAN if ino == 0 => Key::Orphan(be(rest)?),
        T_TAIL if ino == 0 => Key::Tail(be(rest)?),
        _ if ino == 0 => return Err(FormatError::Invalid("an item of inode 0 that is no marker".into())),
        T_INODE if rest.is_empty() => Key::Inode(ino),
        T_DIRENT if format::valid_name(rest) => Key::Dirent(ino, rest),
        T_DIRINDEX => Key::DirIndex(ino, be(rest)?),
        T_CHUNK => Key::Chunk(ino, be(rest)?),
        t => return Err(FormatError::Invalid(format!("item key of type {t} with {} more bytes", rest.len()))),
    })
}

/// An inode's attributes and bookkeeping, as its `T_INODE` item stores them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InodeItem {
    pub file_id: Id,
    pub attr: Attr,
    /// Directory entries naming this inode (at most 1 for a directory).
    pub links: u32,
    /// Subdirectories of a directory (its nlink is 2 + this).
    pub subdirs: u32,
    /// Entries of a directory.
    pub entries: u64,
    /// The cookie the next entry of a directory gets (`FIRST_COOKIE` when it is new).
    pub next_cookie: u64,
    /// One (parent, name) leading here, for messages and the rename loop check; 0 and empty
    /// once the last such entry is gone.
    pub parent: u64,
    pub name: Vec<u8>,
    /// Symlink target, or a device node's 4-byte device number.
    pub target: Vec<u8>,
}

impl InodeItem {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        let a = &self.attr;
        e.raw(&self.file_id).u8(a.kind as u8).u32(a.mode).u32(a.uid).u32(a.gid).u64(a.size);
        format::enc_time(&mut e, a.atime);
        format::enc_time(&mut e, a.mtime);
        format::enc_time(&mut e, a.ctime);
        e.u32(self.links).u32(self.subdirs).u64(self.entries).u64(self.next_cookie).u64(self.parent);
        e.bytes16(&self.name).bytes16(&self.target);
        e.buf
    }

    pub fn decode(v: &[u8]) -> Result<Self> {
        let mut d = Dec::new(v);
        let w = "inode item";
        let file_id = d.array(w)?;
        let kind = Kind::from_u8(d.u8(w)?)?;
        let mode = d.u32(w)?;
        if mode & !0o7777 != 0 {
            return Err(FormatError::Invalid(format!("mode {mode:o} has non-permission bits")));
        }
        let uid = d.u32(w)?;
        let gid = d.u32(w)?;
        let size = d.u64(w)?;
        let atime = format::dec_time(&mut d, w)?;
        let mtime = format::dec_time(&mut d, w)?;
        let ctime = format::dec_time(&mut d, w)?;
        let links = d.u32(w)?;
        let subdirs = d.u32(w)?;
        let entries = d.u64(w)?;
        let next_cookie = d.u64(w)?;
        let parent = d.u64(w)?;
        let name = d.bytes16(w)?.to_vec();
        let target = d.bytes16(w)?.to_vec();
        if d.remaining() != 0 {
            return Err(FormatError::Invalid("bytes after an inode item".into()));
        }
        if (parent == 0) != name.is_empty() || (!name.is_empty() && !format::valid_name(&name)) {
            return Err(FormatError::Invalid("inode item with a malformed parent entry".into()));
        }
        if target.len() > format::TARGET_MAX {
            return Err(FormatError::Invalid("symlink target too long".into()));
        }
        if kind.is_device() && format::rdev_of(&target).is_none() {
            return Err(FormatError::Invalid("device node without a 4-byte device number".into()));
        }
        let is_dir = kind == Kind::Dir;
        if !is_dir && (subdirs != 0 || entries != 0 || next_cookie != 0) {
            return Err(FormatError::Invalid("directory counts on a non-directory".into()));
        }
        if is_dir && (links > 1 || next_cookie < crate::catalog::FIRST_COOKIE || entries < subdirs as u64) {
            return Err(FormatError::Invalid("directory item with impossible counts".into()));
        }
        if kind != Kind::File && file_id != [0; ID_LEN] {
            return Err(FormatError::Invalid("a file id on a non-file".into()));
        }
        let attr = Attr { kind, mode, uid, gid, size, atime, mtime, ctime };
        Ok(InodeItem { file_id, attr, links, subdirs, entries, next_cookie, parent, name, target })
    }
}

/// A `T_DIRENT` value: the inode an entry names and its readdir cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dirent {
    pub ino: u64,
    pub cookie: u64,
}

impl Dirent {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.u64(self.ino).u64(self.cookie);
        e.buf
    }
    pub fn decode(v: &[u8]) -> Result<Self> {
        let mut d = Dec::new(v);
        let ino = d.u64("directory entry")?;
        let cookie = d.u64("directory entry")?;
        if d.remaining() != 0 || ino == 0 || cookie < crate::catalog::FIRST_COOKIE {
            return Err(FormatError::Invalid("malformed directory entry".into()));
        }
        Ok(Dirent { ino, cookie })
    }
}

/// A `T_DIRINDEX` value: the inode and name of the entry with that cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirIndex {
    pub ino: u64,
    pub name: Vec<u8>,
}

impl DirIndex {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.u64(self.ino).bytes16(&self.name);
        e.buf
    }
    pub fn decode(v: &[u8]) -> Result<Self> {
        let mut d = Dec::new(v);
        let ino = d.u64("directory index entry")?;
        let name = d.bytes16("directory index entry")?.to_vec();
        if d.remaining() != 0 || ino == 0 || !format::valid_name(&name) {
            return Err(FormatError::Invalid("malformed directory index entry".into()));
        }
        Ok(DirIndex { ino, name })
    }
}

/// A `T_CHUNK` value: the chunk's content id and where it is sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkItem {
    pub id: ChunkId,
    pub loc: ChunkRef,
}

impl ChunkItem {
    pub const LEN: usize = CHUNK_ID_LEN + LOC_LEN;

    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.raw(&self.id);
        encode_loc(&mut e, &self.loc);
        e.buf
    }
    pub fn decode(v: &[u8]) -> Result<Self> {
        let mut d = Dec::new(v);
        let id = d.array("chunk item")?;
        let loc = decode_loc(&mut d, "chunk item")?;
        if d.remaining() != 0 {
            return Err(FormatError::Invalid("bytes after a chunk item".into()));
        }
        Ok(ChunkItem { id, loc })
    }
}

/// Decodes any item by its key, for checkers and the fuzz target: Ok if key and value are
/// well-formed and agree.
pub fn check_item(k: &[u8], v: &[u8]) -> Result<()> {
    match parse_key(k)? {
        Key::Inode(ino) => {
            if ino == 0 || ino == u64::MAX {
                return Err(FormatError::Invalid(format!("inode number {ino} out of range")));
            }
            InodeItem::decode(v).map(|_| ())
        }
        Key::Dirent(..) => Dirent::decode(v).map(|_| ()),
        Key::DirIndex(_, cookie) => {
            if cookie < crate::catalog::FIRST_COOKIE {
                return Err(FormatError::Invalid("directory index entry with a reserved cookie".into()));
            }
            DirIndex::decode(v).map(|_| ())
        }
        Key::Chunk(..) => ChunkItem::decode(v).map(|_| ()),
        Key::Orphan(ino) | Key::Tail(ino) => {
            if ino == 0 || !v.is_empty() {
                return Err(FormatError::Invalid("malformed marker".into()));
            }
            Ok(())
        }
    }
}

/// A time for tests and fixtures.
pub const EPOCH: Time = Time { secs: 0, nanos: 0 };

#[cfg(test)]
mod tests {
    use super::*;

    fn file_item() -> InodeItem {
        InodeItem {
            file_id: [7; 16],
            attr: Attr { kind: Kind::File, mode: 0o640, uid: 1, gid: 2, size: 3, atime: EPOCH, mtime: EPOCH, ctime: Time { secs: -5, nanos: 9 } },
            links: 2,
            subdirs: 0,
            entries: 0,
            next_cookie: 0,
            parent: 1,
            name: b"f".to_vec(),
            target: Vec::new(),
        }
    }

    #[test]
    fn items_round_trip_and_keys_sort_by_inode_type_and_subkey() {
        let i = file_item();
        assert_eq!(InodeItem::decode(&i.encode()).unwrap(), i);
        let de = Dirent { ino: 9, cookie: 3 };
        assert_eq!(Dirent::decode(&de.encode()).unwrap(), de);
        let di = DirIndex { ino: 9, name: b"x".to_vec() };
        assert_eq!(DirIndex::decode(&di.encode()).unwrap(), di);
        let c = ChunkItem { id: [1; 32], loc: ChunkRef { pack: [2; 16], offset: 3, len: 40, tag: [4; 16] } };
        assert_eq!(c.encode().len(), ChunkItem::LEN);
        assert_eq!(ChunkItem::decode(&c.encode()).unwrap(), c);
        let mut keys = vec![chunk_key(2, 1), chunk_key(1, 256), inode_key(2), dirent_key(1, b"b"), dirindex_key(1, 3), inode_key(1), chunk_key(1, 2)];
        keys.sort();
        assert_eq!(keys, vec![inode_key(1), dirent_key(1, b"b"), dirindex_key(1, 3), chunk_key(1, 2), chunk_key(1, 256), inode_key(2), chunk_key(2, 1)]);
        assert_eq!(parse_key(&dirent_key(5, b"n")).unwrap(), Key::Dirent(5, b"n"));
        assert_eq!(parse_key(&chunk_key(5, 77)).unwrap(), Key::Chunk(5, 77));
    }

    #[test]
    fn malformed_items_are_refused() {
        let good = file_item().encode();
        for cut in 0..good.len() {
            assert!(InodeItem::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(InodeItem::decode(&long).is_err());
        let mut dir = file_item();
        dir.attr.kind = Kind::Dir;
        assert!(InodeItem::decode(&dir.encode()).is_err(), "a directory with links and a file id");
        dir.file_id = [0; 16];
        dir.links = 1;
        dir.next_cookie = crate::catalog::FIRST_COOKIE;
        dir.subdirs = 2;
        dir.entries = 1;
        assert!(InodeItem::decode(&dir.encode()).is_err(), "more subdirectories than entries");
        dir.entries = 2;
        InodeItem::decode(&dir.encode()).unwrap();
        let mut orphan_named = file_item();
        orphan_named.parent = 0;
        assert!(InodeItem::decode(&orphan_named.encode()).is_err());
        assert!(parse_key(&[0; 8]).is_err());
        assert!(parse_key(&[0, 0, 0, 0, 0, 0, 0, 1, 9]).is_err());
        assert!(parse_key(&dirent_key(1, b"a/b")).is_err());
        assert!(parse_key(&[&chunk_key(1, 1)[..], &[0]].concat()).is_err());
        assert!(Dirent::decode(&Dirent { ino: 1, cookie: 1 }.encode()).is_err(), "cookies 1 and 2 are . and ..");
        assert!(check_item(&inode_key(0), &good).is_err());
        let c = ChunkItem { id: [1; 32], loc: ChunkRef { pack: [2; 16], offset: u64::MAX, len: 40, tag: [4; 16] } };
        assert!(ChunkItem::decode(&c.encode()).is_err(), "a location past the end of any pack");
    }
}
