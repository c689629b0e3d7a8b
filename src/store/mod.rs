//! The object-store seam: a small trait, opening a store by URL, and an in-memory store for
//! tests; the local-directory store and the object_store-backed one (S3, GCS, Azure) live in
//! the submodules. Keys are '/'-separated relative names.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[doc(hidden)] // pub for the fuzz target fuzz/fuzz_targets/aws_profile.rs
pub mod aws_profile;
pub mod conformance;
mod local;
mod remote;

pub use local::LocalStore;
pub use remote::{OPTION_NAMES as STORE_OPTIONS, RemoteStore};

#[derive(Debug)]
pub enum StoreError {
    NotFound(String),
    /// A conditional create found the object already there.
    AlreadyExists(String),
    /// A conditional replace found the object changed (or gone) since the version it was given.
    Changed(String),
    Io { key: String, source: io::Error },
    /// A ranged read asked for bytes past the end of the object.
    ShortObject { key: String, want: u64, have: u64 },
    /// The store refused the request for a reason retrying does not fix: credentials it does
    /// not accept, a bucket or container that does not exist, an operation it forbids.
    Refused { key: String, reason: String },
}

impl StoreError {
    /// True for errors that the same request will meet again (`Refused`): reported at once,
    /// never retried in a loop. Everything else may be a passing outage and is retried.
    pub fn is_permanent(&self) -> bool {
        matches!(self, StoreError::Refused { .. })
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound(k) => write!(f, "object {k} does not exist"),
            StoreError::AlreadyExists(k) => write!(f, "object {k} already exists"),
            StoreError::Changed(k) => write!(f, "object {k} changed since it was read"),
            StoreError::Io { key, source } => write!(f, "store I/O error on {key}: {source}"),
            StoreError::ShortObject { key, want, have } => {
                write!(f, "object {key} is {have} bytes, a read needed {want}")
            }
            StoreError::Refused { key, reason } => write!(f, "the store refuses access to {key}: {reason}"),
        }
    }
}

impl std::error::Error for StoreError {}

pub type Result<T> = std::result::Result<T, StoreError>;

/// One version of an object as its store names it (an ETag, a GCS generation, or for the
/// local and in-memory stores a digest of the object's identity), for conditional replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    e_tag: Option<String>,
    generation: Option<String>,
}

impl Version {
    /// A version named by an opaque tag (the local and in-memory stores).
    pub fn tag(tag: String) -> Self {
        Version { e_tag: Some(tag), generation: None }
    }
}

/// What pgcryptfs needs from an object store. Every put is atomic: readers see the whole
/// object or nothing.
pub trait Store: Send + Sync {
    /// A human-readable location for messages.
    fn describe(&self) -> String;
    /// Creates or replaces `key`.
    fn put(&self, key: &str, data: &[u8]) -> Result<()>;
    /// Creates `key` only if it does not exist (conditional create).
    fn put_new(&self, key: &str, data: &[u8]) -> Result<()>;
    /// Uploads a local file as `key`.
    fn put_file(&self, key: &str, path: &Path) -> Result<()> {
        let data = fs::read(path).map_err(|source| StoreError::Io { key: key.to_string(), source })?;
        self.put(key, &data)
    }
    /// Stores a local file as `key` and removes the local file: for a local store on the same
    /// file system this is a rename, elsewhere an upload.
    fn put_moving(&self, key: &str, path: &Path) -> Result<()> {
        self.put_file(key, path)?;
        fs::remove_file(path).map_err(|source| StoreError::Io { key: key.to_string(), source })
    }
    fn get(&self, key: &str) -> Result<Vec<u8>>;
    /// Up to `len` bytes from the start of `key`, with the version they belong to.
    fn get_versioned(&self, key: &str, len: usize) -> Result<(Vec<u8>, Version)> {
        let _ = len;
        Err(StoreError::Refused { key: key.to_string(), reason: format!("{} cannot read object versions", self.describe()) })
    }
    /// Replaces `key` only if it is still at `version` (compare-and-swap): `Changed` if it was
    /// replaced or deleted meanwhile. Two writers racing on one version: one of them wins.
    fn put_replacing(&self, key: &str, data: &[u8], version: &Version) -> Result<()> {
        let _ = (data, version);
        Err(StoreError::Refused { key: key.to_string(), reason: format!("{} cannot replace objects conditionally", self.describe()) })
    }
    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>>;
    /// Up to `len` bytes at `offset`: fewer where the object ends, none if it ends before
    /// `offset` (readahead does not know where a pack ends).
    fn get_range_upto(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        match self.get_range(key, offset, len) {
            Err(StoreError::ShortObject { have, .. }) if have > offset => self.get_range(key, offset, (have - offset) as usize),
            Err(StoreError::ShortObject { .. }) => Ok(Vec::new()),
            other => other,
        }
    }
    /// True for stores across a network, whose reads are worth keeping in the clean cache.
    fn is_remote(&self) -> bool {
        false
    }
    /// Names and sizes of all objects whose key starts with `prefix`, sorted by key.
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>>;
    /// Deletes `key`; deleting a missing key is not an error.
    fn delete(&self, key: &str) -> Result<()>;
    /// True if the store holds no object at all (init refuses anything else).
    fn is_empty(&self) -> Result<bool>;
    /// Bytes free for new data, if the store knows.
    fn free_bytes(&self) -> Option<(u64, u64)> {
        None
    }
}

