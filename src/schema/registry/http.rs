//! The Confluent Schema Registry REST API over the configured registry, so Confluent clients
//! (SchemaRegistryClient, kcat -s avro, AvroDeserializer) can read substrate's topics.
//! Reads are public by default (`schemas.public_reads`); writes need the admin role or scope.

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{RegistryError, VersionSel};
use crate::app::AppContext;
use crate::gateway::auth::{Admin, Principal};
use crate::http::error::ApiError;
use crate::schema::Compatibility;

const CT: &str = "application/vnd.schemaregistry.v1+json";

crate::doc_schema!(
    /// A registry error, as Confluent's API gives it.
    RegistryErrorBody = {"type": "object", "required": ["error_code", "message"], "properties": {
        "error_code": {"type": "integer", "description": "e.g. 40401 subject not found, 42201 invalid schema"},
        "message": {"type": "string"}}}
);

crate::doc_schema!(
    /// A schema version of a subject.
    SubjectVersion = {"type": "object", "required": ["subject", "version", "id", "schema"], "properties": {
        "subject": {"type": "string"}, "version": {"type": "integer"}, "id": {"type": "integer"},
        "schema": {"type": "string", "description": "The Avro schema as JSON text"}}}
);

crate::doc_schema!(
    /// A schema to register, look up or check: Avro only.
    SchemaRequest = {"type": "object", "required": ["schema"], "properties": {
        "schema": {"type": "string", "description": "The Avro schema as JSON text"},
        "schemaType": {"type": "string", "description": "AVRO (the default); others are refused"}}}
);

crate::doc_schema!(
    /// A compatibility level.
    CompatibilityLevel = {"type": "object", "required": ["compatibilityLevel"], "properties": {
        "compatibilityLevel": {"type": "string", "enum": ["NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE"]}}}
);

crate::doc_schema!(
    /// A compatibility level to set.
    CompatibilityRequest = {"type": "object", "required": ["compatibility"], "properties": {
        "compatibility": {"type": "string", "enum": ["NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE"]}}}
);

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

#[utoipa::path(
    get,
    path = "/subjects",
    tag = "registry",
    operation_id = "list_subjects",
    summary = "The subjects",
    responses(
        (status = 200, description = "Every subject", content_type = "application/vnd.schemaregistry.v1+json", body = Vec<String>),
    ),
    security((), ("bearer" = []), ("api_key" = []))
)]
async fn subjects(State(ctx): State<AppContext>, _: Reader) -> Result<Response, RegistryError> {
    Ok(ok(json!(ctx.schemas.registry().subjects().await?)))
}

#[utoipa::path(
    get,
    path = "/subjects/{s}/versions",
    tag = "registry",
    operation_id = "list_versions",
    summary = "The versions of a subject",
    params(("s" = String, Path, description = "The subject, e.g. `public.user.message.events-value`")),
    responses(
        (status = 200, description = "Its version numbers", content_type = "application/vnd.schemaregistry.v1+json", body = Vec<i64>),
        (status = 404, description = "No such subject (40401), version (40402) or schema (40403)", content_type = "application/vnd.schemaregistry.v1+json", body = RegistryErrorBody),
    ),
    security((), ("bearer" = []), ("api_key" = []))
)]
async fn versions(
    State(ctx): State<AppContext>,
    _: Reader,
    Path(s): Path<String>,
) -> Result<Response, RegistryError> {
    Ok(ok(json!(ctx.schemas.registry().versions(&s).await?)))
}

