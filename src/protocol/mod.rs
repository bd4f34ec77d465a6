//! The wire formats, one module each, pure bytes in and out: how requests are framed
//! and parsed, and how an engine's answers are rendered.
//!
//! - [`cybertrace`]: the TCP protocol of KUMA's `cybertrace` source kind (SPEC §2).

pub mod cybertrace;
