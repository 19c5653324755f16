//! Credits: a zero-credit rejection, two concurrent intents with one credit left (exactly one
//! approved), charges and refunds atomic and idempotent under real concurrency, and the
//! credits API for a first-time user.

use serde_json::json;
use substrate::media::credits::{self, Charge};

use crate::media::MediaApp;
use crate::support::*;

both!(zero_credits_are_rejected);
async fn zero_credits_are_rejected(b: Backend) {
    let app = MediaApp::start(b, |c| c.media.starting_credits = 0).await;
    let rid = app.intent("erin", "a.png", "image/png", 100).await;
    let n = app.note("erin", "media.upload_rejected", &rid).await;
    assert_eq!(n.payload["reason"], "insufficient_credits");
    assert_eq!(n.visibility, "private");
    let u = app.wait_state(&rid, "rejected").await;
    assert_eq!(u.reason.as_deref(), Some("insufficient_credits"));
    assert!(u.finished_at.is_some());
    // No URL, no timer, no charge.
    assert!(
        app.events_on("public.media.upload.signed", None)
            .await
            .is_empty()
    );
    assert!(
        substrate::media::timers::for_request(&app.ctx.store, &rid)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(app.ledger_count("erin", &rid, "charge").await, 0);
    assert_eq!(app.balance("erin").await, 0);
    let m = app.metrics().await;
    assert!(
        m.contains(r#"substrate_saga_steps_total{saga="upload",step="rejected"} 1"#),
        "{m}"
    );
    app.stop().await;
}

both!(two_concurrent_intents_with_one_credit_one_is_approved);
async fn two_concurrent_intents_with_one_credit_one_is_approved(b: Backend) {
    let app = MediaApp::start(b, |c| c.media.starting_credits = 1).await;
    let body = |n: &str| json!({ "file_name": n, "media_type": "image/gif", "file_size": 10 });
    let (ba, bb) = (body("a.gif"), body("b.gif"));
    let (a, bb) = tokio::join!(
        app.upload_intent("frank", &ba),
        app.upload_intent("frank", &bb)
    );
    assert_eq!((a.0, bb.0), (202, 202));
    let rids = [
        a.1["request_id"].as_str().unwrap().to_string(),
        bb.1["request_id"].as_str().unwrap().to_string(),
    ];
    let states = eventually(30, || async {
        let mut s = Vec::new();
        for r in &rids {
            match app.upload_row(r).await {
                Some(u) if u.state == "signed" || u.state == "rejected" => s.push(u.state),
                _ => return None,
            }
        }
        Some(s)
    })
    .await;
    let approved = states.iter().filter(|s| *s == "signed").count();
    assert_eq!(approved, 1, "{states:?}");
    assert_eq!(app.balance("frank").await, 0);
    let charges: i64 = app.ledger_count("frank", &rids[0], "charge").await
        + app.ledger_count("frank", &rids[1], "charge").await;
    assert_eq!(charges, 1);
    app.stop().await;
}

both!(charges_are_atomic_and_idempotent_under_concurrency);
async fn charges_are_atomic_and_idempotent_under_concurrency(b: Backend) {
    let app = MediaApp::start_roles(b, vec![], |_| {}).await;
    let store = app.ctx.store.clone();
    // Eight requests race for two credits, each in its own transaction.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                loop {
                    let mut tx = store.begin().await.unwrap();
                    match credits::charge(&mut tx, "gina", &format!("r{i}"), 2, "upload").await {
                        Ok(c) => {
                            tx.commit().await.unwrap();
                            return c;
                        }
                        // A racing first-time account insert can conflict: retry, as the
                        // consumer runtime does.
                        Err(_) => {
                            let _ = tx.rollback().await;
                        }
                    }
                }
            })
        })
        .collect();
    let mut winners = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        if let Charge::Charged { .. } = t.await.unwrap() {
            winners.push(format!("r{i}"));
        }
    }
    assert_eq!(winners.len(), 2, "exactly two of eight were charged");
    assert_eq!(credits::balance(&store, "gina").await.unwrap(), 0);
    // The same request again changes nothing; a refund gives one credit back.
    let mut tx = store.begin().await.unwrap();
    let again = credits::charge(&mut tx, "gina", &winners[0], 2, "upload")
        .await
        .unwrap();
    assert_eq!(again, Charge::AlreadyCharged { balance: 0 });
    assert!(
        credits::refund(&mut tx, "gina", &winners[0], "test")
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
    // Refunds: once per charged request, never for an uncharged one.
    let mut refunds = 0;
    for i in 0..8 {
        for _ in 0..2 {
            let mut tx = store.begin().await.unwrap();
            if credits::refund(&mut tx, "gina", &format!("r{i}"), "test")
                .await
                .unwrap()
            {
                refunds += 1;
            }
            tx.commit().await.unwrap();
        }
    }
    assert_eq!(refunds, 1, "one charged request was refunded already");
    assert_eq!(credits::balance(&store, "gina").await.unwrap(), 2);
    let ledger = credits::ledger(&store, "gina", 100).await.unwrap();
    let sum: i64 = ledger.iter().map(|e| e.amount).sum();
    assert_eq!(sum, 2, "the ledger adds up to the balance");
    assert_eq!(ledger[0].balance_after, 2);
    app.stop().await;
}

both!(credits_api_opens_an_account_with_the_starting_balance);
async fn credits_api_opens_an_account_with_the_starting_balance(b: Backend) {
    let app = MediaApp::start_roles(b, vec![substrate::roles::Role::Gateway], |c| {
        c.media.starting_credits = 7
    })
    .await;
    assert_eq!(app.balance("hana").await, 0, "no account yet");
    let (s, r) = app
        .get_json("/api/v1/users/me/credits", Some(&app.token("hana")))
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["balance"], 7);
    assert_eq!(r["user_id"], "hana");
    assert_eq!(r["ledger"][0]["kind"], "grant");
    assert_eq!(r["ledger"][0]["amount"], 7);
    assert_eq!(app.balance("hana").await, 7);
    // Asking again opens nothing new.
    let (_, r) = app
        .get_json("/api/v1/users/me/credits", Some(&app.token("hana")))
        .await;
    assert_eq!(r["ledger"].as_array().unwrap().len(), 1);
    // Unauthenticated: 401.
    let (s, _) = app.get_json("/api/v1/users/me/credits", None).await;
    assert_eq!(s, 401);
    app.stop().await;
}

both!(a_retried_intent_with_its_idempotency_key_is_charged_once);
async fn a_retried_intent_with_its_idempotency_key_is_charged_once(b: Backend) {
    let app = MediaApp::start(b, |c| c.media.starting_credits = 5).await;
    let body = json!({ "file_name": "k.jpg", "media_type": "image/jpeg", "file_size": 99 });
    let send = || {
        app.http
            .post(app.url("/api/v1/media/upload-intent"))
            .bearer_auth(app.token("vic"))
            .header("idempotency-key", "upload-k-1")
            .json(&body)
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status().as_u16(), 202);
    let first: serde_json::Value = first.json().await.unwrap();
    let again = send().await.unwrap();
    assert_eq!(again.status().as_u16(), 202);
    assert_eq!(
        again
            .headers()
            .get("idempotency-replayed")
            .map(|v| v.as_bytes()),
        Some(b"true".as_slice())
    );
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(first["request_id"], again["request_id"]);
    let rid = first["request_id"].as_str().unwrap();
    app.wait_state(rid, "signed").await;
    assert_eq!(
        app.events_on("internal.media.upload.intent", None)
            .await
            .len(),
        1
    );
    assert_eq!(app.balance("vic").await, 4);
    app.stop().await;
}
