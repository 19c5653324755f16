//! Object storage behind one interface, chosen by `objects.url`: the local filesystem
//! (`file://`, the embedded default, with substrate-signed blob URLs served by `blobs.rs`),
//! or S3/MinIO (`s3://`) and Google Cloud Storage (`gs://`) with presigned URLs from
//! object_store's signer. Uploaded bytes go straight to the store, never through the log.
//! The blob endpoint's PUT URLs are single-use (`claims.rs`).

pub mod blobs;
pub mod claims;
pub mod local;
pub mod remote;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{ObjectStore, PutPayload};

use crate::config::Config;

pub use local::BlobSigner;

#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    #[error("object storage configuration: {0}")]
    Config(String),
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    #[error("object {0} not found")]
    NotFound(String),
    #[error("object storage: {0}")]
    Store(#[from] object_store::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Which backend is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Local,
    S3,
    Gcs,
}

impl Kind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Local => "local",
            Kind::S3 => "s3",
            Kind::Gcs => "gcs",
        }
    }
}

/// What a signed URL allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlMethod {
    Get,
    Put,
}

impl UrlMethod {
    pub fn as_str(&self) -> &'static str {
        match self {
            UrlMethod::Get => "GET",
            UrlMethod::Put => "PUT",
        }
    }
}

/// A URL a client can use without credentials, until `expires_at` (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedUrl {
    pub url: String,
    pub expires_in: u64,
    pub expires_at: i64,
}

enum UrlSigner {
    /// Local backend: substrate signs and serves `/blobs/…` itself.
    Blob(BlobSigner),
    /// S3 / GCS: the service checks its own presigned URLs.
    Remote(Arc<dyn Signer>),
}

pub struct Objects {
    kind: Kind,
    store: Arc<dyn ObjectStore>,
    signer: UrlSigner,
}

impl Objects {
    /// Opens the configured backend. Nothing is contacted over the network here.
    pub fn open(cfg: &Config) -> Result<Objects, ObjectsError> {
        let url = cfg.objects.url.as_str();
        if let Some(root) = url.strip_prefix("file://") {
            let (store, signer) = local::open(cfg, root)?;
            Ok(Objects {
                kind: Kind::Local,
                store,
                signer: UrlSigner::Blob(signer),
            })
        } else if let Some(bucket) = url.strip_prefix("s3://") {
            let (store, signer) = remote::s3(&cfg.objects, bucket)?;
            Ok(Objects {
                kind: Kind::S3,
                store,
                signer: UrlSigner::Remote(signer),
            })
        } else if let Some(bucket) = url.strip_prefix("gs://") {
            let (store, signer) = remote::gcs(&cfg.objects, bucket)?;
            Ok(Objects {
                kind: Kind::Gcs,
                store,
                signer: UrlSigner::Remote(signer),
            })
        } else {
            Err(ObjectsError::Config(format!(
                "objects.url: expected file://, s3:// or gs://, got {url}"
            )))
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The object store itself (streaming reads and writes).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The blob signer, when substrate serves the objects itself (local backend).
    pub fn blob_signer(&self) -> Option<&BlobSigner> {
        match &self.signer {
            UrlSigner::Blob(s) => Some(s),
            UrlSigner::Remote(_) => None,
        }
    }

    /// The store path of `key`; refuses keys the store would rewrite (empty or `.`/`..`
    /// segments, characters that get percent-encoded), so a key means one object everywhere.
    pub fn path(key: &str) -> Result<Path, ObjectsError> {
        let bad = || ObjectsError::InvalidKey(key.to_string());
        if key.is_empty() || key.starts_with('/') || key.ends_with('/') {
            return Err(bad());
        }
        // No empty, `.` or `..` segment, and none of the characters S3 and GCS advise against
        // in keys (object_store would percent-encode them in other code paths).
        const AVOID: &str = "\\{^}%`]\">[~<#|*?";
        let plain = key.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && !seg.chars().any(|c| c.is_control() || AVOID.contains(c))
        });
        if !plain {
            return Err(bad());
        }
        Path::parse(key).map_err(|_| bad())
    }

    /// A URL that lets a client `method` the object `key` for `ttl`. For PUT, the local
    /// backend also binds the exact length and content type; S3 URLs bind method, key and
    /// expiry (the saga checks the size of what arrived).
    pub async fn presign(
        &self,
        method: UrlMethod,
        key: &str,
        ttl: Duration,
        length: Option<u64>,
        content_type: Option<&str>,
    ) -> Result<SignedUrl, ObjectsError> {
        let path = Self::path(key)?;
        let ttl = ttl.max(Duration::from_secs(1));
        let expires_at = chrono::Utc::now().timestamp() + ttl.as_secs() as i64;
        let url = match &self.signer {
            UrlSigner::Blob(s) => s.sign(method, path.as_ref(), expires_at, length, content_type),
            UrlSigner::Remote(s) => {
                let m = match method {
                    UrlMethod::Get => reqwest::Method::GET,
                    UrlMethod::Put => reqwest::Method::PUT,
                };
                s.signed_url(m, &path, ttl).await?.to_string()
            }
        };
        Ok(SignedUrl {
            url,
            expires_in: ttl.as_secs(),
            expires_at,
        })
    }

    /// The size of `key`, or `None` when it does not exist.
    pub async fn head(&self, key: &str) -> Result<Option<u64>, ObjectsError> {
        match self.store.head(&Self::path(key)?).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), ObjectsError> {
        self.store
            .put(&Self::path(key)?, PutPayload::from_bytes(bytes))
            .await?;
        Ok(())
    }

    /// The bytes of `key`, or `None` when it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, ObjectsError> {
        match self.store.get(&Self::path(key)?).await {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes `key`; an object that is already gone counts as removed.
    pub async fn delete(&self, key: &str) -> Result<(), ObjectsError> {
        match self.store.delete(&Self::path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Moves `from` to `to` (copy, then remove the source) and returns the size. Safe to
    /// repeat: when the source is gone but the target exists, the move already happened.
    pub async fn move_object(&self, from: &str, to: &str) -> Result<u64, ObjectsError> {
        let (src, dst) = (Self::path(from)?, Self::path(to)?);
        let size = match self.head(from).await? {
            Some(size) => size,
            None => {
                return match self.head(to).await? {
                    Some(size) => Ok(size),
                    None => Err(ObjectsError::NotFound(from.to_string())),
                };
            }
        };
        self.store.copy(&src, &dst).await?;
        match self.store.delete(&src).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(size),
            Err(e) => Err(e.into()),
        }
    }

    /// A cheap round trip (a HEAD of a key that need not exist), for readiness checks.
    pub async fn check(&self) -> Result<(), ObjectsError> {
        self.head("substrate-readiness-check").await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_canonical() {
        assert!(Objects::path("uploads/alice/r1/cat.png").is_ok());
        assert!(Objects::path("uploads/alice/r1/my cat (1).png").is_ok());
        assert!(Objects::path("uploads/alice/r1/café.png").is_ok());
        for bad in [
            "",
            "uploads//x",
            "uploads/../etc/passwd",
            "uploads/./x",
            "a/b%2Fc",
            "a/b|c",
            "a/b#c",
            "a/b\nc",
        ] {
            assert!(Objects::path(bad).is_err(), "{bad:?} accepted");
        }
    }
}
