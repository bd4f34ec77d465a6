//! `http` and `misp` enrichers: ask a JSON-over-HTTP(S) service about each value.
//!
//! `http` is generic: a `method`, a `url` template (`{value}` URL-encoded, `{kind}`),
//! `headers`, a JSON `body` template (`{value}` JSON-escaped, `{kind}`), and `records`,
//! the dotted path to the array (or object) of results in the answer. Every result
//! record is one hit, its fields flattened as feed records are.
//!
//! `misp` is the preset for MISP's `attributes/restSearch`: the instance's `url`, its
//! API `key` (sent as `Authorization`), optional `tags`, `to_ids` and `limit`
//! filters; one hit per attribute found, with its type, category, value, `to_ids`,
//! event id and info, and tag names.
//!
//! The client is `reqwest` with rustls (no OpenSSL); each worker thread has its own
//! (a pooled connection belongs to the runtime that made it). TLS certificates are
//! verified against the system's CAs and `ca_file`, unless `tls_verify = false`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::Value;

use super::client;
use super::remote::{Error, Failure, Remote, Upstream};
use super::{Answer, BuildError, EnrichHit, Enricher, Spec, Stats, Tls, Type};
use crate::feed::fields::{self, Fields};
use crate::indicator::Kind;

/// Settings of an `http` enricher.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpSpec {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub records: Option<String>,
}

/// Settings of a `misp` enricher.
#[derive(Clone, Debug, PartialEq)]
pub struct MispSpec {
    pub url: String,
    pub key: String,
    pub tags: Vec<String>,
    pub to_ids: Option<bool>,
    pub limit: Option<u32>,
}

/// How result records become hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// Every field of the record, flattened.
    Flatten,
    /// A MISP attribute's chosen fields.
    Misp,
}

/// Build an `http` or `misp` enricher.
pub fn build(spec: &Spec) -> Result<Arc<dyn Enricher>, BuildError> {
    client::install_crypto_provider();
    let invalid = |reason: String| BuildError::Invalid {
        name: spec.name.clone(),
        reason,
    };
    let (method, url, headers, body, records, shape) = match &spec.kind {
        Type::Http(h) => (
            h.method.to_ascii_uppercase(),
            h.url.clone(),
            h.headers.clone(),
            h.body.clone(),
            h.records.clone(),
            Shape::Flatten,
        ),
        Type::Misp(m) => {
            let mut filter = serde_json::Map::new();
            filter.insert("returnFormat".into(), "json".into());
            filter.insert("value".into(), "{value}".into());
            if !m.tags.is_empty() {
                filter.insert("tags".into(), m.tags.clone().into());
            }
            if let Some(t) = m.to_ids {
                filter.insert("to_ids".into(), t.into());
            }
            if let Some(l) = m.limit {
                filter.insert("limit".into(), l.into());
            }
            (
                "POST".to_string(),
                format!("{}/attributes/restSearch", m.url.trim_end_matches('/')),
                vec![
                    ("Authorization".to_string(), m.key.clone()),
                    ("Accept".to_string(), "application/json".to_string()),
                    ("Content-Type".to_string(), "application/json".to_string()),
                ],
                Some(Value::Object(filter).to_string()),
                Some("response.Attribute".to_string()),
                Shape::Misp,
            )
        }
        _ => return Err(invalid("not an http enricher".into())),
    };
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|_| invalid(format!("`{method}` is not an HTTP method")))?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(invalid(format!("url `{url}` is not http:// or https://")));
    }
    let mut header_map = reqwest::header::HeaderMap::new();
    for (k, v) in &headers {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| invalid(format!("`{k}` is not a header name")))?;
        let mut value = reqwest::header::HeaderValue::from_str(v)
            .map_err(|_| invalid(format!("the value of header `{k}` is not a header value")))?;
        value.set_sensitive(k.eq_ignore_ascii_case("authorization"));
        header_map.insert(name, value);
    }
    let ca = client::ca_certs(&spec.tls).map_err(invalid)?;
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let upstream = Http {
        id: NEXT.fetch_add(1, Ordering::Relaxed),
        method,
        url,
        headers: header_map,
        body,
        parser: Arc::new(Parser {
            records: records
                .map(|r| {
                    r.split('.')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
            shape,
            category: spec.category(),
        }),
        settings: Arc::new(ClientSettings {
            tls: spec.tls.clone(),
            ca,
            timeout: spec.common.timeout,
        }),
        alive: Arc::new(()),
    };
    // Refuse a configuration the client cannot be built from now, not at the first
    // lookup.
    upstream.settings.build().map_err(|e| invalid(e.detail))?;
    Ok(Arc::new(RemoteEnricher {
        name: spec.name.clone(),
        kind: spec.kind.name(),
        kinds: spec.kinds.clone(),
        remote: Remote::new(&spec.name, &spec.common, upstream),
    }))
}

/// A remote enricher: its name, the kinds it handles, and the machinery.
pub struct RemoteEnricher<U> {
    pub name: String,
    pub kind: &'static str,
    pub kinds: Vec<Kind>,
    pub remote: Remote<U>,
}

impl<U: Upstream> Enricher for RemoteEnricher<U> {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        self.kind
    }

    fn handles(&self, kind: Kind) -> bool {
        self.kinds.is_empty() || self.kinds.contains(&kind)
    }

    fn lookup(&self, kind: Kind, value: &[u8]) -> Answer {
        self.remote.lookup(kind, value)
    }

    fn stats(&self) -> Option<&Stats> {
        Some(self.remote.stats())
    }

    fn breaker(&self) -> u8 {
        self.remote.breaker()
    }
}

