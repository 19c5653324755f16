//! Avro → JSON Schema (2020-12, as OpenAPI 3.1 uses it): the JSON a topic's route accepts,
//! following the same rules as `super::json::json_to_avro` — a union is its plain value
//! (`["null","string"]` → string or null), a timestamp is epoch units or an RFC 3339 string
//! within the years 0000–9999, an enum is one of its symbols, a record refuses unknown fields,
//! a field with a default or a null branch is optional, strings never hold U+0000. The
//! OpenAPI document (`http::openapi::events`) builds every event route's request body here,
//! then adds what `super::rules` checks beyond the types (`Rules::describe`).

use apache_avro::Schema;
use apache_avro::schema::RecordSchema;
use serde_json::{Map, Value, json};

use super::json::Names;
use super::time::{MAX_MILLIS, MIN_MILLIS};

/// A string without U+0000 (the stores cannot hold it; `json::NUL_REASON`).
const NO_NUL: &str = "^[^\\u0000]*$";

/// Named types nest at most this deep (a recursive record is cut off as "any object").
const MAX_DEPTH: usize = 32;

/// The JSON Schema of the JSON documents `schema` accepts.
pub fn json_schema(schema: &Schema, names: &Names) -> Value {
    convert(schema, names, 0)
}

fn int_range(min: i64, max: i64) -> Value {
    json!({ "type": "integer", "minimum": min, "maximum": max })
}

/// A timestamp: epoch units (`per_milli` per millisecond) or an RFC 3339 string.
fn timestamp(per_milli: i64, unit: &str) -> Value {
    let number = match per_milli {
        // Every i64 of nanoseconds lies in range (1677–2262).
        1_000_000 => json!({ "type": "integer" }),
        _ => int_range(
            MIN_MILLIS * per_milli,
            MAX_MILLIS * per_milli + (per_milli - 1),
        ),
    };
    json!({
        "description": format!("epoch {unit}, or an RFC 3339 time (years 0000 to 9999 UTC)"),
        "anyOf": [number, { "type": "string", "format": "date-time" }],
    })
}

fn convert(schema: &Schema, names: &Names, depth: usize) -> Value {
    if depth > MAX_DEPTH {
        return json!({ "type": "object" });
    }
    match schema {
        Schema::Null => json!({ "type": "null" }),
        Schema::Boolean => json!({ "type": "boolean" }),
        Schema::Int | Schema::TimeMillis => int_range(i32::MIN.into(), i32::MAX.into()),
        Schema::Long | Schema::TimeMicros => json!({ "type": "integer" }),
        Schema::Float | Schema::Double => json!({ "type": "number" }),
        Schema::String => json!({ "type": "string", "pattern": NO_NUL }),
        Schema::Uuid => json!({ "type": "string", "format": "uuid" }),
        Schema::Bytes => json!({ "type": "string", "pattern": "^[\\u0001-\\u00ff]*$" }),
        Schema::Fixed(f) => json!({
            "type": "string",
            "pattern": format!("^[\\u0001-\\u007f]{{{}}}$", f.size),
        }),
        Schema::Enum(e) => {
            let mut v = json!({ "type": "string", "enum": e.symbols });
            describe(&mut v, e.doc.as_deref());
            v
        }
        Schema::Array(a) => {
            json!({ "type": "array", "items": convert(&a.items, names, depth + 1) })
        }
        Schema::Map(m) => json!({
            "type": "object",
            "propertyNames": { "pattern": NO_NUL },
            "additionalProperties": convert(&m.types, names, depth + 1),
        }),
        Schema::Union(u) => {
            let branches: Vec<Value> = u
                .variants()
                .iter()
                .map(|s| convert(s, names, depth + 1))
                .collect();
            match branches.len() {
                1 => branches.into_iter().next().unwrap_or(Value::Bool(true)),
                _ => json!({ "anyOf": branches }),
            }
        }
        Schema::Record(r) => record(r, names, depth),
        Schema::Date => json!({
            "anyOf": [int_range(i32::MIN.into(), i32::MAX.into()), { "type": "string", "format": "date" }],
        }),
        Schema::TimestampMillis | Schema::LocalTimestampMillis => timestamp(1, "milliseconds"),
        Schema::TimestampMicros | Schema::LocalTimestampMicros => timestamp(1_000, "microseconds"),
        Schema::TimestampNanos | Schema::LocalTimestampNanos => timestamp(1_000_000, "nanoseconds"),
        Schema::Ref { name } => names
            .get(name)
            .or_else(|| {
                names
                    .iter()
                    .find(|(n, _)| n.name == name.name)
                    .map(|(_, s)| s)
            })
            .map_or_else(|| json!({ "not": {} }), |s| convert(s, names, depth + 1)),
        // `json_to_avro` refuses these: nothing validates.
        Schema::Decimal(_) | Schema::BigDecimal | Schema::Duration => json!({ "not": {} }),
    }
}

