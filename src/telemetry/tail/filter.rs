//! The filters of `GET /api/v1/tail/logs`: the query parameters `service`, `level`, `label`
//! (`name=value`, repeatable) and `q`, read into the log search's own filter type
//! ([`LogFilter`], the one `POST /api/v1/query/logs` builds) and applied to each line as it
//! goes by, with the same meaning as the search: service exact, level exact ignoring case,
//! every label pair among the line's labels, `q` a substring of the message.

use crate::http::error::ApiError;
use crate::telemetry::model::LogLine;
use crate::telemetry::store::read::LogFilter;

/// Most `label` matchers one tail may carry.
const MAX_LABELS: usize = 64;

fn invalid(parameter: &str, reason: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_query")
        .with("parameter", parameter.to_string())
        .with("reason", reason.into())
}

/// Whether `s` is a label name (`[a-zA-Z_][a-zA-Z0-9_]*`), as ingest requires of every label.
fn label_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// The filter a tail's query string asks for (`raw` is the query string, without `?`).
/// Unknown parameters, a parameter given twice (other than `label`) and malformed label
/// matchers are refused, naming the parameter: a tail that silently ignored a filter would
/// stream lines the caller did not ask for.
pub fn parse(raw: &str) -> Result<LogFilter, ApiError> {
    let mut f = LogFilter::default();
    let mut text: Option<String> = None;
    for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
        let once = |slot: &Option<String>| {
            if slot.is_some() {
                Err(invalid(&k, "given more than once"))
            } else {
                Ok(())
            }
        };
        let value = (!v.is_empty()).then(|| v.to_string());
        match &*k {
            "service" => {
                once(&f.service)?;
                f.service = value;
            }
            "level" => {
                once(&f.level)?;
                f.level = value.map(|l| l.to_ascii_lowercase());
            }
            "q" => {
                once(&text)?;
                text = value;
            }
            "label" => f.labels.push(label_matcher(&v)?),
            "access_token" => {
                return Err(invalid(
                    "access_token",
                    "the tails take an API key or a JWT in the headers",
                ));
            }
            other => {
                return Err(invalid(
                    other,
                    "unknown parameter; expected service, level, label or q",
                ));
            }
        }
    }
    if f.labels.len() > MAX_LABELS {
        return Err(invalid("label", format!("at most {MAX_LABELS} matchers")));
    }
    f.text = text;
    Ok(f)
}

/// One `label=name=value` matcher.
fn label_matcher(v: &str) -> Result<(String, String), ApiError> {
    let (name, value) = v
        .split_once('=')
        .ok_or_else(|| invalid("label", "expected name=value"))?;
    if !label_name(name) {
        return Err(invalid(
            "label",
            format!("{name:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

/// Whether `line` passes `f` (its time range and cursor are not used: a tail is live).
pub fn matches(f: &LogFilter, line: &LogLine) -> bool {
    if f.service.as_deref().is_some_and(|s| s != line.service) {
        return false;
    }
    if f.level
        .as_deref()
        .is_some_and(|l| !l.eq_ignore_ascii_case(&line.level))
    {
        return false;
    }
    let has = |(k, v): &(String, String)| line.labels.iter().any(|l| &l.name == k && &l.value == v);
    if !f.labels.iter().all(has) {
        return false;
    }
    f.text.as_deref().is_none_or(|t| line.message.contains(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::model::Label;

    fn line() -> LogLine {
        LogLine {
            ts_ns: 1,
            service: "api".into(),
            level: "error".into(),
            message: "upstream timeout after 3s".into(),
            labels: vec![
                Label {
                    name: "env".into(),
                    value: "prod".into(),
                },
                Label {
                    name: "region".into(),
                    value: "eu".into(),
                },
            ],
            attributes: String::new(),
        }
    }

    #[test]
    fn filters_mean_what_the_log_search_means() {
        let l = line();
        for (q, want) in [
            ("", true),
            ("service=api", true),
            ("service=web", false),
            ("level=ERROR", true),
            ("level=info", false),
            ("label=env%3Dprod&label=region%3Deu", true),
            ("label=env%3Dprod&label=region%3Dus", false),
            ("label=env=prod", true),
            ("q=timeout", true),
            ("q=Timeout", false),
            ("service=&q=", true),
        ] {
            assert_eq!(matches(&parse(q).unwrap(), &l), want, "{q}");
        }
    }

    #[test]
    fn bad_filters_are_refused_naming_the_parameter() {
        for (q, param) in [
            ("label=env", "label"),
            ("label=1x%3Dy", "label"),
            ("service=a&service=b", "service"),
            ("since=5m", "since"),
            ("access_token=t", "access_token"),
        ] {
            let e = parse(q).expect_err(q);
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{q}");
            assert_eq!(e.body["parameter"], param, "{q}");
        }
    }
}
