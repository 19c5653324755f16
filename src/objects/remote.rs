//! The production backends through object_store: S3 and S3-compatible servers (MinIO,
//! s3s, Ceph, GCS's S3 interoperability endpoint) and native Google Cloud Storage. Presigned
//! URLs come from object_store's `Signer`, signed for `objects.public_endpoint` when clients
//! reach the bucket at another address than substrate does.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::signer::Signer;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use super::ObjectsError;
use crate::config::ObjectsConfig;

/// A remote store and the signer of its URLs.
pub type Remote = (Arc<dyn ObjectStore>, Arc<dyn Signer>);

fn client_options(cfg: &ObjectsConfig, endpoint: Option<&str>) -> ClientOptions {
    ClientOptions::new()
        .with_timeout(Duration::from_secs(cfg.request_timeout_secs.max(1)))
        .with_connect_timeout(Duration::from_secs(5))
        .with_allow_http(endpoint.is_some_and(|e| e.starts_with("http://")))
}

fn retry(cfg: &ObjectsConfig) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: cfg.max_retries,
        retry_timeout: Duration::from_secs(cfg.request_timeout_secs.max(1) * 2),
    }
}

fn bucket_name(bucket: &str) -> Result<&str, ObjectsError> {
    let b = bucket.trim_end_matches('/');
    if b.is_empty() || b.contains('/') {
        return Err(ObjectsError::Config(format!(
            "objects.url: expected a bucket name, got {bucket:?}"
        )));
    }
    Ok(b)
}

fn s3_builder(cfg: &ObjectsConfig, bucket: &str, endpoint: Option<&str>) -> AmazonS3Builder {
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(&cfg.region)
        .with_client_options(client_options(cfg, endpoint))
        .with_retry(retry(cfg));
    if let Some(e) = endpoint {
        // Custom endpoints (MinIO, s3s) use path-style requests: {endpoint}/{bucket}/{key}.
        b = b
            .with_endpoint(e.trim_end_matches('/'))
            .with_virtual_hosted_style_request(false);
    }
    if let Some(k) = &cfg.access_key_id {
        b = b.with_access_key_id(k.expose());
    }
    if let Some(s) = &cfg.secret_access_key {
        b = b.with_secret_access_key(s.expose());
    }
    b
}

/// An S3 (or S3-compatible) bucket and the signer for its presigned URLs.
pub fn s3(cfg: &ObjectsConfig, bucket: &str) -> Result<Remote, ObjectsError> {
    let bucket = bucket_name(bucket)?;
    let store = Arc::new(s3_builder(cfg, bucket, cfg.endpoint.as_deref()).build()?);
    let signer: Arc<dyn Signer> = match &cfg.public_endpoint {
        Some(public) => Arc::new(s3_builder(cfg, bucket, Some(public)).build()?),
        None => store.clone(),
    };
    Ok((store, signer))
}

/// A Google Cloud Storage bucket (native API; V4 signed URLs).
pub fn gcs(cfg: &ObjectsConfig, bucket: &str) -> Result<Remote, ObjectsError> {
    let bucket = bucket_name(bucket)?;
    let mut b = GoogleCloudStorageBuilder::new()
        .with_bucket_name(bucket)
        .with_client_options(client_options(cfg, None))
        .with_retry(retry(cfg));
    if let Some(p) = &cfg.gcs_service_account_path {
        b = b.with_service_account_path(p.to_string_lossy());
    }
    let store = Arc::new(b.build()?);
    Ok((store.clone(), store))
}
