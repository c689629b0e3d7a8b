//! The chunk codec: compress → pad → seal one chunk, and open → check → unpad → decompress it;
//! the one place that knows a chunk's byte contract (FORMAT.md §6), used by every reader and
//! writer of chunks (the file system, gc, rekey, verify, export, salvage).

use std::fmt;
use std::sync::Mutex;

use crate::crypto::{self, Secret32};
use crate::format::{self, ChunkRef, Id, TAG_LEN, VaultHeader};

/// How new chunks are compressed (reading needs no setting: each chunk says how it was stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Stored as they are (still padded).
    Off,
    /// zstd at this level (1..=19); a chunk it does not shrink is stored as it is.
    Zstd(i32),
}

impl Compression {
    /// The default, chosen by measurement (docs/PERFORMANCE.md, "Compression").
    pub const DEFAULT: Compression = Compression::Zstd(1);
    pub const MAX_LEVEL: i32 = 19;

    /// `off` or a zstd level 1..=19.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "off" | "none" | "0" => Ok(Compression::Off),
            l => match l.parse::<i32>() {
                Ok(n) if (1..=Self::MAX_LEVEL).contains(&n) => Ok(Compression::Zstd(n)),
                _ => Err(format!("compression must be `off` or a zstd level from 1 to {}, not {l:?}", Self::MAX_LEVEL)),
            },
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::Off => write!(f, "off"),
            Compression::Zstd(l) => write!(f, "zstd level {l}"),
        }
    }
}

/// Why a chunk did not open. Each names where the chunk was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkError {
    /// The bytes read are not as long as the metadata records.
    Length { at: String, have: usize, want: u32 },
    /// Its tag is not the one the metadata records: another chunk put in its place.
    Replaced { at: String },
    /// It failed authentication: modified, or moved from another file or position.
    Forged { at: String },
    /// It authenticated but its body breaks the encoding (only a writer holding the key, or
    /// a bug, can make one).
    Malformed { at: String, why: &'static str },
    /// A content-named chunk whose plaintext is not what its id names (only a writer holding
    /// the data key, or a bug, can make one).
    WrongContent { at: String },
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkError::Length { at, have, want } => write!(f, "{at}: {have} bytes where the metadata records {want}"),
            ChunkError::Replaced { at } => {
                write!(f, "{at}: the chunk is not the one the metadata records (replaced or replayed)")
            }
            ChunkError::Forged { at } => write!(f, "{at}: failed authentication (the chunk was modified or moved)"),
            ChunkError::Malformed { at, why } => write!(f, "{at}: the chunk's body is malformed ({why})"),
            ChunkError::WrongContent { at } => write!(f, "{at}: the chunk's plaintext does not match its content id"),
        }
    }
}

impl std::error::Error for ChunkError {}

fn at(c: &ChunkRef) -> String {
    format!("pack {} offset {}", format::hex(&c.pack), c.offset)
}

/// Body codec byte: stored as it is.
pub const BODY_RAW: u8 = 0;
/// Body codec byte: one zstd frame.
pub const BODY_ZSTD: u8 = 1;
/// Codec byte and u32 content length before the content.
pub const BODY_HEADER: usize = 5;

/// Padmé (Nikitin et al., PETS 2019): `len` rounded up so that only O(log log len) bits of it
/// remain; at most 12% more, about 3% for a 64 KiB chunk.
pub fn padme(len: u64) -> u64 {
    if len < 2 {
        return len;
    }
    let e = 63 - u64::from(len.leading_zeros()); // floor(log2 len)
    let s = 64 - u64::from(e.leading_zeros()); // floor(log2 e) + 1
    let mask = (1u64 << (e - s)) - 1;
    (len + mask) & !mask
}

/// Encodes a chunk's plaintext as the body that is sealed: codec byte ‖ u32 length ‖ content
/// ‖ zero padding to `padme`. `compressed` is the zstd frame of `plain`, when one was made.
fn encode_body(plain: &[u8], compressed: Option<&[u8]>, out: &mut Vec<u8>) {
    let (codec, content) = match compressed {
        Some(z) if z.len() < plain.len() => (BODY_ZSTD, z),
        _ => (BODY_RAW, plain),
    };
    let used = BODY_HEADER + content.len();
    out.reserve(padme(used as u64) as usize);
    out.push(codec);
    out.extend_from_slice(&(content.len() as u32).to_le_bytes());
    out.extend_from_slice(content);
    out.resize(out.len() + padme(used as u64) as usize - used, 0);
}

