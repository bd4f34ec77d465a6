//! `tracer`: a threat-intelligence lookup server for KUMA's CyberTrace protocol.
//!
//! The modules, in the order a request touches them; each uses only those below it:
//!
//! - [`config`]: the configuration file (SPEC §10), resolved into the typed settings
//!   of the layers below.
//! - [`serve`]: worker threads (one per core), each with its own io_uring (or epoll)
//!   runtime and `SO_REUSEPORT` listeners (line protocol, HTTP API); connections,
//!   limits, signals, metrics.
//! - [`update`]: feeds that update themselves: download, compile, swap in, on a
//!   thread of their own.
//! - [`protocol`]: the wire formats, pure bytes in and out: framing, request parsing,
//!   answer rendering (`cybertrace`, the TCP protocol; `cybertrace_http`, the REST
//!   API).
//! - [`engine`]: what answers an indicator: the served snapshot (index set and
//!   enrichers), its reload and generation swap, and the answer model.
//! - [`enrich`]: enrichers, answers from code and other systems (urldecode, HTTP,
//!   MISP, helper processes), with their cache, coalescing, limits and breaker.
//! - [`index`]: the compiled index: file format, open (validate once), lookup, and the
//!   compiler that builds it from feeds.
//! - [`feed`]: JSON / NDJSON / CSV / text readers, with bad rows reported by line.
//! - [`indicator`]: indicator kinds and the normalization shared by compile and lookup.
//!
//! Beside them, [`generate`] writes large synthetic feeds and workloads for benches
//! and load tests, and `fuzzing` holds the fuzz targets' bodies. The command line
//! lives in the binary (`src/main.rs`, `src/cli/`).

pub mod config;
pub mod engine;
pub mod enrich;
pub mod feed;
#[doc(hidden)]
pub mod fuzzing;
pub mod generate;
pub mod index;
pub mod indicator;
pub mod protocol;
pub mod serve;
pub mod update;
