//! Checking one answer against the request that caused it.
//!
//! TCP (SPEC §2): an answer is the lines up to and including `LookupFinished`. It is right when every
//! line before that is a well-formed hit (`Category=…|MatchedIndicator=…`), every
//! indicator that must hit has at least one line, none that must miss has one, and the
//! hit lines follow the order of the indicators in the request. Answers are matched to
//! requests by order alone (the protocol has no ids), so an answer given to the wrong
//! request shows up as hits and misses in the wrong places.
//!
//! HTTP (SPEC §12): an answer is a `200` whose body is a JSON array with one element
//! per object sent, in order, each naming its object; a hit is `detected` with at
//! least one well-formed category, a miss `not detected` with none. The shape is
//! checked while parsing, borrowing from the body (a load generator that allocates a
//! tree per answer takes CPU from the server it measures on the same machine).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use tracer::protocol::cybertrace::parse_hit;

use crate::workload::Sent;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum ErrorKind {
    /// An indicator that must hit got no line.
    MissedHit,
    /// An indicator that must miss got a line.
    FalseHit,
    /// A line that is not a hit line, or a hit for a value the request did not hold.
    Malformed,
    /// Hit lines out of the request's indicator order.
    OutOfOrder,
    /// The connection closed or failed with requests outstanding.
    Dropped,
    /// No answer within the deadline.
    Timeout,
    /// HTTP: an answer array whose length is not the number of objects sent.
    WrongCount,
    /// HTTP: a status other than `200` (401 bad credentials, 429 over the limit, …).
    Status(u16),
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::MissedHit => "missed hit",
            ErrorKind::FalseHit => "false hit",
            ErrorKind::Malformed => "malformed answer",
            ErrorKind::OutOfOrder => "out of order",
            ErrorKind::Dropped => "dropped connection",
            ErrorKind::Timeout => "timeout",
            ErrorKind::WrongCount => "wrong number of answers",
            ErrorKind::Status(code) => return write!(f, "HTTP status {code}"),
        })
    }
}

/// Check `lines` (the answer without its `LookupFinished` line) against `sent`.
pub fn check(sent: &[Sent], lines: &[&[u8]]) -> Result<(), ErrorKind> {
    let mut seen = vec![false; sent.len()];
    let mut last = 0usize;
    for line in lines {
        let value = parse_hit(line).ok_or(ErrorKind::Malformed)?.matched;
        // The first indicator at or after the previous hit's position with this value.
        let pos = (last..sent.len())
            .find(|&i| sent[i].value.as_bytes() == value)
            .or_else(|| {
                (0..last)
                    .find(|&i| sent[i].value.as_bytes() == value)
                    .map(|_| usize::MAX)
            });
        match pos {
            None => {
                return Err(if sent.iter().any(|s| s.value.as_bytes() == value) {
                    ErrorKind::OutOfOrder
                } else {
                    ErrorKind::Malformed
                })
            }
            Some(usize::MAX) => return Err(ErrorKind::OutOfOrder),
            Some(i) => {
                if !sent[i].hit {
                    return Err(ErrorKind::FalseHit);
                }
                seen[i] = true;
                last = i;
            }
        }
    }
    for s in sent {
        // The same value may stand twice in one request; one hit line covers both.
        let covered = (0..sent.len()).any(|j| seen[j] && sent[j].value == s.value);
        if s.hit && !covered {
            return Err(ErrorKind::MissedHit);
        }
    }
    Ok(())
}

