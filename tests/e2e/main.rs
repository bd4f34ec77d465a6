//! End-to-end tests: the real `tracer` binary, real feed files, and (for the server)
//! real sockets on 127.0.0.1 with raw protocol bytes.

mod cli;
mod deploy;
mod enrich;
mod http;
mod index_damage;
mod protocol;
mod server;
mod sources;
mod trust;
mod upstream;
mod util;