struct Http {
    /// Which client, in each thread's table of clients.
    id: u64,
    method: reqwest::Method,
    url: String,
    headers: reqwest::header::HeaderMap,
    body: Option<String>,
    parser: Arc<Parser>,
    settings: Arc<ClientSettings>,
    /// Dropped with the enricher: each thread's table then lets its client go.
    alive: Arc<()>,
}

/// What a client is built from.
struct ClientSettings {
    tls: Tls,
    ca: Vec<reqwest::Certificate>,
    timeout: Duration,
}

impl ClientSettings {
    /// A client: reads the system's CA store, so it is built on the reload thread or
    /// a blocking thread, never on a thread that answers lookups.
    fn build(&self) -> Result<reqwest::Client, Error> {
        client::builder(&self.tls, &self.ca, self.timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| {
                Error::new(
                    Failure::Connect,
                    format!("cannot build the HTTP client: {}", client::error_message(e)),
                )
            })
    }
}

/// Turns a response body into hits.
struct Parser {
    records: Vec<String>,
    shape: Shape,
    category: String,
}

thread_local! {
    /// Each thread's clients, by enricher: a pooled connection belongs to the runtime
    /// that made it.
    static CLIENTS: RefCell<HashMap<u64, (Weak<()>, reqwest::Client)>> =
        RefCell::new(HashMap::new());
}

/// This thread's client for enricher `id`: made on a blocking thread the first time
/// (building one reads the system's CA store from disk).
async fn thread_client(
    id: u64,
    alive: Weak<()>,
    settings: Arc<ClientSettings>,
) -> Result<reqwest::Client, Error> {
    let client = tokio::task::spawn_blocking(move || settings.build())
        .await
        .map_err(|e| Error::new(Failure::Connect, format!("building the HTTP client: {e}")))??;
    CLIENTS.with(|c| {
        let mut c = c.borrow_mut();
        // The clients of enrichers a reload replaced go when a new one arrives.
        c.retain(|_, (alive, _)| alive.strong_count() > 0);
        c.insert(id, (alive, client.clone()));
    });
    Ok(client)
}

impl Http {
    /// The URL and body of a request about `value`.
    fn request(&self, kind: Kind, value: &[u8]) -> (String, Option<String>) {
        let url = self
            .url
            .replace("{kind}", kind.name())
            .replace("{value}", &url_encode(value));
        let body = self.body.as_ref().map(|body| {
            let text = String::from_utf8_lossy(value);
            let quoted = serde_json::to_string(&*text).unwrap_or_default();
            let escaped = &quoted[1..quoted.len().saturating_sub(1).max(1)];
            body.replace("{kind}", kind.name())
                .replace("{value}", escaped)
        });
        (url, body)
    }
}

impl Parser {
    /// The hits in a response body.
    fn hits(&self, kind: Kind, body: &[u8]) -> Result<Vec<EnrichHit>, Error> {
        let doc: Value = serde_json::from_slice(body)
            .map_err(|e| Error::new(Failure::BadAnswer, format!("not JSON: {e}")))?;
        let mut at = &doc;
        for step in &self.records {
            match at.get(step) {
                Some(v) => at = v,
                // No results at all: MISP answers `{"response": []}`.
                None => return Ok(Vec::new()),
            }
        }
        let records: Vec<&Value> = match at {
            Value::Array(items) => items.iter().collect(),
            Value::Null => Vec::new(),
            other => vec![other],
        };
        let category = self.category.replace("{kind}", kind.name());
        let mut fields = Fields::default();
        let mut hits = Vec::with_capacity(records.len());
        for record in records {
            match self.shape {
                Shape::Flatten => fields::flatten_json(&mut fields, record),
                Shape::Misp => misp_fields(&mut fields, record),
            }
            hits.push(EnrichHit::new(category.as_bytes(), fields.iter()));
        }
        Ok(hits)
    }
}

