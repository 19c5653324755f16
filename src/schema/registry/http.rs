//! The Confluent Schema Registry REST API over the configured registry, so Confluent clients
//! (SchemaRegistryClient, kcat -s avro, AvroDeserializer) can read substrate's topics.
//! Reads are public by default (`schemas.public_reads`); writes need the admin role or scope.

use axum::Router;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{RegistryError, VersionSel};
use crate::app::AppContext;
use crate::gateway::auth::{Admin, Principal};
use crate::http::error::ApiError;
use crate::schema::Compatibility;

const CT: &str = "application/vnd.schemaregistry.v1+json";

fn ok(v: Value) -> Response {
    let mut r = (StatusCode::OK, axum::Json(v)).into_response();
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static(CT));
    r
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (status, code) = self.code();
        if status >= 500 {
            tracing::error!(error = %self, "registry error");
        }
        let body = json!({ "error_code": code, "message": self.to_string() });
        let mut r = (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            axum::Json(body),
        )
            .into_response();
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static(CT));
        r
    }
}

/// A caller allowed to read: anyone when reads are public, else any authenticated principal.
pub struct Reader;

impl FromRequestParts<AppContext> for Reader {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        ctx: &AppContext,
    ) -> Result<Self, Self::Rejection> {
        if !ctx.config.schemas.public_reads {
            Principal::from_request_parts(parts, ctx).await?;
        }
        Ok(Reader)
    }
}

#[derive(Deserialize)]
struct SchemaBody {
    schema: String,
    #[serde(default, rename = "schemaType")]
    schema_type: Option<String>,
}

/// A request body, parsed by the strict parser (`crate::http::json`: a key twice is refused)
/// and free of NUL characters (the store could not keep them); `invalid` builds the
/// Confluent error for a body that does not fit.
fn strict_body<T: DeserializeOwned>(
    b: &Bytes,
    invalid: fn(String) -> RegistryError,
) -> Result<T, RegistryError> {
    let doc = crate::http::json::parse(b).map_err(|e| invalid(e.to_string()))?;
    if let Some(field) = crate::http::json::find_nul(&doc) {
        return Err(invalid(format!(
            "{field}: {}",
            crate::schema::json::NUL_REASON
        )));
    }
    serde_json::from_value(doc).map_err(|e| invalid(e.to_string()))
}

fn parse_body(b: &Bytes) -> Result<SchemaBody, RegistryError> {
    let body: SchemaBody = strict_body(b, RegistryError::InvalidSchema)?;
    if let Some(t) = &body.schema_type
        && !t.eq_ignore_ascii_case("AVRO")
    {
        return Err(RegistryError::InvalidSchema(format!(
            "schemaType {t} is not supported; only AVRO"
        )));
    }
    Ok(body)
}

/// After a registration, the catalog picks up the new latest version of a known topic.
async fn refresh(ctx: &AppContext, subject: &str) {
    if let Some(topic) = subject.strip_suffix("-value")
        && ctx.schemas.topic(topic).is_some()
        && let Err(e) = ctx.schemas.refresh_topic(topic).await
    {
        tracing::warn!(error = %e, topic, "catalog refresh failed");
    }
}

async fn subjects(State(ctx): State<AppContext>, _: Reader) -> Result<Response, RegistryError> {
    Ok(ok(json!(ctx.schemas.registry().subjects().await?)))
}

async fn versions(
    State(ctx): State<AppContext>,
    _: Reader,
    Path(s): Path<String>,
) -> Result<Response, RegistryError> {
    Ok(ok(json!(ctx.schemas.registry().versions(&s).await?)))
}

async fn version(
    State(ctx): State<AppContext>,
    _: Reader,
    Path((s, v)): Path<(String, String)>,
) -> Result<Response, RegistryError> {
    let sv = ctx
        .schemas
        .registry()
        .version(&s, VersionSel::parse(&v)?)
        .await?;
    Ok(ok(
        json!({ "subject": sv.subject, "version": sv.version, "id": sv.id, "schema": sv.schema }),
    ))
}

async fn version_schema(
    State(ctx): State<AppContext>,
    _: Reader,
    Path((s, v)): Path<(String, String)>,
) -> Result<Response, RegistryError> {
    let sv = ctx
        .schemas
        .registry()
        .version(&s, VersionSel::parse(&v)?)
        .await?;
    let raw: Value = serde_json::from_str(&sv.schema).unwrap_or(Value::String(sv.schema));
    Ok(ok(raw))
}

