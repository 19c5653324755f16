//! Request bodies to bytes: the snappy block format (Prometheus remote write) and gzip
//! (`Content-Encoding: gzip`, OTLP and Loki clients), each bounded by
//! `telemetry.ingest.decoded_limit_bytes` so a small compressed body cannot expand without
//! limit. Errors are 4xx answers naming the problem.

use std::io::Read;

use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use prost::Message;

use crate::http::error::ApiError;
use crate::telemetry::model::Batch;

fn too_large(limit: usize) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
        .with("limit_bytes", limit as u64)
        .with(
            "reason",
            "the decompressed body is larger than telemetry.ingest.decoded_limit_bytes",
        )
}

/// Decodes a snappy block (not the framed stream format).
pub fn snappy(body: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    let bad = |e: snap::Error| {
        ApiError::bad_request("invalid_snappy").with("reason", format!("not a snappy block: {e}"))
    };
    let len = snap::raw::decompress_len(body).map_err(bad)?;
    if len > limit {
        return Err(too_large(limit));
    }
    snap::raw::Decoder::new().decompress_vec(body).map_err(bad)
}

/// Decodes gzip, reading at most `limit` bytes of output.
pub fn gzip(body: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            ApiError::bad_request("invalid_gzip").with("reason", format!("not gzip data: {e}"))
        })?;
    if out.len() > limit {
        return Err(too_large(limit));
    }
    Ok(out)
}

/// The body with its `Content-Encoding` (gzip, snappy, identity) undone.
pub fn content(headers: &HeaderMap, body: Bytes, limit: usize) -> Result<Bytes, ApiError> {
    let enc = headers
        .get(axum::http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    match enc.as_deref() {
        None | Some("" | "identity") => Ok(body),
        Some("gzip") => gzip(&body, limit).map(Bytes::from),
        Some("snappy") => snappy(&body, limit).map(Bytes::from),
        Some(other) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
        )
        .with("encoding", other.to_string())
        .with(
            "reason",
            "Content-Encoding must be gzip, snappy or identity",
        )),
    }
}

/// A Prometheus remote-write 1.0 body: a snappy block holding a `WriteRequest`.
pub fn remote_write(body: &[u8], limit: usize) -> Result<Batch, ApiError> {
    let raw = snappy(body, limit)?;
    let mut batch = Batch::decode(raw.as_slice()).map_err(|e| {
        ApiError::bad_request("invalid_protobuf")
            .with("reason", format!("not a prometheus.WriteRequest: {e}"))
    })?;
    // Tag 10 is ours (log lines), not remote write's: a sender cannot smuggle lines in.
    batch.logs.clear();
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::model::{Label, Sample, TimeSeries};

    #[test]
    fn snappy_round_trip_and_refusals() {
        let b = Batch {
            timeseries: vec![TimeSeries {
                labels: vec![Label {
                    name: "__name__".into(),
                    value: "up".into(),
                }],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 5,
                }],
            }],
            logs: vec![],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&b.encode_to_vec())
            .unwrap();
        assert_eq!(remote_write(&body, 1 << 20).unwrap(), b);
        assert_eq!(
            remote_write(b"\xff\xff\xff\xff", 1 << 20)
                .unwrap_err()
                .code(),
            "invalid_snappy"
        );
        assert_eq!(
            remote_write(&body, 4).unwrap_err().code(),
            "payload_too_large"
        );
        let junk = snap::raw::Encoder::new().compress_vec(b"\x0a\xff").unwrap();
        assert_eq!(
            remote_write(&junk, 1 << 20).unwrap_err().code(),
            "invalid_protobuf"
        );
    }

    #[test]
    fn gzip_is_bounded() {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&[b'a'; 10_000]).unwrap();
        let z = e.finish().unwrap();
        assert_eq!(gzip(&z, 10_000).unwrap().len(), 10_000);
        assert_eq!(gzip(&z, 9_999).unwrap_err().code(), "payload_too_large");
        assert_eq!(gzip(b"plain", 100).unwrap_err().code(), "invalid_gzip");
    }
}
