//! Safe wrapper over libsodium: XChaCha20-Poly1305 seal/open, subkey derivation, Argon2id,
//! hashing, randomness.
//!
//! Nothing else in pgcryptfs calls libsodium or touches nonces. Secrets live in `Secret32`, which
//! has no `Debug` or `Clone`, is locked in memory where the OS allows and is wiped on drop.

use std::fmt;
use std::sync::Once;

use libsodium_sys as ffi;

use crate::format::{NONCE_LEN, SEAL_OVERHEAD, TAG_LEN};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CryptoError {
    /// The AEAD tag did not verify: wrong key, or the bytes or their context were changed.
    Authentication,
    /// The sealed input is shorter than nonce plus tag.
    TooShort,
    /// libsodium could not be initialised.
    Init,
    /// Argon2id refused its parameters or could not get the memory.
    Pwhash,
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CryptoError::Authentication => write!(f, "authentication failed"),
            CryptoError::TooShort => write!(f, "sealed data is too short"),
            CryptoError::Init => write!(f, "libsodium could not be initialised"),
            CryptoError::Pwhash => write!(f, "Argon2id failed (parameters out of range or not enough memory)"),
        }
    }
}

impl std::error::Error for CryptoError {}

static INIT: Once = Once::new();

/// Initialises libsodium once; every public function calls it.
pub fn init() {
    INIT.call_once(|| {
        // SAFETY: sodium_init is thread-safe and idempotent; it returns -1 only on failure.
        let rc = unsafe { ffi::sodium_init() };
        assert!(rc >= 0, "libsodium could not be initialised");
    });
}

/// Pages that hold keys and nothing else: each is `mmap`ed on its own, excluded from core dumps
/// (`MADV_DONTDUMP`) and locked (`mlock`, where RLIMIT_MEMLOCK allows), and cut into 32-byte
/// slots. A page stays locked and excluded for as long as any slot on it is in use, and is
/// wiped and unmapped when its last key goes (on the heap, unlocking one key's page unlocked,
/// and made dumpable, whatever else shared that page).
mod keypages {
    use std::sync::Mutex;

    const PAGE: usize = 4096;
    const SLOTS: usize = PAGE / 32;

    struct Page {
        base: usize,
        used: u128,
    }

    static PAGES: Mutex<Vec<Page>> = Mutex::new(Vec::new());

    fn protect(base: usize) {
        // SAFETY: base is a page this module mapped; madvise and mlock only change its flags.
        unsafe {
            libc::madvise(base as *mut libc::c_void, PAGE, libc::MADV_DONTDUMP);
            libc::mlock(base as *const libc::c_void, PAGE);
        }
    }

    /// A zeroed 32-byte slot.
    pub fn alloc() -> *mut [u8; 32] {
        let mut pages = PAGES.lock().unwrap();
        let page = match pages.iter_mut().position(|p| p.used != u128::MAX) {
            Some(i) => &mut pages[i],
            None => {
                // SAFETY: an anonymous private mapping; checked below.
                let base = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        PAGE,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
                assert!(base != libc::MAP_FAILED, "cannot map a page for keys: {}", std::io::Error::last_os_error());
                protect(base as usize);
                pages.push(Page { base: base as usize, used: 0 });
                pages.last_mut().expect("just pushed")
            }
        };
        let slot = (!page.used).trailing_zeros() as usize;
        debug_assert!(slot < SLOTS);
        page.used |= 1 << slot;
        (page.base + slot * 32) as *mut [u8; 32]
    }

    /// Wipes a slot and gives it back; the page goes when its last slot does.
    pub fn free(p: *mut [u8; 32]) {
        // SAFETY: p is a live slot from `alloc`.
        unsafe { super::wipe(&mut *p) };
        let addr = p as usize;
        let mut pages = PAGES.lock().unwrap();
        let i = pages.iter().position(|pg| addr >= pg.base && addr < pg.base + PAGE).expect("a key slot from alloc");
        pages[i].used &= !(1 << ((addr - pages[i].base) / 32));
        if pages[i].used == 0 {
            let base = pages.swap_remove(i).base;
            // SAFETY: the page is ours and no slot on it is in use.
            unsafe {
                libc::munlock(base as *const libc::c_void, PAGE);
                libc::munmap(base as *mut libc::c_void, PAGE);
            }
        }
    }