/// The content of an opened body and how it is stored, after every check of the encoding:
/// a known codec, a length inside the body, zero padding of exactly the Padmé length
/// (pub for the fuzz target `chunk_body`).
#[doc(hidden)]
pub fn parse_body(body: &[u8]) -> Result<(u8, &[u8]), &'static str> {
    if body.len() < BODY_HEADER {
        return Err("shorter than its header");
    }
    let codec = body[0];
    if codec != BODY_RAW && codec != BODY_ZSTD {
        return Err("unknown codec");
    }
    let n = u32::from_le_bytes(body[1..5].try_into().expect("4 bytes")) as usize;
    let used = BODY_HEADER.checked_add(n).filter(|u| *u <= body.len()).ok_or("length past its end")?;
    if padme(used as u64) != body.len() as u64 {
        return Err("padding of the wrong length");
    }
    if body[used..].iter().any(|b| *b != 0) {
        return Err("padding that is not zero");
    }
    Ok((codec, &body[BODY_HEADER..used]))
}

/// Decodes an opened body into at most `max` bytes of plaintext (pub for the fuzz target).
#[doc(hidden)]
pub fn decode_body(body: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), &'static str> {
    let mut d = zstd::bulk::Decompressor::new().map_err(|_| "no zstd context")?;
    decode_with(body, max, out, &mut d)
}

