//! CyberTrace's REST lookup API (KUMA source kind `cybertrace-http`, SPEC §12), as
//! bytes: which paths exist, the request body, the kinds an object is looked up as,
//! and the answer JSON. No I/O here: [`crate::serve`] does HTTP, TLS, users and limits.
//!
//! ```text
//! POST /api/1.1/lookup              [{"object":"http://example.com"},{"object":"C115…"}]
//! 200 [{"object":"http://example.com","result":"detected","categories":[
//!        {"category":"Phishing","detected_indicator":"*.example.com/*","context":{"k":"v"}}]},
//!      {"object":"C115…","result":"not detected","categories":[]}]
//! ```
//!
//! An object is looked up as a bare value of the line protocol is (hash, IP, else
//! URL); one that could also be a domain (`evil.example`) is looked up as both, and a
//! record found both ways is one hit. Hits come in the line protocol's order: feed hits,
//! then each enricher's; repeated category names get `_2`, `_3`, … within one
//! object's list, as KUMA keys what it stores by category. Context values are the
//! record's fields as strings, decoded from the line protocol's escapes (exactly: see
//! [`crate::index::records`]).

use std::borrow::Cow;

use serde::Deserialize;

use super::cybertrace::Categories;
use crate::engine::{EnrichHit, Enrichment, Snapshot};
use crate::index::records::decode_context;
use crate::index::{Hit, Scratch};
use crate::indicator::{self, Kind};

/// API versions CyberTrace has had; the tenant path exists from 1.3 (CyberTrace 5).
pub const VERSIONS: [&str; 4] = ["1.0", "1.1", "1.2", "1.3"];

/// What a request path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    Lookup {
        version: &'a str,
        tenant: Option<&'a str>,
    },
    Health,
    NotFound,
}

/// The route of `path` (without the query).
pub fn route(path: &str) -> Route<'_> {
    if path == "/health" {
        return Route::Health;
    }
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match parts[..] {
        ["", "api", version, "lookup"] if VERSIONS.contains(&version) => Route::Lookup {
            version,
            tenant: None,
        },
        ["", "api", "1.3", tenant, "lookup"] if !tenant.is_empty() => Route::Lookup {
            version: "1.3",
            tenant: Some(tenant),
        },
        _ => Route::NotFound,
    }
}

/// A request body that is not what the API takes: the message says what is wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct BadRequest(pub String);

#[derive(Deserialize)]
struct Object<'a> {
    #[serde(borrow)]
    object: Cow<'a, str>,
}

/// The objects of a request body: a JSON array of at least one object, each with a
/// string `object` (other members are ignored). Strings without escapes borrow from
/// `body`.
pub fn parse_objects(body: &[u8]) -> Result<Vec<Cow<'_, str>>, BadRequest> {
    let objects: Vec<Object<'_>> = serde_json::from_slice(body).map_err(|e| {
        BadRequest(format!(
            "the body must be a JSON array of objects like {{\"object\": \"…\"}}: {e}"
        ))
    })?;
    if objects.is_empty() {
        return Err(BadRequest("the array holds no object".into()));
    }
    Ok(objects.into_iter().map(|o| o.object).collect())
}

/// The kinds an object is looked up as: its detected kind, and `Domain` too when the
/// value could name a domain as well as a URL.
pub fn kinds(value: &str) -> (Kind, Option<Kind>) {
    let v = value.trim().as_bytes();
    let kind = indicator::detect(v);
    let domain_like = kind == Kind::Url
        && v.contains(&b'.')
        && !v.starts_with(b".")
        && v.iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    (kind, domain_like.then_some(Kind::Domain))
}

/// One object's answer while it is being made: its feed hits now, its enrichers'
/// hits now or later.
pub struct Pending {
    /// The kind the object was detected as (the first it is looked up as).
    pub kind: Kind,
    pub feed: Vec<Hit>,
    pub enrichment: Vec<Enrichment>,
}