    /// Locks every key page again (a forked child does not inherit memory locks).
    pub fn relock() {
        for p in PAGES.lock().unwrap().iter() {
            protect(p.base);
        }
    }

    /// The pages in use (tests).
    #[cfg(test)]
    pub fn pages() -> Vec<usize> {
        PAGES.lock().unwrap().iter().map(|p| p.base).collect()
    }
}

/// A 32-byte secret key in a locked page excluded from core dumps (`keypages`). No Debug, no
/// Clone; wiped on drop.
pub struct Secret32(std::ptr::NonNull<[u8; 32]>);

// SAFETY: the slot is owned by this value alone, like a Box.
unsafe impl Send for Secret32 {}
// SAFETY: shared access only reads.
unsafe impl Sync for Secret32 {}

impl Secret32 {
    fn slot() -> Self {
        init();
        Secret32(std::ptr::NonNull::new(keypages::alloc()).expect("mmap never returns null here"))
    }

    /// Moves key bytes into locked memory and wipes the caller's buffer.
    pub fn take(bytes: &mut [u8; 32]) -> Self {
        let mut s = Self::slot();
        // SAFETY: the slot is valid and owned by `s`.
        unsafe { s.0.as_mut() }.copy_from_slice(bytes);
        wipe(bytes);
        s
    }

    /// For constants in tests and known-answer vectors.
    pub fn from_bytes(mut bytes: [u8; 32]) -> Self {
        Self::take(&mut bytes)
    }

    /// A second copy in its own locked slot (explicit, unlike `Clone`; no copy on the stack).
    pub fn duplicate(&self) -> Self {
        let mut s = Self::slot();
        // SAFETY: both slots are valid; they are distinct.
        unsafe { s.0.as_mut() }.copy_from_slice(self.expose());
        s
    }

    pub fn random() -> Self {
        let mut b = [0u8; 32];
        random_bytes(&mut b);
        Self::take(&mut b)
    }

    pub fn expose(&self) -> &[u8; 32] {
        // SAFETY: the slot is valid for the life of `self`.
        unsafe { self.0.as_ref() }
    }

    /// Locks the key pages again: a forked child does not inherit its parent's memory locks.
    pub fn relock(&mut self) {
        keypages::relock();
    }
}

impl Drop for Secret32 {
    fn drop(&mut self) {
        keypages::free(self.0.as_ptr());
    }
}

/// A process that holds keys writes no core dump: RLIMIT_CORE 0 and PR_SET_DUMPABLE 0 (no
/// core, no ptrace or /proc/PID/mem by its own user). Idempotent; inherited across fork, and a
/// program it execs (a key command) starts dumpable again but keeps the limit.
pub fn forbid_core_dumps() {
    let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls with valid arguments.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &zero);
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

/// Overwrites a buffer with zeros in a way the compiler cannot elide.
pub fn wipe(buf: &mut [u8]) {
    init();
    // SAFETY: buf is a valid mutable slice.
    unsafe { ffi::sodium_memzero(buf.as_mut_ptr().cast(), buf.len()) };
}

/// A byte buffer holding secret material; wiped on drop, no Debug/Clone.
pub struct SecretBytes(pub Vec<u8>);

impl Drop for SecretBytes {
    fn drop(&mut self) {
        let cap = self.0.capacity();
        self.0.resize(cap, 0);
        wipe(&mut self.0);
    }
}

pub fn random_bytes(buf: &mut [u8]) {
    init();
    // SAFETY: buf is a valid mutable slice.
    unsafe { ffi::randombytes_buf(buf.as_mut_ptr().cast(), buf.len()) };
}

