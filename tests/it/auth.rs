//! Authentication: every way a credential can be wrong is refused; HS256, RS256, ES256,
//! JWKS (with rotation) and API keys are accepted; operator endpoints need admin.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::support::*;

fn claims(sub: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({ "sub": sub, "exp": now + 600, "iat": now, "nbf": now, "email": "a@example.com" })
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

fn rsa(name: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(read_fixture(&format!("keys/{name}.key")).as_bytes()).unwrap()
}

fn ec() -> EncodingKey {
    EncodingKey::from_ec_pem(read_fixture("keys/ec1.key").as_bytes()).unwrap()
}

async fn status_with(app: &TestApp, bearer: Option<&str>) -> (u16, Value) {
    let mut req = app
        .http
        .post(app.url("/api/v1/events/message"))
        .json(&message("x"));
    if let Some(b) = bearer {
        req = req.header("authorization", b);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

both!(bad_credentials_are_refused);
async fn bad_credentials_are_refused(b: Backend) {
    let app = TestApp::start_with(b, |c| {
        c.auth.rs256_public_key = Some(fixture("keys/rsa1.pub").display().to_string());
        c.auth.issuer = Some("https://issuer.test".into());
        c.auth.audience = Some("substrate".into());
        c.auth.leeway_secs = 5;
    })
    .await;
    let now = chrono::Utc::now().timestamp();
    let good = json!({"sub":"alice","email":"alice@example.com","exp":now+600,"iat":now,"iss":"https://issuer.test","aud":"substrate"});
    let hs = EncodingKey::from_secret(SECRET.as_bytes());
    let bearer = |t: String| format!("Bearer {t}");
    // Baseline: a correct HS256 and RS256 token pass.
    assert_eq!(
        status_with(
            &app,
            Some(&bearer(sign(Algorithm::HS256, None, &good, &hs)))
        )
        .await
        .0,
        202
    );
    assert_eq!(
        status_with(
            &app,
            Some(&bearer(sign(Algorithm::RS256, None, &good, &rsa("rsa1"))))
        )
        .await
        .0,
        202
    );

    let mut cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no credentials", None, "missing_credentials"),
        ("not a jwt", Some(bearer("abc.def".into())), "invalid_token"),
        (
            "basic auth",
            Some("Basic YTpi".into()),
            "missing_credentials",
        ),
    ];
    let mut expired = good.clone();
    expired["exp"] = json!(now - 60);
    cases.push((
        "expired",
        Some(bearer(sign(Algorithm::HS256, None, &expired, &hs))),
        "token_expired",
    ));
    let mut early = good.clone();
    early["nbf"] = json!(now + 600);
    cases.push((
        "not yet valid",
        Some(bearer(sign(Algorithm::HS256, None, &early, &hs))),
        "invalid_token",
    ));
    let mut iss = good.clone();
    iss["iss"] = json!("https://evil.test");
    cases.push((
        "wrong issuer",
        Some(bearer(sign(Algorithm::HS256, None, &iss, &hs))),
        "invalid_token",
    ));
    let mut aud = good.clone();
    aud["aud"] = json!("someone-else");
    cases.push((
        "wrong audience",
        Some(bearer(sign(Algorithm::HS256, None, &aud, &hs))),
        "invalid_token",
    ));
    let mut nosub = good.clone();
    nosub.as_object_mut().unwrap().remove("sub");
    cases.push((
        "no subject",
        Some(bearer(sign(Algorithm::HS256, None, &nosub, &hs))),
        "invalid_token",
    ));
    cases.push((
        "wrong secret",
        Some(bearer(sign(
            Algorithm::HS256,
            None,
            &good,
            &EncodingKey::from_secret(b"not-the-secret-at-all"),
        ))),
        "invalid_token",
    ));
    cases.push((
        "wrong rsa key",
        Some(bearer(sign(Algorithm::RS256, None, &good, &rsa("rsa2")))),
        "invalid_token",
    ));
    // Algorithm confusion: an HS256 token whose HMAC key is the RSA public key.
    let pubpem = read_fixture("keys/rsa1.pub");
    cases.push((
        "hs256 signed with the rs256 public key",
        Some(bearer(sign(
            Algorithm::HS256,
            None,
            &good,
            &EncodingKey::from_secret(pubpem.as_bytes()),
        ))),
        "invalid_token",
    ));
    // alg none: header {"alg":"none"} with an empty signature.
    use base64::Engine;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg":"none","typ":"JWT"})),
        b64(&good)
    );
    cases.push(("alg none", Some(bearer(none)), "invalid_token"));
    // A tampered payload keeps the old signature.
    let t = sign(Algorithm::HS256, None, &good, &hs);
    let parts: Vec<&str> = t.split('.').collect();
    let mut admin = good.clone();
    admin["roles"] = json!(["admin"]);
    cases.push((
        "tampered payload",
        Some(bearer(format!("{}.{}.{}", parts[0], b64(&admin), parts[2]))),
        "invalid_token",
    ));
    cases.push((
        "unknown api key",
        Some("ApiKey sk_deadbeef_0000".into()),
        "invalid_api_key",
    ));

    for (name, header, code) in cases {
        let (s, body) = status_with(&app, header.as_deref()).await;
        assert_eq!(
            (s, body["error"].as_str()),
            (401, Some(code)),
            "case: {name}: {body}"
        );
    }
    assert_eq!(app.outbox_count(None).await, 2);
    app.stop().await;
}

both!(es256_and_jwks_with_rotation);
async fn es256_and_jwks_with_rotation(b: Backend) {
    // A JWKS endpoint whose key set can be swapped to simulate rotation.
    let jwks = std::sync::Arc::new(parking_lot::Mutex::new(read_fixture("keys/jwks-rsa1.json")));
    let served = jwks.clone();
    let router = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let s = served.clone();
            async move { ([("content-type", "application/json")], s.lock().clone()) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let app = TestApp::start_with(b, |c| {
        c.auth.hs256_secret = None;
        c.auth.jwks_url = Some(jwks_url);
        c.auth.jwks_min_refresh_secs = 0;
        c.auth.es256_public_key = Some(read_fixture("keys/ec1.pub"));
    })
    .await;
    let bearer = |t: String| format!("Bearer {t}");
    // ES256 with the static key (no kid) and through the JWKS (kid ec-1).
    assert_eq!(
        status_with(
            &app,
            Some(&bearer(sign(Algorithm::ES256, None, &claims("a"), &ec())))
        )
        .await
        .0,
        202
    );
    assert_eq!(
        status_with(
            &app,
            Some(&bearer(sign(
                Algorithm::ES256,
                Some("ec-1"),
                &claims("a"),
                &ec()
            )))
        )
        .await
        .0,
        202
    );
    assert_eq!(
        status_with(
            &app,
            Some(&bearer(sign(
                Algorithm::RS256,
                Some("rsa-1"),
                &claims("a"),
                &rsa("rsa1")
            )))
        )
        .await
        .0,
        202
    );
    // rsa-2 is not published yet.
    let (s, body) = status_with(
        &app,
        Some(&bearer(sign(
            Algorithm::RS256,
            Some("rsa-2"),
            &claims("a"),
            &rsa("rsa2"),
        ))),
    )
    .await;
    assert_eq!(s, 401, "{body}");
    // A key signed by rsa-2 but claiming kid rsa-1 fails the signature.
    let (s, _) = status_with(
        &app,
        Some(&bearer(sign(
            Algorithm::RS256,
            Some("rsa-1"),
            &claims("a"),
            &rsa("rsa2"),
        ))),
    )
    .await;
    assert_eq!(s, 401);
    // Rotate: the unknown kid triggers a refresh and is accepted.
    *jwks.lock() = read_fixture("keys/jwks-rotated.json");
    let (s, body) = status_with(
        &app,
        Some(&bearer(sign(
            Algorithm::RS256,
            Some("rsa-2"),
            &claims("a"),
            &rsa("rsa2"),
        ))),
    )
    .await;
    assert_eq!(s, 202, "{body}");
    // HS256 is not accepted when only asymmetric keys are configured.
    let (s, _) = status_with(
        &app,
        Some(&bearer(sign(
            Algorithm::HS256,
            None,
            &claims("a"),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        ))),
    )
    .await;
    assert_eq!(s, 401);
    app.stop().await;
}

both!(api_keys_and_admin_actions);
async fn api_keys_and_admin_actions(b: Backend) {
    let app = TestApp::start_with(b, |c| c.auth.api_key_cache_secs = 0).await;
    let admin = app.admin_token();
    let user = app.token("alice");
    // Key management needs admin.
    let (s, _) = app
        .post_json(
            "/api/v1/admin/apikeys",
            &user,
            &json!({"name":"svc","scopes":["events:write"]}),
        )
        .await;
    assert_eq!(s, 403);
    let (s, created) = app
        .post_json(
            "/api/v1/admin/apikeys",
            &admin,
            &json!({"name":"svc","scopes":["events:write"]}),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_string();
    let (s, _) = app
        .post_json("/api/v1/admin/apikeys", &admin, &json!({"name":"svc"}))
        .await;
    assert_eq!(s, 409);
    // Only the hash is stored.
    let stored: Vec<String> = substrate::on_read!(app.ctx.store, p => {
        sqlx::query_scalar("SELECT key_hash FROM api_keys").fetch_all(p).await.unwrap()
    });
    assert!(!stored.iter().any(|h| h.contains(&key)));
    let r = app
        .http
        .post(app.url("/api/v1/events/message"))
        .header("x-api-key", &key)
        .header("x-event-key", "bob")
        .json(&{
            let mut m = message("from a service");
            m["user_id"] = json!("bob");
            m["email"] = json!("bob@example.com");
            m
        })
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let (_, list) = app.get_json("/api/v1/admin/apikeys", Some(&admin)).await;
    assert_eq!(list["keys"][0]["name"], "svc");
    assert!(list["keys"][0].get("key").is_none());
    let r = app
        .http
        .delete(app.url("/api/v1/admin/apikeys/svc"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let r = app
        .http
        .post(app.url("/api/v1/events/message"))
        .header("x-api-key", &key)
        .json(&message("revoked"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    app.stop().await;
}
