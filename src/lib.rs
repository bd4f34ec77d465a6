//! `tracer`: a threat-intelligence lookup server for KUMA's CyberTrace protocol.
//!
//! The modules, in the order a request touches them:
//!
//! - [`server`]: worker threads (one per core), each with its own io_uring (or epoll)
//!   runtime and `SO_REUSEPORT` listener; reload on `SIGHUP`, drain on `SIGTERM`.
//! - [`connection`]: one client: read a chunk, answer every complete line, write all
//!   answers of that chunk at once, with backpressure.
//! - [`protocol`]: pure framing and parsing of the wire format, and answer encoding.
//! - [`answer`]: one request line → lookups → answer bytes.
//! - [`index`]: the compiled, memory-mapped index and its lookup structures.
//! - [`indicator`]: indicator kinds and the normalization shared by compile and lookup.
//!
//! And offline, what builds the index:
//!
//! - [`feed`]: JSON / NDJSON / CSV / text readers, with bad rows reported by line.
//! - [`compile`]: feed records → index sections → one file, written atomically.
//! - [`commands`]: `compile`, `lookup`, `inspect`, and loading sources for `serve`.
//! - [`generate`]: large synthetic feeds and workloads for benches and load tests.
//! - [`cli`]: the command line; [`metrics`]: the Prometheus endpoint.

pub mod answer;
pub mod cli;
pub mod commands;
pub mod compile;
pub mod connection;
pub mod feed;
pub mod generate;
pub mod index;
pub mod indicator;
pub mod metrics;
pub mod protocol;
pub mod server;