/// Check an HTTP answer (`status`, `body`) against the objects `sent`.
pub fn check_http(sent: &[Sent], status: u16, body: &[u8]) -> Result<(), ErrorKind> {
    if status != 200 {
        return Err(ErrorKind::Status(status));
    }
    let elements: Vec<Element<'_>> =
        serde_json::from_slice(body).map_err(|_| ErrorKind::Malformed)?;
    if elements.len() != sent.len() {
        return Err(ErrorKind::WrongCount);
    }
    for (e, s) in elements.iter().zip(sent) {
        if e.object != s.value {
            return Err(if sent.iter().any(|o| o.value == e.object) {
                ErrorKind::OutOfOrder
            } else {
                ErrorKind::Malformed
            });
        }
        match (&*e.result, e.categories.is_empty(), s.hit) {
            ("detected", false, true) | ("not detected", true, false) => {}
            ("detected", false, false) => return Err(ErrorKind::FalseHit),
            ("not detected", true, true) => return Err(ErrorKind::MissedHit),
            // `detected` with no category, `not detected` with some, another word.
            _ => return Err(ErrorKind::Malformed),
        }
    }
    Ok(())
}

/// One element of an HTTP answer. `categories` may be left out of a `not detected`
/// element (an empty list is what tracer sends; CyberTrace's examples omit it).
#[derive(Deserialize)]
struct Element<'a> {
    #[serde(borrow)]
    object: Cow<'a, str>,
    #[serde(borrow)]
    result: Cow<'a, str>,
    #[serde(default)]
    categories: Vec<Category>,
}

/// A category of a detected object: checked for shape, nothing kept.
#[derive(Deserialize)]
struct Category {
    #[serde(rename = "category")]
    _category: Text,
    #[serde(rename = "detected_indicator")]
    _detected_indicator: Text,
    #[serde(rename = "context")]
    _context: Context,
}