pub fn random_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    random_bytes(&mut id);
    id
}

/// Seals `plain` with a fresh random nonce and appends nonce ‖ ciphertext ‖ tag to `out`.
/// Returns the tag.
pub fn seal_into(key: &Secret32, aad: &[u8], plain: &[u8], out: &mut Vec<u8>) -> [u8; TAG_LEN] {
    init();
    let start = out.len();
    out.resize(start + plain.len() + SEAL_OVERHEAD, 0);
    let (nonce, rest) = out[start..].split_at_mut(NONCE_LEN);
    random_bytes(nonce);
    let (ct, tag) = rest.split_at_mut(plain.len());
    let mut maclen: u64 = 0;
    // SAFETY: all pointers point into live buffers of the stated lengths; ct and plain do not
    // overlap (ct is in `out`, plain is borrowed separately).
    let rc = unsafe {
        ffi::crypto_aead_xchacha20poly1305_ietf_encrypt_detached(
            ct.as_mut_ptr(),
            tag.as_mut_ptr(),
            &mut maclen,
            plain.as_ptr(),
            plain.len() as u64,
            aad.as_ptr(),
            aad.len() as u64,
            std::ptr::null(),
            nonce.as_ptr(),
            key.expose().as_ptr(),
        )
    };
    assert_eq!(rc, 0, "XChaCha20-Poly1305 encryption cannot fail");
    let mut t = [0u8; TAG_LEN];
    t.copy_from_slice(tag);
    t
}

pub fn seal(key: &Secret32, aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plain.len() + SEAL_OVERHEAD);
    seal_into(key, aad, plain, &mut out);
    out
}

