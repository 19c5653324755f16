//! The local filesystem backend and its substrate-signed URLs. A blob URL is
//! `{public_url}/blobs/{key}?method=PUT&expires=…&length=…&type=…&signature=…`; the HMAC-SHA256
//! signature covers the method, key, expiry, length and content type, so none can be changed.

use std::io::Write;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use hmac::{Hmac, Mac};
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::Sha256;

use super::{ObjectsError, UrlMethod};
use crate::config::Config;

/// Opens `root` (created if missing) and the signer for its blob URLs.
pub fn open(cfg: &Config, root: &str) -> Result<(Arc<dyn ObjectStore>, BlobSigner), ObjectsError> {
    if root.is_empty() {
        return Err(ObjectsError::Config(
            "objects.url: file:// needs a folder".into(),
        ));
    }
    std::fs::create_dir_all(root)?;
    let store = LocalFileSystem::new_with_prefix(root)?;
    let key = match &cfg.objects.signing_key {
        Some(k) if k.expose().len() >= 16 => k.expose().as_bytes().to_vec(),
        Some(_) => {
            return Err(ObjectsError::Config(
                "objects.signing_key: at least 16 bytes".into(),
            ));
        }
        None => {
            let file = cfg
                .objects
                .signing_key_file
                .clone()
                .unwrap_or_else(|| default_key_file(root));
            load_or_create_key(&file)?
        }
    };
    let base = cfg
        .http
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", cfg.http.listen));
    Ok((Arc::new(store), BlobSigner::new(key, &base)))
}

/// `<root>.signing-key`, beside the objects folder (outside what `/blobs` serves).
fn default_key_file(root: &str) -> PathBuf {
    let root = root.trim_end_matches('/');
    PathBuf::from(format!("{root}.signing-key"))
}

/// Reads the key in `file`, or creates it once (atomically, so processes starting together
/// agree on one key).
fn load_or_create_key(file: &FsPath) -> Result<Vec<u8>, ObjectsError> {
    if let Ok(text) = std::fs::read_to_string(file)
        && let Ok(k) = hex::decode(text.trim())
        && k.len() >= 16
    {
        return Ok(k);
    }
    if let Some(parent) = file.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    let key: [u8; 32] = rand::random();
    let tmp = file.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(hex::encode(key).as_bytes())?;
        f.sync_all()?;
    }
    // hard_link fails if another process published a key first; then use theirs.
    let linked = std::fs::hard_link(&tmp, file);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key.to_vec()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(file)?;
            hex::decode(text.trim()).map_err(|_| {
                ObjectsError::Config(format!("{} does not hold a hex key", file.display()))
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Characters left as they are in a key's URL path (each segment is encoded on its own).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Why a blob request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// A query parameter is missing or malformed.
    Malformed(&'static str),
    BadSignature,
    /// The URL was signed for another method.
    WrongMethod,
    Expired,
}

/// What a verified URL allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub length: Option<u64>,
    pub content_type: Option<String>,
    /// The URL's signature in canonical (lowercase hex) form: it names the URL, e.g. for
    /// single-use PUTs (`claims.rs`).
    pub signature: String,
    /// The URL's expiry (unix seconds).
    pub expires: i64,
}

/// The query parameters of a blob URL.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct BlobQuery {
    pub method: Option<String>,
    pub expires: Option<i64>,
    pub length: Option<u64>,
    #[serde(rename = "type")]
    pub content_type: Option<String>,
    pub signature: Option<String>,
}

pub struct BlobSigner {
    key: Vec<u8>,
    base: String,
}

impl BlobSigner {
    pub fn new(key: Vec<u8>, base: &str) -> Self {
        Self {
            key,
            base: base.trim_end_matches('/').to_string(),
        }
    }

