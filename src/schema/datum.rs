//! Avro binary → JSON in one pass, for the consumers' hot path: every consumer group decodes
//! every event it reads, and `apache_avro::from_avro_datum` resolves the writer schema's names
//! again for each datum (a map of cloned names) and builds an Avro `Value` that
//! `json::avro_to_json` then turns into JSON. This walks the schema and the bytes once and
//! builds the JSON directly: the same JSON `avro_to_json` gives (record fields in schema order,
//! enums as their symbol, unions as their plain value, bytes and fixed as arrays of numbers,
//! logical dates and times as numbers).
//!
//! It gives `None` for what it does not decode itself (decimals, durations, UUIDs, a reference
//! it cannot resolve, nesting deeper than `MAX_DEPTH`) and for bytes it cannot decode: the
//! caller then decodes with apache-avro, whose value or error stands. So a malformed payload
//! is rejected with apache-avro's own reason, exactly as before.

use apache_avro::Schema;
use serde_json::{Map, Number, Value as Json};

use super::json::Names;

/// Deeper than this (a recursive schema), leave it to apache-avro.
const MAX_DEPTH: usize = 64;

/// The datum `datum`, written with `schema`, as JSON; `None`: decode with apache-avro instead.
pub fn to_json(schema: &Schema, names: &Names, datum: &[u8]) -> Option<Json> {
    let mut r = Reader { buf: datum, names };
    r.value(schema, 0)
}