/// A record: its fields as properties, no others; required unless it has a default or a null
/// branch (the gateway fills those in).
fn record(r: &RecordSchema, names: &Names, depth: usize) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for f in &r.fields {
        let mut p = convert(&f.schema, names, depth + 1);
        describe(&mut p, f.doc.as_deref());
        if let (Some(d), Value::Object(o)) = (&f.default, &mut p) {
            o.insert("default".into(), d.clone());
        }
        let nullable = matches!(&f.schema, Schema::Union(u)
            if u.variants().iter().any(|s| matches!(s, Schema::Null)));
        if f.default.is_none() && !nullable {
            required.push(Value::String(f.name.clone()));
        }
        props.insert(f.name.clone(), p);
    }
    let mut v = json!({
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": false,
    });
    describe(&mut v, r.doc.as_deref());
    v
}

fn describe(v: &mut Value, doc: Option<&str>) {
    if let (Some(d), Value::Object(o)) = (doc, v) {
        o.insert("description".into(), Value::String(d.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(text: &str) -> Value {
        let s = Schema::parse_str(text).expect("schema");
        json_schema(&s, &super::super::json::names_of(&s))
    }

    #[test]
    fn records_follow_the_gateway() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/avro/public/user/message.events.avsc"
        ))
        .expect("message schema");
        let v = of(&text);
        assert_eq!(v["additionalProperties"], json!(false));
        assert_eq!(
            v["required"],
            json!(["user_id", "email", "message", "timestamp"])
        );
        assert_eq!(
            v["properties"]["visibility"]["enum"],
            json!(["broadcast", "direct"])
        );
        assert_eq!(v["properties"]["visibility"]["default"], json!("broadcast"));
        assert_eq!(
            v["properties"]["recipient_id"]["anyOf"][0],
            json!({"type": "null"})
        );
        let ts = &v["properties"]["timestamp"]["anyOf"];
        assert_eq!(ts[0]["maximum"], json!(MAX_MILLIS));
        assert_eq!(ts[1]["format"], json!("date-time"));
        assert_eq!(v["properties"]["version"]["maximum"], json!(i32::MAX));
    }

    #[test]
    fn maps_arrays_and_named_references() {
        let v = of(r#"{"type":"record","name":"R","fields":[
            {"name":"tags","type":{"type":"map","values":"long"}},
            {"name":"kids","type":{"type":"array","items":{"type":"record","name":"K","fields":[{"name":"n","type":"int"}]}}},
            {"name":"again","type":["null","K"],"default":null}
        ]}"#);
        assert_eq!(
            v["properties"]["tags"]["additionalProperties"],
            json!({"type":"integer"})
        );
        assert_eq!(v["properties"]["kids"]["items"]["required"], json!(["n"]));
        assert_eq!(
            v["properties"]["again"]["anyOf"][1]["properties"]["n"]["type"],
            json!("integer")
        );
        assert_eq!(v["required"], json!(["tags", "kids"]));
    }
}