async fn schema_by_id(
    State(ctx): State<AppContext>,
    _: Reader,
    Path(id): Path<i64>,
) -> Result<Response, RegistryError> {
    Ok(ok(
        json!({ "schema": ctx.schemas.registry().schema_by_id(id).await? }),
    ))
}

async fn register(
    State(ctx): State<AppContext>,
    Admin(_): Admin,
    Path(s): Path<String>,
    body: Bytes,
) -> Result<Response, RegistryError> {
    let b = parse_body(&body)?;
    let id = ctx.schemas.registry().register(&s, &b.schema).await?;
    refresh(&ctx, &s).await;
    Ok(ok(json!({ "id": id })))
}

async fn lookup(
    State(ctx): State<AppContext>,
    _: Reader,
    Path(s): Path<String>,
    body: Bytes,
) -> Result<Response, RegistryError> {
    let b = parse_body(&body)?;
    let sv = ctx.schemas.registry().lookup(&s, &b.schema).await?;
    Ok(ok(
        json!({ "subject": sv.subject, "version": sv.version, "id": sv.id, "schema": sv.schema }),
    ))
}

#[derive(Deserialize)]
struct Verbose {
    #[serde(default, deserialize_with = "loose_bool")]
    verbose: bool,
}

/// A query flag as clients send it: `true`/`false` in any case (Confluent's Python client
/// sends `verbose=False`), `1`/`0`, or empty.
fn loose_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let s = String::deserialize(d)?;
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" | "" => Ok(false),
        other => Err(serde::de::Error::custom(format!(
            "expected true or false, got {other}"
        ))),
    }
}

async fn compatibility(
    State(ctx): State<AppContext>,
    _: Reader,
    Path((s, v)): Path<(String, String)>,
    Query(q): Query<Verbose>,
    body: Bytes,
) -> Result<Response, RegistryError> {
    let b = parse_body(&body)?;
    let problems = ctx
        .schemas
        .registry()
        .check(&s, &b.schema, VersionSel::parse(&v)?)
        .await?;
    let mut out = json!({ "is_compatible": problems.is_empty() });
    if q.verbose {
        out["messages"] = json!(problems);
    }
    Ok(ok(out))
}

#[derive(Deserialize)]
struct ConfigBody {
    compatibility: String,
}

async fn get_config(State(ctx): State<AppContext>, _: Reader) -> Result<Response, RegistryError> {
    let l = ctx.schemas.registry().compatibility(None).await?;
    Ok(ok(json!({ "compatibilityLevel": l.as_str() })))
}

async fn get_subject_config(
    State(ctx): State<AppContext>,
    _: Reader,
    Path(s): Path<String>,
) -> Result<Response, RegistryError> {
    let l = ctx.schemas.registry().compatibility(Some(&s)).await?;
    Ok(ok(json!({ "compatibilityLevel": l.as_str() })))
}

async fn put_config(
    State(ctx): State<AppContext>,
    Admin(_): Admin,
    body: Bytes,
) -> Result<Response, RegistryError> {
    let b: ConfigBody = strict_body(&body, RegistryError::InvalidCompatibility)?;
    let level =
        Compatibility::parse(&b.compatibility).map_err(RegistryError::InvalidCompatibility)?;
    ctx.schemas
        .registry()
        .set_compatibility(None, level)
        .await?;
    Ok(ok(json!({ "compatibility": level.as_str() })))
}

async fn put_subject_config(
    State(ctx): State<AppContext>,
    Admin(_): Admin,
    Path(s): Path<String>,
    body: Bytes,
) -> Result<Response, RegistryError> {
    let b: ConfigBody = strict_body(&body, RegistryError::InvalidCompatibility)?;
    let level =
        Compatibility::parse(&b.compatibility).map_err(RegistryError::InvalidCompatibility)?;
    ctx.schemas
        .registry()
        .set_compatibility(Some(&s), level)
        .await?;
    Ok(ok(json!({ "compatibility": level.as_str() })))
}

pub fn router() -> Router<AppContext> {
    Router::new()
        .route("/subjects", get(subjects))
        .route("/subjects/{s}", post(lookup))
        .route("/subjects/{s}/versions", get(versions).post(register))
        .route("/subjects/{s}/versions/{v}", get(version))
        .route("/subjects/{s}/versions/{v}/schema", get(version_schema))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route(
            "/compatibility/subjects/{s}/versions/{v}",
            post(compatibility),
        )
        .route("/config", get(get_config).put(put_config))
        .route(
            "/config/{s}",
            get(get_subject_config).put(put_subject_config),
        )
}
