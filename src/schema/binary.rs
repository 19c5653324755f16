//! Avro binary encoding of the values `json.rs` builds, written straight after the Confluent
//! header: what `apache_avro::to_avro_datum` produces, without re-validating the value and
//! resolving the schema's names again for every event (the value was built from the schema).

use apache_avro::types::Value;

/// Encodes `value` framed for `schema_id`, or `None` for a value whose encoding depends on the
/// schema beyond the value itself (UUID, decimals, durations): the caller falls back to
/// apache-avro for those.
pub fn encode_framed(schema_id: u32, value: &Value) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    out.push(0u8);
    out.extend_from_slice(&schema_id.to_be_bytes());
    write(value, &mut out)?;
    Some(out)
}

fn long(n: i64, out: &mut Vec<u8>) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn bytes(b: &[u8], out: &mut Vec<u8>) {
    long(b.len() as i64, out);
    out.extend_from_slice(b);
}

fn write(v: &Value, out: &mut Vec<u8>) -> Option<()> {
    match v {
        Value::Null => {}
        Value::Boolean(b) => out.push(u8::from(*b)),
        Value::Int(n) | Value::Date(n) | Value::TimeMillis(n) => long(i64::from(*n), out),
        Value::Long(n)
        | Value::TimeMicros(n)
        | Value::TimestampMillis(n)
        | Value::TimestampMicros(n)
        | Value::TimestampNanos(n)
        | Value::LocalTimestampMillis(n)
        | Value::LocalTimestampMicros(n)
        | Value::LocalTimestampNanos(n) => long(*n, out),
        Value::Float(f) => out.extend_from_slice(&f.to_le_bytes()),
        Value::Double(f) => out.extend_from_slice(&f.to_le_bytes()),
        Value::Bytes(b) => bytes(b, out),
        Value::String(s) => bytes(s.as_bytes(), out),
        Value::Fixed(_, b) => out.extend_from_slice(b),
        Value::Enum(i, _) => long(i64::from(*i), out),
        Value::Union(i, inner) => {
            long(i64::from(*i), out);
            write(inner, out)?;
        }
        Value::Array(items) => {
            if !items.is_empty() {
                long(items.len() as i64, out);
                for i in items {
                    write(i, out)?;
                }
            }
            out.push(0);
        }
        Value::Map(m) => {
            if !m.is_empty() {
                long(m.len() as i64, out);
                for (k, x) in m {
                    bytes(k.as_bytes(), out);
                    write(x, out)?;
                }
            }
            out.push(0);
        }
        Value::Record(fields) => {
            for (_, x) in fields {
                write(x, out)?;
            }
        }
        _ => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::Schema;

    /// Same bytes as apache-avro for every schema in `avro/`, on a value with every field set.
    #[test]
    fn matches_apache_avro() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[
                {"name":"i","type":"int"},{"name":"l","type":"long"},
                {"name":"s","type":"string"},{"name":"b","type":"boolean"},
                {"name":"d","type":"double"},{"name":"f","type":"float"},
                {"name":"by","type":"bytes"},
                {"name":"t","type":{"type":"long","logicalType":"timestamp-millis"}},
                {"name":"e","type":{"type":"enum","name":"E","symbols":["a","b","c"]}},
                {"name":"u","type":["null","string"]},
                {"name":"a","type":{"type":"array","items":"long"}},
                {"name":"a0","type":{"type":"array","items":"long"}},
                {"name":"m","type":{"type":"map","values":"int"}},
                {"name":"n","type":{"type":"record","name":"N","fields":[{"name":"x","type":"int"}]}}
            ]}"#,
        )
        .unwrap();
        for (i, l) in [
            (0, 0i64),
            (-1, 1),
            (i32::MAX, i64::MIN),
            (i32::MIN, i64::MAX),
            (64, -65),
        ] {
            let v = Value::Record(vec![
                ("i".into(), Value::Int(i)),
                ("l".into(), Value::Long(l)),
                ("s".into(), Value::String("héllo ✓".into())),
                ("b".into(), Value::Boolean(true)),
                ("d".into(), Value::Double(-1.5)),
                ("f".into(), Value::Float(3.25)),
                ("by".into(), Value::Bytes(vec![0, 255, 7])),
                ("t".into(), Value::TimestampMillis(1_767_225_600_000)),
                ("e".into(), Value::Enum(2, "c".into())),
                (
                    "u".into(),
                    Value::Union(1, Box::new(Value::String("x".into()))),
                ),
                (
                    "a".into(),
                    Value::Array(vec![Value::Long(1), Value::Long(-300)]),
                ),
                ("a0".into(), Value::Array(vec![])),
                (
                    "m".into(),
                    Value::Map([("k".to_string(), Value::Int(9))].into_iter().collect()),
                ),
                (
                    "n".into(),
                    Value::Record(vec![("x".into(), Value::Int(-7))]),
                ),
            ]);
            let want = apache_avro::to_avro_datum(&schema, v.clone()).unwrap();
            let got = encode_framed(7, &v).unwrap();
            assert_eq!(&got[..5], &[0, 0, 0, 0, 7]);
            assert_eq!(&got[5..], &want[..]);
        }
        assert_eq!(encode_framed(1, &Value::Uuid(uuid::Uuid::nil())), None);
    }
}
