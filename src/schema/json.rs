//! JSON → Avro conversion guided by the schema, with errors that name the offending field
//! (`{"field":"visibility","reason":"expected one of broadcast,direct"}`), and Avro → JSON
//! for consumers and APIs. JSON input is the natural form (a union is its plain value, a
//! timestamp may be epoch millis or RFC 3339), not Avro's JSON encoding.
//!
//! What is accepted here must be storable by every consumer on both backends: a string or
//! map key holding U+0000 is refused (PostgreSQL TEXT cannot hold it), and so is a timestamp
//! outside the years 0000–9999 (`super::time`).

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::Name;
use apache_avro::types::Value as Avro;
use serde_json::Value as Json;

/// Why a JSON document does not fit the schema. `field` is a dotted path (`$` = the root).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

/// Why a string with a NUL character is refused.
pub const NUL_REASON: &str = "contains a NUL character (U+0000), which cannot be stored";

/// Whether `s` holds a NUL character (a `memchr`, cheap on the hot path).
pub fn has_nul(s: &str) -> bool {
    s.as_bytes().contains(&0)
}

/// Named types of a schema, for resolving `Schema::Ref`.
pub type Names = HashMap<Name, Schema>;

pub fn names_of(schema: &Schema) -> Names {
    match apache_avro::schema::ResolvedSchema::try_from(schema) {
        Ok(r) => r
            .get_names()
            .iter()
            .map(|(n, s)| (n.clone(), (*s).clone()))
            .collect(),
        Err(_) => HashMap::new(),
    }
}

pub fn json_to_avro(schema: &Schema, names: &Names, value: &Json) -> Result<Avro, FieldError> {
    let mut path = String::new();
    convert(schema, names, value, &mut path)
}

fn err(path: &str, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: if path.is_empty() {
            "$".into()
        } else {
            path.to_string()
        },
        reason: reason.into(),
    }
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

fn expected(path: &str, what: &str, got: &Json) -> FieldError {
    err(path, format!("expected {what}, got {}", kind(got)))
}

fn push_path(path: &mut String, seg: &str) -> usize {
    let len = path.len();
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(seg);
    len
}

/// A timestamp in `per_sec` units since the epoch, from a number or an RFC 3339 string,
/// within the accepted range (`super::time`).
fn timestamp_from(v: &Json, path: &str, per_sec: i64) -> Result<i64, FieldError> {
    let t = match v {
        Json::Number(n) => n
            .as_i64()
            .ok_or_else(|| err(path, "expected an integer timestamp"))?,
        Json::String(s) => {
            let t = chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|_| err(path, "expected epoch milliseconds or an RFC 3339 time"))?;
            match per_sec {
                1_000 => t.timestamp_millis(),
                1_000_000 => t.timestamp_micros(),
                _ => t
                    .timestamp_nanos_opt()
                    .ok_or_else(|| err(path, super::time::OUT_OF_RANGE))?,
            }
        }
        other => return Err(expected(path, "a timestamp", other)),
    };
    let in_range = match per_sec {
        1_000 => super::time::millis_in_range(t),
        1_000_000 => super::time::micros_in_range(t),
        // Every i64 of nanoseconds lies between 1677 and 2262.
        _ => true,
    };
    if in_range {
        Ok(t)
    } else {
        Err(err(path, super::time::OUT_OF_RANGE))
    }
}

