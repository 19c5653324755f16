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
        // Basic auth carries an API key as its password (promtool, Prometheus, Grafana).
        (
            "basic auth with an unknown key",
            Some("Basic YTpi".into()),
            "invalid_api_key",
        ),
        (
            "basic auth without a password",
            Some("Basic YTo=".into()),
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

/// A JWKS endpoint whose answer the test sets: a key set (rotation), or 503 (an outage).
struct KeyServer {
    body: std::sync::Arc<parking_lot::Mutex<Option<String>>>,
    url: String,
}

impl KeyServer {
    async fn start(body: Option<String>) -> KeyServer {
        let body = std::sync::Arc::new(parking_lot::Mutex::new(body));
        let served = body.clone();
        let router = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let s = served.clone();
                async move {
                    match s.lock().clone() {
                        Some(b) => (
                            axum::http::StatusCode::OK,
                            [("content-type", "application/json")],
                            b,
                        ),
                        None => (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            [("content-type", "text/plain")],
                            "down".to_string(),
                        ),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        KeyServer { body, url }
    }

    fn serve(&self, body: Option<String>) {
        *self.body.lock() = body;
    }
}

both!(es256_and_jwks_with_rotation);
async fn es256_and_jwks_with_rotation(b: Backend) {
    // A JWKS endpoint whose key set can be swapped to simulate rotation.
    let keys = KeyServer::start(Some(read_fixture("keys/jwks-rsa1.json"))).await;
    let app = TestApp::start_with(b, |c| {
        c.auth.hs256_secret = None;
        c.auth.jwks_url = Some(keys.url.clone());
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
    keys.serve(Some(read_fixture("keys/jwks-rotated.json")));
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

/// An event a service posts about bob (services must name the user).
fn service_message(text: &str) -> Value {
    let mut m = message(text);
    m["user_id"] = json!("bob");
    m["email"] = json!("bob@example.com");
    m
}

/// Creates the API key `name` (scope events:write) through the admin API; returns the key.
async fn create_key(app: &TestApp, admin: &str, name: &str) -> String {
    let (s, created) = app
        .post_json(
            "/api/v1/admin/apikeys",
            admin,
            &json!({"name": name, "scopes": ["events:write"]}),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    created["key"].as_str().unwrap().to_string()
}

async fn revoke_key(app: &TestApp, admin: &str, name: &str) {
    let r = app
        .http
        .delete(app.url(&format!("/api/v1/admin/apikeys/{name}")))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
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
    let key = create_key(&app, &admin, "svc").await;
    let (s, _) = app
        .post_json("/api/v1/admin/apikeys", &admin, &json!({"name":"svc"}))
        .await;
    assert_eq!(s, 409);
    // Names become principal ids in stored events, scopes are stored space-separated. A NUL
    // anywhere in a body is refused before the handler (`invalid_request`); other control
    // characters by the name check.
    for (body, code) in [
        (json!({"name": "nul\u{0}name"}), "invalid_request"),
        (json!({"name": "bell\u{7}name"}), "invalid_name"),
        (
            json!({"name": "ok", "scopes": ["two words"]}),
            "invalid_scope",
        ),
    ] {
        let (s, answer) = app.post_json("/api/v1/admin/apikeys", &admin, &body).await;
        assert_eq!((s, answer["error"].as_str()), (400, Some(code)), "{body}");
    }
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
        .json(&service_message("from a service"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let (_, list) = app.get_json("/api/v1/admin/apikeys", Some(&admin)).await;
    assert_eq!(list["keys"][0]["name"], "svc");
    assert!(list["keys"][0].get("key").is_none());
    revoke_key(&app, &admin, "svc").await;
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

/// A token signer: the algorithm, the `kid` (through the JWKS) or none (a static key), the key.
struct Signer {
    name: &'static str,
    alg: Algorithm,
    kid: Option<&'static str>,
    key: EncodingKey,
}

fn signers() -> Vec<Signer> {
    let s = |name, alg, kid, key| Signer {
        name,
        alg,
        kid,
        key,
    };
    vec![
        s(
            "HS256",
            Algorithm::HS256,
            None,
            EncodingKey::from_secret(SECRET.as_bytes()),
        ),
        s("RS256", Algorithm::RS256, None, rsa("rsa1")),
        s("ES256", Algorithm::ES256, None, ec()),
        s("JWKS RS256", Algorithm::RS256, Some("rsa-1"), rsa("rsa1")),
        s("JWKS ES256", Algorithm::ES256, Some("ec-1"), ec()),
    ]
}

both!(issuer_and_audience_are_required_when_configured);
async fn issuer_and_audience_are_required_when_configured(b: Backend) {
    let keys = KeyServer::start(Some(read_fixture("keys/jwks-rsa1.json"))).await;
    let app = TestApp::start_with(b, |c| {
        c.auth.rs256_public_key = Some(fixture("keys/rsa1.pub").display().to_string());
        c.auth.es256_public_key = Some(read_fixture("keys/ec1.pub"));
        c.auth.jwks_url = Some(keys.url.clone());
        c.auth.issuer = Some("https://issuer.test".into());
        c.auth.audience = Some("substrate".into());
    })
    .await;
    let now = chrono::Utc::now().timestamp();
    let good = json!({"sub":"alice","email":"alice@example.com","exp":now+600,"iat":now,"iss":"https://issuer.test","aud":"substrate"});
    let without = |claim: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(claim);
        c
    };
    let with = |claim: &str, v: Value| {
        let mut c = good.clone();
        c[claim] = v;
        c
    };
    let refused = [
        ("missing iss", without("iss"), "iss"),
        ("missing aud", without("aud"), "aud"),
        ("wrong iss", with("iss", json!("https://evil.test")), "iss"),
        ("wrong aud", with("aud", json!("someone-else")), "aud"),
        ("wrong aud list", with("aud", json!(["a", "b"])), "aud"),
    ];
    let mut accepted = 0;
    for s in signers() {
        let bearer = |c: &Value| format!("Bearer {}", sign(s.alg, s.kid, c, &s.key));
        for ok in [good.clone(), with("aud", json!(["other", "substrate"]))] {
            let (st, body) = status_with(&app, Some(&bearer(&ok))).await;
            assert_eq!(st, 202, "{}: {ok}: {body}", s.name);
            accepted += 1;
        }
        for (case, claims, claim) in &refused {
            let (st, body) = status_with(&app, Some(&bearer(claims))).await;
            assert_eq!(
                (st, body["error"].as_str(), body["claim"].as_str()),
                (401, Some("invalid_token"), Some(*claim)),
                "{}: {case}: {body}",
                s.name
            );
        }
    }
    assert_eq!(app.outbox_count(None).await, accepted);
    app.stop().await;
}

both!(claims_that_are_stored_must_be_storable);
async fn claims_that_are_stored_must_be_storable(b: Backend) {
    let app = TestApp::start(b).await;
    let hs = EncodingKey::from_secret(SECRET.as_bytes());
    let bearer = |c: &Value| format!("Bearer {}", sign(Algorithm::HS256, None, c, &hs));
    let now = chrono::Utc::now().timestamp();
    let token = |sub: &str, email: &str| json!({"sub": sub, "email": email, "exp": now + 600});
    let longest = "s".repeat(255);
    for ok in [
        token(&longest, "a@example.com"),
        token("bob", "b@example.com"),
    ] {
        let (s, body) = status_with(&app, Some(&bearer(&ok))).await;
        assert_eq!(s, 202, "{body}");
    }
    let cases = [
        ("NUL in sub", token("eve\u{0}", "e@example.com"), "sub"),
        ("NUL in email", token("eve", "e\u{0}@example.com"), "email"),
        ("long sub", token(&"s".repeat(256), "e@example.com"), "sub"),
        (
            "long email",
            token("eve", &format!("{}@example.com", "e".repeat(320))),
            "email",
        ),
        ("empty sub", token("", "e@example.com"), "sub"),
    ];
    for (case, claims, claim) in cases {
        let (s, body) = status_with(&app, Some(&bearer(&claims))).await;
        assert_eq!(
            (s, body["error"].as_str(), body["claim"].as_str()),
            (401, Some("invalid_token"), Some(claim)),
            "{case}: {body}"
        );
    }
    assert_eq!(app.outbox_count(None).await, 2);
    app.stop().await;
}

both!(jwks_outage_then_rotation_recovers_within_seconds);
async fn jwks_outage_then_rotation_recovers_within_seconds(b: Backend) {
    // The key server is down when substrate starts (the first fetch fails).
    let keys = KeyServer::start(None).await;
    let app = TestApp::start_with(b, |c| {
        c.auth.hs256_secret = None;
        c.auth.jwks_url = Some(keys.url.clone());
        c.auth.jwks_min_refresh_secs = 30;
    })
    .await;
    let token = |kid: &str, key: &str| {
        format!(
            "Bearer {}",
            sign(Algorithm::RS256, Some(kid), &claims("a"), &rsa(key))
        )
    };
    // While it is down, a token is not the caller's fault: 503, not 401.
    let (s, body) = status_with(&app, Some(&token("rsa-1", "rsa1"))).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    // It comes back with a rotated set: the new key works within seconds, not after
    // jwks_min_refresh_secs.
    keys.serve(Some(read_fixture("keys/jwks-rotated.json")));
    eventually(5, || async {
        (status_with(&app, Some(&token("rsa-2", "rsa2"))).await.0 == 202).then_some(())
    })
    .await;
    // A failed fetch, or a set with no usable key, keeps the last good set.
    let jwks = app.ctx.auth.jwt.jwks().unwrap();
    keys.serve(None);
    assert!(jwks.refresh().await.is_err());
    keys.serve(Some(r#"{"keys":[]}"#.into()));
    assert!(jwks.refresh().await.is_err());
    keys.serve(Some(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#.into()));
    assert!(jwks.refresh().await.is_err());
    for (kid, key) in [("rsa-1", "rsa1"), ("rsa-2", "rsa2")] {
        let (s, body) = status_with(&app, Some(&token(kid, key))).await;
        assert_eq!(s, 202, "{kid}: {body}");
    }
    app.stop().await;
}

/// A client whose connections come from `ip` (any 127.0.0.0/8 address reaches the server).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn post_from(
    app: &TestApp,
    client: &reqwest::Client,
    credential: (&str, String),
    forwarded_for: Option<&str>,
) -> (u16, Option<String>, Value) {
    let mut req = client
        .post(app.url("/api/v1/events/message"))
        .header(credential.0, credential.1)
        .json(&message("x"));
    if let Some(f) = forwarded_for {
        req = req.header("x-forwarded-for", f);
    }
    let r = req.send().await.unwrap();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (
        r.status().as_u16(),
        retry,
        r.json().await.unwrap_or(Value::Null),
    )
}

both!(per_address_limit_comes_before_authentication);
async fn per_address_limit_comes_before_authentication(b: Backend) {
    let app = TestApp::start_with(b, |c| {
        // 20 tokens that refill too slowly to matter here; a 401 costs 10, a 202 costs 1.
        c.gateway.rate_limit.per_address_per_sec = 0.01;
        c.gateway.rate_limit.per_address_burst = 20.0;
        c.gateway.rate_limit.failed_auth_cost = 10.0;
        c.gateway.rate_limit.trusted_proxies = vec!["127.0.0.2".parse().unwrap()];
    })
    .await;
    let good = || ("authorization", format!("Bearer {}", app.token("alice")));
    let bad = || ("authorization", "Bearer not.a.token".to_string());
    let random_key = || {
        let k = format!(
            "sk_{}_{}",
            hex::encode(rand::random::<[u8; 4]>()),
            hex::encode(rand::random::<[u8; 24]>())
        );
        ("x-api-key", k)
    };

    // An attacker on 127.0.0.3 (not a proxy: its X-Forwarded-For is its own word).
    let attacker = client_from("127.0.0.3");
    for i in 0..2 {
        let spoofed = format!("192.0.2.{i}");
        let (s, _, body) = post_from(&app, &attacker, bad(), Some(&spoofed)).await;
        assert_eq!(s, 401, "{body}");
    }
    let (s, retry, body) = post_from(&app, &attacker, random_key(), Some("192.0.2.9")).await;
    assert_eq!(
        (s, body["error"].as_str(), body["limit"].as_str()),
        (429, Some("rate_limited"), Some("address")),
        "{body}"
    );
    assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
    // The limit comes before authentication: even a valid token is refused now.
    let (s, _, _) = post_from(&app, &attacker, good(), None).await;
    assert_eq!(s, 429);
    // Health checks are not behind it.
    let r = attacker.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // A user on another address is not starved, and a success costs less than a failure.
    let user = client_from("127.0.0.4");
    for _ in 0..5 {
        let (s, _, body) = post_from(&app, &user, good(), None).await;
        assert_eq!(s, 202, "{body}");
    }

    // Behind a trusted proxy (127.0.0.2), each forwarded client has its own bucket.
    let proxy = client_from("127.0.0.2");
    for _ in 0..2 {
        let (s, _, _) = post_from(&app, &proxy, bad(), Some("6.6.6.6, 198.51.100.7")).await;
        assert_eq!(s, 401);
    }
    let (s, _, _) = post_from(&app, &proxy, good(), Some("198.51.100.7")).await;
    assert_eq!(s, 429);
    let (s, _, body) = post_from(&app, &proxy, good(), Some("6.6.6.6, 198.51.100.8")).await;
    assert_eq!(s, 202, "{body}");

    assert_eq!(app.outbox_count(None).await, 6);
    app.stop().await;
}

both!(revoked_key_stops_working_on_every_instance);
async fn revoked_key_stops_working_on_every_instance(b: Backend) {
    // On PostgreSQL a revocation reaches other instances through NOTIFY, whatever their cache
    // time; on SQLite (no NOTIFY) within api_key_cache_secs.
    let cache_secs = match b {
        Backend::Postgres => 3600,
        Backend::Sqlite => 2,
    };
    let tweak = |c: &mut substrate::config::Config| c.auth.api_key_cache_secs = cache_secs;
    let app = TestApp::start_with(b, tweak).await;
    let other = Instance::start(&app, vec![substrate::roles::Role::Gateway], tweak).await;
    let admin = app.admin_token();
    let key = create_key(&app, &admin, "svc").await;
    let post = |base: String| {
        let key = key.clone();
        let http = app.http.clone();
        async move {
            http.post(format!("{base}/api/v1/events/message"))
                .header("x-api-key", key)
                .json(&service_message("svc"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Both instances have the key cached now.
    assert_eq!(post(app.base.clone()).await, 202);
    assert_eq!(post(other.base.clone()).await, 202);
    revoke_key(&app, &admin, "svc").await;
    // The revoking instance refuses it at once; the other one soon.
    assert_eq!(post(app.base.clone()).await, 401);
    eventually(10, || async {
        (post(other.base.clone()).await == 401).then_some(())
    })
    .await;
    other.stop().await;
    app.stop().await;
}
