//! The integration suite: one test binary, a module per area. Behavioural tests run against
//! both store backends (`both!` makes a `sqlite` and a `postgres` test of one scenario).

#[macro_use]
mod support;

mod alerts_notify;
mod alerts_rules;
mod analytics;
mod auth;
mod bench_smoke;
mod browser;
mod cli;
mod consumers;
mod doc_examples;
mod gateway;
mod hardening_ingest;
mod kafka;
mod lease;
mod log;
mod media;
mod media_credits;
mod media_failures;
mod media_restart;
mod media_urls;
mod openapi;
mod python;
mod realtime;
mod registry;
mod relay;
mod stats;
mod status;
mod telemetry;
mod telemetry_query;
mod telemetry_tail;
mod tracing;
