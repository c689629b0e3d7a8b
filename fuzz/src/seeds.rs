//! The seed corpora of the fuzz targets (`fuzz/corpus/<target>/seed-*`), made from real
//! encodings by pgcryptfs itself with the fixed header, key and OpenPGP test key of this
//! crate, so that seeds authenticate in the targets. Written by any built target when
//! `PGCRYPTFS_FUZZ_WRITE_SEEDS` names a directory (a separate example binary would cost a
//! second full build of pgcryptfs without the fuzzing flags), from fuzz/:
//!
//!     PGCRYPTFS_FUZZ_WRITE_SEEDS=corpus target/x86_64-unknown-linux-gnu/release/format_header
//!
//! Seeds with random parts (salts, nonces, ids) differ from run to run; re-run it only when a
//! format changes.

use std::path::Path;

use pgcryptfs::btree;
use pgcryptfs::catalog::Catalog;
use pgcryptfs::crypto::{self, Secret32, SecretBytes};
use pgcryptfs::format::{self, Attr, ChunkRef, Enc, Kind, Record, Time};
use pgcryptfs::keys::{self, NewSlot, VaultKeys, passphrase};
use pgcryptfs::lease;

use crate::{PGP_CERT, header, key};

/// Called from the targets' `init`: writes the seeds and exits if asked to.
pub fn write_if_asked() {
    if let Some(dir) = std::env::var_os("PGCRYPTFS_FUZZ_WRITE_SEEDS") {
        write_all(Path::new(&dir));
        eprintln!("wrote the seed corpora under {}", Path::new(&dir).display());
        std::process::exit(0);
    }
}