/// Look `value` up: the feed hits of each kind it is looked up as (a record found
/// twice counted once, at most `max_hits`), and the enrichers' answers (each enricher
/// asked once, as the first of those kinds it handles).
pub fn look_up(
    snapshot: &Snapshot,
    value: &str,
    scratch: &mut Scratch,
    max_hits: usize,
) -> Pending {
    let (first, second) = kinds(value);
    let mut feed = Vec::new();
    snapshot.feed_hits(first, value.as_bytes(), scratch, max_hits, &mut feed);
    let mut enrichment = vec![snapshot.enrich(first, value.as_bytes())];
    if let Some(kind) = second {
        let mut more = Vec::new();
        snapshot.feed_hits(kind, value.as_bytes(), scratch, max_hits, &mut more);
        for h in more {
            if feed.len() < max_hits && !feed.contains(&h) {
                feed.push(h);
            }
        }
        enrichment.push(snapshot.enrich_again(kind, first, value.as_bytes()));
    }
    Pending {
        kind: first,
        feed,
        enrichment,
    }
}

/// Renders the answer array, object by object.
#[derive(Default)]
pub struct Writer {
    categories: Categories,
    objects: usize,
}

impl Writer {
    pub fn begin(&mut self, out: &mut Vec<u8>) {
        out.push(b'[');
        self.objects = 0;
    }

    pub fn end(&mut self, out: &mut Vec<u8>) {
        out.push(b']');
    }

    /// Append one object's answer: its feed hits, then its enrichers' (`enriched`, one
    /// list per enricher answer, in order), at most `max_hits` in all.
    pub fn object(
        &mut self,
        out: &mut Vec<u8>,
        snapshot: &Snapshot,
        object: &str,
        feed: &[Hit],
        enriched: &[&[EnrichHit]],
        max_hits: usize,
    ) {
        if self.objects > 0 {
            out.push(b',');
        }
        self.objects += 1;
        self.categories.clear();
        let total = feed.len() + enriched.iter().map(|e| e.len()).sum::<usize>();
        out.extend_from_slice(b"{\"object\":");
        json_str(out, object.as_bytes());
        out.extend_from_slice(if total > 0 {
            b",\"result\":\"detected\",\"categories\":["
        } else {
            b",\"result\":\"not detected\",\"categories\":["
        });
        let mut written = 0usize;
        for &hit in feed {
            if written == max_hits {
                break;
            }
            let shown = snapshot.hit(hit);
            let (field, exact) = snapshot.index().record_detail(hit);
            let (context, is_exact) = match exact {
                Some(e) => (e, true),
                None => (shown.context, false),
            };
            let detected = detected_indicator(context, is_exact, field, object);
            self.category(out, written, shown.category, &detected, context, is_exact);
            written += 1;
        }
        for hit in enriched.iter().flat_map(|e| e.iter()) {
            if written == max_hits {
                break;
            }
            let (context, is_exact) = match &hit.exact {
                Some(e) => (&e[..], true),
                None => (&hit.context[..], false),
            };
            self.category(
                out,
                written,
                &hit.category,
                object.as_bytes(),
                context,
                is_exact,
            );
            written += 1;
        }
        out.extend_from_slice(b"]}");
    }

    fn category(
        &mut self,
        out: &mut Vec<u8>,
        written: usize,
        category: &[u8],
        detected: &[u8],
        context: &[u8],
        exact: bool,
    ) {
        if written > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"category\":");
        let nth = self.categories.next(category);
        if nth > 1 {
            let mut name = category.to_vec();
            name.push(b'_');
            name.extend_from_slice(nth.to_string().as_bytes());
            json_str(out, &name);
        } else {
            json_str(out, category);
        }
        out.extend_from_slice(b",\"detected_indicator\":");
        json_str(out, detected);
        out.extend_from_slice(b",\"context\":{");
        for (i, (k, v)) in decode_context(context, exact).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_str(out, &k);
            out.push(b':');
            json_str(out, &v);
        }
        out.extend_from_slice(b"}}");
    }
}