fn convert(
    schema: &Schema,
    names: &Names,
    v: &Json,
    path: &mut String,
) -> Result<Avro, FieldError> {
    match schema {
        Schema::Null => match v {
            Json::Null => Ok(Avro::Null),
            o => Err(expected(path, "null", o)),
        },
        Schema::Boolean => v
            .as_bool()
            .map(Avro::Boolean)
            .ok_or_else(|| expected(path, "a boolean", v)),
        Schema::Int => {
            let n = v.as_i64().ok_or_else(|| expected(path, "an integer", v))?;
            i32::try_from(n)
                .map(Avro::Int)
                .map_err(|_| err(path, "integer out of range for int"))
        }
        Schema::Long => v
            .as_i64()
            .map(Avro::Long)
            .ok_or_else(|| expected(path, "an integer", v)),
        Schema::Float => v
            .as_f64()
            .map(|f| Avro::Float(f as f32))
            .ok_or_else(|| expected(path, "a number", v)),
        Schema::Double => v
            .as_f64()
            .map(Avro::Double)
            .ok_or_else(|| expected(path, "a number", v)),
        Schema::String => {
            let s = v.as_str().ok_or_else(|| expected(path, "a string", v))?;
            if has_nul(s) {
                return Err(err(path, NUL_REASON));
            }
            Ok(Avro::String(s.to_string()))
        }
        Schema::Uuid => {
            let s = v
                .as_str()
                .ok_or_else(|| expected(path, "a UUID string", v))?;
            uuid::Uuid::parse_str(s)
                .map(Avro::Uuid)
                .map_err(|_| err(path, "expected a UUID"))
        }
        Schema::Bytes => {
            let s = v
                .as_str()
                .ok_or_else(|| expected(path, "a string of bytes", v))?;
            let mut out = Vec::with_capacity(s.len());
            for c in s.chars() {
                let b = u8::try_from(u32::from(c))
                    .map_err(|_| err(path, "bytes must be code points 0-255"))?;
                out.push(b);
            }
            Ok(Avro::Bytes(out))
        }
        Schema::Fixed(f) => {
            let s = v.as_str().ok_or_else(|| expected(path, "a string", v))?;
            if s.len() != f.size {
                return Err(err(path, format!("expected exactly {} bytes", f.size)));
            }
            Ok(Avro::Fixed(f.size, s.as_bytes().to_vec()))
        }
        Schema::Enum(e) => {
            let s = v.as_str().ok_or_else(|| expected(path, "a string", v))?;
            match e.symbols.iter().position(|x| x == s) {
                Some(i) => Ok(Avro::Enum(i as u32, s.to_string())),
                None => Err(err(
                    path,
                    format!("expected one of {}", e.symbols.join(",")),
                )),
            }
        }
        Schema::Array(a) => {
            let items = v.as_array().ok_or_else(|| expected(path, "an array", v))?;
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                out.push(convert(&a.items, names, item, path)?);
                path.truncate(len);
            }
            Ok(Avro::Array(out))
        }
        Schema::Map(m) => {
            let obj = v
                .as_object()
                .ok_or_else(|| expected(path, "an object", v))?;
            let mut out = HashMap::with_capacity(obj.len());
            for (k, item) in obj {
                let len = push_path(path, k);
                if has_nul(k) {
                    return Err(err(path, NUL_REASON));
                }
                out.insert(k.clone(), convert(&m.types, names, item, path)?);
                path.truncate(len);
            }
            Ok(Avro::Map(out))
        }
        Schema::Union(u) => {
            let variants = u.variants();
            if v.is_null() {
                return match variants.iter().position(|s| matches!(s, Schema::Null)) {
                    Some(i) => Ok(Avro::Union(i as u32, Box::new(Avro::Null))),
                    None => Err(err(path, "must not be null")),
                };
            }
            let non_null: Vec<(usize, &Schema)> = variants
                .iter()
                .enumerate()
                .filter(|(_, s)| !matches!(s, Schema::Null))
                .collect();
            let mut first_err = None;
            for (i, s) in &non_null {
                match convert(s, names, v, path) {
                    Ok(val) => return Ok(Avro::Union(*i as u32, Box::new(val))),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            match (non_null.len(), first_err) {
                (1, Some(e)) => Err(e),
                _ => Err(err(path, "does not match any type of the union")),
            }
        }
        Schema::Record(r) => {
            let obj = v
                .as_object()
                .ok_or_else(|| expected(path, "an object", v))?;
            for key in obj.keys() {
                if !r.lookup.contains_key(key) {
                    let len = push_path(path, key);
                    let e = err(path, "unknown field");
                    path.truncate(len);
                    return Err(e);
                }
            }
            let mut fields = Vec::with_capacity(r.fields.len());
            for f in &r.fields {
                let len = push_path(path, &f.name);
                let val = match obj.get(&f.name) {
                    Some(x) => convert(&f.schema, names, x, path)?,
                    None => match &f.default {
                        Some(d) => convert_default(&f.schema, names, d, path)?,
                        None => {
                            if is_nullable(&f.schema) {
                                convert(&f.schema, names, &Json::Null, path)?
                            } else {
                                return Err(err(path, "required field missing"));
                            }
                        }
                    },
                };
                path.truncate(len);
                fields.push((f.name.clone(), val));
            }
            Ok(Avro::Record(fields))
        }
        Schema::Date => match v {
            Json::Number(n) => n
                .as_i64()
                .and_then(|d| i32::try_from(d).ok())
                .map(Avro::Date)
                .ok_or_else(|| err(path, "expected days since epoch")),
            Json::String(s) => {
                let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .map_err(|_| err(path, "expected a date YYYY-MM-DD"))?;
                let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
                    .ok_or_else(|| err(path, "bad epoch"))?;
                Ok(Avro::Date((d - epoch).num_days() as i32))
            }
            o => Err(expected(path, "a date", o)),
        },
        Schema::TimeMillis => {
            let n = v
                .as_i64()
                .ok_or_else(|| expected(path, "milliseconds", v))?;
            i32::try_from(n)
                .map(Avro::TimeMillis)
                .map_err(|_| err(path, "out of range"))
        }
        Schema::TimeMicros => v
            .as_i64()
            .map(Avro::TimeMicros)
            .ok_or_else(|| expected(path, "microseconds", v)),
        Schema::TimestampMillis => Ok(Avro::TimestampMillis(timestamp_from(v, path, 1_000)?)),
        Schema::TimestampMicros => Ok(Avro::TimestampMicros(timestamp_from(v, path, 1_000_000)?)),
        Schema::TimestampNanos => Ok(Avro::TimestampNanos(timestamp_from(
            v,
            path,
            1_000_000_000,
        )?)),
        Schema::LocalTimestampMillis => {
            Ok(Avro::LocalTimestampMillis(timestamp_from(v, path, 1_000)?))
        }
        Schema::LocalTimestampMicros => Ok(Avro::LocalTimestampMicros(timestamp_from(
            v, path, 1_000_000,
        )?)),
        Schema::LocalTimestampNanos => Ok(Avro::LocalTimestampNanos(timestamp_from(
            v,
            path,
            1_000_000_000,
        )?)),
        Schema::Ref { name } => {
            let target = names
                .get(name)
                .or_else(|| {
                    names
                        .iter()
                        .find(|(n, _)| n.name == name.name)
                        .map(|(_, s)| s)
                })
                .ok_or_else(|| err(path, format!("unknown named type {}", name.name)))?;
            convert(target, names, v, path)
        }
        Schema::Decimal(_) | Schema::BigDecimal | Schema::Duration => Err(err(
            path,
            "decimal and duration fields cannot be given as JSON",
        )),
    }
}

/// Avro defaults of a union apply to its first branch.
fn convert_default(
    schema: &Schema,
    names: &Names,
    d: &Json,
    path: &mut String,
) -> Result<Avro, FieldError> {
    if let Schema::Union(u) = schema
        && let Some(first) = u.variants().first()
    {
        let val = convert(first, names, d, path)?;
        return Ok(Avro::Union(0, Box::new(val)));
    }
    convert(schema, names, d, path)
}

fn is_nullable(schema: &Schema) -> bool {
    matches!(schema, Schema::Union(u) if u.variants().iter().any(|s| matches!(s, Schema::Null)))
}

/// Avro → JSON (unions unwrapped, enums as strings, timestamps as numbers).
pub fn avro_to_json(v: Avro) -> Result<Json, apache_avro::Error> {
    Json::try_from(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::parse_str(
            r#"{"type":"record","name":"M","fields":[
                {"name":"user_id","type":"string"},
                {"name":"n","type":"int","default":1},
                {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
                {"name":"visibility","type":{"type":"enum","name":"V","symbols":["broadcast","direct"]},"default":"broadcast"},
                {"name":"recipient_id","type":["null","string"],"default":null},
                {"name":"tags","type":{"type":"array","items":"string"},"default":[]}
            ]}"#,
        )
        .unwrap()
    }

    fn conv(v: Json) -> Result<Avro, FieldError> {
        let s = schema();
        json_to_avro(&s, &names_of(&s), &v)
    }

    #[test]
    fn fills_defaults_and_encodes() {
        let s = schema();
        let v = conv(json!({"user_id":"u1","at":"2024-01-01T00:00:00Z"})).unwrap();
        let bytes = apache_avro::to_avro_datum(&s, v).unwrap();
        assert!(!bytes.is_empty());
    }

    #[test]
    fn names_bad_enum() {
        let e = conv(json!({"user_id":"u1","at":1,"visibility":"everyone"})).unwrap_err();
        assert_eq!(e.field, "visibility");
        assert_eq!(e.reason, "expected one of broadcast,direct");
    }

    #[test]
    fn names_missing_and_unknown_and_nested() {
        assert_eq!(conv(json!({"at":1})).unwrap_err().field, "user_id");
        let e = conv(json!({"user_id":"u","at":1,"bogus":1})).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("bogus", "unknown field")
        );
        let e = conv(json!({"user_id":"u","at":1,"tags":["a",2]})).unwrap_err();
        assert_eq!(e.field, "tags[1]");
        let e = conv(json!({"user_id":"u","at":1,"recipient_id":5})).unwrap_err();
        assert_eq!(e.field, "recipient_id");
        assert_eq!(conv(json!([1])).unwrap_err().field, "$");
    }

    #[test]
    fn refuses_nul_in_strings_and_map_keys() {
        let e = conv(json!({"user_id":"u\u{0}1","at":1})).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("user_id", NUL_REASON)
        );
        let e = conv(json!({"user_id":"u","at":1,"tags":["ok","b\u{0}ad"]})).unwrap_err();
        assert_eq!(e.field, "tags[1]");
        let e = conv(json!({"user_id":"u","at":1,"recipient_id":"\u{0}"})).unwrap_err();
        assert_eq!(e.field, "recipient_id");
        let s = Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[{"name":"m","type":{"type":"map","values":"long"}}]}"#,
        )
        .unwrap();
        let e = json_to_avro(&s, &names_of(&s), &json!({"m":{"fine":1,"k\u{0}":2}})).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("m.k\u{0}", NUL_REASON)
        );
    }

    #[test]
    fn refuses_timestamps_out_of_range() {
        for at in [
            json!(i64::MAX),
            json!(i64::MIN),
            json!(super::super::time::MAX_MILLIS + 1),
            json!(super::super::time::MIN_MILLIS - 1),
        ] {
            let e = conv(json!({"user_id":"u","at":at})).unwrap_err();
            assert_eq!(
                (e.field.as_str(), e.reason.as_str()),
                ("at", super::super::time::OUT_OF_RANGE),
                "{at}"
            );
        }
        for at in [
            json!(super::super::time::MAX_MILLIS),
            json!(super::super::time::MIN_MILLIS),
            json!("9999-12-31T23:59:59.999Z"),
            json!("0000-01-01T00:00:00Z"),
        ] {
            assert!(conv(json!({"user_id":"u","at":at})).is_ok(), "{at}");
        }
        // timestamp-nanos: RFC 3339 times outside what i64 nanoseconds hold are refused.
        let s = Schema::parse_str(
            r#"{"type":"record","name":"N","fields":[{"name":"t","type":{"type":"long","logicalType":"timestamp-nanos"}}]}"#,
        )
        .unwrap();
        let e = json_to_avro(&s, &names_of(&s), &json!({"t":"3000-01-01T00:00:00Z"})).unwrap_err();
        assert_eq!(e.field, "t");
        assert!(json_to_avro(&s, &names_of(&s), &json!({"t":i64::MAX})).is_ok());
    }

    #[test]
    fn round_trips_to_json() {
        let s = schema();
        let v =
            conv(json!({"user_id":"u1","at":5,"recipient_id":"u2","visibility":"direct"})).unwrap();
        let bytes = apache_avro::to_avro_datum(&s, v).unwrap();
        let back = apache_avro::from_avro_datum(&s, &mut &bytes[..], None).unwrap();
        let j = avro_to_json(back).unwrap();
        assert_eq!(j["recipient_id"], "u2");
        assert_eq!(j["visibility"], "direct");
        assert_eq!(j["at"], 5);
    }
}
