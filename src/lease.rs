//! The writer lease: one writable mount per vault, anywhere. A `lock` object made with a
//! conditional create names its holder (sealed, so the store learns no host names) and an
//! expiry; the holder renews it, a second writer is refused, and an expired lease is broken
//! only on request.

use std::fmt;

use crate::crypto::{self, Secret32};
use crate::format::{self, Dec, Enc, Id, VaultHeader};
use crate::store::{Store, StoreError, Version};

pub const LEASE_OBJECT: &str = "lock";
const LEASE_MAGIC: &[u8; 8] = b"PGCFSLCK";

#[derive(Debug)]
pub enum LeaseError {
    /// Another writable mount holds a valid lease.
    Held(Holder),
    /// The lease expired but was not broken (`--break-lease`).
    Expired(Holder),
    /// While renewing, the lease turned out to belong to someone else.
    Lost(String),
    /// Renewals have failed for so long that the lease may lapse before a commit ends.
    Lapsing(String),
    Unreadable(String),
    Store(StoreError),
}

impl fmt::Display for LeaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaseError::Held(h) => write!(
                f,
                "the vault is in use by a writable mount on {} (pid {}, since {}, lease valid for {} more seconds); \
                 read-only mounts are allowed alongside",
                h.host,
                h.pid,
                h.started,
                h.expires - now()
            ),
            LeaseError::Expired(h) => write!(
                f,
                "the vault's writer lease (held by {} pid {}) expired {} seconds ago; if that mount is gone, \
                 mount again with --break-lease",
                h.host,
                h.pid,
                now() - h.expires
            ),
            LeaseError::Lost(m) => write!(f, "the writer lease was lost: {m}"),
            LeaseError::Lapsing(m) => write!(f, "the writer lease could not be renewed: {m}"),
            LeaseError::Unreadable(m) => write!(f, "the writer lease object is unreadable: {m}"),
            LeaseError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for LeaseError {}

impl From<StoreError> for LeaseError {
    fn from(e: StoreError) -> Self {
        LeaseError::Store(e)
    }
}

/// Who holds the lease, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub mount_id: Id,
    pub host: String,
    pub pid: u32,
    pub started: i64,
    pub expires: i64,
}

fn now() -> i64 {
    format::Time::now().secs
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "?".into())
}

fn aad(header: &VaultHeader) -> Vec<u8> {
    let mut v = vec![format::DOMAIN_LEASE];
    v.extend_from_slice(&header.encode());
    v
}

/// Largest lease object read: the body is 38 bytes and a host name (at most 64 on Linux), so
/// anything near this was not written by pgcryptfs; the store is read no further.
pub const MAX_LEASE_BYTES: usize = 4096;

/// The lease object for `h` (pub for the fuzz target `lease`).
#[doc(hidden)]
pub fn seal(header: &VaultHeader, key: &Secret32, h: &Holder) -> Vec<u8> {
    let mut body = Enc::new();
    body.raw(&h.mount_id).u32(h.pid).i64(h.started).i64(h.expires).bytes16(h.host.as_bytes());
    seal_body(header, key, &body.buf)
}

#[doc(hidden)]
pub fn seal_body(header: &VaultHeader, key: &Secret32, body: &[u8]) -> Vec<u8> {
    let mut out = Enc::new();
    out.raw(LEASE_MAGIC).u16(format::FORMAT_VERSION);
    crypto::seal_into(key, &aad(header), body, &mut out.buf);
    out.buf
}

/// Reads the lease object and its version, at most one byte more than `MAX_LEASE_BYTES` (a
/// planted huge `lock` object is not downloaded; `open` refuses it as unreadable).
fn get(store: &dyn Store) -> Result<(Vec<u8>, Version), StoreError> {
    store.get_versioned(LEASE_OBJECT, MAX_LEASE_BYTES + 1)
}

/// A conditional replace that found the lease changed: someone else wrote it meanwhile.
fn replaced(what: &str) -> impl FnOnce(StoreError) -> LeaseError + '_ {
    move |e| match e {
        StoreError::Changed(_) => LeaseError::Lost(format!("another mount wrote the lock object while this one {what}")),
        e => e.into(),
    }
}

