//! The OpenAPI 3.1 document of the HTTP API, generated from the code: every handler carries a
//! `#[utoipa::path]` annotation and is registered with `utoipa_axum::routes!`, so the router
//! and the document come from the same registration (`http::router`). This module adds what
//! is true of every operation (the guards' answers: `400` for a NUL in the URL, `503` when
//! shedding load; `401`/`429` where a caller authenticates; `413` where there is a body), the
//! security schemes (bearer JWT, `X-API-Key`, the Standard-Webhooks headers), and — per
//! request, from the live route table and schema catalog — one operation per ingest route
//! whose body is the topic's Avro schema as JSON Schema (`events.rs`).
//!
//! `GET /openapi.json` serves it, `GET /docs` renders it (`docs.rs`), `substrate openapi`
//! prints it.

pub mod docs;
pub mod events;

use std::sync::{Arc, Mutex};

use axum::Extension;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use utoipa::OpenApi;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppContext;
use crate::gateway::routes::RouteTable;
use crate::schema::TopicMap;

/// Declares a documentation-only type whose schema is a JSON Schema literal: the shape of an
/// answer a handler builds with `json!`. Only the keywords utoipa models are kept
/// (type, properties, required, items, enum, format, description, additionalProperties…).
#[macro_export]
macro_rules! doc_schema {
    ($(#[$m:meta])* $name:ident = $schema:tt) => {
        $(#[$m])*
        pub struct $name;
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                $crate::http::openapi::schema_of(serde_json::json!($schema))
            }
        }
        impl utoipa::ToSchema for $name {}
    };
}

/// A schema literal as utoipa's type. The literals are written in this crate and a unit test
/// builds every one (`document_is_complete`); a literal utoipa cannot model is a bug, shown
/// as an empty schema rather than a panic in a request.
pub fn schema_of(v: Value) -> RefOr<Schema> {
    serde_json::from_value(v).unwrap_or_else(|e| {
        tracing::error!(error = %e, "a documentation schema literal does not parse");
        RefOr::T(Schema::default())
    })
}

/// The body of every error answer (`http::error::ApiError`): a stable `error` code and the
/// fields that explain it. Which fields appear depends on the code.
#[derive(utoipa::ToSchema)]
#[schema(
    as = Error,
    example = json!({"error": "invalid_event", "field": "visibility", "reason": "expected one of broadcast,direct"})
)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// Machine-readable code, e.g. `invalid_event`, `unauthorized`, `rate_limited`.
    error: String,
    /// Why, for people.
    #[schema(required = false)]
    reason: String,
    /// A longer explanation.
    #[schema(required = false)]
    message: String,
    /// The payload field at fault, as a dotted path (`$` is the whole document).
    #[schema(required = false)]
    field: String,
    /// The index of the event at fault in a batch.
    #[schema(required = false)]
    index: u64,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "substrate",
        description = "An event-driven platform in one binary: authenticated event ingest, \
            signed webhooks, a Confluent-compatible schema registry, notifications and \
            streams, media, stats, analytics, operator endpoints and the status page.\n\n\
            Every error answer is JSON: `{\"error\": code, ...}` with the fields that explain it.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "events", description = "Event ingest: one route per allowlisted topic (routes.yaml); the body is the topic's schema."),
        (name = "webhooks", description = "Signed webhooks (Standard Webhooks) and storage notifications."),
        (name = "registry", description = "Schema registry, compatible with Confluent's REST API."),
        (name = "notifications", description = "Notification history and live streams (SSE, WebSocket)."),
        (name = "media", description = "Uploads, downloads and credits."),
        (name = "blobs", description = "Signed blob URLs of the built-in object store."),
        (name = "stats", description = "Per-user statistics and analytics."),
        (name = "admin", description = "Operator endpoints: API keys, routes, dead letters, replay, snapshots."),
        (name = "telemetry", description = "Metrics and logs from standard agents (Prometheus remote write, OTLP/HTTP, Loki, native JSON) and the Prometheus-compatible query API under /prometheus."),
        (name = "alerts", description = "Alert rules over stored telemetry, their history, and webhook notification targets."),
        (name = "meta", description = "Health, readiness, metrics, status and this document."),
    )
)]
struct ApiDoc;

/// The router's starting point: the document's fixed parts and its own two routes.
pub fn router() -> OpenApiRouter<AppContext> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(openapi_json))
        .routes(routes!(docs::page))
        .routes(routes!(docs::redoc_js))
}

/// The document as built from the router, with what holds for every operation; the
/// per-route event operations are added from the live route table (`document`).
pub struct Base {
    doc: Value,
    /// The last document served, with the route table and topic schemas it was built from.
    /// Building it costs ~30 ms (a JSON Schema per route), and `/openapi.json` needs no
    /// credentials, so it is built once per route-table or schema change, not per request:
    /// otherwise any anonymous client could make the server spend a core on it.
    served: Mutex<Option<Served>>,
}

struct Served {
    routes: Arc<RouteTable>,
    topics: Arc<TopicMap>,
    body: Bytes,
}

