//! Rules a payload must follow beyond its schema's types: fields that depend on each other
//! (a `direct` message needs a `recipient_id`), domain limits (allowed media types, file sizes
//! and names), and lengths that indexed columns can hold. The per-topic table is
//! `Rules::standard`. The catalog checks it whenever an event is encoded, so the gateway
//! answers 400 and stores nothing; consumers check what they receive with the same
//! `Rules::check`, so a consumer never refuses an event the gateway accepted.
//!
//! Rules read a payload through `Payload`, implemented both for the Avro record being encoded
//! (defaults filled in) and for the JSON a consumer decodes, so both sides see the same
//! values.

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::types::Value as Avro;
use serde_json::Value as Json;

use crate::config::MediaConfig;
use crate::media::{topics, types};

/// One field of a payload as rules see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar<'a> {
    Absent,
    Null,
    Str(&'a str),
    Int(i64),
    Other,
}

impl Scalar<'_> {
    /// Absent, null or the empty string.
    fn is_blank(&self) -> bool {
        matches!(self, Scalar::Absent | Scalar::Null | Scalar::Str(""))
    }
}

/// A payload rules can read.
pub trait Payload {
    fn field(&self, name: &str) -> Scalar<'_>;
}

impl Payload for Json {
    fn field(&self, name: &str) -> Scalar<'_> {
        match self.get(name) {
            None => Scalar::Absent,
            Some(Json::Null) => Scalar::Null,
            Some(Json::String(s)) => Scalar::Str(s),
            Some(Json::Number(n)) => n.as_i64().map_or(Scalar::Other, Scalar::Int),
            Some(_) => Scalar::Other,
        }
    }
}

fn avro_scalar(v: &Avro) -> Scalar<'_> {
    match v {
        Avro::Union(_, inner) => avro_scalar(inner),
        Avro::Null => Scalar::Null,
        Avro::String(s) | Avro::Enum(_, s) => Scalar::Str(s),
        Avro::Int(n) => Scalar::Int(i64::from(*n)),
        Avro::Long(n) => Scalar::Int(*n),
        _ => Scalar::Other,
    }
}

impl Payload for Avro {
    fn field(&self, name: &str) -> Scalar<'_> {
        let Avro::Record(fields) = self else {
            return Scalar::Absent;
        };
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map_or(Scalar::Absent, |(_, v)| avro_scalar(v))
    }
}

/// A broken rule: the answer's `error` code, the field, why, and details for the answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Violation {
    pub code: &'static str,
    pub field: String,
    pub reason: String,
    pub details: Vec<(&'static str, Json)>,
}

impl Violation {
    fn new(code: &'static str, field: &str, reason: impl Into<String>) -> Self {
        Self {
            code,
            field: field.to_string(),
            reason: reason.into(),
            details: Vec::new(),
        }
    }

    fn detail(mut self, key: &'static str, value: impl Into<Json>) -> Self {
        self.details.push((key, value.into()));
        self
    }
}

pub trait Rule: Send + Sync {
    fn check(&self, p: &dyn Payload) -> Result<(), Violation>;

    /// Adds what the rule checks, where JSON Schema can say it, to the JSON Schema of the
    /// topic's record (`super::jsonschema`), so the OpenAPI document shows it.
    fn describe(&self, _record: &mut Json) {}
}

/// The JSON Schema of `field` in a record's JSON Schema, if the record has that field.
fn property<'a>(
    record: &'a mut Json,
    field: &str,
) -> Option<&'a mut serde_json::Map<String, Json>> {
    record
        .get_mut("properties")?
        .get_mut(field)?
        .as_object_mut()
}

/// Puts `key: value` on `field`'s schema, and on each non-null branch of a union.
fn constrain(record: &mut Json, field: &str, key: &str, value: Json) {
    let Some(p) = property(record, field) else {
        return;
    };
    match p.get_mut("anyOf").and_then(Json::as_array_mut) {
        Some(branches) => {
            for b in branches.iter_mut().filter(|b| b["type"] != "null") {
                b[key] = value.clone();
            }
        }
        None => {
            p.insert(key.to_string(), value);
        }
    }
}

/// `field` must be given (not null or empty) when `when` has the value `equals`.
pub struct RequiredWhen {
    pub field: &'static str,
    pub when: &'static str,
    pub equals: &'static str,
}

impl Rule for RequiredWhen {
    fn check(&self, p: &dyn Payload) -> Result<(), Violation> {
        if p.field(self.when) == Scalar::Str(self.equals) && p.field(self.field).is_blank() {
            return Err(Violation::new(
                "invalid_event",
                self.field,
                format!("required when {} is {}", self.when, self.equals),
            ));
        }
        Ok(())
    }