/// Decodes and authenticates a lease object (pub for the fuzz target `lease`).
#[doc(hidden)]
pub fn open(header: &VaultHeader, key: &Secret32, bytes: &[u8]) -> Result<Holder, LeaseError> {
    let bad = |m: &str| LeaseError::Unreadable(m.to_string());
    if bytes.len() > MAX_LEASE_BYTES {
        return Err(bad("larger than any lease"));
    }
    let mut d = Dec::new(bytes);
    if d.take(8, "lease").map_err(|e| bad(&e.to_string()))? != LEASE_MAGIC {
        return Err(bad("wrong magic"));
    }
    let version = d.u16("lease").map_err(|e| bad(&e.to_string()))?;
    if version != format::FORMAT_VERSION {
        return Err(bad(&format::FormatError::UnsupportedVersion(version).to_string()));
    }
    let sealed = d.take(d.remaining(), "lease").map_err(|e| bad(&e.to_string()))?;
    let plain = crypto::open(key, &aad(header), sealed).map_err(|_| bad("failed authentication"))?;
    parse_body(&plain).map_err(|e| bad(&e.to_string()))
}

/// The holder in an opened lease body (pub for the fuzz target `lease`).
#[doc(hidden)]
pub fn parse_body(plain: &[u8]) -> format::Result<Holder> {
    let mut d = Dec::new(plain);
    Ok(Holder {
        mount_id: d.array("lease")?,
        pid: d.u32("lease")?,
        started: d.i64("lease")?,
        expires: d.i64("lease")?,
        host: String::from_utf8_lossy(d.bytes16("lease")?).into_owned(),
    })
}

/// A lease this process holds.
pub struct Lease {
    me: Holder,
    ttl: i64,
}

