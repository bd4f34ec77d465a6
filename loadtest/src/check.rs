//! Checking one answer against the request that caused it.
//!
//! An answer is the lines up to and including `LookupFinished`. It is right when every
//! line before that is a well-formed hit (`Category=…|MatchedIndicator=…`), every
//! indicator that must hit has at least one line, none that must miss has one, and the
//! hit lines follow the order of the indicators in the request. Answers are matched to
//! requests by order alone (the protocol has no ids), so an answer given to the wrong
//! request shows up as hits and misses in the wrong places.

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
}

impl ErrorKind {
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::MissedHit => "missed hit",
            ErrorKind::FalseHit => "false hit",
            ErrorKind::Malformed => "malformed answer",
            ErrorKind::OutOfOrder => "out of order",
            ErrorKind::Dropped => "dropped connection",
            ErrorKind::Timeout => "timeout",
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(v: &[(&str, bool)]) -> Vec<Sent> {
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
