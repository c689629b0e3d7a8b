//! A chunk's body once its AEAD opened (codec byte, length, content, Padmé padding; a zstd
//! frame inside): `codec::decode_body`, bounded to one chunk; and whole sealed chunks through
//! `ChunkCodec::open` with the fixed key, so the decoder behind the authentication is reached.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgcryptfs::codec::{self, ChunkCodec, Compression};
use pgcryptfs::format::{ChunkRef, TAG_LEN};

fuzz_target!(init: pgcryptfs_fuzz::seeds::write_if_asked(), |data: &[u8]| {
    let header = pgcryptfs_fuzz::codec_header();
    let max = header.chunk_size as usize;
    let mut out = Vec::new();
    if codec::decode_body(data, max, &mut out).is_ok() {
        assert!(out.len() <= max, "decoded {} bytes, more than a chunk", out.len());
    }
    let c = ChunkCodec::new(&header, pgcryptfs_fuzz::key().duplicate(), Compression::Zstd(1));
    // What is sealed opens to itself (inputs up to a chunk).
    if data.len() <= max {
        let mut sealed = Vec::new();
        let tag = c.seal(&[1; 16], 2, data, &mut sealed);
        let r = ChunkRef { pack: [0; 16], offset: 0, len: sealed.len() as u32, tag };
        c.open(&[1; 16], 2, &r, &sealed, &mut out).unwrap();
        assert_eq!(out, data);
    }
    // Arbitrary sealed bytes with the tag they carry: authentication refuses them (or, for
    // seeds sealed with the fixed key, the body decoder is reached).
    if data.len() >= TAG_LEN {
        let tag: [u8; TAG_LEN] = data[data.len() - TAG_LEN..].try_into().unwrap();
        let r = ChunkRef { pack: [0; 16], offset: 0, len: data.len() as u32, tag };
        if c.open(&[1; 16], 2, &r, data, &mut out).is_ok() {
            assert!(out.len() <= max);
        }
    }
});
