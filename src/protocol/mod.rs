//! The wire formats, one module each, pure bytes in and out: how requests are framed
//! and parsed, and how an engine's answers are rendered.
//!
//! - [`cybertrace`]: the TCP protocol of KUMA's `cybertrace` source kind (SPEC §2).
//! - [`cybertrace_http`]: the REST API of KUMA's `cybertrace-http` source kind (§12).

pub mod cybertrace;
pub mod cybertrace_http;
