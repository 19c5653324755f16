//! What may be uploaded and where it lives: the allowed media types (JPEG, PNG, GIF, WebP,
//! MP4, WebM, MPEG, WAV, OGG), file-name rules, and the object keys
//! `uploads/{user}/{request_id}/{file_name}` and `files/{user}/{request_id}/{file_name}`.

use crate::objects::Objects;

/// The media types an upload may have (lowercase, without parameters).
pub const ALLOWED_MEDIA_TYPES: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "video/mp4",
    "video/webm",
    "video/mpeg",
    "audio/mpeg",
    "audio/wav",
    "audio/x-wav",
    "audio/wave",
    "audio/ogg",
    "video/ogg",
    "application/ogg",
];

/// The allowed type `s` names (case-insensitive), if any.
pub fn allowed_media_type(s: &str) -> Option<&'static str> {
    let s = s.trim();
    ALLOWED_MEDIA_TYPES
        .iter()
        .copied()
        .find(|t| t.eq_ignore_ascii_case(s))
}

/// Most bytes of a file name.
pub const MAX_FILE_NAME: usize = 255;

/// Why a file name is refused, if it is.
pub fn file_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("the file name is empty");
    }
    if name.len() > MAX_FILE_NAME {
        return Some("the file name is longer than 255 bytes");
    }
    if name == "." || name == ".." {
        return Some("the file name cannot be . or ..");
    }
    if name.trim() != name {
        return Some("the file name cannot start or end with white space");
    }
    if name.contains('/') || Objects::path(name).is_err() {
        return Some(
            "the file name contains a character that is not allowed (/ \\ { } ^ % ` [ ] \" < > ~ # | * ? or a control character)",
        );
    }
    None
}

/// The key segment for a user: the id itself when it is plain (letters, digits, `.-_@`),
/// else `u-` and its hex encoding. Ownership is decided by the stored rows, never by paths.
pub fn user_segment(user: &str) -> String {
    let plain = !user.is_empty()
        && user.len() <= 128
        && user != "."
        && user != ".."
        && !user.starts_with("u-")
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'@'));
    if plain {
        user.to_string()
    } else {
        format!("u-{}", hex::encode(user.as_bytes()))
    }
}

/// Where the client uploads the file.
pub fn upload_path(user: &str, request_id: &str, file_name: &str) -> String {
    format!("uploads/{}/{request_id}/{file_name}", user_segment(user))
}

/// Where the file lives once confirmed (its id from then on).
pub fn file_path(user: &str, request_id: &str, file_name: &str) -> String {
    format!("files/{}/{request_id}/{file_name}", user_segment(user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        for t in [
            "image/jpeg",
            "IMAGE/PNG",
            "image/gif",
            "image/webp",
            "video/mp4",
            "video/webm",
            "video/mpeg",
            "audio/mpeg",
            "audio/wav",
            "audio/ogg",
        ] {
            assert!(allowed_media_type(t).is_some(), "{t}");
        }
        for t in [
            "application/pdf",
            "text/html",
            "image/svg+xml",
            "image/png; x=1",
            "",
        ] {
            assert!(allowed_media_type(t).is_none(), "{t}");
        }
    }

    #[test]
    fn file_names() {
        assert_eq!(file_name_problem("cat.png"), None);
        assert_eq!(file_name_problem("my cat (1).png"), None);
        assert_eq!(file_name_problem("ünïcödé.png"), None);
        for bad in [
            "",
            ".",
            "..",
            "a/b.png",
            "a|b",
            "x\n.png",
            " lead.png",
            "a%20b",
        ] {
            assert!(file_name_problem(bad).is_some(), "{bad:?}");
        }
        assert!(file_name_problem(&"x".repeat(256)).is_some());
    }

    #[test]
    fn paths() {
        assert_eq!(user_segment("alice"), "alice");
        assert_eq!(user_segment("auth0|123"), "u-61757468307c313233");
        assert_eq!(user_segment("u-x"), "u-752d78");
        assert_eq!(
            upload_path("alice", "r1", "a.png"),
            "uploads/alice/r1/a.png"
        );
        assert_eq!(file_path("alice", "r1", "a.png"), "files/alice/r1/a.png");
        assert!(Objects::path(&upload_path("auth0|123", "r1", "a b.png")).is_ok());
    }
}