fn put(root: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = root.join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

/// Writes every seed under `root/<target>/seed-<name>`.
pub fn write_all(root: &Path) {
    let h = header();
    let master = Secret32::from_bytes([0x17; 32]);
    let now = Time { secs: 1_790_000_000, nanos: 5 };

    put(root, "format_header", "header", &h.encode());

    // Key slots of every method; the sodium and command slots open with the fixed key, the
    // OpenPGP slot with the test key.
    let cheap = passphrase::Cost { opslimit: 1, memlimit: 8 << 10 };
    let slots = [
        ("sodium", keys::make_sodium_slot(&h, &master, key(), "sodium", now.secs)),
        ("command", keys::make_slot(&h, &master, &NewSlot::Command(key().duplicate()), None, now.secs).unwrap()),
        (
            "passphrase",
            keys::make_slot(&h, &master, &NewSlot::Passphrase(SecretBytes(b"pw".to_vec()), cheap), Some("pw"), now.secs)
                .unwrap(),
        ),
        ("openpgp", keys::make_slot(&h, &master, &NewSlot::OpenPgp(PGP_CERT.to_vec()), None, now.secs).unwrap()),
    ];
    for (name, s) in &slots {
        put(root, "format_slot", name, &s.encode());
        put(root, "key_slot", name, &s.encode());
        if *name == "passphrase" {
            put(root, "passphrase_params", "moderate", &passphrase::Params::new(passphrase::Cost::default()).encode());
            put(root, "passphrase_params", "cheap", &s.params);
        }
    }

    // Catalog records: the root, a file with a chunk, a symlink, a device, links and drops.
    let attr = |kind, size| Attr { kind, mode: 0o644, uid: 1, gid: 2, size, atime: now, mtime: now, ctime: now };
    let mut recs = Catalog::root_records(0, 0, now);
    recs.extend([
        Record::Inode { ino: 2, file_id: [3; 16], attr: attr(Kind::File, 70_000), target: Vec::new() },
        Record::Link { parent: 1, name: b"base".to_vec(), ino: 2 },
        Record::Chunk { ino: 2, index: 1, chunk: ChunkRef { pack: [4; 16], offset: 4096, len: 4504, tag: [5; 16] } },
        Record::Inode { ino: 3, file_id: [6; 16], attr: attr(Kind::Symlink, 4), target: b"base".to_vec() },
        Record::Link { parent: 1, name: b"link".to_vec(), ino: 3 },
        Record::Inode { ino: 4, file_id: [7; 16], attr: attr(Kind::CharDev, 0), target: format::rdev_bytes(0x0103) },
        Record::Unlink { parent: 1, name: b"link".to_vec() },
        Record::Drop { ino: 3 },
    ]);
    let body = format::encode_records(&recs);
    put(root, "format_records", "catalog", &body);
    put(root, "format_records", "root", &format::encode_records(&Catalog::root_records(0, 0, now)));

    let keys = VaultKeys::derive(&master);
    let segment = pgcryptfs::vault::seal_checkpoint(&h, &keys.meta, 9, [8; 32], &recs);
    put(root, "format_segment", "checkpoint", &segment);

    let mut journal = format::journal_header(10);
    for (i, batch) in [&recs[..2], &recs[2..]].iter().enumerate() {
        let sealed = crypto::seal(&keys.meta, &format::journal_aad(&h, 10, i as u32), &format::encode_records(batch));
        journal.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        journal.extend_from_slice(&sealed);
    }
    put(root, "format_journal", "two-batches", &journal);
    journal.extend_from_slice(&100u32.to_le_bytes());
    journal.extend_from_slice(b"torn");
    put(root, "format_journal", "torn-tail", &journal);

    put(root, "format_names", "segment", format::segment_name(0x2a).as_bytes());
    put(root, "format_names", "pack", format::pack_name(&[0xab; 16]).as_bytes());
    put(root, "format_names", "id", format::hex(&[0x0f; 16]).as_bytes());

    let aad = format::rekey_proof_aad(&h, b"pending slot");
    put(root, "sealed", "proof", &crypto::seal(key(), &aad, master.expose()));

    put(root, "key_transform", "hex", b"4242424242424242424242424242424242424242424242424242424242424242");
    put(root, "key_transform", "base64", b"QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=");
    put(root, "key_transform", "raw", b"a raw key of at least 25 bytes");

    let holder = lease::Holder { mount_id: [1; 16], host: "db1.example.org".into(), pid: 4242, started: now.secs, expires: now.secs + 60 };
    put(root, "lease", "object", &lease::seal(&h, key(), &holder));
    let mut body = Enc::new();
    body.raw(&holder.mount_id).u32(holder.pid).i64(holder.started).i64(holder.expires).bytes16(holder.host.as_bytes());
    put(root, "lease", "body", &body.buf);

    // Chunk bodies and sealed chunks: compressed, raw (incompressible), and a zstd frame that
    // expands past a chunk.
    let ch = crate::codec_header();
    let codec = pgcryptfs::codec::ChunkCodec::new(&ch, key().duplicate(), pgcryptfs::codec::Compression::Zstd(1));
    let text = b"INSERT INTO pgbench_history VALUES (1, 2, 3, 4, now());\n".repeat(200);
    let noise: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    for (name, plain) in [("text", &text[..]), ("noise", &noise[..])] {
        let mut sealed = Vec::new();
        codec.seal(&[1; 16], 2, plain, &mut sealed);
        put(root, "chunk_body", &format!("sealed-{name}"), &sealed);
    }
    let bomb = zstd::bulk::compress(&vec![0u8; 1 << 20], 19).expect("zstd");
    let mut body = vec![pgcryptfs::codec::BODY_ZSTD];
    body.extend_from_slice(&(bomb.len() as u32).to_le_bytes());
    body.extend_from_slice(&bomb);
    body.resize(pgcryptfs::codec::padme(body.len() as u64) as usize, 0);
    put(root, "chunk_body", "zstd-bomb", &body);
    let mut raw = vec![pgcryptfs::codec::BODY_RAW];
    raw.extend_from_slice(&5u32.to_le_bytes());
    raw.extend_from_slice(b"hello");
    raw.resize(pgcryptfs::codec::padme(raw.len() as u64) as usize, 0);
    put(root, "chunk_body", "raw", &raw);

    // Metadata tree nodes: a leaf of chunk-map-like items, the internal nodes above it, and a
    // leaf at the key and value bounds.
    let keys: Vec<Vec<u8>> = (0..40u64).map(|i| [&2u64.to_be_bytes()[..], &[3], &i.to_be_bytes()].concat()).collect();
    let values: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 76]).collect();
    let leaf: Vec<_> = keys.iter().zip(&values).map(|(key, value)| btree::Entry::Leaf { key, value }).collect();
    put(root, "tree_node", "leaf", &btree::encode_node(0, &leaf));
    let child = |i: usize| ChunkRef { pack: [4; 16], offset: 4096 * i as u64, len: 3000, tag: [i as u8; 16] };
    let children: Vec<_> =
        keys.iter().step_by(10).enumerate().map(|(i, key)| btree::Entry::Child { key, child: child(i) }).collect();
    put(root, "tree_node", "internal", &btree::encode_node(1, &children));
    put(root, "tree_node", "root", &btree::encode_node(2, &children[..2]));
    let (big_key, big_value) = (vec![0xff; btree::MAX_KEY], vec![0x5a; btree::MAX_VALUE]);
    let bounds = [btree::Entry::Leaf { key: b"", value: b"" }, btree::Entry::Leaf { key: &big_key, value: &big_value }];
    put(root, "tree_node", "bounds", &btree::encode_node(0, &bounds));

    // Format 2 metadata (target format2_metadata: mode byte, then the input).
    let item = |k: &[u8], v: &[u8]| [&[0u8][..], &(k.len() as u16).to_le_bytes(), k, v].concat();
    let inode = pgcryptfs::items::InodeItem {
        file_id: [3; 16],
        attr: Attr { kind: Kind::File, mode: 0o600, uid: 26, gid: 26, size: 70000, atime: now, mtime: now, ctime: now },
        links: 1,
        subdirs: 0,
        entries: 0,
        next_cookie: 0,
        parent: 1,
        name: b"PG_VERSION".to_vec(),
        target: Vec::new(),
    };
    put(root, "format2_metadata", "inode", &item(&pgcryptfs::items::inode_key(5), &inode.encode()));
    let dirent = pgcryptfs::items::Dirent { ino: 5, cookie: 3 };
    put(root, "format2_metadata", "dirent", &item(&pgcryptfs::items::dirent_key(1, b"PG_VERSION"), &dirent.encode()));
    let index = pgcryptfs::items::DirIndex { ino: 5, name: b"PG_VERSION".to_vec() };
    put(root, "format2_metadata", "dirindex", &item(&pgcryptfs::items::dirindex_key(1, 3), &index.encode()));
    let loc = ChunkRef { pack: [4; 16], offset: 4096, len: 3000, tag: [5; 16] };
    let chunk = pgcryptfs::items::ChunkItem { id: [6; 32], loc };
    put(root, "format2_metadata", "chunk", &item(&pgcryptfs::items::chunk_key(5, 1), &chunk.encode()));
    put(root, "format2_metadata", "orphan", &item(&pgcryptfs::items::orphan_key(5), b""));
    let body = format::RootBody { tree: Some(loc), index: None, next_ino: 6, inodes: 5 };
    put(root, "format2_metadata", "root", &[&[1u8][..], &body.encode()].concat());
    let recs = [
        Record::Inode { ino: 5, file_id: [3; 16], attr: inode.attr.clone(), target: Vec::new() },
        Record::Link { parent: 1, name: b"PG_VERSION".to_vec(), ino: 5 },
        Record::Content { ino: 5, index: 0, id: [6; 32], chunk: loc },
        Record::Unlink { parent: 1, name: b"PG_VERSION".to_vec() },
    ];
    put(root, "format2_metadata", "records", &[&[2u8][..], &format::encode_records(&recs)].concat());

    let argv = |a: &[&str]| a.join("\0").into_bytes();
    put(
        root,
        "mount_options",
        "fstab",
        &argv(&["s3://b/p", "/mnt/enc", "-o", "key_file=/etc/pgcryptfs/key,key_transform=hex,_netdev,nofail,x-systemd.automount,endpoint=http://127.0.0.1:9000,allow_http,cache_size=4G,sync=store"]),
    );
    put(root, "mount_options", "sloppy", &argv(&["/srv/v", "/mnt/enc", "-sfnv", "-o", "ro,bogus,key_env=K", "-oreadahead=16M,threads=8"]));

    for cmd in ["SYNC", "STATUS", "UMOUNT"] {
        put(root, "control_request", &cmd.to_lowercase(), format!("{cmd}\n").as_bytes());
    }

    put(
        root,
        "aws_profile",
        "credentials",
        b"# keys\n[default]\naws_access_key_id = AKDEF\naws_secret_access_key = SKDEF\n\n[backup]\naws_access_key_id=AKB\naws_secret_access_key=SKB\naws_session_token = TOK\n",
    );
    put(
        root,
        "aws_profile",
        "config",
        b"[default]\nregion = eu-west-1\n[profile backup]\nregion = us-east-2\nendpoint_url = http://minio:9000\ns3 =\n  addressing_style = path\n; c\n[profile sso]\nsso_session = corp\n",
    );

    for s in ["64K", "1G", "65536", "16MiB", " 8 mb"] {
        put(root, "parse_size", &s.trim().replace(' ', "_"), s.as_bytes());
    }
}