    fn describe(&self, record: &mut Json) {
        let when = serde_json::json!({
            "if": {
                "properties": { self.when: { "const": self.equals } },
                "required": [self.when],
            },
            "then": {
                "properties": { self.field: { "type": "string", "minLength": 1 } },
                "required": [self.field],
            },
        });
        if let Some(o) = record.as_object_mut() {
            let all = o.entry("allOf").or_insert_with(|| Json::Array(Vec::new()));
            if let Some(a) = all.as_array_mut() {
                a.push(when);
            }
        }
    }
}

/// A string field, when given, holds `min..=max` bytes.
pub struct Length {
    pub code: &'static str,
    pub field: &'static str,
    pub min: usize,
    pub max: usize,
}

impl Rule for Length {
    fn check(&self, p: &dyn Payload) -> Result<(), Violation> {
        match p.field(self.field) {
            Scalar::Str(s) if s.len() < self.min || s.len() > self.max => Err(Violation::new(
                self.code,
                self.field,
                if self.min == 0 {
                    format!("at most {} bytes", self.max)
                } else {
                    format!("expected {} to {} bytes", self.min, self.max)
                },
            )),
            _ => Ok(()),
        }
    }

    /// JSON Schema counts characters, the rule bytes: the bound is the same number, and the
    /// description says bytes.
    fn describe(&self, record: &mut Json) {
        if self.min > 0 {
            constrain(record, self.field, "minLength", self.min.into());
        }
        constrain(record, self.field, "maxLength", self.max.into());
        if let Some(p) = property(record, self.field) {
            p.entry("description")
                .or_insert_with(|| format!("at most {} bytes (UTF-8)", self.max).into());
        }
    }
}

/// An upload's media type is one of `types::ALLOWED_MEDIA_TYPES`.
struct MediaType;

impl Rule for MediaType {
    fn check(&self, p: &dyn Payload) -> Result<(), Violation> {
        match p.field("media_type") {
            Scalar::Str(t) if types::allowed_media_type(t).is_none() => {
                Err(
                    Violation::new("invalid_media_type", "media_type", "not an allowed type")
                        .detail("media_type", t)
                        .detail("allowed", types::ALLOWED_MEDIA_TYPES.to_vec()),
                )
            }
            _ => Ok(()),
        }
    }
}

/// An upload's declared size is 1 byte to `media.max_file_size`.
struct FileSize {
    max: i64,
}

impl Rule for FileSize {
    fn check(&self, p: &dyn Payload) -> Result<(), Violation> {
        match p.field("file_size") {
            Scalar::Int(n) if n < 1 => Err(Violation::new(
                "invalid_file_size",
                "file_size",
                "must be at least 1 byte",
            )),
            Scalar::Int(n) if n > self.max => Err(Violation::new(
                "file_too_large",
                "file_size",
                format!("at most {} bytes", self.max),
            )
            .detail("file_size", n)
            .detail("max_file_size", self.max)),
            _ => Ok(()),
        }
    }

    fn describe(&self, record: &mut Json) {
        constrain(record, "file_size", "minimum", 1.into());
        constrain(record, "file_size", "maximum", self.max.into());
    }
}

/// An upload's file name passes `types::file_name_problem`.
struct FileName;

