//! pgcryptfs: an encrypting FUSE file system for PostgreSQL backups on object stores.
//!
//! Layers, top to bottom (lower layers never call upward): `cli` → `daemon` → `fuse` → `fs`
//! → `vault` → (`catalog`, `cache`, `keys`, `crypto`, `store`) → `format`.

pub mod cache;
pub mod catalog;
pub mod crypto;
pub mod format;
pub mod keys;
pub mod store;
pub mod vault;
