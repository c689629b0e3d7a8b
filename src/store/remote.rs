//! Object stores through the `object_store` crate: S3 and S3-compatible servers, Google Cloud
//! Storage, Azure Blob Storage. One tokio runtime lives here, behind the synchronous seam.

use std::path::Path;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::{Result, Store, StoreError};

/// Store options a command line may carry: none of them is a secret.
pub const OPTION_NAMES: &[&str] = &["endpoint", "region", "allow_http", "path_style", "credentials_file"];

/// A bucket (and prefix) in an object store.
pub struct RemoteStore {
    inner: Arc<dyn ObjectStore>,
    prefix: String,
    describe: String,
    rt: tokio::runtime::Runtime,
}

/// Error classes: object_store turns 401/403 into `Unauthenticated`/`PermissionDenied`, and a
/// missing bucket into `NotFound`, which only a write (`missing_is_refusal`) can tell apart
/// from a missing object. Those are `Refused` (permanent); the rest may pass and is `Io`.
fn store_err_of(key: &str, e: object_store::Error, missing_is_refusal: bool) -> StoreError {
    let refused = |reason: String| StoreError::Refused { key: key.to_string(), reason };
    match e {
        object_store::Error::NotFound { .. } => StoreError::NotFound(key.to_string()),
        object_store::Error::AlreadyExists { .. } => StoreError::AlreadyExists(key.to_string()),
        other => StoreError::Io { key: key.to_string(), source: std::io::Error::other(other.to_string()) },
        object_store::Error::NotFound { source, .. } if missing_is_refusal => {
            refused(format!("the bucket or container does not exist ({source})"))
        }
    }
}
        e @ (object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. }
        | object_store::Error::NotSupported { .. }
        | object_store::Error::NotImplemented { .. }
        | object_store::Error::InvalidPath { .. }
        | object_store::Error::UnknownConfigurationKey { .. }) => refused(e.to_string()),

/// object_store's own retries, kept short: the upload workers retry for ever with their own
/// backoff and report each failure in `status`, and a lease renewal must give up well within
/// the lease's lifetime (the default would retry a request for up to three minutes).
fn store_err(key: &str, e: object_store::Error) -> StoreError {
    store_err_of(key, e, false)
}

fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig { max_retries: 3, retry_timeout: std::time::Duration::from_secs(15), ..Default::default() }
}

/// Reads `KEY=VALUE` lines (blank lines and `#` comments allowed) of a credentials file.
fn read_credentials(path: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read credentials file {path}: {e}"))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("credentials file {path}, line {}: expected KEY=VALUE", n + 1))?;
        out.push((k.trim().to_ascii_lowercase(), v.trim().trim_matches('"').to_string()));
    }
    Ok(out)
}