/// Opens nonce ‖ ciphertext ‖ tag into `out` (cleared first). On failure `out` is wiped.
pub fn open_into(key: &Secret32, aad: &[u8], sealed: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
    init();
    if sealed.len() < SEAL_OVERHEAD {
        return Err(CryptoError::TooShort);
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
    out.clear();
    out.resize(ct.len(), 0);
    // SAFETY: pointers into live buffers of the stated lengths; `out` does not alias `sealed`.
    let rc = unsafe {
        ffi::crypto_aead_xchacha20poly1305_ietf_decrypt_detached(
            out.as_mut_ptr(),
            std::ptr::null_mut(),
            ct.as_ptr(),
            ct.len() as u64,
            tag.as_ptr(),
            aad.as_ptr(),
            aad.len() as u64,
            nonce.as_ptr(),
            key.expose().as_ptr(),
        )
    };
    if rc != 0 {
        wipe(out);
        out.clear();
        return Err(CryptoError::Authentication);
    }
    Ok(())
}

pub fn open(key: &Secret32, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut out = Vec::new();
    open_into(key, aad, sealed, &mut out)?;
    Ok(out)
}

/// Derives subkey `id` of `master` for context `ctx` (libsodium crypto_kdf, BLAKE2b).
pub fn derive(master: &Secret32, id: u64, ctx: &[u8; 8]) -> Secret32 {
    init();
    let mut sub = [0u8; 32];
    // SAFETY: sub is 32 bytes; ctx is 8 bytes (crypto_kdf_CONTEXTBYTES); master is 32 bytes.
    let rc = unsafe {
        ffi::crypto_kdf_derive_from_key(sub.as_mut_ptr(), 32, id, ctx.as_ptr().cast(), master.expose().as_ptr())
    };
    assert_eq!(rc, 0, "crypto_kdf_derive_from_key with valid sizes cannot fail");
    Secret32::take(&mut sub)
}

/// Salt length of `pwhash_argon2id`.
pub const PWHASH_SALT_LEN: usize = ffi::crypto_pwhash_SALTBYTES as usize;
/// libsodium's MODERATE Argon2id cost (3 passes, 256 MiB): the default for passphrase slots.
pub const PWHASH_OPSLIMIT_MODERATE: u64 = ffi::crypto_pwhash_argon2id_OPSLIMIT_MODERATE as u64;
pub const PWHASH_MEMLIMIT_MODERATE: u64 = ffi::crypto_pwhash_argon2id_MEMLIMIT_MODERATE as u64;
/// libsodium's lower bounds (1 pass, 8 KiB).
pub const PWHASH_OPSLIMIT_MIN: u64 = ffi::crypto_pwhash_argon2id_OPSLIMIT_MIN as u64;
pub const PWHASH_MEMLIMIT_MIN: u64 = ffi::crypto_pwhash_argon2id_MEMLIMIT_MIN as u64;

/// Derives a 32-byte key from a passphrase with Argon2id v1.3 (libsodium crypto_pwhash).
pub fn pwhash_argon2id(pass: &[u8], salt: &[u8; PWHASH_SALT_LEN], opslimit: u64, memlimit: u64) -> Result<Secret32, CryptoError> {
    init();
    let memlimit = usize::try_from(memlimit).map_err(|_| CryptoError::Pwhash)?;
    let mut out = [0u8; 32];
    // SAFETY: out is 32 bytes; pass and salt are live buffers of the stated lengths.
    let rc = unsafe {
        ffi::crypto_pwhash(
            out.as_mut_ptr(),
            32,
            pass.as_ptr().cast(),
            pass.len() as u64,
            salt.as_ptr(),
            opslimit,
            memlimit,
            ffi::crypto_pwhash_ALG_ARGON2ID13 as i32,
        )
    };
    if rc != 0 {
        wipe(&mut out);
        return Err(CryptoError::Pwhash);
    }
    Ok(Secret32::take(&mut out))
}

/// BLAKE2b-256 of `data`.
pub fn hash32(data: &[u8]) -> [u8; 32] {
    init();
    let mut h = [0u8; 32];
    // SAFETY: valid buffers; no key.
    let rc = unsafe {
        ffi::crypto_generichash(h.as_mut_ptr(), 32, data.as_ptr(), data.len() as u64, std::ptr::null(), 0)
    };
    assert_eq!(rc, 0);
    h
}

/// BLAKE2b-256 of `data` keyed with `key` (a MAC: format 2's content ids).
pub fn mac32(key: &Secret32, data: &[u8]) -> [u8; 32] {
    init();
    let mut h = [0u8; 32];
    // SAFETY: valid buffers; the key is 32 bytes, within crypto_generichash's 16..=64.
    let rc = unsafe {
        ffi::crypto_generichash(h.as_mut_ptr(), 32, data.as_ptr(), data.len() as u64, key.expose().as_ptr(), 32)
    };
    assert_eq!(rc, 0);
    h
}

/// Constant-time equality of two byte strings of equal length.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    init();
    // SAFETY: both slices are valid for a.len() bytes when the lengths match.
    a.len() == b.len() && unsafe { ffi::sodium_memcmp(a.as_ptr().cast(), b.as_ptr().cast(), a.len()) } == 0
}

/// Runs a libsodium `*2bin` decoder into a buffer of `cap` bytes; the whole input must be
/// consumed. The buffer is wiped if decoding fails.
fn decode_all(
    s: &[u8],
    cap: usize,
    decode: impl FnOnce(*mut u8, usize, *const libc::c_char, usize, &mut usize, &mut *const libc::c_char) -> i32,
) -> Option<Vec<u8>> {
    init();
    let mut out = vec![0u8; cap];
    let mut bin_len: usize = 0;
    let mut end: *const libc::c_char = std::ptr::null();
    let rc = decode(out.as_mut_ptr(), out.len(), s.as_ptr().cast(), s.len(), &mut bin_len, &mut end);
    // SAFETY: on success `end` points into `s` (one past its last consumed byte).
    if rc != 0 || end.is_null() || unsafe { end.offset_from(s.as_ptr().cast()) } as usize != s.len() {
        wipe(&mut out);
        return None;
    }
    out.truncate(bin_len);
    Some(out)
}