/// The feed entry that matched, as far as the record tells: the value of the feed's
/// indicator field (the mask, the CIDR, the domain…); of a field holding several
/// values, the one equal to the object, or else all of them.
fn detected_indicator<'a>(
    context: &[u8],
    exact: bool,
    field: &[u8],
    object: &'a str,
) -> Cow<'a, [u8]> {
    let strip_indices = |k: &[u8]| -> Vec<u8> {
        let mut out = Vec::with_capacity(k.len());
        let mut depth = 0u32;
        for &b in k {
            match b {
                b'[' => depth += 1,
                b']' => depth = depth.saturating_sub(1),
                _ if depth == 0 => out.push(b),
                _ => {}
            }
        }
        out
    };
    let found = decode_context(context, exact).find(|(k, _)| {
        k.eq_ignore_ascii_case(field) || strip_indices(k).eq_ignore_ascii_case(field)
    });
    match found {
        Some((_, v)) => {
            let obj = object.trim().as_bytes();
            if memchr::memchr(b',', &v).is_some() {
                if let Some(one) = v
                    .split(|&b| b == b',')
                    .find(|e| e.trim_ascii().eq_ignore_ascii_case(obj))
                {
                    return Cow::Owned(one.trim_ascii().to_vec());
                }
            }
            Cow::Owned(v)
        }
        None => Cow::Borrowed(object.as_bytes()),
    }
}

/// Append `bytes` as a JSON string (invalid UTF-8 replaced).
pub fn json_str(out: &mut Vec<u8>, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    // Writing to a Vec cannot fail, and a str always serializes.
    let _ = serde_json::to_writer(&mut *out, &*text);
}

/// The body of an error answer: `{"error":"…"}`.
pub fn error_body(message: &str) -> Vec<u8> {
    let mut out = b"{\"error\":".to_vec();
    json_str(&mut out, message.as_bytes());
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route("/api/1.1/lookup"),
            Route::Lookup {
                version: "1.1",
                tenant: None
            }
        );
        assert_eq!(
            route("/api/1.3/acme/lookup"),
            Route::Lookup {
                version: "1.3",
                tenant: Some("acme")
            }
        );
        assert_eq!(route("/api/1.2/acme/lookup"), Route::NotFound);
        assert_eq!(route("/api/2.0/lookup"), Route::NotFound);
        assert_eq!(route("/health"), Route::Health);
        assert_eq!(route("/"), Route::NotFound);
    }

    #[test]
    fn bodies() {
        let ok = parse_objects(br#"[{"object":"a.example"},{"object":"x\"y","extra":1}]"#)
            .expect("valid");
        assert_eq!(ok, vec!["a.example", "x\"y"]);
        for bad in [
            &b"not json"[..],
            b"{\"object\":\"a\"}",
            b"[]",
            b"[{\"obj\":\"a\"}]",
            b"[{\"object\":5}]",
            b"[\"a\"]",
        ] {
            assert!(
                parse_objects(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn kinds_of_objects() {
        assert_eq!(kinds("evil.example"), (Kind::Url, Some(Kind::Domain)));
        assert_eq!(kinds("http://evil.example/x"), (Kind::Url, None));
        assert_eq!(kinds("10.1.2.3"), (Kind::Ip, None));
        assert_eq!(
            kinds("d41d8cd98f00b204e9800998ecf8427e"),
            (Kind::Hash, None)
        );
        assert_eq!(kinds("CORP-PC-0042"), (Kind::Url, None));
    }

    #[test]
    fn the_entry_that_matched() {
        let ctx = b"ioc=a.example,b.example|context=x";
        assert_eq!(
            &*detected_indicator(ctx, false, b"ioc", "B.example"),
            b"b.example"
        );
        assert_eq!(
            &*detected_indicator(b"files[0].MD5=abc|n=1", false, b"files.MD5", "abc"),
            b"abc"
        );
        assert_eq!(&*detected_indicator(b"k=v", false, b"mask", "obj"), b"obj");
    }
}
