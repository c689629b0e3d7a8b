//! Measures the chunk codec on real files: for each compression setting, the stored size
//! against the plaintext and the sealing and opening speed on one core, chunk by chunk as
//! the file system does it. Used by benches/compression.sh to choose the default level.
//!
//! cargo run --release --example chunk_codec -- DIR [CHUNK_SIZE] [LEVELS]
//! (LEVELS: comma-separated, `off` or zstd levels; default off,1,2,3,6)

use std::path::{Path, PathBuf};
use std::time::Instant;

use pgcryptfs::codec::{ChunkCodec, Compression};
use pgcryptfs::crypto::Secret32;
use pgcryptfs::format::{self, ChunkRef, VaultHeader};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            files(&e.path(), out);
        } else if t.is_file() {
            out.push(e.path());
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: chunk_codec DIR [CHUNK_SIZE] [LEVELS]"));
    let cs: usize = args.next().map(|s| s.parse().expect("chunk size")).unwrap_or(65536);
    let levels: Vec<Compression> = args
        .next()
        .unwrap_or_else(|| "off,1,2,3,6".into())
        .split(',')
        .map(|l| Compression::parse(l).expect("level"))
        .collect();
    let mut paths = Vec::new();
    files(&dir, &mut paths);
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    for p in &paths {
        let Ok(data) = std::fs::read(p) else { continue };
        chunks.extend(data.chunks(cs).map(<[u8]>::to_vec));
    }
    let plain: usize = chunks.iter().map(Vec::len).sum();
    println!("{} files, {} chunks of up to {cs} bytes, {:.1} MiB", paths.len(), chunks.len(), plain as f64 / 1048576.0);
    println!("| setting | stored / plain | ratio | seal MB/s (1 core) | open MB/s (1 core) |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let header = VaultHeader { vault_id: [1; 16], aead: format::AEAD_XCHACHA20POLY1305, chunk_size: cs as u32, flags: format::FLAG_CHUNK_CODEC };
    for level in levels {
        let codec = ChunkCodec::new(&header, Secret32::random(), level);
        let mut sealed = Vec::with_capacity(chunks.len());
        let t = Instant::now();
        for (i, c) in chunks.iter().enumerate() {
            let mut out = Vec::new();
            let tag = codec.seal(&[0; 16], i as u64, c, &mut out);
            sealed.push((out, tag));
        }
        let seal_s = t.elapsed().as_secs_f64();
        let stored: usize = sealed.iter().map(|(s, _)| s.len()).sum();
        let t = Instant::now();
        let mut out = Vec::new();
        for (i, (s, tag)) in sealed.iter().enumerate() {
            let r = ChunkRef { pack: [0; 16], offset: 0, len: s.len() as u32, tag: *tag };
            codec.open(&[0; 16], i as u64, &r, s, &mut out).expect("opens");
            assert_eq!(out, chunks[i]);
        }
        let open_s = t.elapsed().as_secs_f64();
        println!(
            "| {level} | {:.1} / {:.1} MiB | {:.2}x | {:.0} | {:.0} |",
            stored as f64 / 1048576.0,
            plain as f64 / 1048576.0,
            plain as f64 / stored as f64,
            plain as f64 / 1e6 / seal_s,
            plain as f64 / 1e6 / open_s
        );
    }
}
