//! A string that never leaves the process by accident: `Debug` and `Serialize` print
//! `[redacted]` (so `substrate config` hides it); code reads it with `expose()`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Serializing is for printing the effective configuration. figment also layers the
        // built-in defaults through here, which is why every secret default is `None` or a
        // value that survives redaction unchanged (the sqlite store URL).
        s.serialize_str(&redact(&self.0))
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Keeps what an operator needs to recognise a URL (scheme, host, path) and hides
/// credentials; anything that is not a URL with credentials is hidden whole.
fn redact(s: &str) -> String {
    if let Ok(mut u) = url::Url::parse(s) {
        if u.scheme() == "sqlite" || u.scheme() == "file" {
            return s.to_string();
        }
        if u.password().is_some() || !u.username().is_empty() {
            let _ = u.set_password(Some("[redacted]"));
            return u.to_string();
        }
        if u.has_host() {
            return s.to_string();
        }
    }
    "[redacted]".to_string()
}
