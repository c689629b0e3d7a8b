//! What a deduplicating store would have to keep of a backup: cuts every regular file under
//! the DIRs into fixed-size blocks of 8 KiB and of 64 KiB (aligned to the file's start, the
//! last block of a file shorter), hashes each block (BLAKE2b-256, `pgcryptfs::crypto::hash32`)
//! and counts, per block size, the bytes of the blocks whose hash neither STATE_FILE nor an
//! earlier block of this run holds ("new unique"), and what those new blocks take compressed
//! one by one with zstd level 1 (a block that does not shrink counts at its raw size, as the
//! chunk codec stores it). Then appends the new hashes to STATE_FILE, so that successive runs
//! on successive backups each measure what is new against everything before.
//! Used by benches/retention.sh to choose the dedup unit.
//!
//! cargo run --release --example unique_blocks -- STATE_FILE DIR...
//!
//! Prints one Markdown table row to stdout, all in MiB:
//! `| total | new 8 KiB | new 8 KiB zstd-1 | new 64 KiB | new 64 KiB zstd-1 |`
//! and the block and file counts to stderr. Symbolic links are not followed; a file that
//! cannot be read is an error (the DIRs are finished backups).
//!
//! STATE_FILE (created if missing) is a sequence of 33-byte records: one byte for the block
//! size (0: 8 KiB, 1: 64 KiB) and the block's 32-byte hash. The sizes are kept apart because a
//! file shorter than 8 KiB is one identical block at both sizes.
//!
//! Memory: every hash is held in a HashSet, 40-75 bytes per distinct block with the table's
//! slack (plus 32 bytes per block new in this run until it is written): under 10 MB per GiB
//! of distinct 8 KiB blocks, the 64 KiB set an eighth of that. Fine for benchmark-sized
//! backups; a TiB of distinct data would need about 10 GB.
//! Compression is of the block alone (no dictionary, no neighbour); the codec's header,
//! Padmé padding and AEAD tag are not counted.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::process::exit;

use pgcryptfs::crypto::hash32;

const SIZES: [usize; 2] = [8 << 10, 64 << 10];
const RECORD: usize = 33;

#[derive(Default)]
struct Count {
    blocks: u64,
    new_blocks: u64,
    new_bytes: u64,
    new_zstd: u64,
}

struct Unit {
    tag: u8,
    seen: HashSet<[u8; 32]>,
    added: Vec<[u8; 32]>,
    count: Count,
}

fn die(msg: String) -> ! {
    eprintln!("unique_blocks: {msg}");
    exit(1)
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let rd = std::fs::read_dir(dir).unwrap_or_else(|e| die(format!("{}: {e}", dir.display())));
    for e in rd {
        let e = e.unwrap_or_else(|e| die(format!("{}: {e}", dir.display())));
        let t = e.file_type().unwrap_or_else(|err| die(format!("{}: {err}", e.path().display())));
        if t.is_dir() {
            files(&e.path(), out);
        } else if t.is_file() {
            out.push(e.path());
        }
    }
}

/// Fills `buf` from `r` up to its length or the end of the file; returns the bytes read.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// zstd level 1 size of `block` alone, or its raw size if that is no smaller.
fn zstd_len(c: &mut zstd::bulk::Compressor<'static>, block: &[u8], z: &mut Vec<u8>) -> u64 {
    z.clear();
    z.reserve(block.len());
    // Capacity is the raw length: a frame that does not fit is no gain (the codec's rule).
    match c.compress_to_buffer(block, z) {
        Ok(n) if n < block.len() => n as u64,
        _ => block.len() as u64,
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / 1048576.0
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        die("usage: unique_blocks STATE_FILE DIR...".into());
    }
    let state = PathBuf::from(&args[0]);
    let mut units: Vec<Unit> =
        (0..SIZES.len()).map(|i| Unit { tag: i as u8, seen: HashSet::new(), added: Vec::new(), count: Count::default() }).collect();

    match std::fs::read(&state) {
        Ok(bytes) => {
            if bytes.len() % RECORD != 0 {
                die(format!("{}: {} bytes is not a whole number of {RECORD}-byte records", state.display(), bytes.len()));
            }
            for rec in bytes.chunks_exact(RECORD) {
                let u = units.get_mut(rec[0] as usize).unwrap_or_else(|| die(format!("{}: unknown block size tag {}", state.display(), rec[0])));
                u.seen.insert(rec[1..].try_into().expect("32 bytes"));
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => die(format!("{}: {e}", state.display())),
    }
    let known: Vec<usize> = units.iter().map(|u| u.seen.len()).collect();

    let mut paths = Vec::new();
    for d in &args[1..] {
        files(Path::new(d), &mut paths);
    }
    paths.sort();

    let mut comp = zstd::bulk::Compressor::new(1).expect("zstd compressor");
    let mut z = Vec::new();
    let big = SIZES[SIZES.len() - 1];
    let mut buf = vec![0u8; big];
    let mut total = 0u64;
    for p in &paths {
        let f = File::open(p).unwrap_or_else(|e| die(format!("{}: {e}", p.display())));
        let mut r = BufReader::with_capacity(1 << 20, f);
        loop {
            let n = fill(&mut r, &mut buf).unwrap_or_else(|e| die(format!("{}: {e}", p.display())));
            if n == 0 {
                break;
            }
            total += n as u64;
            // Every size divides the largest, so cutting each largest-block buffer gives the
            // file-aligned blocks of every size (the last one of the file shorter).
            for (u, &size) in units.iter_mut().zip(SIZES.iter()) {
                for block in buf[..n].chunks(size) {
                    u.count.blocks += 1;
                    let h = hash32(block);
                    if u.seen.insert(h) {
                        u.added.push(h);
                        u.count.new_blocks += 1;
                        u.count.new_bytes += block.len() as u64;
                        u.count.new_zstd += zstd_len(&mut comp, block, &mut z);
                    }
                }
            }
            if n < big {
                break;
            }
        }
    }

    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&state)
        .unwrap_or_else(|e| die(format!("{}: {e}", state.display())));
    let mut w = BufWriter::new(f);
    for u in &units {
        for h in &u.added {
            w.write_all(&[u.tag]).and_then(|_| w.write_all(h)).unwrap_or_else(|e| die(format!("{}: {e}", state.display())));
        }
    }
    w.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .unwrap_or_else(|e| die(format!("{}: {e}", state.display())));

    eprintln!("unique_blocks: {} files, {} bytes", paths.len(), total);
    for ((u, &size), k) in units.iter().zip(SIZES.iter()).zip(known) {
        let c = &u.count;
        eprintln!(
            "unique_blocks: {} KiB blocks: {} in all, {} new ({} bytes, {} zstd-1); {} known before, {} now",
            size >> 10,
            c.blocks,
            c.new_blocks,
            c.new_bytes,
            c.new_zstd,
            k,
            u.seen.len()
        );
    }
    let (a, b) = (&units[0].count, &units[1].count);
    println!(
        "| {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
        mib(total),
        mib(a.new_bytes),
        mib(a.new_zstd),
        mib(b.new_bytes),
        mib(b.new_zstd)
    );
}
