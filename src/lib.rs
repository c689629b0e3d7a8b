//! pgcryptfs: an encrypting FUSE file system for PostgreSQL backups on object stores.
//!
//! Layers, top to bottom (lower layers never call upward): `cli` → `daemon` → `fuse` → `fs`
//! → `vault` → (`catalog`, `cache`, `keys`, `crypto`, `store`) → `format`.

pub mod audit;
pub mod btree;
pub mod cache;
pub mod catalog;
pub mod cli;
pub mod codec;
pub mod config;
pub mod control;
pub mod crypto;
pub mod daemon;
pub mod export;
pub mod format;
pub mod fs;
pub mod fuse;
pub mod items;
pub mod keyadmin;
pub mod keyargs;
pub mod gc;
pub mod keys;
pub mod kmount;
pub mod lease;
pub mod logging;
pub mod mount8;
pub mod namespace;
pub mod notify;
pub mod offline;
pub mod ops;
pub mod packs;
pub mod pins;
pub mod readcache;
pub mod roots;
pub mod rekey;
pub mod salvage;
pub mod sealing;
pub mod store;
pub mod ticker;
pub mod uploads;
pub mod vault;
pub mod verify;
