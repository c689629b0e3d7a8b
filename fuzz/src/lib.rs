//! Fixtures shared by the fuzz targets and the seed generator (`seeds`): a fixed vault
//! header and keys, so that seeds made by the generator authenticate in the targets, and the
//! OpenPGP test key in `keys/`.

use std::sync::OnceLock;

pub mod seeds;

use pgcryptfs::crypto::Secret32;
use pgcryptfs::format::{AEAD_XCHACHA20POLY1305, VaultHeader};
use pgcryptfs::keys::{Unlock, UnlockSpec};

/// The vault header every target uses.
pub fn header() -> VaultHeader {
    VaultHeader { vault_id: [0x5a; 16], aead: AEAD_XCHACHA20POLY1305, chunk_size: 64 * 1024, flags: 0 }
}

/// The same header with the chunk codec (compression and padding) on.
pub fn codec_header() -> VaultHeader {
    VaultHeader { flags: pgcryptfs::format::FLAG_CHUNK_CODEC, ..header() }
}

/// The fixed key of sodium slots, leases and sealed objects (not a secret: a test vector).
pub fn key() -> &'static Secret32 {
    static K: OnceLock<Secret32> = OnceLock::new();
    K.get_or_init(|| Secret32::from_bytes([0x42; 32]))
}

/// The armored secret key of the OpenPGP slot seeds (Cv25519, no passphrase; a test key).
pub const PGP_SECRET: &[u8] = include_bytes!("../keys/test-secret.asc");
/// Its certificate.
pub const PGP_CERT: &[u8] = include_bytes!("../keys/test-cert.asc");

/// Unlock with the fixed sodium key.
pub fn key_unlock() -> &'static Unlock {
    static U: OnceLock<Unlock> = OnceLock::new();
    U.get_or_init(|| Unlock::key(key()))
}

/// Unlock with the OpenPGP test key (loaded once, through the same code as `--pgp-key-file`).
pub fn pgp_unlock() -> &'static Unlock {
    static U: OnceLock<Unlock> = OnceLock::new();
    U.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("pgcryptfs-fuzz-key-{}.asc", std::process::id()));
        std::fs::write(&path, PGP_SECRET).expect("writing the test key");
        let u = UnlockSpec::OpenPgp { key_file: path.clone(), passphrase: None }.load();
        let _ = std::fs::remove_file(&path);
        u.unwrap_or_else(|e| panic!("the OpenPGP test key does not load: {e}"))
    })
}

/// Splits fuzz input into strings at NUL bytes (lossy UTF-8), for argv-shaped targets.
pub fn args(data: &[u8]) -> Vec<String> {
    data.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}
