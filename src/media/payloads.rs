//! The payloads of the media topics as Rust types (their schemas are `avro/*/media/*.avsc`).
//! Times are epoch milliseconds; `version` is the payload's schema version.

use serde::{Deserialize, Serialize};

fn one() -> i32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadIntent {
    #[serde(default = "one")]
    pub version: i32,
    pub user_id: String,
    pub request_id: String,
    pub file_name: String,
    pub media_type: String,
    pub file_size: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadApproved {
    #[serde(default = "one")]
    pub version: i32,
    pub user_id: String,
    pub request_id: String,
    pub file_name: String,
    pub file_path: String,
    pub media_type: String,
    pub file_size: i64,
    pub credits_remaining: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadRejected {
    #[serde(default = "one")]
    pub version: i32,
    pub user_id: String,
    pub request_id: String,
    pub file_name: String,
    pub media_type: String,
    pub file_size: i64,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadSigned {
    #[serde(default = "one")]
    pub version: i32,
    pub user_id: String,
    pub request_id: String,
    pub file_name: String,
    pub file_path: String,
    pub media_type: String,
    pub file_size: i64,
    pub upload_url: String,
    pub expires_in: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadReceived {
    #[serde(default = "one")]
    pub version: i32,
    pub user_id: String,
    pub request_id: String,
    pub file_path: String,
    pub file_name: Option<String>,
    pub media_type: Option<String>,
    pub file_size: Option<i64>,
    #[serde(default)]
    pub retry_count: i32,
    pub source: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadRetry {
    #[serde(default = "one")]
    pub version: i32,
    pub user_id: String,
    pub request_id: String,
    pub file_path: String,
    pub retry_count: i32,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadDeadLetter {
    #[serde(default = "one")]
    pub version: i32,
    pub user_id: String,
    pub request_id: String,
    pub file_path: String,
    pub file_name: Option<String>,
    pub retry_count: i32,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadConfirmed {
    #[serde(default = "one")]
    pub version: i32,
    pub user_id: String,
    pub request_id: String,
    pub file_name: String,
    pub file_path: String,
    pub upload_path: String,
    pub media_type: String,
    pub file_size: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadExpired {
    #[serde(default = "one")]
    pub version: i32,
    pub user_id: String,
    pub request_id: String,
    pub file_path: String,
    pub file_name: Option<String>,
    pub reason: String,
}

/// The download and delete intents have the same shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileIntent {
    #[serde(default = "one")]
    pub version: i32,
    pub user_id: String,
    pub request_id: String,
    pub file_path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DownloadSigned {
    #[serde(default = "one")]
    pub version: i32,
    pub user_id: String,
    pub request_id: String,
    pub file_path: String,
    pub download_url: String,
    pub expires_in: i64,
    pub expires_at: i64,
}

/// `download.rejected` and `delete.rejected`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileRejected {
    #[serde(default = "one")]
    pub version: i32,
    pub user_id: String,
    pub request_id: String,
    pub file_path: String,
    pub reason: String,
}

/// `delete.events`: the file was removed.
pub type FileDeleted = FileIntent;