impl Rule for FileName {
    fn check(&self, p: &dyn Payload) -> Result<(), Violation> {
        match p.field("file_name") {
            Scalar::Str(n) => match types::file_name_problem(n) {
                Some(problem) => Err(Violation::new("invalid_file_name", "file_name", problem)),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

/// Most bytes of a user id (`user_id`, `recipient_id`): they are indexed columns, and a
/// PostgreSQL index entry holds about 2.7 KB.
pub const MAX_ID_BYTES: usize = 1024;

/// Rules by topic, plus rules for every topic.
#[derive(Clone, Default)]
pub struct Rules {
    every: Vec<Arc<dyn Rule>>,
    by_topic: HashMap<String, Vec<Arc<dyn Rule>>>,
}

impl Rules {
    /// A rule for one topic.
    pub fn add(&mut self, topic: &str, rule: impl Rule + 'static) -> &mut Self {
        self.by_topic
            .entry(topic.to_string())
            .or_default()
            .push(Arc::new(rule));
        self
    }

    /// A rule for every topic.
    pub fn add_every(&mut self, rule: impl Rule + 'static) -> &mut Self {
        self.every.push(Arc::new(rule));
        self
    }

    /// Adds what the rules of `topic` check to the JSON Schema of its record.
    pub fn describe(&self, topic: &str, record: &mut Json) {
        let of_topic = self.by_topic.get(topic).into_iter().flatten();
        for r in self.every.iter().chain(of_topic) {
            r.describe(record);
        }
    }

    /// The first rule `payload` of `topic` breaks, if any.
    pub fn check(&self, topic: &str, payload: &dyn Payload) -> Result<(), Violation> {
        for r in &self.every {
            r.check(payload)?;
        }
        if let Some(rules) = self.by_topic.get(topic) {
            for r in rules {
                r.check(payload)?;
            }
        }
        Ok(())
    }

    /// substrate's rules for the topics under `avro/`.
    pub fn standard(media: &MediaConfig) -> Rules {
        let mut r = Rules::default();
        r.add_every(Length {
            code: "invalid_event",
            field: "user_id",
            min: 0,
            max: MAX_ID_BYTES,
        });
        r.add(
            "public.user.message.events",
            RequiredWhen {
                field: "recipient_id",
                when: "visibility",
                equals: "direct",
            },
        )
        .add(
            "public.user.message.events",
            Length {
                code: "invalid_event",
                field: "recipient_id",
                min: 0,
                max: MAX_ID_BYTES,
            },
        );
        r.add(topics::UPLOAD_INTENT, FileName)
            .add(topics::UPLOAD_INTENT, MediaType)
            .add(
                topics::UPLOAD_INTENT,
                FileSize {
                    max: media.max_file_size,
                },
            );
        for t in [topics::DOWNLOAD_INTENT, topics::DELETE_INTENT] {
            r.add(
                t,
                Length {
                    code: "invalid_request",
                    field: "file_path",
                    min: 1,
                    max: 1024,
                },
            );
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> Rules {
        Rules::standard(&MediaConfig {
            max_file_size: 100,
            ..MediaConfig::default()
        })
    }

    const MSG: &str = "public.user.message.events";

    #[test]
    fn direct_messages_need_a_recipient() {
        let r = rules();
        for bad in [
            json!({"visibility":"direct"}),
            json!({"visibility":"direct","recipient_id":null}),
            json!({"visibility":"direct","recipient_id":""}),
        ] {
            let v = r.check(MSG, &bad).unwrap_err();
            assert_eq!(
                (v.code, v.field.as_str()),
                ("invalid_event", "recipient_id")
            );
        }
        assert!(
            r.check(MSG, &json!({"visibility":"direct","recipient_id":"bob"}))
                .is_ok()
        );
        assert!(r.check(MSG, &json!({"visibility":"broadcast"})).is_ok());
        // Other topics do not have the rule.
        assert!(
            r.check(
                "public.identity.login.events",
                &json!({"visibility":"direct"})
            )
            .is_ok()
        );
    }

    #[test]
    fn the_avro_record_reads_like_the_json() {
        let r = rules();
        let rec = |recipient: Avro| {
            Avro::Record(vec![
                ("user_id".into(), Avro::String("alice".into())),
                ("visibility".into(), Avro::Enum(1, "direct".into())),
                ("recipient_id".into(), recipient),
            ])
        };
        let v = r
            .check(MSG, &rec(Avro::Union(0, Box::new(Avro::Null))))
            .unwrap_err();
        assert_eq!(v.field, "recipient_id");
        assert!(
            r.check(
                MSG,
                &rec(Avro::Union(1, Box::new(Avro::String("bob".into()))))
            )
            .is_ok()
        );
    }

    #[test]
    fn ids_that_indexes_cannot_hold_are_refused() {
        let long = "x".repeat(MAX_ID_BYTES + 1);
        let v = rules()
            .check("public.identity.login.events", &json!({"user_id": long}))
            .unwrap_err();
        assert_eq!(v.field, "user_id");
        let ok = "x".repeat(MAX_ID_BYTES);
        assert!(
            rules()
                .check("public.identity.login.events", &json!({"user_id": ok}))
                .is_ok()
        );
    }

    #[test]
    fn upload_intents() {
        let r = rules();
        let t = topics::UPLOAD_INTENT;
        let intent = |name: &str, mt: &str, size: i64| json!({"file_name": name, "media_type": mt, "file_size": size});
        assert!(r.check(t, &intent("a.png", "image/png", 10)).is_ok());
        let code = |j: Json| r.check(t, &j).unwrap_err().code;
        assert_eq!(
            code(intent("a.pdf", "application/pdf", 10)),
            "invalid_media_type"
        );
        assert_eq!(code(intent("a.png", "image/png", 0)), "invalid_file_size");
        assert_eq!(code(intent("a.png", "image/png", 101)), "file_too_large");
        assert_eq!(
            code(intent("../a.png", "image/png", 10)),
            "invalid_file_name"
        );
        let v = r.check(t, &intent("a.png", "image/png", 101)).unwrap_err();
        assert_eq!(v.details[1], ("max_file_size", json!(100)));
    }

    #[test]
    fn file_intents_have_bounded_paths() {
        let r = rules();
        for t in [topics::DOWNLOAD_INTENT, topics::DELETE_INTENT] {
            assert!(r.check(t, &json!({"file_path": "files/a"})).is_ok());
            assert_eq!(
                r.check(t, &json!({"file_path": ""})).unwrap_err().field,
                "file_path"
            );
            assert!(r.check(t, &json!({"file_path": "x".repeat(1025)})).is_err());
        }
    }
}
