//! Schema compatibility levels, as the Confluent registry defines them, checked with
//! apache-avro's reader/writer resolution rules.

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compatibility {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Compatibility {
    pub fn parse(s: &str) -> Result<Compatibility, String> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "NONE" => Compatibility::None,
            "BACKWARD" => Compatibility::Backward,
            "BACKWARD_TRANSITIVE" => Compatibility::BackwardTransitive,
            "FORWARD" => Compatibility::Forward,
            "FORWARD_TRANSITIVE" => Compatibility::ForwardTransitive,
            "FULL" => Compatibility::Full,
            "FULL_TRANSITIVE" => Compatibility::FullTransitive,
            other => return Err(format!("unknown compatibility level {other}")),
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Compatibility::None => "NONE",
            Compatibility::Backward => "BACKWARD",
            Compatibility::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Compatibility::Forward => "FORWARD",
            Compatibility::ForwardTransitive => "FORWARD_TRANSITIVE",
            Compatibility::Full => "FULL",
            Compatibility::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    fn transitive(&self) -> bool {
        matches!(
            self,
            Compatibility::BackwardTransitive
                | Compatibility::ForwardTransitive
                | Compatibility::FullTransitive
        )
    }

    /// Checks `new` against `existing` (oldest first). Returns the reasons it is not
    /// compatible; empty means compatible.
    pub fn check(&self, new: &Schema, existing: &[Schema]) -> Vec<String> {
        let against: &[Schema] = if self.transitive() {
            existing
        } else {
            existing.last().map(std::slice::from_ref).unwrap_or(&[])
        };
        let mut problems = Vec::new();
        for old in against {
            let backward = matches!(
                self,
                Compatibility::Backward
                    | Compatibility::BackwardTransitive
                    | Compatibility::Full
                    | Compatibility::FullTransitive
            );
            let forward = matches!(
                self,
                Compatibility::Forward
                    | Compatibility::ForwardTransitive
                    | Compatibility::Full
                    | Compatibility::FullTransitive
            );
            // BACKWARD: consumers on the new schema can read data written with the old one.
            if backward && let Err(e) = SchemaCompatibility::can_read(old, new) {
                problems.push(format!(
                    "new schema cannot read data written with an earlier version: {e}"
                ));
            }
            // FORWARD: consumers on the old schema can read data written with the new one.
            if forward && let Err(e) = SchemaCompatibility::can_read(new, old) {
                problems.push(format!(
                    "an earlier schema cannot read data written with the new one: {e}"
                ));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: &str) -> Schema {
        Schema::parse_str(t).unwrap()
    }

    #[test]
    fn backward_allows_field_with_default_but_not_without() {
        let v1 = s(r#"{"type":"record","name":"r","fields":[{"name":"a","type":"string"}]}"#);
        let ok = s(
            r#"{"type":"record","name":"r","fields":[{"name":"a","type":"string"},{"name":"b","type":"int","default":0}]}"#,
        );
        let bad = s(
            r#"{"type":"record","name":"r","fields":[{"name":"a","type":"string"},{"name":"b","type":"int"}]}"#,
        );
        assert!(
            Compatibility::Backward
                .check(&ok, std::slice::from_ref(&v1))
                .is_empty()
        );
        assert!(
            !Compatibility::Backward
                .check(&bad, std::slice::from_ref(&v1))
                .is_empty()
        );
        assert!(Compatibility::None.check(&bad, &[v1]).is_empty());
    }
}
