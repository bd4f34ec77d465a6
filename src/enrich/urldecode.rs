//! `urldecode`: for a `url` value that percent-decoding changes, one hit with the
//! value decoded once (`decodedURL=…`), the Python tool's `Tracer_URL_Decoder`.
//! Computed on the spot: it never waits.

use super::{Answer, EnrichHit, Enricher, Spec};
use crate::indicator::Kind;

pub struct UrlDecode {
    name: String,
    category: String,
    kinds: Vec<Kind>,
}

impl UrlDecode {
    pub fn new(spec: &Spec) -> UrlDecode {
        UrlDecode {
            name: spec.name.clone(),
            category: spec.category(),
            kinds: if spec.kinds.is_empty() {
                vec![Kind::Url]
            } else {
                spec.kinds.clone()
            },
        }
    }
}

/// `%XX` decoded once; other bytes (a `%` not followed by two hex digits among them)
/// as they are.
pub fn decode_once(value: &[u8]) -> Vec<u8> {
    let hex = crate::indicator::hex_val;
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%' {
            if let (Some(h), Some(l)) = (
                value.get(i + 1).copied().and_then(hex),
                value.get(i + 2).copied().and_then(hex),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(value[i]);
        i += 1;
    }
    out
}

impl Enricher for UrlDecode {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "urldecode"
    }

    fn handles(&self, kind: Kind) -> bool {
        self.kinds.contains(&kind)
    }

    fn lookup(&self, _kind: Kind, value: &[u8]) -> Answer {
        if memchr::memchr(b'%', value).is_none() {
            return Answer::Ready(super::none());
        }
        let decoded = decode_once(value);
        if decoded == value {
            return Answer::Ready(super::none());
        }
        let hit = EnrichHit::new(
            self.category.as_bytes(),
            [(&b"decodedURL"[..], &decoded[..])],
        );
        Answer::Ready(vec![hit].into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_once_and_keeps_what_is_not_an_escape() {
        assert_eq!(decode_once(b"a%20b%2541%zz%4"), b"a b%41%zz%4");
    }
}