/// A MISP attribute's fields, as a hit shows them.
fn misp_fields(out: &mut Fields, attr: &Value) {
    out.clear();
    let text = |v: Option<&Value>| -> Vec<u8> {
        let mut b = Vec::new();
        if let Some(v) = v {
            fields::scalar_into(&mut b, v);
        }
        b
    };
    for key in ["type", "category", "value", "to_ids"] {
        out.push(key.as_bytes(), &text(attr.get(key)));
    }
    let event = attr.get("Event");
    let event_id = attr
        .get("event_id")
        .or_else(|| event.and_then(|e| e.get("id")));
    out.push(b"event_id", &text(event_id));
    out.push(b"event_info", &text(event.and_then(|e| e.get("info"))));
    let tags: Vec<String> = attr
        .get("Tag")
        .and_then(Value::as_array)
        .map(|t| {
            t.iter()
                .filter_map(|t| t.get("name").and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default();
    out.push(b"tags", tags.join(",").as_bytes());
}

/// Percent-encode everything but the unreserved characters (RFC 3986).
fn url_encode(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for &b in value {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Largest answer body read from an upstream (after gzip): one lookup's answer, a
/// few hundred records at most in practice; a larger one is refused, not buffered.
const MAX_ANSWER: usize = 16 << 20;

/// The whole answer body, at most [`MAX_ANSWER`] bytes.
async fn read_answer(mut resp: reqwest::Response) -> Result<Vec<u8>, Error> {
    let too_large = || {
        Error::new(
            Failure::BadAnswer,
            format!("the answer is larger than {} MiB", MAX_ANSWER >> 20),
        )
    };
    if resp.content_length().is_some_and(|n| n > MAX_ANSWER as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| {
        Error::new(
            Failure::BadAnswer,
            format!("reading the answer: {}", client::error_message(e)),
        )
    })? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl Upstream for Http {
    fn call(
        &self,
        kind: Kind,
        value: &[u8],
    ) -> Pin<Box<dyn Future<Output = Result<Vec<EnrichHit>, Error>>>> {
        let (url, body) = self.request(kind, value);
        let cached = CLIENTS.with(|c| c.borrow().get(&self.id).map(|(_, c)| c.clone()));
        let (id, alive, settings) = (self.id, Arc::downgrade(&self.alive), self.settings.clone());
        let (method, headers) = (self.method.clone(), self.headers.clone());
        let parser = self.parser.clone();
        Box::pin(async move {
            let client = match cached {
                Some(c) => c,
                None => thread_client(id, alive, settings).await?,
            };
            let mut req = client.request(method, url).headers(headers);
            if let Some(body) = body {
                req = req.body(body);
            }
            let resp = req.send().await.map_err(|e| {
                let failure = if e.is_timeout() {
                    Failure::Timeout
                } else {
                    Failure::Connect
                };
                Error::new(failure, client::error_message(e))
            })?;
            let status = resp.status();
            let body = read_answer(resp).await?;
            if !status.is_success() {
                let excerpt = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                return Err(Error::new(
                    Failure::Status,
                    format!("HTTP {status}: {excerpt}"),
                ));
            }
            parser.hits(kind, &body)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misp_attributes_become_hits_with_their_event_and_tags() {
        let body = serde_json::json!({"response": {"Attribute": [
            {"type": "md5", "category": "Payload delivery", "value": "44d8…", "to_ids": true,
             "event_id": "17", "Event": {"id": "17", "info": "Campaign X"},
             "Tag": [{"name": "tlp:amber"}, {"name": "malware"}]},
            {"type": "domain", "category": "Network activity", "value": "evil.example",
             "to_ids": false, "Event": {"id": "18", "info": "Other | pipe"}}
        ]}});
        let h = Parser {
            records: vec!["response".into(), "Attribute".into()],
            shape: Shape::Misp,
            category: "MISP".into(),
        };
        let hits = h
            .hits(Kind::Hash, body.to_string().as_bytes())
            .expect("hits");
        let ctx: Vec<String> = hits
            .iter()
            .map(|h| String::from_utf8_lossy(&h.context).into_owned())
            .collect();
        assert_eq!(
            ctx,
            vec![
                "type=md5|category=Payload delivery|value=44d8…|to_ids=true|event_id=17|event_info=Campaign X|tags=tlp:amber,malware",
                "type=domain|category=Network activity|value=evil.example|to_ids=false|event_id=18|event_info=Other %7C pipe|tags=",
            ]
        );
        assert!(h
            .hits(Kind::Hash, b"{\"response\": []}")
            .expect("no hits")
            .is_empty());
        assert_eq!(
            h.hits(Kind::Hash, b"<html>").map_err(|e| e.failure).err(),
            Some(Failure::BadAnswer)
        );
    }

    #[test]
    fn values_are_encoded_for_their_place() {
        assert_eq!(
            url_encode(b"http://a.b/x y?z"),
            "http%3A%2F%2Fa.b%2Fx%20y%3Fz"
        );
    }
}
