//! The one JSON parser for request bodies, and `StrictJson<T>`, the extractor built on it.
//! It is strict where `serde_json` is lenient: an object that names a key twice
//! (`{"message":"a","message":"b"}`) is refused, because parsers disagree on which duplicate
//! wins (a classic way to smuggle a value past a check). The parse is one pass of a serde
//! visitor that builds the same `Value` as `serde_json::from_slice`, so it costs no more; the
//! path of a duplicate is assembled only on the way out of an error.
//!
//! `StrictJson<T>` also refuses a U+0000 (NUL) in any string or key: PostgreSQL cannot store
//! it in TEXT, and whatever the server accepts must be storable on both backends. (Event
//! bodies get that check, field by field, from the schema conversion instead.)

use std::cell::RefCell;
use std::fmt;

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

use super::error::ApiError;
use crate::schema::json::{NUL_REASON, has_nul};

/// Why a body is not acceptable JSON.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("{0}")]
    Syntax(serde_json::Error),
    /// `path` leads to the key (`a.b[2].key`, as field errors name fields).
    #[error("the key `{key}` appears twice in one object (at {path})")]
    DuplicateKey { key: String, path: String },
}

/// One step of a path into a document.
enum Seg {
    Key(String),
    Index(usize),
}

/// Renders segments (outermost first) the way schema field errors name fields.
fn render(segs: &[Seg]) -> String {
    let mut out = String::new();
    for s in segs {
        match s {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    if out.is_empty() { "$".into() } else { out }
}

/// The visitor: builds a `Value`, and on a duplicate key records where (innermost first).
#[derive(Clone, Copy)]
struct Strict<'a> {
    dup: &'a RefCell<Option<Vec<Seg>>>,
}

impl Strict<'_> {
    /// On the way out of an error, adds this level's step to a duplicate's path.
    fn note(&self, seg: impl FnOnce() -> Seg) {
        if let Some(path) = self.dup.borrow_mut().as_mut() {
            path.push(seg());
        }
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
        Ok(Number::from_f64(f).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        loop {
            match seq.next_element_seed(self) {
                Ok(Some(v)) => out.push(v),
                Ok(None) => return Ok(Value::Array(out)),
                Err(e) => {
                    let i = out.len();
                    self.note(|| Seg::Index(i));
                    return Err(e);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = match map.next_value_seed(self) {
                Ok(v) => v,
                Err(e) => {
                    self.note(|| Seg::Key(key));
                    return Err(e);
                }
            };
            match out.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                Entry::Occupied(taken) => {
                    let key = taken.key().clone();
                    *self.dup.borrow_mut() = Some(vec![Seg::Key(key.clone())]);
                    return Err(serde::de::Error::custom(format!("duplicate key `{key}`")));
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// Parses a request body: standard JSON, but a key named twice in one object is an error.
pub fn parse(body: &[u8]) -> Result<Value, JsonError> {
    let dup = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(body);
    match (Strict { dup: &dup }).deserialize(&mut de) {
        Ok(v) => {
            de.end().map_err(JsonError::Syntax)?;
            Ok(v)
        }
        Err(e) => match dup.into_inner() {
            Some(mut segs) => {
                segs.reverse();
                let key = match segs.last() {
                    Some(Seg::Key(k)) => k.clone(),
                    _ => String::new(),
                };
                Err(JsonError::DuplicateKey {
                    key,
                    path: render(&segs),
                })
            }
            None => Err(JsonError::Syntax(e)),
        },
    }
}

/// The path of the first string or key holding a NUL character, if any.
pub fn find_nul(v: &Value) -> Option<String> {
    fn walk(v: &Value, path: &mut Vec<Seg>) -> bool {
        match v {
            Value::String(s) => has_nul(s),
            Value::Array(items) => items.iter().enumerate().any(|(i, x)| {
                path.push(Seg::Index(i));
                let found = walk(x, path);
                if !found {
                    path.pop();
                }
                found
            }),
            Value::Object(m) => m.iter().any(|(k, x)| {
                path.push(Seg::Key(k.clone()));
                let found = has_nul(k) || walk(x, path);
                if !found {
                    path.pop();
                }
                found
            }),
            _ => false,
        }
    }
    let mut path = Vec::new();
    walk(v, &mut path).then(|| render(&path))
}

impl From<JsonError> for ApiError {
    fn from(e: JsonError) -> Self {
        match e {
            JsonError::Syntax(e) => {
                ApiError::bad_request("malformed_json").with("reason", e.to_string())
            }
            JsonError::DuplicateKey { key, path } => ApiError::bad_request("duplicate_key")
                .with("field", path)
                .with(
                    "reason",
                    format!("the key `{key}` appears twice in one object"),
                ),
        }
    }
}

/// Whether the request says its body is JSON (`application/json` or `…+json`).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (sub.eq_ignore_ascii_case("json") || sub.to_ascii_lowercase().ends_with("+json"))
}

/// A JSON request body parsed strictly (see the module doc) into `T`. Refusals are JSON:
/// `415 unsupported_media_type`, `400 malformed_json`, `400 duplicate_key`,
/// `400 invalid_request` (a NUL character, naming the field), `422 invalid_request` (the
/// document does not fit `T`).
pub struct StrictJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for StrictJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            )
            .with("reason", "expected Content-Type: application/json"));
        }
        let body = Bytes::from_request(req, state).await.map_err(|e| {
            let status = e.status();
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "payload_too_large"
            } else {
                "invalid_request"
            };
            ApiError::new(status, code).with("reason", e.body_text())
        })?;
        let value = parse(&body)?;
        if let Some(field) = find_nul(&value) {
            return Err(ApiError::bad_request("invalid_request")
                .with("field", field)
                .with("reason", NUL_REASON));
        }
        serde_json::from_value(value).map(StrictJson).map_err(|e| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
                .with("reason", e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_serde_json() {
        for doc in [
            r#"{"a":1,"b":[true,null,"x",{"c":-2.5}],"d":{}}"#,
            r#"[1, 18446744073709551615, -9223372036854775808, 1e300, "\u00e9"]"#,
            r#""just a string""#,
            "  {\"a\" : {\"a\" : 1}}  ",
        ] {
            let ours = parse(doc.as_bytes()).unwrap();
            let theirs: Value = serde_json::from_str(doc).unwrap();
            assert_eq!(ours, theirs, "{doc}");
        }
    }

    #[test]
    fn keeps_key_order() {
        let v = parse(br#"{"z":1,"a":2,"m":3}"#).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["z", "a", "m"]);
    }

    #[test]
    fn refuses_duplicate_keys_and_names_them() {
        let e = parse(br#"{"message":"a","message":"b"}"#).unwrap_err();
        match e {
            JsonError::DuplicateKey { key, path } => {
                assert_eq!((key.as_str(), path.as_str()), ("message", "message"));
            }
            other => panic!("{other:?}"),
        }
        let e = parse(br#"{"a":{"b":[1,{"c":1,"d":2,"c":3}]}}"#).unwrap_err();
        match e {
            JsonError::DuplicateKey { key, path } => {
                assert_eq!((key.as_str(), path.as_str()), ("c", "a.b[1].c"));
            }
            other => panic!("{other:?}"),
        }
        let e = parse(br#"[{"x":1},{"x":1,"x":1}]"#).unwrap_err();
        assert!(
            matches!(&e, JsonError::DuplicateKey { path, .. } if path == "[1].x"),
            "{e:?}"
        );
        // The same key in different objects is fine.
        assert!(parse(br#"{"a":{"x":1},"b":{"x":1}}"#).is_ok());
    }

    #[test]
    fn syntax_errors_stay_syntax_errors() {
        for doc in [
            "{not json",
            "{\"a\":1} trailing",
            "",
            "[1,]",
            "{\"a\":\"\\ud800\"}",
        ] {
            assert!(
                matches!(parse(doc.as_bytes()), Err(JsonError::Syntax(_))),
                "{doc}"
            );
        }
    }

    #[test]
    fn finds_nul_characters_with_their_path() {
        let v = parse(br#"{"a":"ok","b":[{"c":"x\u0000y"}]}"#).unwrap();
        assert_eq!(find_nul(&v).as_deref(), Some("b[0].c"));
        let v = parse(br#"{"a":{"k\u0000":1}}"#).unwrap();
        assert_eq!(find_nul(&v).as_deref(), Some("a.k\0"));
        let v = parse(br#"{"a":"fine","b":[1,2,"three"]}"#).unwrap();
        assert_eq!(find_nul(&v), None);
    }

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        for (ct, ok) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/vnd.schemaregistry.v1+json", true),
            ("text/plain", false),
            ("application/jsonx", false),
        ] {
            h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            assert_eq!(is_json(&h), ok, "{ct}");
        }
    }
}
