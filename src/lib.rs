//! substrate: an event-driven substrate in one binary. See `docs/` and DESIGN for the
//! architecture; each folder here is one component or role.

pub mod alerts;
pub mod analytics;
pub mod app;
pub mod cli;
pub mod config;
pub mod consumers;
pub mod events;
pub mod gateway;
pub mod http;
pub mod log;
pub mod media;
pub mod objects;
pub mod outbox;
pub mod probe;
pub mod projections;
pub mod realtime;
pub mod relay;
pub mod roles;
pub mod schema;
pub mod server;
pub mod status;
pub mod store;
pub mod telemetry;
