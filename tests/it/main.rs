//! The integration suite: one test binary, a module per area. Behavioural tests run against
//! both store backends (`both!` makes a `sqlite` and a `postgres` test of one scenario).

#[macro_use]
mod support;

mod auth;
mod browser;
mod cli;
mod gateway;
mod log;
mod registry;
mod status;
mod tracing;
