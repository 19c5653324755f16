//! Detecting that an upload arrived, three ways, all ending in an
//! `internal.media.upload.received` event for the upload saga: the bucket notification
//! webhook (S3/MinIO), substrate's own blob endpoint (local backend), and a periodic HEAD
//! check of signed uploads as the fallback when no notification comes. Duplicates are
//! harmless: the saga acts on the first and ignores the rest.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::uploads::{self, state};
use crate::app::AppContext;
use crate::events::{self, EventMeta};
use crate::media::payloads::UploadReceived;
use crate::media::{MediaError, topics};
use crate::outbox::{AppendOutcome, AppendRequest, Headers, NewEvent};
use crate::store::now_micros;

/// Who noticed the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Webhook,
    Blob,
    HeadCheck,
}

impl Source {
    pub fn as_str(&self) -> &'static str {
        match self {
            Source::Webhook => "webhook",
            Source::Blob => "blob",
            Source::HeadCheck => "head-check",
        }
    }
}

/// The `upload.received` event for an object at `key`, if it is a pending upload's key.
async fn received_event(
    ctx: &AppContext,
    key: &str,
    size: u64,
    source: Source,
) -> Result<Option<NewEvent>, MediaError> {
    if !key.starts_with("uploads/") {
        return Ok(None);
    }
    let Some(u) = uploads::by_upload_path(&ctx.store, key).await? else {
        return Ok(None);
    };
    let payload = UploadReceived {
        version: 1,
        user_id: u.user_id.clone(),
        request_id: u.request_id.clone(),
        file_path: u.upload_path.clone(),
        file_name: Some(u.file_name.clone()),
        media_type: Some(u.media_type.clone()),
        file_size: Some(size as i64),
        retry_count: 0,
        source: Some(source.as_str().into()),
    };
    let json = serde_json::to_value(&payload).map_err(|e| MediaError::Event(e.to_string()))?;
    let meta = EventMeta {
        source: format!("/media/detect/{}", source.as_str()),
        traceparent: u.traceparent.as_deref().map(events::child_traceparent),
        correlation_id: u.correlation_id.clone(),
        idempotency_key: None,
        extra: Headers::new(),
    };
    let ev = events::build(
        &ctx.schemas,
        topics::UPLOAD_RECEIVED,
        &u.user_id,
        &json,
        &meta,
    )
    .map_err(|e| MediaError::Event(e.to_string()))?;
    Ok(Some(ev))
}

/// The state of the upload saga whose key is `key`, when that saga no longer waits for an
/// upload (`None`: no saga has this key, or it is still waiting). The blob endpoint refuses
/// uploads to such keys.
pub async fn upload_closed(ctx: &AppContext, key: &str) -> Result<Option<String>, MediaError> {
    if !key.starts_with("uploads/") {
        return Ok(None);
    }
    let Some(u) = uploads::by_upload_path(&ctx.store, key).await? else {
        return Ok(None);
    };
    let waiting = matches!(u.state.as_str(), state::APPROVED | state::SIGNED);
    Ok((!waiting).then_some(u.state))
}

/// Reports objects that were created; returns how many were pending uploads. Returns once
/// their events are durably in the outbox.
pub async fn objects_created(
    ctx: &AppContext,
    objects: &[(String, u64)],
    source: Source,
) -> Result<usize, MediaError> {
    let mut evs = Vec::new();
    for (key, size) in objects {
        if let Some(ev) = received_event(ctx, key, *size, source).await? {
            evs.push(ev);
        }
    }
    let n = evs.len();
    if n == 0 {
        return Ok(0);
    }
    match ctx
        .appender
        .append(AppendRequest {
            events: evs,
            guard: None,
        })
        .await
    {
        Ok(AppendOutcome::Committed) => {
            ctx.metrics
                .events_accepted
                .with_label_values(&[topics::UPLOAD_RECEIVED])
                .inc_by(n as u64);
            Ok(n)
        }
        Ok(other) => Err(MediaError::Append(format!("unexpected outcome {other:?}"))),
        Err(e) => Err(MediaError::Append(e.to_string())),
    }
}

/// Reports one created object.
pub async fn object_created(
    ctx: &AppContext,
    key: &str,
    size: u64,
    source: Source,
) -> Result<bool, MediaError> {
    Ok(objects_created(ctx, &[(key.to_string(), size)], source).await? > 0)
}

/// One round of HEAD checks: every signed upload not checked in the last interval.
pub async fn head_check_round(ctx: &AppContext, interval: Duration) -> Result<usize, MediaError> {
    let cutoff = now_micros() - interval.as_micros() as i64;
    let due = uploads::due_head_checks(&ctx.store, cutoff, 200).await?;
    let mut found = 0;
    for u in due {
        if !uploads::claim_head_check(&ctx.store, &u.request_id, cutoff).await? {
            continue;
        }
        match ctx.objects.head(&u.upload_path).await {
            Ok(Some(size)) => {
                if object_created(ctx, &u.upload_path, size, Source::HeadCheck).await? {
                    found += 1;
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(request_id = %u.request_id, error = %e, "HEAD check failed");
            }
        }
    }
    Ok(found)
}

/// The HEAD-check loop of the sagas role (`media.head_check_secs`, 0 = off).
pub async fn run_head_checks(ctx: AppContext, shutdown: CancellationToken) -> anyhow::Result<()> {
    let secs = ctx.config.media.head_check_secs;
    if secs == 0 {
        shutdown.cancelled().await;
        return Ok(());
    }
    let interval = Duration::from_secs(secs);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {
                match head_check_round(&ctx, interval).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(found = n, "HEAD check found uploads"),
                    Err(e) => tracing::warn!(error = %e, "HEAD check round failed"),
                }
            }
        }
    }
}