impl Lease {
    /// Takes the lease, breaking an expired one only if `break_expired`.
    /// A lease whose id is `resume` (the one this cache held last) is taken over at once:
    /// that cache holds the state the lease protects.
    pub fn acquire(
        store: &dyn Store,
        header: &VaultHeader,
        key: &Secret32,
        ttl_secs: i64,
        break_expired: bool,
        resume: Option<Id>,
    ) -> Result<Self, LeaseError> {
        let t = now();
        let mut me = Holder {
            mount_id: crypto::random_id(),
            host: hostname(),
            pid: std::process::id(),
            started: t,
            expires: t + ttl_secs,
        };
        for _ in 0..2 {
            match store.put_new(LEASE_OBJECT, &seal(header, key, &me)) {
                Ok(()) => {
                    log::info!("took the writer lease of vault {} for {ttl_secs} s", format::hex(&header.vault_id));
                    return Ok(Lease { me, ttl: ttl_secs });
                }
                Err(StoreError::AlreadyExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
            let (other, version) = match get(store) {
                Ok((b, v)) => (open(header, key, &b)?, v),
                Err(StoreError::NotFound(_)) => continue, // released meanwhile: try again
                Err(e) => return Err(e.into()),
            };
            if Some(other.mount_id) == resume {
                log::info!("resuming this cache's writer lease (held by {} pid {})", other.host, other.pid);
                me.mount_id = other.mount_id;
                store.put_replacing(LEASE_OBJECT, &seal(header, key, &me), &version).map_err(replaced("resumed it"))?;
                return Ok(Lease { me, ttl: ttl_secs });
            }
            if other.expires > now() {
                return Err(LeaseError::Held(other));
            }
            if !break_expired {
                return Err(LeaseError::Expired(other));
            }
            log::warn!(
                "breaking the expired writer lease of {} pid {} (expired at {})",
                other.host,
                other.pid,
                other.expires
            );
            // Replaced only in the version found expired: a holder that renewed meanwhile,
            // or a second breaker, keeps it.
            store.put_replacing(LEASE_OBJECT, &seal(header, key, &me), &version).map_err(replaced("broke the expired lease"))?;
            return Ok(Lease { me, ttl: ttl_secs });
        }
        Err(LeaseError::Lost("the lock object came and went while this mount tried to take it".into()))
    }

    /// Extends the lease: a replace conditional on the version that was read and found ours,
    /// so a lease another mount broke and took meanwhile is never overwritten.
    pub fn renew(&mut self, store: &dyn Store, header: &VaultHeader, key: &Secret32) -> Result<(), LeaseError> {
        let (current, version) = match get(store) {
            Ok((b, v)) => (open(header, key, &b)?, v),
            Err(StoreError::NotFound(_)) => return Err(LeaseError::Lost("the lock object was deleted".into())),
            Err(e) => return Err(e.into()),
        };
        if current.mount_id != self.me.mount_id {
            return Err(LeaseError::Lost(format!("it is now held by {} pid {}", current.host, current.pid)));
        }
        let mut next = self.me.clone();
        next.expires = now() + self.ttl;
        store.put_replacing(LEASE_OBJECT, &seal(header, key, &next), &version).map_err(replaced("renewed its lease"))?;
        self.me = next;
        Ok(())
    }

    /// Gives the lease up (only if it is still ours).
    pub fn release(&self, store: &dyn Store, header: &VaultHeader, key: &Secret32) -> Result<(), LeaseError> {
        match get(store) {
            Ok((b, _)) if open(header, key, &b).is_ok_and(|h| h.mount_id == self.me.mount_id) => {
                store.delete(LEASE_OBJECT)?;
                log::info!("released the writer lease");
                Ok(())
            }
            Ok(_) => Err(LeaseError::Lost("someone else holds it".into())),
            Err(StoreError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub fn ttl(&self) -> i64 {
        self.ttl
    }

    pub fn id(&self) -> Id {
        self.me.mount_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;

    fn header() -> VaultHeader {
        VaultHeader { vault_id: [3; 16], aead: 1, chunk_size: 65536, flags: 0 }
    }

    #[test]
    fn one_writer_and_breaking_only_when_expired() {
        let s = MemStore::new();
        let k = Secret32::from_bytes([1; 32]);
        let mut a = Lease::acquire(&s, &header(), &k, 60, false, None).ok().unwrap();
        let held = Lease::acquire(&s, &header(), &k, 60, true, None).err().unwrap();
        assert!(matches!(&held, LeaseError::Held(h) if h.pid == std::process::id()), "{held}");
        assert!(held.to_string().contains("in use by a writable mount on"));
        a.renew(&s, &header(), &k).unwrap();
        a.release(&s, &header(), &k).unwrap();
        // An expired lease: refused without the flag, broken with it.
        let old = Lease::acquire(&s, &header(), &k, -5, false, None).ok().unwrap();
        let e = Lease::acquire(&s, &header(), &k, 60, false, None).err().unwrap();
        assert!(matches!(e, LeaseError::Expired(_)), "{e}");
        assert!(e.to_string().contains("--break-lease"));
        let mut b = Lease::acquire(&s, &header(), &k, 60, true, None).ok().unwrap();
        let mut old = old;
        assert!(matches!(old.renew(&s, &header(), &k), Err(LeaseError::Lost(_))));
        b.renew(&s, &header(), &k).unwrap();
        // The cache that held a lease resumes it, valid or not.
        let resumed = Lease::acquire(&s, &header(), &k, 60, false, Some(b.id())).ok().unwrap();
        assert_eq!(resumed.id(), b.id());
        // A lease sealed for another vault does not read as a holder.
        let other = VaultHeader { vault_id: [4; 16], ..header() };
        assert!(matches!(Lease::acquire(&s, &other, &k, 60, true, None), Err(LeaseError::Unreadable(_))));
    }

    /// A store in which another host acts between a renewal's read and its write (the race a
    /// plain overwrite lost): `before_replace` runs once, just before the first conditional
    /// replace reaches the store.
    struct Racing {
        inner: MemStore,
        before_replace: std::sync::Mutex<Option<Box<dyn FnOnce(&MemStore) + Send>>>,
    }

    impl Store for Racing {
        fn describe(&self) -> String {
            "racing".into()
        }
        fn put(&self, key: &str, data: &[u8]) -> crate::store::Result<()> {
            self.inner.put(key, data)
        }
        fn put_new(&self, key: &str, data: &[u8]) -> crate::store::Result<()> {
            self.inner.put_new(key, data)
        }
        fn get(&self, key: &str) -> crate::store::Result<Vec<u8>> {
            self.inner.get(key)
        }
        fn get_versioned(&self, key: &str, len: usize) -> crate::store::Result<(Vec<u8>, Version)> {
            self.inner.get_versioned(key, len)
        }
        fn put_replacing(&self, key: &str, data: &[u8], version: &Version) -> crate::store::Result<()> {
            if let Some(f) = self.before_replace.lock().unwrap().take() {
                f(&self.inner);
            }
            self.inner.put_replacing(key, data, version)
        }
        fn get_range(&self, key: &str, offset: u64, len: usize) -> crate::store::Result<Vec<u8>> {
            self.inner.get_range(key, offset, len)
        }
        fn list(&self, prefix: &str) -> crate::store::Result<Vec<(String, u64)>> {
            self.inner.list(prefix)
        }
        fn delete(&self, key: &str) -> crate::store::Result<()> {
            self.inner.delete(key)
        }
        fn is_empty(&self) -> crate::store::Result<bool> {
            self.inner.is_empty()
        }
    }

    /// Renewal is a conditional update: a mount whose lease expired and was broken by another
    /// host between the renewal's read and its write loses the lease, and the new holder's
    /// lease object stays as it wrote it. Two hosts breaking one expired lease: one wins.
    #[test]
    fn renewal_and_breaking_never_overwrite_a_lease_taken_meanwhile() {
        let k = Secret32::from_bytes([1; 32]);
        let s = Racing { inner: MemStore::new(), before_replace: std::sync::Mutex::new(None) };
        let mut a = Lease::acquire(&s, &header(), &k, -5, false, None).ok().unwrap();
        let kb = Secret32::from_bytes([1; 32]);
        let taken = std::sync::Arc::new(std::sync::Mutex::new(None));
        let t = taken.clone();
        *s.before_replace.lock().unwrap() = Some(Box::new(move |m: &MemStore| {
            *t.lock().unwrap() = Some(Lease::acquire(m, &header(), &kb, 60, true, None).ok().unwrap().id());
        }));
        let e = a.renew(&s, &header(), &k).unwrap_err();
        assert!(matches!(&e, LeaseError::Lost(m) if m.contains("another mount wrote")), "{e}");
        let b = taken.lock().unwrap().unwrap();
        let (now, _) = get(&s.inner).unwrap();
        assert_eq!(open(&header(), &k, &now).unwrap().mount_id, b, "the breaker's lease stands");
        assert!(matches!(a.renew(&s, &header(), &k), Err(LeaseError::Lost(_))));

        // Two breakers of one expired lease: the second, racing the first, is refused.
        let s = Racing { inner: MemStore::new(), before_replace: std::sync::Mutex::new(None) };
        Lease::acquire(&s, &header(), &k, -5, false, None).ok().unwrap();
        let kc = Secret32::from_bytes([1; 32]);
        let first = std::sync::Arc::new(std::sync::Mutex::new(None));
        let f = first.clone();
        *s.before_replace.lock().unwrap() = Some(Box::new(move |m: &MemStore| {
            *f.lock().unwrap() = Some(Lease::acquire(m, &header(), &kc, 60, true, None).ok().unwrap().id());
        }));
        let e = Lease::acquire(&s, &header(), &k, 60, true, None).err().unwrap();
        assert!(matches!(&e, LeaseError::Lost(m) if m.contains("broke the expired lease")), "{e}");
        let (now, _) = get(&s.inner).unwrap();
        assert_eq!(Some(open(&header(), &k, &now).unwrap().mount_id), *first.lock().unwrap());
    }

    #[test]
    fn oversized_or_other_version_leases_are_unreadable() {
        let s = MemStore::new();
        let k = Secret32::from_bytes([1; 32]);
        // A planted multi-megabyte lock object is read no further than the cap.
        s.put(LEASE_OBJECT, &vec![0u8; 8 << 20]).unwrap();
        assert_eq!(get(&s).unwrap().0.len(), MAX_LEASE_BYTES + 1);
        let e = Lease::acquire(&s, &header(), &k, 60, true, None).err().unwrap();
        assert!(matches!(&e, LeaseError::Unreadable(m) if m.contains("larger")), "{e}");
        // A lease of another format version is refused before it is opened.
        let h = Holder { mount_id: [9; 16], host: "h".into(), pid: 1, started: 0, expires: 1 };
        let mut b = seal(&header(), &k, &h);
        assert_eq!(open(&header(), &k, &b).unwrap(), h);
        b[8] = 2;
        assert!(matches!(open(&header(), &k, &b), Err(LeaseError::Unreadable(m)) if m.contains("version 2")));
    }
}