/// Finishes what the registrations produced: security schemes and the answers every
/// operation can give because of the guards in front of the handlers.
pub fn finish(api: utoipa::openapi::OpenApi) -> Base {
    let mut doc = serde_json::to_value(api).unwrap_or_else(|_| json!({}));
    doc["info"]["version"] = Value::String(env!("CARGO_PKG_VERSION").into());
    doc["components"]["securitySchemes"] = security_schemes();
    if let Some(paths) = doc["paths"].as_object_mut() {
        // Axum's catch-all `{*key}` is OpenAPI's `{key}`.
        let renamed: Vec<(String, Value)> = std::mem::take(paths)
            .into_iter()
            .map(|(p, v)| (p.replace("{*", "{"), v))
            .collect();
        paths.extend(renamed);
        unique_operation_ids(paths);
        for item in paths.values_mut() {
            for op in operations_mut(item) {
                catch_all_parameter(op);
                optional_parameters(op);
                add_common_answers(op);
            }
        }
    }
    Base {
        doc,
        served: Mutex::new(None),
    }
}

/// The document for a running process: the base plus one operation per ingest route.
pub fn document(ctx: &AppContext, base: &Base) -> Value {
    let mut doc = base.doc.clone();
    events::add_routes(&mut doc, &events::Catalog::of(ctx));
    doc
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The operations of a path item.
pub fn operations_mut(item: &mut Value) -> impl Iterator<Item = &mut Value> {
    item.as_object_mut()
        .into_iter()
        .flat_map(|o| o.iter_mut())
        .filter(|(k, _)| METHODS.contains(&k.as_str()))
        .map(|(_, v)| v)
}

/// One handler for several methods (`method(get, head)`) gives each the same id: the later
/// ones get the method as a suffix (`get_blob_head`).
fn unique_operation_ids(paths: &mut serde_json::Map<String, Value>) {
    let mut seen = std::collections::HashSet::new();
    for item in paths.values_mut() {
        let Some(ops) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in ops
            .iter_mut()
            .filter(|(m, _)| METHODS.contains(&m.as_str()))
        {
            let Some(id) = op["operationId"].as_str().map(str::to_string) else {
                continue;
            };
            if !seen.insert(id.clone()) {
                op["operationId"] = Value::String(format!("{id}_{method}"));
            }
        }
    }
}

/// A parameter utoipa took from a catch-all segment is named `*key`: it is `key`, once.
fn catch_all_parameter(op: &mut Value) {
    let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else {
        return;
    };
    for p in params.iter_mut() {
        if let Some(name) = p["name"].as_str().and_then(|n| n.strip_prefix('*')) {
            p["name"] = Value::String(name.to_string());
        }
    }
    let mut seen = std::collections::HashSet::new();
    params.retain(|p| seen.insert((p["name"].to_string(), p["in"].to_string())));
}

/// An optional parameter (`Option<T>`) is left out, never sent as null: its schema is `T`
/// (utoipa writes `["T", "null"]`, which generators and validators of parameters reject).
fn optional_parameters(op: &mut Value) {
    let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else {
        return;
    };
    for p in params.iter_mut().filter(|p| p["required"] != true) {
        let ty = &mut p["schema"]["type"];
        let non_null: Vec<Value> = ty
            .as_array()
            .map(|a| a.iter().filter(|t| *t != "null").cloned().collect())
            .unwrap_or_default();
        if non_null.len() == 1 {
            *ty = non_null[0].clone();
        }
    }
}

fn security_schemes() -> Value {
    let header = |name: &str, what: &str| json!({ "type": "apiKey", "in": "header", "name": name, "description": what });
    json!({
        "bearer": {
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "A JWT from the configured issuer (HS256 secret or JWKS); `substrate token mint` makes development tokens.",
        },
        "api_key": header("X-API-Key", "A service API key (`substrate apikey create`)."),
        "webhook_id": header("webhook-id", "Standard Webhooks: the message id (replays are refused)."),
        "webhook_timestamp": header("webhook-timestamp", "Standard Webhooks: seconds since the epoch, within the tolerance."),
        "webhook_signature": header("webhook-signature", "Standard Webhooks: `v1,<base64 HMAC-SHA256 of id.timestamp.body>`."),
    })
}

/// An error answer: its description and the `Error` body.
pub fn error_answer(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } },
    })
}