#[utoipa::path(
    get,
    path = "/subjects/{s}/versions/{v}",
    tag = "registry",
    operation_id = "get_version",
    summary = "One version of a subject",
    params(("s" = String, Path, description = "The subject, e.g. `public.user.message.events-value`"), ("v" = String, Path, description = "A version number, or `latest`")),
    responses(
        (status = 200, description = "The version", content_type = "application/vnd.schemaregistry.v1+json", body = SubjectVersion),
        (status = 404, description = "No such subject (40401), version (40402) or schema (40403)", content_type = "application/vnd.schemaregistry.v1+json", body = RegistryErrorBody),
        (status = 422, description = "An invalid version (42202)", content_type = "application/vnd.schemaregistry.v1+json", body = RegistryErrorBody),
    ),
    security((), ("bearer" = []), ("api_key" = []))
)]
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

#[utoipa::path(
    get,
    path = "/subjects/{s}/versions/{v}/schema",
    tag = "registry",
    operation_id = "get_version_schema",
    summary = "The schema of one version, as it is",
    params(("s" = String, Path, description = "The subject, e.g. `public.user.message.events-value`"), ("v" = String, Path, description = "A version number, or `latest`")),
    responses(
        (status = 200, description = "The Avro schema", content_type = "application/vnd.schemaregistry.v1+json", body = Object),
        (status = 404, description = "No such subject (40401), version (40402) or schema (40403)", content_type = "application/vnd.schemaregistry.v1+json", body = RegistryErrorBody),
        (status = 422, description = "An invalid version (42202)", content_type = "application/vnd.schemaregistry.v1+json", body = RegistryErrorBody),
    ),
    security((), ("bearer" = []), ("api_key" = []))
)]
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

#[utoipa::path(
    get,
    path = "/schemas/ids/{id}",
    tag = "registry",
    operation_id = "get_schema_by_id",
    summary = "A schema by its id",
    params(("id" = i64, Path, description = "The schema id")),
    responses(
        (status = 200, description = "`{\"schema\": text}`", content_type = "application/vnd.schemaregistry.v1+json", body = Object),
        (status = 404, description = "No such subject (40401), version (40402) or schema (40403)", content_type = "application/vnd.schemaregistry.v1+json", body = RegistryErrorBody),
    ),
    security((), ("bearer" = []), ("api_key" = []))
)]
async fn schema_by_id(
    State(ctx): State<AppContext>,
    _: Reader,
    Path(id): Path<i64>,
) -> Result<Response, RegistryError> {
    Ok(ok(
        json!({ "schema": ctx.schemas.registry().schema_by_id(id).await? }),
    ))
}

#[utoipa::path(
    post,
    path = "/subjects/{s}/versions",
    tag = "registry",
    operation_id = "register_schema",
    summary = "Register a schema under a subject",
    params(("s" = String, Path, description = "The subject, e.g. `public.user.message.events-value`")),
    request_body(content = SchemaRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Its id (an identical schema keeps its id)", content_type = "application/vnd.schemaregistry.v1+json", body = Object),
        (status = 409, description = "Incompatible with the subject's level", content_type = "application/vnd.schemaregistry.v1+json", body = RegistryErrorBody),
        (status = 422, description = "Not a valid Avro schema (42201)", content_type = "application/vnd.schemaregistry.v1+json", body = RegistryErrorBody),
        (status = 403, description = "Not an admin", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
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

#[utoipa::path(
    post,
    path = "/subjects/{s}",
    tag = "registry",
    operation_id = "lookup_schema",
    summary = "Find a schema among a subject's versions",
    params(("s" = String, Path, description = "The subject, e.g. `public.user.message.events-value`")),
    request_body(content = SchemaRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The version holding it", content_type = "application/vnd.schemaregistry.v1+json", body = SubjectVersion),
        (status = 404, description = "No such subject (40401), version (40402) or schema (40403)", content_type = "application/vnd.schemaregistry.v1+json", body = RegistryErrorBody),
        (status = 422, description = "Not a valid Avro schema (42201)", content_type = "application/vnd.schemaregistry.v1+json", body = RegistryErrorBody),
    ),
    security((), ("bearer" = []), ("api_key" = []))
)]
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