/// Decodes hex: every character must be a hex digit, and there must be an even number.
pub fn hex_decode(s: &[u8]) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    decode_all(s, s.len() / 2 + 1, |out, cap, hex, len, bin_len, end| {
        // SAFETY: the pointers and lengths describe live buffers; libsodium writes at most `cap`.
        unsafe { ffi::sodium_hex2bin(out, cap, hex, len, std::ptr::null(), bin_len, end) }
    })
}

/// Decodes standard base64 with padding (RFC 4648 §4).
pub fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    decode_all(s, s.len() * 3 / 4 + 3, |out, cap, b64, len, bin_len, end| {
        // SAFETY: the pointers and lengths describe live buffers; libsodium writes at most `cap`.
        unsafe {
            ffi::sodium_base642bin(
                out,
                cap,
                b64,
                len,
                std::ptr::null(),
                bin_len,
                end,
                ffi::sodium_base64_VARIANT_ORIGINAL as i32,
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    use chacha20poly1305::{XChaCha20Poly1305, XNonce};

    fn key(b: u8) -> Secret32 {
        Secret32::from_bytes([b; 32])
    }

    /// Known answer: libsodium's output must equal the independent RustCrypto implementation,
    /// byte for byte, for the nonce libsodium chose.
    #[test]
    fn seal_matches_independent_implementation() {
        for len in [0usize, 1, 15, 16, 17, 64, 1000, 65536, 65537] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let aad = b"context";
            let sealed = seal(&key(9), aad, &plain);
            assert_eq!(sealed.len(), len + SEAL_OVERHEAD);
            let nonce = XNonce::try_from(&sealed[..NONCE_LEN]).unwrap();
            let oracle = XChaCha20Poly1305::new_from_slice(&[9u8; 32]).unwrap();
            let expect = oracle.encrypt(&nonce, Payload { msg: &plain, aad }).unwrap();
            assert_eq!(&sealed[NONCE_LEN..], &expect[..], "len {len}");
            assert_eq!(open(&key(9), aad, &sealed).unwrap(), plain);
        }
    }

    /// A fixed vector (key, nonce, AAD, plaintext → ciphertext) from the RustCrypto oracle,
    /// opened by libsodium: proves the wire layout, not just self-consistency.
    #[test]
    fn opens_fixed_vector() {
        let oracle = XChaCha20Poly1305::new_from_slice(&[0x42u8; 32]).unwrap();
        let nonce = [0x24u8; 24];
        let ct = oracle.encrypt(&XNonce::from(nonce), Payload { msg: b"pgcryptfs", aad: b"a" }).unwrap();
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ct);
        assert_eq!(open(&key(0x42), b"a", &sealed).unwrap(), b"pgcryptfs");
    }

    #[test]
    fn tamper_is_rejected() {
        let sealed = seal(&key(1), b"aad", b"hello world");
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x80;
            assert_eq!(open(&key(1), b"aad", &t), Err(CryptoError::Authentication), "byte {i}");
        }
        assert_eq!(open(&key(2), b"aad", &sealed), Err(CryptoError::Authentication));
        assert_eq!(open(&key(1), b"aaD", &sealed), Err(CryptoError::Authentication));
        assert_eq!(open(&key(1), b"aad", &sealed[..39]), Err(CryptoError::TooShort));
        assert_eq!(open(&key(1), b"aad", &sealed[..sealed.len() - 1]), Err(CryptoError::Authentication));
    }

    #[test]
    fn nonces_are_fresh() {
        let a = seal(&key(1), b"", b"same");
        let b = seal(&key(1), b"", b"same");
        assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN]);
    }

    #[test]
    fn kdf_and_hash_are_deterministic_and_separated() {
        let m = key(5);
        assert_eq!(derive(&m, 1, b"pgcfs-v1").expose(), derive(&m, 1, b"pgcfs-v1").expose());
        assert_ne!(derive(&m, 1, b"pgcfs-v1").expose(), derive(&m, 2, b"pgcfs-v1").expose());
        // BLAKE2b-256("") known answer.
        assert_eq!(
            crate::format::hex(&hash32(b"")),
            "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8"
        );
    }

    /// Argon2id gives the same key for the same passphrase, salt and cost, and a different
    /// one when any of them changes; out-of-range costs are refused.
    #[test]
    fn argon2id_is_deterministic_and_salted() {
        let salt = [7u8; PWHASH_SALT_LEN];
        let a = pwhash_argon2id(b"pass", &salt, 1, 8 << 20).unwrap();
        let b = pwhash_argon2id(b"pass", &salt, 1, 8 << 20).unwrap();
        assert_eq!(a.expose(), b.expose());
        assert_ne!(a.expose(), pwhash_argon2id(b"pass", &[8u8; PWHASH_SALT_LEN], 1, 8 << 20).unwrap().expose());
        assert_ne!(a.expose(), pwhash_argon2id(b"pasS", &salt, 1, 8 << 20).unwrap().expose());
        assert_ne!(a.expose(), pwhash_argon2id(b"pass", &salt, 2, 8 << 20).unwrap().expose());
        assert!(matches!(pwhash_argon2id(b"pass", &salt, 0, 8 << 20), Err(CryptoError::Pwhash)));
    }

    /// libsodium's Argon2id equals the independent RustCrypto `argon2` (v1.3, one lane).
    #[test]
    fn argon2id_matches_independent_implementation() {
        let salt = [0x5au8; PWHASH_SALT_LEN];
        for (ops, kib) in [(1u32, 8192u32), (2, 16384), (3, 8)] {
            let ours = pwhash_argon2id(b"correct horse", &salt, ops.into(), u64::from(kib) * 1024).unwrap();
            let params = argon2::Params::new(kib, ops, 1, Some(32)).unwrap();
            let oracle = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
            let mut want = [0u8; 32];
            oracle.hash_password_into(b"correct horse", &salt, &mut want).unwrap();
            assert_eq!(ours.expose(), &want, "ops {ops}, {kib} KiB");
        }
    }

    #[test]
    fn decoders() {
        assert_eq!(hex_decode(b"00ff10").unwrap(), vec![0, 255, 16]);
        assert!(hex_decode(b"0g").is_none());
        assert!(hex_decode(b"abc").is_none());
        assert_eq!(base64_decode(b"AAEC").unwrap(), vec![0, 1, 2]);
        assert!(base64_decode(b"AA!C").is_none());
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }

    /// The VmFlags of the mapping holding `addr`, from /proc/self/smaps.
    fn vm_flags(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((a, b)) = range.split_once('-')
                && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                inside = addr >= a && addr < b;
            } else if inside && let Some(f) = line.strip_prefix("VmFlags:") {
                return f.to_string();
            }
        }
        panic!("no mapping holds {addr:#x}")
    }

    #[test]
    fn keys_stay_locked_and_out_of_dumps_while_any_key_uses_their_page() {
        let a = key(1);
        let b = key(2);
        let (pa, pb) = (a.expose().as_ptr() as usize, b.expose().as_ptr() as usize);
        // Usually the same page (keys made one after another share one).
        let _ = pa;
        drop(a);
        // Today's heap keys: dropping one unlocked the page and made it dumpable again.
        let flags = vm_flags(pb);
        assert!(flags.contains(" dd"), "key page dumpable after another key was dropped: {flags}");
        if unsafe { libc::geteuid() } == 0 {
            assert!(flags.contains(" lo"), "key page unlocked after another key was dropped: {flags}");
        }
        assert_eq!(b.expose(), &[2; 32]);
        let d = b.duplicate();
        drop(b);
        assert_eq!(d.expose(), &[2; 32]);
        assert!(super::keypages::pages().iter().any(|p| pb & !4095 == *p || d.expose().as_ptr() as usize & !4095 == *p));
    }
}