/// The guards' answers (`http::guard`, `gateway::addresses`, the auth extractors) on one
/// operation, unless its annotation already documents that status.
fn add_common_answers(op: &mut Value) {
    let secured = op
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| {
            s.iter()
                .any(|r| r.as_object().is_some_and(|o| !o.is_empty()))
        });
    let has_body = op.get("requestBody").is_some();
    let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
        return;
    };
    let mut add = |status: &str, what: &str| {
        responses
            .entry(status.to_string())
            .or_insert_with(|| error_answer(what));
    };
    add(
        "400",
        "The request is malformed: a NUL character in the URL, a path or query parameter of the wrong type",
    );
    add(
        "503",
        "Overloaded (`overloaded`, with Retry-After), no answer in time (`timeout`), or a store is unavailable",
    );
    if secured {
        add(
            "401",
            "Missing or invalid credentials (`missing_credentials`, `invalid_token`, `token_expired`, `invalid_api_key`)",
        );
        add(
            "429",
            "Rate limited (`rate_limited`, with Retry-After): per client address, then per principal",
        );
    }
    if has_body {
        add("413", "The body is larger than the configured limit");
    }
}

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object))
)]
async fn openapi_json(
    State(ctx): State<AppContext>,
    Extension(base): Extension<Arc<Base>>,
) -> Response {
    let body = served(&ctx, &base);
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The serialized document for the current route table and topic schemas, built again only
/// when either has been replaced. The cache holds the `Arc`s it compares, so a replaced table
/// cannot be freed and its address reused by the next one.
fn served(ctx: &AppContext, base: &Base) -> Bytes {
    let routes = ctx.routes.current();
    let topics = ctx.schemas.topic_map();
    let mut slot = base.served.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = slot.as_ref()
        && Arc::ptr_eq(&s.routes, &routes)
        && Arc::ptr_eq(&s.topics, &topics)
    {
        return s.body.clone();
    }
    let body = Bytes::from(serde_json::to_vec(&document(ctx, base)).unwrap_or_default());
    *slot = Some(Served {
        routes,
        topics,
        body: body.clone(),
    });
    body
}

/// Every path and method of a document, e.g. `("GET", "/healthz")`, sorted.
pub fn operations_of(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (p, item) in paths {
            for m in METHODS {
                if item.get(m).is_some() {
                    out.push((m.to_ascii_uppercase(), p.clone()));
                }
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The paths an axum router has registered, read from its `Debug` form (axum keeps them
    /// private; `Node` prints them as `RouteId(n): "/path"`), before its fallback router's.
    fn registered_paths<S>(router: &axum::Router<S>) -> BTreeSet<String> {
        let full = format!("{router:?}");
        let text = full.split("fallback_router").next().unwrap_or_default();
        text.match_indices("RouteId(")
            .filter_map(|(i, _)| {
                let rest = &text[i..];
                let start = rest.find("): \"")? + 4;
                let end = rest[start..].find('"')?;
                Some(rest[start..start + end].to_string())
            })
            .collect()
    }

    /// Every path the router serves is in the document and the reverse: a route registered
    /// without its annotation (a plain `.route`) fails here.
    #[test]
    fn router_and_document_agree() {
        let (router, api) = crate::http::api_router(&crate::roles::ALL, None).split_for_parts();
        let served = registered_paths(&router);
        let documented: BTreeSet<String> = api.paths.paths.keys().cloned().collect();
        assert!(served.len() > 40, "{served:?}");
        assert_eq!(
            served.difference(&documented).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "served but not documented"
        );
        assert_eq!(
            documented.difference(&served).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "documented but not served"
        );
        // The check sees an undocumented route.
        let (router, api) = crate::http::api_router(&crate::roles::ALL, None)
            .route("/undocumented", axum::routing::get(|| async {}))
            .split_for_parts();
        let extra: Vec<String> = registered_paths(&router)
            .into_iter()
            .filter(|p| !api.paths.paths.contains_key(p))
            .collect();
        assert_eq!(extra, vec!["/undocumented".to_string()]);
    }

    /// The document of every role: each operation has a unique id, a tag and answers, and
    /// every `$ref` resolves.
    #[test]
    fn document_is_complete() {
        let (_, api) = crate::http::api_router(&crate::roles::ALL, None).split_for_parts();
        let doc = finish(api).doc;
        assert_eq!(doc["openapi"], "3.1.0");
        let mut ids = std::collections::HashSet::new();
        let mut n = 0;
        for item in doc["paths"].as_object().expect("paths").values() {
            for m in METHODS {
                let Some(op) = item.get(m) else { continue };
                n += 1;
                let id = op["operationId"].as_str().expect("operationId");
                assert!(ids.insert(id.to_string()), "operationId {id} twice");
                assert!(
                    op["tags"].as_array().is_some_and(|t| !t.is_empty()),
                    "{id} has no tag"
                );
                assert!(
                    op["responses"]
                        .as_object()
                        .is_some_and(|r| r.contains_key("503"))
                );
            }
        }
        assert!(n > 40, "only {n} operations");
        // A handler for several methods documents each (the blob download: GET and HEAD).
        for m in ["get", "head", "put"] {
            assert!(
                doc["paths"]["/blobs/{key}"].get(m).is_some(),
                "{m} /blobs/{{key}}"
            );
        }
        let text = doc.to_string();
        for (i, _) in text.match_indices("\"$ref\":\"#/components/schemas/") {
            let rest = &text[i + 29..];
            let name = &rest[..rest.find('"').expect("ref end")];
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "$ref to missing schema {name}"
            );
        }
        assert!(!text.contains("{*"), "a catch-all path was not renamed");
    }
}
