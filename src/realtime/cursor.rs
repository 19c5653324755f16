//! Stream cursors: `<epoch>:<id>` — the notification id a client has read up to, and the epoch
//! of the notifications read model that id belongs to (ids restart when the read model is
//! rebuilt, and the epoch moves on; see `projections::notifications::epoch`). Every cursor the
//! server hands out (SSE `id:`, WebSocket `cursor`, the history's `next_after`) has this form.
//! A plain id (`57`, what clients held before epochs existed) belongs to the initial epoch.

use std::fmt;

use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::http::error::ApiError;
use crate::projections::notifications::epoch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub epoch: i64,
    /// The last notification id read; 0 = nothing yet.
    pub id: i64,
}

impl Cursor {
    pub fn new(epoch: i64, id: i64) -> Self {
        Self { epoch, id }
    }

    /// The start of `epoch`.
    pub fn start(epoch: i64) -> Self {
        Self { epoch, id: 0 }
    }

    /// Whether a reader holding this cursor has read nothing, so it can start in any epoch
    /// without being shifted.
    pub fn is_start(&self) -> bool {
        self.id == 0
    }

    /// Parses `<epoch>:<id>` or a plain `<id>` (the initial epoch).
    pub fn parse(s: &str) -> Option<Cursor> {
        let s = s.trim();
        let (epoch, id) = match s.split_once(':') {
            Some((e, i)) => (e.parse::<i64>().ok()?, i.parse::<i64>().ok()?),
            None => (epoch::INITIAL, s.parse::<i64>().ok()?),
        };
        (epoch >= 1 && id >= 0).then_some(Cursor { epoch, id })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.id)
    }
}

/// What a client is told when its epoch is over: the SSE `reset` event's data, the WebSocket
/// `reset` message (with `"type"`), and the history's 409 (with `"error"`). `cursor` is the
/// start of the new epoch.
pub fn reset_body(cursor: Cursor) -> Value {
    json!({
        "epoch": cursor.epoch,
        "after": cursor.to_string(),
        "reason": "the notifications were rebuilt since this cursor was handed out: \
                   drop what you hold and read again from `after`",
    })
}

/// A cursor parameter named `name`.
pub fn parse_param(name: &str, value: &str) -> Result<Cursor, ApiError> {
    Cursor::parse(value).ok_or_else(|| {
        ApiError::bad_request("invalid_parameter")
            .with("parameter", name.to_string())
            .with(
                "reason",
                "expected a cursor: <epoch>:<id> as handed out, or a notification id (an integer >= 0)",
            )
    })
}

/// An optional cursor parameter (absent or empty: `None`).
pub fn optional_param(name: &str, value: Option<&str>) -> Result<Option<Cursor>, ApiError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        Some(v) => parse_param(name, v).map(Some),
        None => Ok(None),
    }
}

/// Where a stream starts: `Last-Event-ID` (a reconnecting EventSource) wins over `?after=`;
/// `None` means from the beginning.
pub fn stream_cursor(headers: &HeaderMap, after: Option<&str>) -> Result<Option<Cursor>, ApiError> {
    if let Some(v) = headers.get("last-event-id") {
        let s = v.to_str().map_err(|_| {
            ApiError::bad_request("invalid_parameter").with("parameter", "Last-Event-ID")
        })?;
        if let Some(c) = optional_param("Last-Event-ID", Some(s))? {
            return Ok(Some(c));
        }
    }
    optional_param("after", after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_carry_the_epoch_and_plain_ids_are_the_initial_one() {
        assert_eq!(Cursor::parse("3:57"), Some(Cursor::new(3, 57)));
        assert_eq!(Cursor::parse("57"), Some(Cursor::new(epoch::INITIAL, 57)));
        assert_eq!(Cursor::new(3, 57).to_string(), "3:57");
        for bad in ["", "x", "-1", "0:5", "3:-1", "3:", ":4", "3:4:5", "1.5"] {
            assert_eq!(Cursor::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn stream_cursor_prefers_last_event_id() {
        let mut h = HeaderMap::new();
        assert_eq!(stream_cursor(&h, None).unwrap(), None);
        assert_eq!(
            stream_cursor(&h, Some("7")).unwrap(),
            Some(Cursor::new(1, 7))
        );
        h.insert("last-event-id", "2:42".parse().unwrap());
        assert_eq!(
            stream_cursor(&h, Some("7")).unwrap(),
            Some(Cursor::new(2, 42))
        );
        h.insert("last-event-id", "x".parse().unwrap());
        assert_eq!(
            stream_cursor(&h, None).unwrap_err().code(),
            "invalid_parameter"
        );
        assert!(parse_param("after", "-1").is_err());
    }
}