impl RemoteStore {
    /// Opens `scheme://bucket/prefix`. Credentials come from the cloud's standard environment
    /// variables, or from `credentials_file=` (the same variables, one `KEY=VALUE` a line).
    pub fn open(url: &str, options: &[(String, String)]) -> std::result::Result<Self, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("{url}: not a URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("{url}: the URL names no bucket or container"));
        }
        let prefix = prefix.trim_matches('/').to_string();
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (k, v) in options {
            match k.as_str() {
                "credentials_file" => pairs.extend(read_credentials(v)?),
                "path_style" => pairs.push(("virtual_hosted_style_request".into(), (v != "true").to_string())),
                k if OPTION_NAMES.contains(&k) => pairs.push((k.to_string(), v.clone())),
                other => return Err(format!("unknown store option {other:?} (known: {})", OPTION_NAMES.join(", "))),
            }
        }
        let bad = |k: &str| format!("{url}: option {k} does not apply to {scheme}:// stores");
        let inner: Arc<dyn ObjectStore> = match scheme {
            "s3" => {
                let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket).with_retry(retry());
                let profile = super::aws_profile::settings(&|k| std::env::var(k).ok())?;
                for (k, v) in profile.iter().chain(&pairs) {
                    let key = match k.as_str() {
                        "endpoint" => AmazonS3ConfigKey::Endpoint,
                        "region" => AmazonS3ConfigKey::Region,
                        "allow_http" => AmazonS3ConfigKey::Client(object_store::ClientConfigKey::AllowHttp),
                        other => other.parse().map_err(|_| bad(other))?,
                    };
                    b = b.with_config(key, v.clone());
                }
                Arc::new(b.build().map_err(|e| format!("{url}: {e}"))?)
            }
            "gs" => {
                let mut b = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket).with_retry(retry());
                for (k, v) in &pairs {
                    let key: GoogleConfigKey = match k.as_str() {
                        "allow_http" => {
                            b = b.with_client_options(object_store::ClientOptions::new().with_allow_http(v == "true"));
                            continue;
                        }
                        other => other.parse().map_err(|_| bad(other))?,
                    };
                    b = b.with_config(key, v.clone());
                }
                Arc::new(b.build().map_err(|e| format!("{url}: {e}"))?)
            }
            "az" | "azure" => {
                let mut b = MicrosoftAzureBuilder::from_env().with_container_name(bucket).with_retry(retry());
                for (k, v) in &pairs {
                    let key: AzureConfigKey = match k.as_str() {
                        "endpoint" => AzureConfigKey::Endpoint,
                        "allow_http" => AzureConfigKey::Client(object_store::ClientConfigKey::AllowHttp),
                        other => other.parse().map_err(|_| bad(other))?,
                    };
                    b = b.with_config(key, v.clone());
                }
                Arc::new(b.build().map_err(|e| format!("{url}: {e}"))?)
            }
            other => return Err(format!("{url}: unknown store scheme {other}:// (use s3://, gs://, az:// or a path)")),
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("store-io")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the store I/O runtime: {e}"))?;
        Ok(Self { inner, prefix, describe: url.to_string(), rt })
    }

    fn path(&self, key: &str) -> ObjPath {
        if self.prefix.is_empty() { ObjPath::from(key) } else { ObjPath::from(format!("{}/{key}", self.prefix)) }
    }

    fn key_of(&self, p: &ObjPath) -> String {
        let s = p.as_ref();
        if self.prefix.is_empty() { s.to_string() } else { s.strip_prefix(&format!("{}/", self.prefix)).unwrap_or(s).to_string() }
    }

    /// Up to `len` bytes at `offset` (object_store clamps a range that runs past the end); empty
    /// if the object ends before `offset`.
    fn range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let p = self.path(key);
        let end = offset + len as u64;
        match self.rt.block_on(self.inner.get_range(&p, offset..end)) {
            Ok(bytes) => Ok(bytes.to_vec()),
            Err(object_store::Error::NotFound { .. }) => Err(StoreError::NotFound(key.to_string())),
            Err(other) => {
                // 416 Range Not Satisfiable: the object ends before `offset`.
                let msg = other.to_string();
                if msg.contains("416") || msg.contains("Range Not Satisfiable") || msg.contains("InvalidRange") {
                    Ok(Vec::new())
                } else {
                    Err(store_err(key, other))
                }
            }
        }
    }

    fn put_mode(&self, key: &str, data: PutPayload, mode: PutMode) -> Result<()> {
        let opts = PutOptions { mode, ..Default::default() };
        self.rt.block_on(self.inner.put_opts(&self.path(key), data, opts)).map(|_| ()).map_err(|e| store_err_of(key, e, true))
    }
}

impl Store for RemoteStore {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.put_mode(key, PutPayload::from(data.to_vec()), PutMode::Overwrite)
    }

    fn put_new(&self, key: &str, data: &[u8]) -> Result<()> {
        self.put_mode(key, PutPayload::from(data.to_vec()), PutMode::Create)
    }

    fn put_file(&self, key: &str, path: &Path) -> Result<()> {
        // Mapped, not read: the pack's pages are shared with the page cache (where the staging
        // writes left them) instead of copied onto the heap, one pack per upload in flight.
        let io = |source| StoreError::Io { key: key.to_string(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        let payload = if file.metadata().map_err(io)?.len() == 0 {
            PutPayload::new()
        } else {
            // SAFETY: staging packs are closed before upload and never written or truncated
            // again; the map lives until the request that reads it is done.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
            PutPayload::from(bytes::Bytes::from_owner(map))
        };
        self.put_mode(key, payload, PutMode::Overwrite)
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let p = self.path(key);
        self.rt
            .block_on(async { self.inner.get(&p).await?.bytes().await })
            .map(|b| b.to_vec())
            .map_err(|e| store_err(key, e))
    }

    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let bytes = self.range(key, offset, len)?;
        if bytes.len() != len {
            let have = if bytes.is_empty() { 0 } else { offset + bytes.len() as u64 };
            return Err(StoreError::ShortObject { key: key.to_string(), want: offset + len as u64, have });
        }
        Ok(bytes)
    }

    fn get_range_upto(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.range(key, offset, len)
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let dir = prefix.trim_end_matches('/');
        let p = self.path(dir);
        let metas: Vec<object_store::ObjectMeta> =
            self.rt.block_on(self.inner.list(Some(&p)).try_collect()).map_err(|e| store_err(prefix, e))?;
        let mut out: Vec<(String, u64)> = metas
            .iter()
            .map(|m| (self.key_of(&m.location), m.size))
            .filter(|(k, _)| k.starts_with(prefix))
            .collect();
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        match self.rt.block_on(self.inner.delete(&self.path(key))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_err(key, e)),
        }
    }

    fn is_empty(&self) -> Result<bool> {
        let p = if self.prefix.is_empty() { None } else { Some(ObjPath::from(self.prefix.as_str())) };
        let first = self.rt.block_on(async { self.inner.list(p.as_ref()).try_next().await });
        first.map(|o| o.is_none()).map_err(|e| store_err("", e))
    }
}
