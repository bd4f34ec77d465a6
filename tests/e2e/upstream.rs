//! A MISP-like upstream for the enricher tests: `POST /attributes/restSearch` with a
//! JSON filter, answered with MISP's attribute JSON (several attributes, tags, the
//! nested `Event`). It checks the `Authorization` header, counts calls, and can be
//! told to be slow, to fail with 500, to answer something that is not JSON or far
//! too large, or to hang.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};

/// How the upstream behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Answer normally after this long.
    Slow(Duration),
    /// `500 Internal Server Error`.
    Fail,
    /// `200` with a body that is not JSON.
    BadJson,
    /// Never answer.
    Hang,
    /// `200` with 32 MiB of JSON.
    Huge,
}

pub struct State {
    key: String,
    /// Values answered with one generic attribute, besides the two below.
    known: std::collections::HashSet<String>,
    mode: Mutex<Mode>,
    calls: AtomicU64,
    unauthorized: AtomicU64,
}

/// A running upstream (it lives as long as the test process).
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<State>,
}

/// The MD5 that MISP knows, with two attributes.
pub const KNOWN_MD5: &str = "44d88612fea8a8f36de82e1278abb02f";
/// A domain MISP knows, with one attribute.
pub const KNOWN_DOMAIN: &str = "evil.example";

impl Upstream {
    /// Start on 127.0.0.1, expecting `key` in `Authorization`.
    pub fn start(key: &str) -> Upstream {
        Upstream::start_on("127.0.0.1:0", key, Default::default())
    }

    /// Start on `addr`; `known` values are answered with one attribute each.
    pub fn start_on(addr: &str, key: &str, known: std::collections::HashSet<String>) -> Upstream {
        let listener = std::net::TcpListener::bind(addr).expect("bind upstream");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            key: key.to_string(),
            known,
            mode: Mutex::new(Mode::Normal),
            calls: AtomicU64::new(0),
            unauthorized: AtomicU64::new(0),
        });
        let st = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("upstream runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let st = st.clone();
                    tokio::spawn(async move {
                        let service =
                            hyper::service::service_fn(move |req| answer(st.clone(), req));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        Upstream { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, mode: Mode) {
        *self.state.mode.lock().expect("mode") = mode;
    }

    /// Searches made (with the right key).
    pub fn calls(&self) -> u64 {
        self.state.calls.load(Ordering::SeqCst)
    }

    pub fn unauthorized(&self) -> u64 {
        self.state.unauthorized.load(Ordering::SeqCst)
    }
}

fn reply(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn answer(
    st: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let authorized = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == st.key.as_bytes());
    let path_ok =
        req.method() == hyper::Method::POST && req.uri().path() == "/attributes/restSearch";
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if !authorized {
        st.unauthorized.fetch_add(1, Ordering::SeqCst);
        return Ok(reply(
            403,
            r#"{"name":"Authentication failed.","message":"Authentication failed.","url":"/attributes/restSearch"}"#,
        ));
    }
    if !path_ok {
        return Ok(reply(404, "{}"));
    }
    st.calls.fetch_add(1, Ordering::SeqCst);
    let mode = *st.mode.lock().expect("mode");
    match mode {
        Mode::Fail => return Ok(reply(500, r#"{"message":"Internal error"}"#)),
        Mode::BadJson => return Ok(reply(200, "<html>maintenance</html>")),
        Mode::Hang => std::future::pending::<()>().await,
        Mode::Huge => {
            let mut body = br#"{"response":{"Attribute":["#.to_vec();
            body.resize(body.len() + (32 << 20), b' ');
            body.extend_from_slice(b"]}}");
            return Ok(reply(200, body));
        }
        Mode::Slow(d) => tokio::time::sleep(d).await,
        Mode::Normal => {}
    }
    let filter: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let value = filter["value"].as_str().unwrap_or("");
    if st.known.contains(value) {
        return Ok(reply(200, known_attribute(value).to_string()));
    }
    Ok(reply(200, attributes(value).to_string()))
}

/// The answer for one of the `known` values.
fn known_attribute(value: &str) -> serde_json::Value {
    serde_json::json!({"response": {"Attribute": [
        {"id": "900", "event_id": "90", "type": "other", "category": "External analysis",
         "value": value, "to_ids": true, "Event": {"id": "90", "info": "known to the upstream"},
         "Tag": [{"id": "5", "name": "tlp:clear"}]}
    ]}})
}

/// What MISP answers for `value`.
pub fn attributes(value: &str) -> serde_json::Value {
    let event = |id: &str, info: &str| serde_json::json!({"id": id, "info": info, "orgc_id": "1", "uuid": "5f3c-…", "threat_level_id": "1"});
    let found = match value {
        KNOWN_MD5 => serde_json::json!([
            {"id": "101", "event_id": "17", "type": "md5", "category": "Payload delivery",
             "value": KNOWN_MD5, "to_ids": true, "comment": "dropper", "Event": event("17", "Campaign X: loader"),
             "Tag": [{"id": "3", "name": "tlp:amber"}, {"id": "9", "name": "malware:loader"}]},
            {"id": "102", "event_id": "21", "type": "md5", "category": "Artifacts dropped",
             "value": KNOWN_MD5, "to_ids": false, "Event": event("21", "Sandbox run | 2026-11"),
             "Tag": []}
        ]),
        KNOWN_DOMAIN => serde_json::json!([
            {"id": "201", "event_id": "30", "type": "domain", "category": "Network activity",
             "value": KNOWN_DOMAIN, "to_ids": true, "Event": event("30", "Phishing kit"),
             "Tag": [{"id": "4", "name": "tlp:green"}]}
        ]),
        // MISP answers "nothing found" with an empty list in place of the object.
        _ => return serde_json::json!({"response": []}),
    };
    serde_json::json!({"response": {"Attribute": found}})
}
