//! Read models built from the log by consumer groups. Each is idempotent (the runtime's
//! inbox) and rebuildable (`replay --rebuild`).

pub mod counts;
pub mod notifications;
pub mod snapshot;
pub mod stats;
