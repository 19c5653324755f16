//! `GET /docs`: the API reference, rendered by Redoc from `/openapi.json`. Redoc's standalone
//! bundle (npm `redoc` 2.5.4, MIT, `assets/redoc/`) is compiled into the binary and served at
//! `/docs/redoc.standalone.js`, so the page works without internet access; the page loads no
//! fonts or scripts from anywhere else.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

const REDOC_JS: &[u8] = include_bytes!("../../../assets/redoc/redoc.standalone.js");

const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>substrate API reference</title>
<style>body { margin: 0; padding: 0; }</style>
</head>
<body>
<redoc spec-url="/openapi.json" hide-download-button="false" path-in-middle-panel="true"></redoc>
<script src="/docs/redoc.standalone.js"></script>
</body>
</html>
"#;

/// The reference page.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "meta",
    operation_id = "docs_page",
    responses((status = 200, description = "The API reference (HTML, rendered by Redoc from /openapi.json)", content_type = "text/html", body = String))
)]
pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// Redoc's bundle, cached for a day (it changes only with the binary).
#[utoipa::path(
    get,
    path = "/docs/redoc.standalone.js",
    tag = "meta",
    operation_id = "docs_redoc_js",
    responses((status = 200, description = "Redoc's standalone bundle, embedded in the binary", content_type = "text/javascript", body = String))
)]
pub async fn redoc_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        REDOC_JS,
    )
        .into_response()
}