/// Opens the store named by a STORE argument: a plain path, `file:///path`, `s3://bucket/prefix`,
/// `gs://bucket/prefix` or `az://container/prefix`, with `options` (see `remote::OPTION_NAMES`).
pub fn open_store(url: &str, options: &[(String, String)]) -> std::result::Result<Box<dyn Store>, String> {
    let local = |path: &str| -> std::result::Result<Box<dyn Store>, String> {
        if let Some((k, _)) = options.first() {
            return Err(format!("store option {k} does not apply to a local directory store"));
        }
        Ok(Box::new(LocalStore::new(PathBuf::from(path))))
    };
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(format!("{url}: a file:// URL needs an absolute path (file:///path)"));
        }
        return local(path);
    }
    if url.contains("://") {
        return Ok(Box::new(RemoteStore::open(url, options)?));
    }
    local(url)
}

/// Parses a `KEY=VALUE` store option.
pub fn parse_option(s: &str) -> std::result::Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("store option {s:?} is not KEY=VALUE"))?;
    let k = k.trim().to_ascii_lowercase();
    if !remote::OPTION_NAMES.contains(&k.as_str()) {
        return Err(format!("unknown store option {k:?} (known: {}); credentials go in the environment or credentials_file", remote::OPTION_NAMES.join(", ")));
    }
    Ok((k, v.trim().to_string()))
}

/// An in-memory store, for tests of the layers above the seam, with the test hooks they need:
/// posing as a remote store, counting ranged reads, failing one delete.
#[derive(Default)]
pub struct MemStore {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
    remote: bool,
    range_reads: std::sync::atomic::AtomicU64,
    fail_delete_under: Mutex<Option<String>>,
    /// While set, every ranged read fails as an unreachable store does.
    reads_down: std::sync::atomic::AtomicBool,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// One that says it is remote (so a vault keeps a clean read cache for it).
    pub fn remote() -> Self {
        Self { remote: true, ..Self::default() }
    }

    /// Ranged reads (`get_range`, `get_range_upto`, `get_versioned`) served so far.
    pub fn range_reads(&self) -> u64 {
        self.range_reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The next delete of a key under `prefix` fails once (an interruption).
    pub fn fail_next_delete_under(&self, prefix: &str) {
        *self.fail_delete_under.lock().unwrap() = Some(prefix.to_string());
    }

    /// An outage of ranged reads (`true`) or its end.
    pub fn set_reads_down(&self, down: bool) {
        self.reads_down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    fn count_range_read(&self) -> Result<()> {
        self.range_reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.reads_down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Io { key: "range".into(), source: io::Error::other("503 Service Unavailable (injected)") });
        }
        Ok(())
    }
}

/// A shared store is a store (tests keep an `Arc` to look inside what they hand over).
impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        (**self).put(key, data)
    }
    fn put_new(&self, key: &str, data: &[u8]) -> Result<()> {
        (**self).put_new(key, data)
    }
    fn put_file(&self, key: &str, path: &Path) -> Result<()> {
        (**self).put_file(key, path)
    }
    fn put_moving(&self, key: &str, path: &Path) -> Result<()> {
        (**self).put_moving(key, path)
    }
    fn get(&self, key: &str) -> Result<Vec<u8>> {
        (**self).get(key)
    }
    fn get_versioned(&self, key: &str, len: usize) -> Result<(Vec<u8>, Version)> {
        (**self).get_versioned(key, len)
    }
    fn put_replacing(&self, key: &str, data: &[u8], version: &Version) -> Result<()> {
        (**self).put_replacing(key, data, version)
    }
    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        (**self).get_range(key, offset, len)
    }
    fn get_range_upto(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        (**self).get_range_upto(key, offset, len)
    }
    fn is_remote(&self) -> bool {
        (**self).is_remote()
    }
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        (**self).list(prefix)
    }
    fn delete(&self, key: &str) -> Result<()> {
        (**self).delete(key)
    }
    fn is_empty(&self) -> Result<bool> {
        (**self).is_empty()
    }
    fn free_bytes(&self) -> Option<(u64, u64)> {
        (**self).free_bytes()
    }
}