    fn mac(
        &self,
        method: &str,
        key: &str,
        expires: i64,
        length: Option<u64>,
        content_type: Option<&str>,
    ) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC accepts any key length");
        let length = length.map(|l| l.to_string()).unwrap_or_default();
        let msg = format!(
            "substrate-blob-v1\n{method}\n{key}\n{expires}\n{length}\n{}",
            content_type.unwrap_or("")
        );
        mac.update(msg.as_bytes());
        mac
    }

    /// The signed URL for `method` on `key` until `expires_at` (unix seconds).
    pub fn sign(
        &self,
        method: UrlMethod,
        key: &str,
        expires_at: i64,
        length: Option<u64>,
        content_type: Option<&str>,
    ) -> String {
        let sig = hex::encode(
            self.mac(method.as_str(), key, expires_at, length, content_type)
                .finalize()
                .into_bytes(),
        );
        let path: Vec<String> = key
            .split('/')
            .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
            .collect();
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("method", method.as_str());
        q.append_pair("expires", &expires_at.to_string());
        if let Some(l) = length {
            q.append_pair("length", &l.to_string());
        }
        if let Some(t) = content_type {
            q.append_pair("type", t);
        }
        q.append_pair("signature", &sig);
        format!("{}/blobs/{}?{}", self.base, path.join("/"), q.finish())
    }

    /// Checks a request for `key` made with `method` at `now` (unix seconds).
    pub fn verify(
        &self,
        method: &str,
        key: &str,
        q: &BlobQuery,
        now: i64,
    ) -> Result<Grant, Denied> {
        let signed_method = q.method.as_deref().ok_or(Denied::Malformed("method"))?;
        let expires = q.expires.ok_or(Denied::Malformed("expires"))?;
        let sig = q
            .signature
            .as_deref()
            .and_then(|s| hex::decode(s).ok())
            .ok_or(Denied::Malformed("signature"))?;
        let mac = self.mac(
            signed_method,
            key,
            expires,
            q.length,
            q.content_type.as_deref(),
        );
        // verify_slice compares in constant time.
        if mac.verify_slice(&sig).is_err() {
            return Err(Denied::BadSignature);
        }
        let head_of_get = signed_method == "GET" && method.eq_ignore_ascii_case("HEAD");
        if !(signed_method.eq_ignore_ascii_case(method) || head_of_get) {
            return Err(Denied::WrongMethod);
        }
        if now > expires {
            return Err(Denied::Expired);
        }
        Ok(Grant {
            length: q.length,
            content_type: q.content_type.clone(),
            signature: hex::encode(&sig),
            expires,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(url: &str) -> (String, BlobQuery) {
        let u = url::Url::parse(url).unwrap();
        let key = percent_encoding::percent_decode_str(u.path().strip_prefix("/blobs/").unwrap())
            .decode_utf8()
            .unwrap()
            .to_string();
        let q: BlobQuery = serde_urlencoded_from(u.query().unwrap());
        (key, q)
    }

    fn serde_urlencoded_from(q: &str) -> BlobQuery {
        let mut out = BlobQuery::default();
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            match k.as_ref() {
                "method" => out.method = Some(v.to_string()),
                "expires" => out.expires = v.parse().ok(),
                "length" => out.length = v.parse().ok(),
                "type" => out.content_type = Some(v.to_string()),
                "signature" => out.signature = Some(v.to_string()),
                _ => {}
            }
        }
        out
    }

    #[test]
    fn signs_and_verifies() {
        let s = BlobSigner::new(b"0123456789abcdef0123".to_vec(), "http://h:1/");
        let url = s.sign(
            UrlMethod::Put,
            "uploads/al ice/r1/café.png",
            1000,
            Some(5),
            Some("image/png"),
        );
        assert!(url.starts_with("http://h:1/blobs/uploads/al%20ice/r1/caf%C3%A9.png?"));
        let (key, q) = query(&url);
        assert_eq!(key, "uploads/al ice/r1/café.png");
        let g = s.verify("PUT", &key, &q, 999).unwrap();
        assert_eq!(g.length, Some(5));
        assert_eq!(g.content_type.as_deref(), Some("image/png"));
        // The same URL with its signature in upper case is the same URL.
        let mut upper = q.clone();
        upper.signature = upper.signature.map(|s| s.to_uppercase());
        assert_eq!(
            s.verify("PUT", &key, &upper, 999).unwrap().signature,
            g.signature
        );
        assert_eq!(s.verify("PUT", &key, &q, 1001), Err(Denied::Expired));
        assert_eq!(s.verify("GET", &key, &q, 999), Err(Denied::WrongMethod));
        assert_eq!(
            s.verify("PUT", "uploads/al ice/r1/other.png", &q, 999),
            Err(Denied::BadSignature)
        );
        let mut longer = q.clone();
        longer.length = Some(6);
        assert_eq!(
            s.verify("PUT", &key, &longer, 999),
            Err(Denied::BadSignature)
        );
        let mut later = q.clone();
        later.expires = Some(5000);
        assert_eq!(
            s.verify("PUT", &key, &later, 999),
            Err(Denied::BadSignature)
        );
        let other = BlobSigner::new(b"another-key-another-key".to_vec(), "http://h:1");
        assert_eq!(
            other.verify("PUT", &key, &q, 999),
            Err(Denied::BadSignature)
        );
    }

    #[test]
    fn key_file_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        let a = load_or_create_key(&f).unwrap();
        let b = load_or_create_key(&f).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 32);
    }
}