struct Reader<'a> {
    buf: &'a [u8],
    names: &'a Names,
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.buf.split_first()?;
        self.buf = rest;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    /// A zig-zag varint (at most 10 bytes), as Avro writes `int` and `long`.
    fn long(&mut self) -> Option<i64> {
        let mut z: u64 = 0;
        for i in 0..10 {
            let b = self.byte()?;
            z |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        None
    }

    fn len(&mut self) -> Option<usize> {
        usize::try_from(self.long()?).ok()
    }

    fn bytes(&mut self) -> Option<&[u8]> {
        let n = self.len()?;
        self.take(n)
    }

    fn string(&mut self) -> Option<String> {
        std::str::from_utf8(self.bytes()?).ok().map(str::to_string)
    }

    /// The item count of the next block of an array or map (0: the end). A negative count is
    /// followed by the block's size in bytes, which is not needed here. More items than bytes
    /// left (only an array of nulls can hold that) is left to apache-avro and its allocation
    /// limit, so a forged count never makes this loop for long.
    fn block(&mut self) -> Option<usize> {
        let n = self.long()?;
        if n < 0 {
            self.long()?;
        }
        let n = usize::try_from(n.unsigned_abs()).ok()?;
        (n <= self.buf.len()).then_some(n)
    }

    fn numbers(b: &[u8]) -> Json {
        Json::Array(b.iter().map(|&x| Json::from(x)).collect())
    }

    fn value(&mut self, schema: &Schema, depth: usize) -> Option<Json> {
        if depth > MAX_DEPTH {
            return None;
        }
        Some(match schema {
            Schema::Null => Json::Null,
            Schema::Boolean => match self.byte()? {
                0 => Json::Bool(false),
                1 => Json::Bool(true),
                _ => return None,
            },
            Schema::Int | Schema::Date | Schema::TimeMillis => {
                Json::from(i32::try_from(self.long()?).ok()?)
            }
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => Json::from(self.long()?),
            Schema::Float => {
                let b: [u8; 4] = self.take(4)?.try_into().ok()?;
                Json::Number(Number::from_f64(f64::from(f32::from_le_bytes(b)))?)
            }
            Schema::Double => {
                let b: [u8; 8] = self.take(8)?.try_into().ok()?;
                Json::Number(Number::from_f64(f64::from_le_bytes(b))?)
            }
            Schema::Bytes => Self::numbers(self.bytes()?),
            Schema::String => Json::String(self.string()?),
            Schema::Fixed(f) => Self::numbers(self.take(f.size)?),
            Schema::Enum(e) => Json::String(e.symbols.get(self.len()?)?.clone()),
            Schema::Union(u) => {
                let s = u.variants().get(self.len()?)?;
                self.value(s, depth + 1)?
            }
            Schema::Array(a) => self.array(&a.items, depth)?,
            Schema::Map(m) => self.map(&m.types, depth)?,
            Schema::Record(rec) => {
                let mut out = Map::with_capacity(rec.fields.len());
                for f in &rec.fields {
                    out.insert(f.name.clone(), self.value(&f.schema, depth + 1)?);
                }
                Json::Object(out)
            }
            Schema::Ref { name } => {
                let s = self.names.get(name)?;
                self.value(s, depth + 1)?
            }
            Schema::Decimal(_) | Schema::BigDecimal | Schema::Uuid | Schema::Duration => {
                return None;
            }
        })
    }

    fn array(&mut self, items: &Schema, depth: usize) -> Option<Json> {
        let mut out = Vec::new();
        loop {
            let n = self.block()?;
            if n == 0 {
                return Some(Json::Array(out));
            }
            out.reserve(n);
            for _ in 0..n {
                out.push(self.value(items, depth + 1)?);
            }
        }
    }

    fn map(&mut self, values: &Schema, depth: usize) -> Option<Json> {
        let mut out = Map::new();
        loop {
            let n = self.block()?;
            if n == 0 {
                return Some(Json::Object(out));
            }
            for _ in 0..n {
                let k = self.string()?;
                let v = self.value(values, depth + 1)?;
                out.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value as Avro;

    fn schema() -> Schema {
        Schema::parse_str(
            r#"{"type":"record","name":"R","namespace":"t","fields":[
                {"name":"i","type":"int"},{"name":"l","type":"long"},
                {"name":"s","type":"string"},{"name":"b","type":"boolean"},
                {"name":"d","type":"double"},{"name":"f","type":"float"},
                {"name":"by","type":"bytes"},
                {"name":"fx","type":{"type":"fixed","name":"F","size":3}},
                {"name":"t","type":{"type":"long","logicalType":"timestamp-millis"}},
                {"name":"dt","type":{"type":"int","logicalType":"date"}},
                {"name":"e","type":{"type":"enum","name":"E","symbols":["a","b","c"]}},
                {"name":"e2","type":"E"},
                {"name":"u","type":["null","string"]},
                {"name":"a","type":{"type":"array","items":"long"}},
                {"name":"m","type":{"type":"map","values":"int"}},
                {"name":"n","type":{"type":"record","name":"N","fields":[{"name":"x","type":"int"}]}},
                {"name":"n2","type":["null","N"]}
            ]}"#,
        )
        .unwrap()
    }

    fn apache(s: &Schema, datum: &[u8]) -> Result<Json, String> {
        let v =
            apache_avro::from_avro_datum(s, &mut &datum[..], None).map_err(|e| e.to_string())?;
        super::super::json::avro_to_json(v).map_err(|e| e.to_string())
    }

    fn value(i: i32, l: i64, u: Option<&str>) -> Avro {
        Avro::Record(vec![
            ("i".into(), Avro::Int(i)),
            ("l".into(), Avro::Long(l)),
            ("s".into(), Avro::String("héllo ✓".into())),
            ("b".into(), Avro::Boolean(i % 2 == 0)),
            ("d".into(), Avro::Double(-1.5)),
            ("f".into(), Avro::Float(3.25)),
            ("by".into(), Avro::Bytes(vec![0, 255, 7])),
            ("fx".into(), Avro::Fixed(3, vec![1, 2, 3])),
            ("t".into(), Avro::TimestampMillis(1_767_225_600_000)),
            ("dt".into(), Avro::Date(20_000)),
            ("e".into(), Avro::Enum(2, "c".into())),
            ("e2".into(), Avro::Enum(0, "a".into())),
            (
                "u".into(),
                match u {
                    Some(s) => Avro::Union(1, Box::new(Avro::String(s.into()))),
                    None => Avro::Union(0, Box::new(Avro::Null)),
                },
            ),
            (
                "a".into(),
                Avro::Array(vec![Avro::Long(1), Avro::Long(-300)]),
            ),
            (
                "m".into(),
                Avro::Map(
                    [
                        ("k".to_string(), Avro::Int(9)),
                        ("z".to_string(), Avro::Int(-1)),
                    ]
                    .into_iter()
                    .collect(),
                ),
            ),
            ("n".into(), Avro::Record(vec![("x".into(), Avro::Int(-7))])),
            (
                "n2".into(),
                Avro::Union(1, Box::new(Avro::Record(vec![("x".into(), Avro::Int(5))]))),
            ),
        ])
    }

    /// The same JSON as apache-avro + `avro_to_json` for every kind of field.
    #[test]
    fn matches_apache_avro() {
        let s = schema();
        let names = super::super::json::names_of(&s);
        for (i, l, u) in [
            (0, 0i64, None),
            (-1, 1, Some("x")),
            (i32::MAX, i64::MIN, Some("")),
            (i32::MIN, i64::MAX, None),
        ] {
            let datum = apache_avro::to_avro_datum(&s, value(i, l, u)).unwrap();
            let got = to_json(&s, &names, &datum).expect("decodes");
            assert_eq!(got, apache(&s, &datum).unwrap());
        }
    }

    /// Truncated or corrupted bytes never give a value apache-avro would not: either `None`
    /// (the caller asks apache-avro, whose error stands) or the same JSON.
    #[test]
    fn bad_bytes_fall_back() {
        let s = schema();
        let names = super::super::json::names_of(&s);
        let datum = apache_avro::to_avro_datum(&s, value(3, 4, Some("y"))).unwrap();
        for cut in 0..datum.len() {
            assert_eq!(to_json(&s, &names, &datum[..cut]), None, "cut at {cut}");
        }
        for at in 0..datum.len() {
            for b in [0x00u8, 0x01, 0x7f, 0x80, 0xff] {
                let mut bad = datum.clone();
                bad[at] = b;
                if let Some(got) = to_json(&s, &names, &bad) {
                    assert_eq!(Ok(got), apache(&s, &bad), "byte {at} = {b:#x}");
                }
            }
        }
    }

    /// A string that is not UTF-8, an enum or union index out of range, a boolean byte
    /// other than 0 or 1: apache-avro decides (and refuses).
    #[test]
    fn invalid_values_fall_back() {
        let one = |schema: &str, datum: &[u8]| {
            let s = Schema::parse_str(schema).unwrap();
            let names = super::super::json::names_of(&s);
            assert_eq!(to_json(&s, &names, datum), None);
            assert!(apache(&s, datum).is_err());
        };
        one(r#""string""#, &[4, 0xff, 0xfe]);
        one(r#"{"type":"enum","name":"E","symbols":["a"]}"#, &[2]);
        one(r#"["null","string"]"#, &[4]);
        one(r#""boolean""#, &[2]);
        one(r#""int""#, &[0xfe, 0xff, 0xff, 0xff, 0x1f]);
    }
}