fn decode_with(body: &[u8], max: usize, out: &mut Vec<u8>, d: &mut zstd::bulk::Decompressor<'static>) -> Result<(), &'static str> {
    out.clear();
    let (codec, content) = parse_body(body)?;
    match codec {
        BODY_RAW if content.len() > max => Err("longer than a chunk"),
        BODY_RAW => {
            out.extend_from_slice(content);
            Ok(())
        }
        _ => {
            // Bounded: a frame that claims or produces more than a chunk is refused without
            // allocating past `max`.
            out.reserve(max);
            match d.decompress_to_buffer(content, out) {
                Ok(n) if n <= max => Ok(()),
                _ => {
                    crypto::wipe(out);
                    Err("not a zstd frame of at most one chunk")
                }
            }
        }
    }
}

/// Runs `f` with a zstd context from `pool` (made by `make` when none is free) and puts it back:
/// contexts are reused across chunks, one per sealing or reading thread at most.
fn pooled<T, R>(pool: &Mutex<Vec<T>>, make: impl FnOnce() -> std::io::Result<T>, f: impl FnOnce(&mut T) -> R) -> std::io::Result<R> {
    let free = pool.lock().unwrap().pop();
    let mut ctx = match free {
        Some(c) => c,
        None => make()?,
    };
    let r = f(&mut ctx);
    pool.lock().unwrap().push(ctx);
    Ok(r)
}

/// What a sealed body is bound to (its AAD) and how large its plaintext may be.
#[derive(Clone, Copy)]
pub enum Place<'a> {
    /// Format 1: chunk `index` of the file with `file_id`.
    File { file_id: &'a Id, index: u64 },
    /// Format 2: the chunk with this content id (checked against the plaintext on opening).
    Content(&'a [u8; 32]),
    /// Format 2: a metadata tree node (plaintext up to `btree::MAX_NODE`).
    Node,
}

/// Seals and opens the chunks (or, built with the metadata subkey, the tree nodes) of one
/// vault.
pub struct ChunkCodec {
    header: VaultHeader,
    key: Secret32,
    /// Format 2's content id key (`content_id`), when the codec names chunks by content.
    id_key: Option<Secret32>,
    /// Whether chunk bodies are encoded (vault header flag `FLAG_CHUNK_CODEC`); format 1
    /// vaults made before it seal the plaintext itself.
    encoded: bool,
    compression: Compression,
    /// zstd contexts, reused across chunks (one per sealing or reading thread at most).
    compressors: Mutex<Vec<zstd::bulk::Compressor<'static>>>,
    decompressors: Mutex<Vec<zstd::bulk::Decompressor<'static>>>,
}

impl ChunkCodec {
    pub fn new(header: &VaultHeader, key: Secret32, compression: Compression) -> Self {
        let encoded = header.flags & format::FLAG_CHUNK_CODEC != 0;
        Self {
            header: *header,
            key,
            id_key: None,
            encoded,
            compression,
            compressors: Mutex::new(Vec::new()),
            decompressors: Mutex::new(Vec::new()),
        }
    }

    /// This codec, naming chunks by content with `id_key` (format 2).
    pub fn with_id_key(mut self, id_key: Secret32) -> Self {
        self.id_key = Some(id_key);
        self
    }

    /// The content id of a chunk's plaintext: BLAKE2b-256 keyed with the id key.
    ///
    /// # Panics
    /// If the codec has no id key (a format 1 vault's): a caller bug.
    pub fn content_id(&self, plain: &[u8]) -> [u8; 32] {
        crypto::mac32(self.id_key.as_ref().expect("content ids need a codec with an id key"), plain)
    }

    fn aad(&self, place: Place<'_>) -> Vec<u8> {
        match place {
            Place::File { file_id, index } => format::chunk_aad(&self.header, file_id, index),
            Place::Content(id) => format::content_aad(&self.header, id),
            Place::Node => format::node_aad(&self.header),
        }
    }

    fn max_plain_at(&self, place: Place<'_>) -> usize {
        match place {
            Place::Node => crate::btree::MAX_NODE,
            _ => self.max_plain(),
        }
    }

    pub fn compression(&self) -> Compression {
        if self.encoded { self.compression } else { Compression::Off }
    }

    /// The largest chunk plaintext.
    fn max_plain(&self) -> usize {
        self.header.chunk_size as usize
    }

    fn compress(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let Compression::Zstd(level) = self.compression else { return None };
        let mut z = Vec::with_capacity(plain.len());
        // A frame no shorter than the plaintext is useless: stop there (the buffer is full).
        let made = pooled(&self.compressors, || zstd::bulk::Compressor::new(level), |c| c.compress_to_buffer(plain, &mut z)).ok()?;
        made.is_ok().then_some(z)
    }

    /// Seals chunk `index` of file `file_id` into `out` (cleared); returns its tag.
    pub fn seal(&self, file_id: &Id, index: u64, plain: &[u8], out: &mut Vec<u8>) -> [u8; TAG_LEN] {
        self.seal_at(Place::File { file_id, index }, plain, out)
    }

    /// Seals `plain` bound to `place` into `out` (cleared); returns its tag.
    pub fn seal_at(&self, place: Place<'_>, plain: &[u8], out: &mut Vec<u8>) -> [u8; TAG_LEN] {
        debug_assert!(plain.len() <= self.max_plain_at(place));
        out.clear();
        let aad = self.aad(place);
        if !self.encoded {
            return crypto::seal_into(&self.key, &aad, plain, out);
        }
        let mut body = Vec::new();
        let compressed = self.compress(plain);
        encode_body(plain, compressed.as_deref(), &mut body);
        let tag = crypto::seal_into(&self.key, &aad, &body, out);
        crypto::wipe(&mut body);
        if let Some(mut z) = compressed {
            crypto::wipe(&mut z);
        }
        tag
    }

    /// Checks a sealed chunk against what the metadata records for it (`c`), opens it and
    /// decodes its plaintext into `out`.
    pub fn open(&self, file_id: &Id, index: u64, c: &ChunkRef, sealed: &[u8], out: &mut Vec<u8>) -> Result<(), ChunkError> {
        self.open_at(Place::File { file_id, index }, c, sealed, out)
    }

    /// `open` for a body bound to `place`; a content-named chunk must also hash to its id.
    pub fn open_at(&self, place: Place<'_>, c: &ChunkRef, sealed: &[u8], out: &mut Vec<u8>) -> Result<(), ChunkError> {
        out.clear();
        let r = self.decode_at(place, c, sealed, out).and_then(|()| match place {
            Place::Content(id) if !crypto::ct_eq(&self.content_id(out), id) => Err(ChunkError::WrongContent { at: at(c) }),
            _ => Ok(()),
        });
        if r.is_err() {
            crypto::wipe(out);
            out.clear();
        }
        r
    }

    /// Authenticates the body and decodes its plaintext into `out` (bounded by `place`).
    fn decode_at(&self, place: Place<'_>, c: &ChunkRef, sealed: &[u8], out: &mut Vec<u8>) -> Result<(), ChunkError> {
        let max = self.max_plain_at(place);
        if !self.encoded {
            self.open_body(place, c, sealed, out)?;
            if out.len() > max {
                return Err(ChunkError::Malformed { at: at(c), why: "longer than a chunk" });
            }
            return Ok(());
        }
        let mut body = Vec::with_capacity(sealed.len());
        let r = self.open_body(place, c, sealed, &mut body).and_then(|()| {
            pooled(&self.decompressors, zstd::bulk::Decompressor::new, |d| decode_with(&body, max, out, d))
                .map_err(|_| ChunkError::Malformed { at: at(c), why: "no zstd context" })?
                .map_err(|why| ChunkError::Malformed { at: at(c), why })
        });
        crypto::wipe(&mut body);
        r
    }

    /// The AEAD layer alone: length and tag against the metadata, then authentication.
    fn open_body(&self, place: Place<'_>, c: &ChunkRef, sealed: &[u8], out: &mut Vec<u8>) -> Result<(), ChunkError> {
        if sealed.len() != c.len as usize || sealed.len() < format::SEAL_OVERHEAD {
            return Err(ChunkError::Length { at: at(c), have: sealed.len(), want: c.len });
        }
        if !crypto::ct_eq(&sealed[sealed.len() - TAG_LEN..], &c.tag) {
            return Err(ChunkError::Replaced { at: at(c) });
        }
        crypto::open_into(&self.key, &self.aad(place), sealed, out).map_err(|_| ChunkError::Forged { at: at(c) })
    }

    /// Authenticates a sealed chunk and checks its encoding, keeping no plaintext.
    pub fn authenticate(&self, file_id: &Id, index: u64, c: &ChunkRef, sealed: &[u8]) -> Result<(), ChunkError> {
        let mut plain = Vec::new();
        let r = self.open(file_id, index, c, sealed, &mut plain);
        crypto::wipe(&mut plain);
        r
    }

    /// Re-seals under this codec's key a chunk that `old` sealed (rekey): the body is opened
    /// and sealed again as it is, compressed or not. Returns the new tag; `out` is cleared.
    pub fn reseal_from(
        &self,
        old: &ChunkCodec,
        file_id: &Id,
        index: u64,
        c: &ChunkRef,
        sealed: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<[u8; TAG_LEN], ChunkError> {
        let mut body = Vec::with_capacity(sealed.len());
        let r = old.open_body(Place::File { file_id, index }, c, sealed, &mut body).and_then(|()| {
            if old.encoded {
                parse_body(&body).map_err(|why| ChunkError::Malformed { at: at(c), why })?;
            }
            out.clear();
            Ok(crypto::seal_into(&self.key, &format::chunk_aad(&self.header, file_id, index), &body, out))
        });
        crypto::wipe(&mut body);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(flags: u32) -> VaultHeader {
        VaultHeader { vault_id: [5; 16], aead: format::AEAD_XCHACHA20POLY1305, chunk_size: 65536, flags }
    }

    fn chunk_ref(sealed: &[u8], tag: [u8; TAG_LEN]) -> ChunkRef {
        ChunkRef { pack: [1; 16], offset: 0, len: sealed.len() as u32, tag }
    }

    /// Format 2: a chunk named by its content opens only under that id and only to that
    /// plaintext; nodes open as nodes only, up to 64 KiB.
    #[test]
    fn content_named_chunks_and_nodes_are_bound_to_what_they_are() {
        let key = || Secret32::from_bytes([7; 32]);
        let codec = ChunkCodec::new(&header(format::FLAG_CHUNK_CODEC), key(), Compression::Zstd(1)).with_id_key(Secret32::from_bytes([8; 32]));
        let plain = b"a page of a table ".repeat(100);
        let id = codec.content_id(&plain);
        assert_ne!(id, crypto::hash32(&plain), "ids are keyed: no one without the key can test for a plaintext");
        let other_key = ChunkCodec::new(&header(format::FLAG_CHUNK_CODEC), key(), Compression::Zstd(1)).with_id_key(Secret32::from_bytes([9; 32]));
        assert_ne!(other_key.content_id(&plain), id, "ids of two vaults are unrelated");
        let mut sealed = Vec::new();
        let tag = codec.seal_at(Place::Content(&id), &plain, &mut sealed);
        let r = chunk_ref(&sealed, tag);
        let mut out = Vec::new();
        codec.open_at(Place::Content(&id), &r, &sealed, &mut out).unwrap();
        assert_eq!(out, plain);
        let other = codec.content_id(b"another page");
        assert!(matches!(codec.open_at(Place::Content(&other), &r, &sealed, &mut out), Err(ChunkError::Forged { .. })));
        assert!(matches!(codec.open_at(Place::File { file_id: &[0; 16], index: 0 }, &r, &sealed, &mut out), Err(ChunkError::Forged { .. })));
        assert!(matches!(codec.open_at(Place::Node, &r, &sealed, &mut out), Err(ChunkError::Forged { .. })));
        // Sealed (by a holder of the data key) under an id that is not its content's.
        let tag = codec.seal_at(Place::Content(&other), &plain, &mut sealed);
        let r = chunk_ref(&sealed, tag);
        assert!(matches!(codec.open_at(Place::Content(&other), &r, &sealed, &mut out), Err(ChunkError::WrongContent { .. })));
        assert!(out.is_empty(), "the plaintext is wiped, not handed out");
        // The id is checked whatever the body encoding (a vault without the codec flag too).
        let plain_codec = ChunkCodec::new(&header(0), key(), Compression::Off).with_id_key(Secret32::from_bytes([8; 32]));
        let tag = plain_codec.seal_at(Place::Content(&other), &plain, &mut sealed);
        let r = chunk_ref(&sealed, tag);
        assert!(matches!(plain_codec.open_at(Place::Content(&other), &r, &sealed, &mut out), Err(ChunkError::WrongContent { .. })));
        assert!(out.is_empty());
        // A node larger than a chunk (64 KiB against a 4 KiB chunk vault).
        let small = VaultHeader { chunk_size: 4096, ..header(format::FLAG_CHUNK_CODEC) };
        let nodes = ChunkCodec::new(&small, key(), Compression::Zstd(1));
        let mut node = vec![0u8; crate::btree::MAX_NODE];
        crypto::random_bytes(&mut node);
        let tag = nodes.seal_at(Place::Node, &node, &mut sealed);
        nodes.open_at(Place::Node, &chunk_ref(&sealed, tag), &sealed, &mut out).unwrap();
        assert_eq!(out, node);
        let tag = nodes.seal_at(Place::Node, &node[..5000], &mut sealed);
        let mut as_chunk = Vec::new();
        assert!(nodes.open_at(Place::File { file_id: &[0; 16], index: 0 }, &chunk_ref(&sealed, tag), &sealed, &mut as_chunk).is_err());
    }

    #[test]
    fn padme_leaks_few_bits_and_costs_little() {
        assert_eq!((0..5).map(padme).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        assert_eq!(padme(65541), 67584);
        for l in [5u64, 100, 1000, 4097, 30000, 65541, 1 << 20, (1 << 20) + 1] {
            let p = padme(l);
            assert!(p >= l && (p - l) * 100 <= l * 12, "{l} -> {p}");
            assert_eq!(padme(p), p, "padded lengths are fixed points");
        }
    }

    #[test]
    fn compressible_chunks_shrink_incompressible_ones_stay_raw_and_all_round_trip() {
        let codec = ChunkCodec::new(&header(format::FLAG_CHUNK_CODEC), Secret32::from_bytes([7; 32]), Compression::Zstd(1));
        let text: Vec<u8> = b"INSERT INTO pgbench_accounts VALUES (1, 1, 0, '');\n".repeat(1300)[..65536].to_vec();
        let mut noise = vec![0u8; 65536];
        crypto::random_bytes(&mut noise);
        for (plain, compressible) in [(&text[..], true), (&noise[..], false), (&text[..100], true), (&b"x"[..], false)] {
            let mut sealed = Vec::new();
            let tag = codec.seal(&[2; 16], 9, plain, &mut sealed);
            let c = chunk_ref(&sealed, tag);
            if compressible {
                let body = sealed.len() - format::SEAL_OVERHEAD;
                assert!((body as u64) < padme((BODY_HEADER + plain.len()) as u64), "{} -> {}", plain.len(), sealed.len());
                if plain.len() == 65536 {
                    assert!(body < plain.len() / 10, "65536 -> {body}");
                }
            } else {
                let body = sealed.len() - format::SEAL_OVERHEAD;
                assert_eq!(body as u64, padme((BODY_HEADER + plain.len()) as u64));
            }
            let mut out = Vec::new();
            codec.open(&[2; 16], 9, &c, &sealed, &mut out).unwrap();
            assert_eq!(out, plain);
            // Another position or file: refused.
            assert!(matches!(codec.open(&[2; 16], 10, &c, &sealed, &mut out), Err(ChunkError::Forged { .. })));
            let mut cut = sealed.clone();
            cut.pop();
            assert!(matches!(codec.open(&[2; 16], 9, &c, &cut, &mut out), Err(ChunkError::Length { .. })));
        }
        // Off: stored raw, padded.
        let off = ChunkCodec::new(&header(format::FLAG_CHUNK_CODEC), Secret32::from_bytes([7; 32]), Compression::Off);
        let mut sealed = Vec::new();
        off.seal(&[2; 16], 0, &text, &mut sealed);
        assert_eq!((sealed.len() - format::SEAL_OVERHEAD) as u64, padme((BODY_HEADER + text.len()) as u64));
    }

    #[test]
    fn a_vault_without_the_codec_flag_seals_the_plaintext_itself() {
        let codec = ChunkCodec::new(&header(0), Secret32::from_bytes([7; 32]), Compression::Zstd(3));
        assert_eq!(codec.compression(), Compression::Off);
        let mut sealed = Vec::new();
        let tag = codec.seal(&[2; 16], 0, b"hello", &mut sealed);
        assert_eq!(sealed.len(), 5 + format::SEAL_OVERHEAD);
        let mut out = Vec::new();
        codec.open(&[2; 16], 0, &chunk_ref(&sealed, tag), &sealed, &mut out).unwrap();
        assert_eq!(out, b"hello");
    }

    #[test]
    fn malformed_bodies_are_refused_without_allocating_past_a_chunk() {
        let ok = |b: &[u8]| decode_body(b, 65536, &mut Vec::new());
        let mut body = Vec::new();
        encode_body(b"abc", None, &mut body);
        assert!(ok(&body).is_ok());
        let mut bad = body.clone();
        bad[0] = 2;
        assert_eq!(ok(&bad), Err("unknown codec"));
        let mut bad = body.clone();
        bad[1] = 200;
        assert_eq!(ok(&bad), Err("length past its end"));
        let mut bad = body.clone();
        bad.push(0);
        assert_eq!(ok(&bad), Err("padding of the wrong length"));
        // A zstd bomb: a frame of 64 MiB of zeros, in a body that authenticates.
        let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap();
        let mut body = Vec::new();
        body.push(BODY_ZSTD);
        body.extend_from_slice(&(bomb.len() as u32).to_le_bytes());
        body.extend_from_slice(&bomb);
        body.resize(padme(body.len() as u64) as usize, 0);
        let mut out = Vec::new();
        assert_eq!(decode_body(&body, 65536, &mut out), Err("not a zstd frame of at most one chunk"));
        assert!(out.capacity() <= 2 * 65536, "allocated {}", out.capacity());
    }

    #[test]
    fn reseal_keeps_the_body_under_a_new_key() {
        let h = header(format::FLAG_CHUNK_CODEC);
        let old = ChunkCodec::new(&h, Secret32::from_bytes([7; 32]), Compression::Zstd(1));
        let new = ChunkCodec::new(&h, Secret32::from_bytes([8; 32]), Compression::Off);
        let plain = b"abcabcabcabcabcabcabcabcabcabcabcabcabcabc".repeat(100);
        let mut sealed = Vec::new();
        let tag = old.seal(&[3; 16], 4, &plain, &mut sealed);
        let mut again = Vec::new();
        let t2 = new.reseal_from(&old, &[3; 16], 4, &chunk_ref(&sealed, tag), &sealed, &mut again).unwrap();
        assert_eq!(again.len(), sealed.len(), "the compressed body is kept");
        let mut out = Vec::new();
        new.open(&[3; 16], 4, &chunk_ref(&again, t2), &again, &mut out).unwrap();
        assert_eq!(out, plain);
    }
}