/// An in-memory object's version: a digest of its bytes.
fn mem_version(v: &[u8]) -> Version {
    Version::tag(crate::format::hex(&crate::crypto::hash32(v)))
}

impl Store for MemStore {
    fn describe(&self) -> String {
        "memory".into()
    }
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.objects.lock().unwrap().insert(key.to_string(), data.to_vec());
        Ok(())
    }
    fn put_new(&self, key: &str, data: &[u8]) -> Result<()> {
        let mut o = self.objects.lock().unwrap();
        if o.contains_key(key) {
            return Err(StoreError::AlreadyExists(key.to_string()));
        }
        o.insert(key.to_string(), data.to_vec());
        Ok(())
    }
    fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.objects.lock().unwrap().get(key).cloned().ok_or_else(|| StoreError::NotFound(key.to_string()))
    }
    fn get_versioned(&self, key: &str, len: usize) -> Result<(Vec<u8>, Version)> {
        self.count_range_read()?;
        let o = self.objects.lock().unwrap();
        let v = o.get(key).ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        Ok((v[..len.min(v.len())].to_vec(), mem_version(v)))
    }
    fn put_replacing(&self, key: &str, data: &[u8], version: &Version) -> Result<()> {
        let mut o = self.objects.lock().unwrap();
        match o.get_mut(key) {
            Some(v) if mem_version(v) == *version => {
                *v = data.to_vec();
                Ok(())
            }
            _ => Err(StoreError::Changed(key.to_string())),
        }
    }
    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.count_range_read()?;
        let o = self.objects.lock().unwrap();
        let v = o.get(key).ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        let end = offset as usize + len;
        if end > v.len() {
            return Err(StoreError::ShortObject { key: key.to_string(), want: end as u64, have: v.len() as u64 });
        }
        Ok(v[offset as usize..end].to_vec())
    }
    fn get_range_upto(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.count_range_read()?;
        let o = self.objects.lock().unwrap();
        let v = o.get(key).ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        let start = (offset as usize).min(v.len());
        Ok(v[start..(start + len).min(v.len())].to_vec())
    }
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let o = self.objects.lock().unwrap();
        Ok(o.range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.len() as u64))
            .collect())
    }
    fn is_remote(&self) -> bool {
        self.remote
    }
    fn delete(&self, key: &str) -> Result<()> {
        let mut fail = self.fail_delete_under.lock().unwrap();
        if fail.as_deref().is_some_and(|p| key.starts_with(p)) {
            *fail = None;
            return Err(StoreError::Io { key: key.into(), source: io::Error::other("injected failure") });
        }
        self.objects.lock().unwrap().remove(key);
        Ok(())
    }
    fn is_empty(&self) -> Result<bool> {
        Ok(self.objects.lock().unwrap().is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_store_conforms() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::new(d.path().join("store"));
        conformance::run(&s).unwrap();
        assert!(s.free_bytes().is_some());
    }

    #[test]
    fn mem_store_conforms() {
        conformance::run(&MemStore::new()).unwrap();
    }

    #[test]
    fn urls() {
        assert!(open_store("/tmp/x", &[]).is_ok());
        assert!(open_store("file:///tmp/x", &[]).is_ok());
        assert!(open_store("file://rel", &[]).err().unwrap().contains("absolute"));
        assert!(open_store("ftp://b/p", &[]).err().unwrap().contains("unknown store scheme"));
        assert!(open_store("s3:///p", &[]).err().unwrap().contains("no bucket"));
        let opt = vec![("region".to_string(), "x".to_string())];
        assert!(open_store("/tmp/x", &opt).err().unwrap().contains("does not apply"));
        assert_eq!(parse_option("Endpoint=http://h:1"), Ok(("endpoint".into(), "http://h:1".into())));
        assert!(parse_option("secret_access_key=abc").unwrap_err().contains("unknown store option"));
        assert!(parse_option("novalue").is_err());
    }
}