/// A JSON string (any other JSON value is an error).
struct Text;

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Text, E> {
                Ok(Text)
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON object whose values are all strings.
struct Context;

impl<'de> Deserialize<'de> for Context {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Context, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Context;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Context, A::Error> {
                while map.next_entry::<IgnoredAny, Text>()?.is_some() {}
                Ok(Context)
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn sent(v: &[(&str, bool)]) -> Vec<Sent> {
        v.iter()
            .map(|(value, hit)| Sent {
                value: value.to_string(),
                hit: *hit,
            })
            .collect()
    }

    #[test]
    fn right_answers_pass() {
        let s = sent(&[("gmer.com", true), ("x.invalid", false), ("1.2.3.4", true)]);
        let lines: Vec<&[u8]> = vec![
            b"Category=a|MatchedIndicator=gmer.com|k=v",
            b"Category=a_2|MatchedIndicator=gmer.com",
            b"Category=b|MatchedIndicator=1.2.3.4|ip=1.2.3.0/24",
        ];
        assert_eq!(check(&s, &lines), Ok(()));
        assert_eq!(check(&sent(&[("x", false)]), &[]), Ok(()));
    }

    #[test]
    fn wrong_answers_are_caught() {
        let s = sent(&[("gmer.com", true), ("x.invalid", false)]);
        assert_eq!(check(&s, &[]), Err(ErrorKind::MissedHit));
        let fh: Vec<&[u8]> = vec![
            b"Category=a|MatchedIndicator=gmer.com",
            b"Category=a|MatchedIndicator=x.invalid",
        ];
        assert_eq!(check(&s, &fh), Err(ErrorKind::FalseHit));
        assert_eq!(check(&s, &[b"garbage"]), Err(ErrorKind::Malformed));
        assert_eq!(
            check(&s, &[b"Category=a|MatchedIndicator=other.com"]),
            Err(ErrorKind::Malformed)
        );
        let two = sent(&[("a.com", true), ("b.com", true)]);
        let swapped: Vec<&[u8]> = vec![
            b"Category=a|MatchedIndicator=b.com",
            b"Category=a|MatchedIndicator=a.com",
        ];
        assert_eq!(check(&two, &swapped), Err(ErrorKind::OutOfOrder));
    }
}

#[cfg(test)]
mod http_tests {
    use super::tests::sent;
    use super::*;

    const HIT: &str = r#"{"object":"http://example.com/x","result":"detected","categories":[
        {"category":"Phishing","detected_indicator":"example.com/*","context":{"k":"v","w":""}},
        {"category":"Malware","detected_indicator":"example.com","context":{}}]}"#;
    const MISS: &str =
        r#"{"object":"C1153422C5F68E731347F6A33F791598","result":"not detected","categories":[]}"#;

    fn two() -> Vec<Sent> {
        sent(&[
            ("http://example.com/x", true),
            ("C1153422C5F68E731347F6A33F791598", false),
        ])
    }

    #[test]
    fn right_http_answers_pass() {
        assert_eq!(
            check_http(&two(), 200, format!("[{HIT},{MISS}]").as_bytes()),
            Ok(())
        );
        // A miss may leave its categories out; escaped strings are fine.
        let s = sent(&[("a\"b", false)]);
        let body = r#"[{"object":"a\"b","result":"not detected"}]"#;
        assert_eq!(check_http(&s, 200, body.as_bytes()), Ok(()));
    }

    #[test]
    fn http_status_other_than_200_is_an_error_with_the_status() {
        assert_eq!(
            check_http(&two(), 401, b"unauthorized"),
            Err(ErrorKind::Status(401))
        );
        assert_eq!(ErrorKind::Status(429).to_string(), "HTTP status 429");
    }

    #[test]
    fn wrong_http_answers_are_caught() {
        let s = two();
        let check = |body: &str| check_http(&s, 200, body.as_bytes());
        assert_eq!(check(&format!("[{HIT}]")), Err(ErrorKind::WrongCount));
        assert_eq!(
            check(&format!("[{HIT},{MISS},{MISS}]")),
            Err(ErrorKind::WrongCount)
        );
        assert_eq!(
            check(&format!("[{MISS},{HIT}]")),
            Err(ErrorKind::OutOfOrder)
        );
        let missed = r#"{"object":"http://example.com/x","result":"not detected","categories":[]}"#;
        assert_eq!(
            check(&format!("[{missed},{MISS}]")),
            Err(ErrorKind::MissedHit)
        );
        let false_hit = r#"{"object":"C1153422C5F68E731347F6A33F791598","result":"detected","categories":[{"category":"a","detected_indicator":"b","context":{}}]}"#;
        assert_eq!(
            check(&format!("[{HIT},{false_hit}]")),
            Err(ErrorKind::FalseHit)
        );
        for bad in [
            // not JSON, not an array, not objects
            "nope".to_string(),
            HIT.to_string(),
            "[1,2]".to_string(),
            // another object than the one sent
            format!(r#"[{HIT},{{"object":"other","result":"not detected","categories":[]}}]"#),
            // detected without a category; not detected with one; another word
            format!(
                r#"[{{"object":"http://example.com/x","result":"detected","categories":[]}},{MISS}]"#
            ),
            format!(
                r#"[{HIT},{{"object":"C1153422C5F68E731347F6A33F791598","result":"not detected","categories":[{{"category":"a","detected_indicator":"b","context":{{}}}}]}}]"#
            ),
            format!(
                r#"[{HIT},{{"object":"C1153422C5F68E731347F6A33F791598","result":"clean","categories":[]}}]"#
            ),
            // a category without a string category, without an indicator, with a
            // context value that is not a string, with a context that is not an object
            format!(
                r#"[{{"object":"http://example.com/x","result":"detected","categories":[{{"category":1,"detected_indicator":"b","context":{{}}}}]}},{MISS}]"#
            ),
            format!(
                r#"[{{"object":"http://example.com/x","result":"detected","categories":[{{"category":"a","context":{{}}}}]}},{MISS}]"#
            ),
            format!(
                r#"[{{"object":"http://example.com/x","result":"detected","categories":[{{"category":"a","detected_indicator":"b","context":{{"k":["v"]}}}}]}},{MISS}]"#
            ),
            format!(
                r#"[{{"object":"http://example.com/x","result":"detected","categories":[{{"category":"a","detected_indicator":"b","context":"k=v"}}]}},{MISS}]"#
            ),
            // missing object
            format!(r#"[{{"result":"not detected"}},{MISS}]"#),
        ] {
            assert_eq!(check(&bad), Err(ErrorKind::Malformed), "{bad}");
        }
    }
}
