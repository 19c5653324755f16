//! The spans of the event path, named and attributed after the OpenTelemetry messaging
//! semantic conventions (`messaging.system`, `messaging.destination.name`,
//! `messaging.operation`): the gateway's `publish {topic}` (producer), the relay's
//! `send {topic}` (producer, continuing the outbox row's `traceparent`), and a consumer's
//! `process {topic}` (consumer, continuing the event's `traceparent`). Events a span causes
//! carry that span's `traceparent` (`context::traceparent`).

use tracing::Span;
use tracing::field::Empty;

use super::context;

/// The `messaging.system` of a log backend (`EventLog::name`): `kafka`, or `substrate` for
/// the embedded log.
pub fn messaging_system(log_name: &str) -> &'static str {
    match log_name {
        "kafka" => "kafka",
        _ => "substrate",
    }
}

/// The gateway accepting `count` events for `topic` (producer side).
pub fn publish(system: &'static str, topic: &str, count: usize) -> Span {
    tracing::info_span!(
        "publish",
        otel.name = %format!("publish {topic}"),
        otel.kind = "producer",
        otel.status_code = Empty,
        "messaging.system" = system,
        "messaging.destination.name" = %topic,
        "messaging.operation" = "publish",
        "messaging.batch.message_count" = count as i64,
        "error.type" = Empty,
    )
}

/// The relay sending one outbox row to the broker, continuing the row's `traceparent`.
pub fn relay_send(
    system: &'static str,
    topic: &str,
    event_id: &str,
    traceparent: Option<&str>,
) -> Span {
    let span = tracing::info_span!(
        "send",
        otel.name = %format!("send {topic}"),
        otel.kind = "producer",
        otel.status_code = Empty,
        "messaging.system" = system,
        "messaging.destination.name" = %topic,
        "messaging.operation" = "publish",
        "messaging.message.id" = %event_id,
        event_id = %event_id,
        "error.type" = Empty,
    );
    context::continue_from(&span, traceparent);
    span
}

/// Where a consumed record came from.
pub struct Delivery<'a> {
    pub system: &'static str,
    pub topic: &'a str,
    pub group: &'a str,
    pub event_id: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub traceparent: Option<&'a str>,
}

/// A consumer group handling one event, continuing the event's `traceparent`.
pub fn process(d: &Delivery<'_>) -> Span {
    let span = tracing::info_span!(
        "process",
        otel.name = %format!("process {}", d.topic),
        otel.kind = "consumer",
        otel.status_code = Empty,
        "messaging.system" = d.system,
        "messaging.destination.name" = %d.topic,
        "messaging.operation" = "process",
        "messaging.consumer.group.name" = %d.group,
        "messaging.message.id" = %d.event_id,
        "messaging.destination.partition.id" = %d.partition,
        "messaging.kafka.offset" = d.offset,
        event_id = %d.event_id,
        "error.type" = Empty,
    );
    context::continue_from(&span, d.traceparent);
    span
}

/// A consumer group giving up on an event (dead letter), continuing its `traceparent`.
pub fn dead_letter(d: &Delivery<'_>) -> Span {
    let span = tracing::info_span!(
        "dead_letter",
        otel.name = %format!("dead-letter {}", d.topic),
        otel.kind = "internal",
        otel.status_code = "ERROR",
        "messaging.system" = d.system,
        "messaging.destination.name" = %d.topic,
        "messaging.operation" = "settle",
        "messaging.consumer.group.name" = %d.group,
        "messaging.message.id" = %d.event_id,
        event_id = %d.event_id,
    );
    context::continue_from(&span, d.traceparent);
    span
}

/// Marks `span` failed with a short error kind (never an error message with data in it).
pub fn fail(span: &Span, kind: &str) {
    span.record("otel.status_code", "ERROR");
    span.record("error.type", kind);
}