#[utoipa::path(
    post,
    path = "/compatibility/subjects/{s}/versions/{v}",
    tag = "registry",
    operation_id = "check_compatibility",
    summary = "Check a schema against a version",
    params(("s" = String, Path, description = "The subject, e.g. `public.user.message.events-value`"), ("v" = String, Path, description = "A version number, or `latest`"), ("verbose" = Option<bool>, Query, description = "List the problems")),
    request_body(content = SchemaRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "`{\"is_compatible\": bool, \"messages\": [...]}`", content_type = "application/vnd.schemaregistry.v1+json", body = Object),
        (status = 404, description = "No such subject (40401), version (40402) or schema (40403)", content_type = "application/vnd.schemaregistry.v1+json", body = RegistryErrorBody),
        (status = 422, description = "Not a valid schema or version", content_type = "application/vnd.schemaregistry.v1+json", body = RegistryErrorBody),
    ),
    security((), ("bearer" = []), ("api_key" = []))
)]
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

#[utoipa::path(
    get,
    path = "/config",
    tag = "registry",
    operation_id = "get_config",
    summary = "The global compatibility level",
    responses(
        (status = 200, description = "The level", content_type = "application/vnd.schemaregistry.v1+json", body = CompatibilityLevel),
    ),
    security((), ("bearer" = []), ("api_key" = []))
)]
async fn get_config(State(ctx): State<AppContext>, _: Reader) -> Result<Response, RegistryError> {
    let l = ctx.schemas.registry().compatibility(None).await?;
    Ok(ok(json!({ "compatibilityLevel": l.as_str() })))
}

#[utoipa::path(
    get,
    path = "/config/{s}",
    tag = "registry",
    operation_id = "get_subject_config",
    summary = "A subject's compatibility level",
    params(("s" = String, Path, description = "The subject, e.g. `public.user.message.events-value`")),
    responses(
        (status = 200, description = "The level (the global one if the subject has none)", content_type = "application/vnd.schemaregistry.v1+json", body = CompatibilityLevel),
    ),
    security((), ("bearer" = []), ("api_key" = []))
)]
async fn get_subject_config(
    State(ctx): State<AppContext>,
    _: Reader,
    Path(s): Path<String>,
) -> Result<Response, RegistryError> {
    let l = ctx.schemas.registry().compatibility(Some(&s)).await?;
    Ok(ok(json!({ "compatibilityLevel": l.as_str() })))
}

#[utoipa::path(
    put,
    path = "/config",
    tag = "registry",
    operation_id = "put_config",
    summary = "Set the global compatibility level",
    request_body(content = CompatibilityRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The level set", content_type = "application/vnd.schemaregistry.v1+json", body = CompatibilityRequest),
        (status = 422, description = "Not a level (42203)", content_type = "application/vnd.schemaregistry.v1+json", body = RegistryErrorBody),
        (status = 403, description = "Not an admin", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
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

#[utoipa::path(
    put,
    path = "/config/{s}",
    tag = "registry",
    operation_id = "put_subject_config",
    summary = "Set a subject's compatibility level",
    params(("s" = String, Path, description = "The subject, e.g. `public.user.message.events-value`")),
    request_body(content = CompatibilityRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The level set", content_type = "application/vnd.schemaregistry.v1+json", body = CompatibilityRequest),
        (status = 422, description = "Not a level (42203)", content_type = "application/vnd.schemaregistry.v1+json", body = RegistryErrorBody),
        (status = 403, description = "Not an admin", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
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

pub fn router() -> OpenApiRouter<AppContext> {
    OpenApiRouter::new()
        .routes(routes!(subjects))
        .routes(routes!(lookup))
        .routes(routes!(versions, register))
        .routes(routes!(version))
        .routes(routes!(version_schema))
        .routes(routes!(schema_by_id))
        .routes(routes!(compatibility))
        .routes(routes!(get_config, put_config))
        .routes(routes!(get_subject_config, put_subject_config))
}
