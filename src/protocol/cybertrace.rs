//! The CyberTrace TCP protocol (SPEC §2, KUMA source kind `cybertrace`): bytes in,
//! frames and indicators out, answer bytes written into a caller's buffer. No I/O,
//! and no allocation per request once the caller's buffers are warm.
//!
//! Server side, in the order a request meets it:
//! - [`Decoder`] is incremental and does not care where reads split the stream: it
//!   consumes the connection preamble (`X-KF-…` flags, maybe a `PING`), then yields
//!   one frame per LF-terminated line. Lines longer than the limit are discarded up to
//!   their LF and reported once as [`Frame::Overlong`], which still gets an answer so
//!   the client's FIFO of requests and answers stays aligned.
//! - [`for_each_indicator`] turns a line into indicators.
//! - [`Responder`] answers a line from an engine snapshot: a hit line per hit
//!   ([`encode_hit`]), then `LookupFinished`.
//!
//! Client side (the load generator, tests): [`PREAMBLE`], [`parse_hit`] and
//! [`AnswerSplitter`].

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use crate::engine::{AnswerHit, Enrichment, Snapshot};
use crate::enrich::Hits;
use crate::index::records::escape_into;
use crate::index::{Hit, Scratch};
use crate::indicator::{self, Kind};

/// Flags KUMA may send before the first request.
pub const FLAGS: [&[u8]; 3] = [
    b"X-KF-ReplyBack",
    b"X-KF-SendFinishedEvent",
    b"X-KF-SaveStatistic",
];
/// The preamble KUMA sends on a new connection (two of the flags).
pub const PREAMBLE: &[u8] = b"X-KF-ReplyBackX-KF-SendFinishedEvent";
pub const PING: &[u8] = b"PING";
pub const PONG: &[u8] = b"PONG\n";
pub const FINISHED: &[u8] = b"LookupFinished\n";

/// What the decoder found.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A request line, LF removed, trailing CR removed, never empty.
    Line(&'a [u8]),
    /// `PING`, after the preamble or alone on a line: answer [`PONG`].
    Ping,
    /// A line over the limit ended; answer it with [`FINISHED`] alone.
    Overlong,
}

#[derive(Debug)]
pub struct Decoder {
    max_line: usize,
    in_preamble: bool,
    flags_seen: bool,
    discarding: bool,
    overlong_seen: u64,
}

impl Decoder {
    pub fn new(max_line: usize) -> Decoder {
        Decoder {
            max_line: max_line.max(1),
            in_preamble: true,
            flags_seen: false,
            discarding: false,
            overlong_seen: 0,
        }
    }

    /// How many over-long lines this connection has sent so far.
    pub fn overlong_count(&self) -> u64 {
        self.overlong_seen
    }

    /// Decode from `buf` (the unconsumed bytes). Returns how many bytes were consumed
    /// and the frame found, if any. `(0, None)` means: wait for more bytes.
    pub fn next<'a>(&mut self, buf: &'a [u8]) -> (usize, Option<Frame<'a>>) {
        let mut pos = 0;
        if self.in_preamble {
            match self.preamble(buf) {
                Preamble::Wait(n) => return (n, None),
                Preamble::Ping(n) => {
                    self.in_preamble = false;
                    return (n, Some(Frame::Ping));
                }
                Preamble::Done(n) => {
                    self.in_preamble = false;
                    pos = n;
                }
            }
        }
        loop {
            let rest = &buf[pos..];
            let Some(lf) = memchr::memchr(b'\n', rest) else {
                if self.discarding {
                    return (buf.len(), None);
                }
                if rest.len() > self.max_line {
                    self.discarding = true;
                    self.overlong_seen += 1;
                    return (buf.len(), None);
                }
                return (pos, None);
            };
            let consumed = pos + lf + 1;
            if self.discarding {
                self.discarding = false;
                return (consumed, Some(Frame::Overlong));
            }
            if lf > self.max_line {
                self.overlong_seen += 1;
                return (consumed, Some(Frame::Overlong));
            }
            let mut line = &rest[..lf];
            while let Some((b'\r', head)) = line.split_last() {
                line = head;
            }
            if line.iter().all(|&b| b == b'\r') {
                pos = consumed;
                continue;
            }
            if line == PING {
                return (consumed, Some(Frame::Ping));
            }
            return (consumed, Some(Frame::Line(line)));
        }
    }

    /// The client half-closed: a last line without LF still gets its answer.
    pub fn finish<'a>(&mut self, buf: &'a [u8]) -> Option<Frame<'a>> {
        if self.discarding {
            self.discarding = false;
            return Some(Frame::Overlong);
        }
        let mut line = buf;
        while let Some((b'\r', head)) = line.split_last() {
            line = head;
        }
        if line.is_empty() {
            None
        } else if line == PING {
            Some(Frame::Ping)
        } else {
            Some(Frame::Line(line))
        }
    }

    fn preamble(&mut self, buf: &[u8]) -> Preamble {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            if let Some(flag) = FLAGS.iter().find(|f| rest.starts_with(f)) {
                pos += flag.len();
                self.flags_seen = true;
            } else if self.flags_seen && matches!(rest.first(), Some(b'\r' | b'\n')) {
                pos += 1;
            } else if rest.is_empty() || FLAGS.iter().any(|f| f.starts_with(rest)) {
                // Nothing yet, or a flag split across reads.
                return Preamble::Wait(pos);
            } else {
                break;
            }
        }
        if !self.flags_seen {
            return Preamble::Done(pos);
        }
        let rest = &buf[pos..];
        if rest.starts_with(PING) {
            // `PING` right after the flags needs no line ending.
            let mut end = pos + PING.len();
            if buf.get(end) == Some(&b'\r') {
                end += 1;
            }
            if buf.get(end) == Some(&b'\n') {
                end += 1;
            }
            return Preamble::Ping(end);
        }
        if PING.starts_with(rest) {
            return Preamble::Wait(pos);
        }
        Preamble::Done(pos)
    }
}

enum Preamble {
    Wait(usize),
    Ping(usize),
    Done(usize),
}

/// One indicator of a request: its kind and its value, trimmed, as sent.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Indicator<'a> {
    pub kind: Kind,
    pub value: &'a [u8],
}

/// The request key's kind, if it is one of SPEC §2's keys (case-insensitive).
pub fn key_kind(key: &[u8]) -> Option<Kind> {
    let key = key.trim_ascii();
    let is = |k: &str| key.eq_ignore_ascii_case(k.as_bytes());
    if is("url") {
        Some(Kind::Url)
    } else if is("ip") {
        Some(Kind::Ip)
    } else if is("hash") || is("md5") || is("sha1") || is("sha256") {
        Some(Kind::Hash)
    } else if is("domain") {
        Some(Kind::Domain)
    } else {
        None
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let is_space = |b: &u8| b.is_ascii_whitespace();
    let start = v.iter().position(|b| !is_space(b)).unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// Parse a request line into `out` (cleared first), in request order.
pub fn parse_request<'a>(line: &'a [u8], out: &mut Vec<Indicator<'a>>) {
    out.clear();
    out.extend(Indicators::new(line));
}

/// Call `f` with each indicator of a request line, in request order.
pub fn for_each_indicator<'a>(line: &'a [u8], f: impl FnMut(Indicator<'a>)) {
    Indicators::new(line).for_each(f);
}

/// Where an iteration over a line's indicators stands, so it can stop and resume
/// later on the same line (an answer written in pieces).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    pos: usize,
    state: Split,
    /// A known key was seen: the line is not one bare value.
    seen_known: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Split {
    #[default]
    Start,
    /// Tokens separated by `|`.
    Pipe,
    /// No `|`: tokens start at each whitespace-preceded `known_key=` (Splunk style).
    Spaces,
    /// All tokens seen; a line without any known key is one bare value.
    End,
    Done,
}

/// The indicators of a request line, in request order. Tokens are split at `|` (or,
/// in a line without `|`, before each whitespace-preceded `known_key=`); each token
/// splits at its first `=`; unknown keys and empty values are skipped. A line without
/// any known key is one bare value of detected kind.
pub struct Indicators<'a> {
    line: &'a [u8],
    cur: Cursor,
}

impl<'a> Indicators<'a> {
    pub fn new(line: &'a [u8]) -> Indicators<'a> {
        Indicators::resume(line, Cursor::default())
    }

    /// Continue an iteration over `line` from `cur` (from [`Indicators::cursor`]).
    pub fn resume(line: &'a [u8], cur: Cursor) -> Indicators<'a> {
        Indicators { line, cur }
    }

    pub fn cursor(&self) -> Cursor {
        self.cur
    }

    fn token(&mut self, tok: &'a [u8]) -> Option<Indicator<'a>> {
        let eq = memchr::memchr(b'=', tok)?;
        let kind = key_kind(&tok[..eq])?;
        self.cur.seen_known = true;
        let value = trim(&tok[eq + 1..]);
        (!value.is_empty()).then_some(Indicator { kind, value })
    }

    /// The next Splunk-style token boundary at or after `from`: a whitespace byte
    /// followed by `known_key=`.
    fn next_space_boundary(&self, from: usize) -> Option<usize> {
        let line = self.line;
        (from..line.len()).find(|&i| {
            line[i].is_ascii_whitespace() && {
                let after = &line[i + 1..];
                memchr::memchr(b'=', after).is_some_and(|eq| {
                    let k = &after[..eq];
                    !k.iter().any(u8::is_ascii_whitespace) && key_kind(k).is_some()
                })
            }
        })
    }
}

impl<'a> Iterator for Indicators<'a> {
    type Item = Indicator<'a>;

    fn next(&mut self) -> Option<Indicator<'a>> {
        let line = self.line;
        loop {
            let pos = self.cur.pos;
            match self.cur.state {
                Split::Start => {
                    self.cur.state = if memchr::memchr(b'|', line).is_some() {
                        Split::Pipe
                    } else {
                        Split::Spaces
                    };
                }
                Split::Pipe | Split::Spaces if pos > line.len() => self.cur.state = Split::End,
                Split::Pipe => {
                    let end = memchr::memchr(b'|', &line[pos..]).map_or(line.len(), |i| pos + i);
                    self.cur.pos = end + 1;
                    if let Some(ind) = self.token(&line[pos..end]) {
                        return Some(ind);
                    }
                }
                Split::Spaces => {
                    let end = self.next_space_boundary(pos).unwrap_or(line.len());
                    self.cur.pos = end + 1;
                    if let Some(ind) = self.token(&line[pos..end]) {
                        return Some(ind);
                    }
                }
                Split::End => {
                    self.cur.state = Split::Done;
                    let value = trim(line);
                    if !self.cur.seen_known && !value.is_empty() {
                        return Some(Indicator {
                            kind: indicator::detect(value),
                            value,
                        });
                    }
                }
                Split::Done => return None,
            }
        }
    }
}

/// Tracks category names used in one answer, to suffix repeats with `_2`, `_3`, ….
#[derive(Default)]
pub struct Categories {
    names: Vec<u8>,
    seen: Vec<(usize, usize, u32)>,
}

impl Categories {
    pub fn clear(&mut self) {
        self.names.clear();
        self.seen.clear();
    }

    /// How many times `name` has been used in this answer, counting this use.
    pub fn next(&mut self, name: &[u8]) -> u32 {
        for (s, e, n) in &mut self.seen {
            if &self.names[*s..*e] == name {
                *n += 1;
                return *n;
            }
        }
        let s = self.names.len();
        self.names.extend_from_slice(name);
        self.seen.push((s, self.names.len(), 1));
        1
    }
}

/// Write one hit line: `Category=<c>[_n]|MatchedIndicator=<v>|<context>\n`.
pub fn encode_hit(out: &mut Vec<u8>, category: &[u8], nth: u32, matched: &[u8], context: &[u8]) {
    out.extend_from_slice(b"Category=");
    escape_into(out, category, false);
    if nth > 1 {
        out.push(b'_');
        push_u32(out, nth);
    }
    out.extend_from_slice(b"|MatchedIndicator=");
    escape_into(out, matched, false);
    if !context.is_empty() {
        out.push(b'|');
        out.extend_from_slice(context);
    }
    out.push(b'\n');
}

fn push_u32(out: &mut Vec<u8>, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// What answering one line did, for logs and counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Indicators by kind, indexed by `Kind::index()`.
    pub by_kind: [u32; 5],
    pub hits: u32,
    /// Some indicator had more than `max_hits` matches; the rest were dropped.
    pub truncated: bool,
    /// The line's hits reached `max_hits_per_line`; the rest of the line was not
    /// looked up.
    pub line_truncated: bool,
}

/// Limits on one answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Hits per indicator (`--max-hits`).
    pub max_hits: usize,
    /// Hit lines per request line (`--max-hits-per-line`).
    pub max_hits_per_line: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_hits: 32,
            max_hits_per_line: 1024,
        }
    }
}

/// Where answering one line stands, from [`Responder::answer_part`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// The answer is complete (`LookupFinished` written).
    Done,
    /// The output reached its limit: write it, then go on.
    Full,
    /// An enricher is asking another system: [`LineState::wait`], then go on.
    Waiting,
}

/// The enrichers' answer for one indicator of a line being answered.
enum Enriched {
    None,
    Ready(Vec<Hits>),
    Pending(Pin<Box<dyn Future<Output = Vec<Hits>>>>),
}

/// How far the answer to one line has been written: kept by the caller between the
/// pieces of a long answer, and while an enricher is asked, so the answer can stop
/// and go on later. Start each line with a fresh (or [`reset`](Self::reset)) one.
#[derive(Default)]
pub struct LineState {
    cursor: Cursor,
    /// The indicator whose hits are being written: its value's place in the line.
    value: (usize, usize),
    hits: Vec<Hit>,
    next_hit: usize,
    categories: Categories,
    outcome: Outcome,
    started: bool,
    /// With enrichers: every indicator's enrichment, started when the line was begun
    /// (so they all wait at once), taken in turn.
    enrichments: VecDeque<Enriched>,
    /// The current indicator's enrichment, and how far its hits have been written.
    current: Option<Enriched>,
    part: usize,
    part_hit: usize,
}

impl LineState {
    /// Ready for a new line (keeps its buffers).
    pub fn reset(&mut self) {
        self.cursor = Cursor::default();
        self.value = (0, 0);
        self.hits.clear();
        self.next_hit = 0;
        self.categories.clear();
        self.outcome = Outcome::default();
        self.started = false;
        self.enrichments.clear();
        self.current = None;
        self.part = 0;
        self.part_hit = 0;
    }

    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// Wait for the enrichment the answer stopped at ([`Progress::Waiting`]). It
    /// resolves within the enrichers' timeouts.
    pub async fn wait(&mut self) {
        if let Some(Enriched::Pending(f)) = self.current.as_mut() {
            let parts = f.await;
            self.current = Some(Enriched::Ready(parts));
        }
    }
}

/// Answers request lines from an engine snapshot. Holds the lookup buffers, so
/// answering allocates nothing once warm. The server's connections and `tracer
/// lookup` both go through it, so the command line prints exactly what the server
/// sends.
pub struct Responder {
    limits: Limits,
    scratch: Scratch,
}

impl Responder {
    pub fn new(limits: Limits) -> Responder {
        Responder {
            limits,
            scratch: Scratch::default(),
        }
    }

    /// Append the whole answer to `line` to `out`, waiting for enrichers as needed;
    /// `on_hit` sees every feed hit written.
    pub async fn answer(
        &mut self,
        snapshot: &Snapshot,
        line: &[u8],
        out: &mut Vec<u8>,
        mut on_hit: impl FnMut(&AnswerHit<'_>),
    ) -> Outcome {
        let mut state = LineState::default();
        while self.answer_part(snapshot, line, &mut state, out, usize::MAX, &mut on_hit)
            == Progress::Waiting
        {
            state.wait().await;
        }
        state.outcome
    }

    /// Append the answer to `line` to `out`, until it is complete, `out` holds
    /// `limit` bytes or more, or an enricher must be waited for. A hit line is never
    /// split, so `out` may pass `limit` by one hit line. Call again with the same
    /// `line` and `state` to go on.
    pub fn answer_part(
        &mut self,
        snapshot: &Snapshot,
        line: &[u8],
        state: &mut LineState,
        out: &mut Vec<u8>,
        limit: usize,
        mut on_hit: impl FnMut(&AnswerHit<'_>),
    ) -> Progress {
        let Limits {
            max_hits,
            max_hits_per_line,
        } = self.limits;
        if !state.started {
            state.started = true;
            if snapshot.has_enrichers() {
                // Ask every enricher about every indicator now, so a line with three
                // slow indicators waits once, not three times.
                for ind in Indicators::new(line) {
                    state
                        .enrichments
                        .push_back(match snapshot.enrich(ind.kind, ind.value) {
                            Enrichment::None => Enriched::None,
                            Enrichment::Ready(parts) => Enriched::Ready(parts),
                            Enrichment::Pending(f) => Enriched::Pending(f),
                        });
                }
            }
        }
        loop {
            let (a, b) = state.value;
            // Feed hits of the current indicator.
            while state.next_hit < state.hits.len() {
                if out.len() >= limit {
                    return Progress::Full;
                }
                if state.outcome.hits as usize >= max_hits_per_line {
                    state.outcome.line_truncated = true;
                    out.extend_from_slice(FINISHED);
                    return Progress::Done;
                }
                let h = snapshot.hit(state.hits[state.next_hit]);
                state.next_hit += 1;
                on_hit(&h);
                let nth = state.categories.next(h.category);
                encode_hit(out, h.category, nth, &line[a..b], h.context);
                state.outcome.hits += 1;
            }
            // Then the enrichers' hits, in config order.
            match &state.current {
                Some(Enriched::Pending(_)) => return Progress::Waiting,
                Some(Enriched::Ready(parts)) => {
                    while state.part < parts.len() {
                        let hits = &parts[state.part];
                        if state.part_hit >= hits.len().min(max_hits) {
                            state.part += 1;
                            state.part_hit = 0;
                            continue;
                        }
                        if out.len() >= limit {
                            return Progress::Full;
                        }
                        if state.outcome.hits as usize >= max_hits_per_line {
                            state.outcome.line_truncated = true;
                            out.extend_from_slice(FINISHED);
                            return Progress::Done;
                        }
                        let h = &hits[state.part_hit];
                        state.part_hit += 1;
                        let nth = state.categories.next(&h.category);
                        encode_hit(out, &h.category, nth, &line[a..b], &h.context);
                        state.outcome.hits += 1;
                    }
                }
                Some(Enriched::None) | None => {}
            }
            // The next indicator.
            let mut indicators = Indicators::resume(line, state.cursor);
            let next = indicators.next();
            state.cursor = indicators.cursor();
            let Some(ind) = next else {
                out.extend_from_slice(FINISHED);
                return Progress::Done;
            };
            state.outcome.by_kind[ind.kind.index()] += 1;
            let start = ind.value.as_ptr() as usize - line.as_ptr() as usize;
            state.value = (start, start + ind.value.len());
            state.hits.clear();
            state.next_hit = 0;
            state.current = state.enrichments.pop_front();
            state.part = 0;
            state.part_hit = 0;
            let found = snapshot.feed_hits(
                ind.kind,
                ind.value,
                &mut self.scratch,
                max_hits,
                &mut state.hits,
            );
            state.outcome.truncated |= found > max_hits;
        }
    }
}

/// One hit line as a client reads it.
#[derive(Debug, PartialEq, Eq)]
pub struct HitLine<'a> {
    /// The category, with any `_2` suffix.
    pub category: &'a [u8],
    /// The indicator as the client sent it (escaped as on the wire).
    pub matched: &'a [u8],
    /// The record's fields, `k=v|k=v` (empty when it has none).
    pub context: &'a [u8],
}

/// Parse a hit line (without its LF): `Category=…|MatchedIndicator=…[|context]`.
pub fn parse_hit(line: &[u8]) -> Option<HitLine<'_>> {
    let rest = line.strip_prefix(b"Category=")?;
    let bar = memchr::memchr(b'|', rest)?;
    let category = &rest[..bar];
    let rest = rest[bar + 1..].strip_prefix(b"MatchedIndicator=")?;
    let (matched, context) = match memchr::memchr(b'|', rest) {
        Some(end) => (&rest[..end], &rest[end + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    (!category.is_empty()).then_some(HitLine {
        category,
        matched,
        context,
    })
}

/// Splits a stream of answer bytes into answers: the lines before each
/// `LookupFinished` (or a `PONG`), however reads split the stream.
#[derive(Default)]
pub struct AnswerSplitter {
    data: Vec<u8>,
    /// Start of the answer being collected.
    answer_start: usize,
    /// Where the search for the next LF resumes.
    scanned: usize,
    /// Lines of the answer being collected, as ranges of `data`.
    lines: Vec<(usize, usize)>,
}

/// One complete answer.
pub enum Answer<'a> {
    /// The hit lines (without LF) of one `LookupFinished` answer.
    Lookup(Vec<&'a [u8]>),
    Pong,
}

impl AnswerSplitter {
    /// Add bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
    }

    /// Call `f` with every answer completed by the bytes pushed so far.
    pub fn drain(&mut self, mut f: impl FnMut(Answer<'_>)) {
        while let Some(off) = memchr::memchr(b'\n', &self.data[self.scanned..]) {
            let line_start = self.lines.last().map_or(self.answer_start, |l| l.1 + 1);
            let end = self.scanned + off;
            let line = &self.data[line_start..end];
            if line == &FINISHED[..FINISHED.len() - 1] || line == &PONG[..PONG.len() - 1] {
                let pong = line == &PONG[..PONG.len() - 1];
                if pong && self.lines.is_empty() {
                    f(Answer::Pong);
                } else {
                    let lines = self.lines.iter().map(|&(s, e)| &self.data[s..e]).collect();
                    f(Answer::Lookup(lines));
                }
                self.lines.clear();
                self.answer_start = end + 1;
            } else {
                self.lines.push((line_start, end));
            }
            self.scanned = end + 1;
        }
        // Drop what has been answered; keep the unfinished answer at the front.
        if self.answer_start > 0 {
            let cut = self.answer_start;
            self.data.drain(..cut);
            for l in &mut self.lines {
                l.0 -= cut;
                l.1 -= cut;
            }
            self.scanned -= cut;
            self.answer_start = 0;
        }
    }

    /// Bytes of an answer begun but not finished (a connection that ends here ended
    /// in the middle of an answer).
    pub fn partial(&self) -> usize {
        self.data.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run the decoder over `chunks` as separate reads, like a connection would.
    fn decode_chunks(chunks: &[&[u8]], max_line: usize) -> Vec<String> {
        let mut dec = Decoder::new(max_line);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            let mut pos = 0;
            loop {
                let (n, frame) = dec.next(&buf[pos..]);
                pos += n;
                match frame {
                    Some(f) => out.push(show(&f)),
                    None if n == 0 => break,
                    None => {}
                }
            }
            buf.drain(..pos);
        }
        if let Some(f) = dec.finish(&buf) {
            out.push(show(&f));
        }
        out
    }

    fn show(f: &Frame<'_>) -> String {
        match f {
            Frame::Line(l) => format!("L:{}", String::from_utf8_lossy(l)),
            Frame::Ping => "PING".into(),
            Frame::Overlong => "OVERLONG".into(),
        }
    }

    #[test]
    fn preamble_flags_in_any_order_then_request() {
        let got = decode_chunks(&[b"X-KF-SaveStatisticX-KF-ReplyBackurl=a.com\n"], 100);
        assert_eq!(got, vec!["L:url=a.com"]);
        let got = decode_chunks(&[b"X-KF-ReplyBack\r\n", b"url=a.com\n"], 100);
        assert_eq!(got, vec!["L:url=a.com"]);
    }

    #[test]
    fn preamble_split_mid_token() {
        let got = decode_chunks(
            &[b"X-KF-Rep", b"lyBackX-KF-Send", b"FinishedEventurl=a\n"],
            100,
        );
        assert_eq!(got, vec!["L:url=a"]);
    }

    #[test]
    fn ping_after_flags_needs_no_newline() {
        let got = decode_chunks(&[b"X-KF-ReplyBackPING"], 100);
        assert_eq!(got, vec!["PING"]);
        let got = decode_chunks(&[b"X-KF-ReplyBackPI", b"NG\nurl=a\n"], 100);
        assert_eq!(got, vec!["PING", "L:url=a"]);
        let got = decode_chunks(&[b"url=a\nPING\r\n"], 100);
        assert_eq!(got, vec!["L:url=a", "PING"]);
    }

    #[test]
    fn crlf_empty_lines_and_final_line_without_lf() {
        let got = decode_chunks(&[b"url=a\r\n\r\n\n", b"url=b"], 100);
        assert_eq!(got, vec!["L:url=a", "L:url=b"]);
    }

    #[test]
    fn overlong_lines_are_reported_once_each_and_resync() {
        let long = vec![b'x'; 50];
        let got = decode_chunks(&[&long, &long, b"\nurl=a\n"], 20);
        assert_eq!(got, vec!["OVERLONG", "L:url=a"]);
        let mut one = long.clone();
        one.extend_from_slice(b"\nurl=b\n");
        assert_eq!(decode_chunks(&[&one], 20), vec!["OVERLONG", "L:url=b"]);
    }

    #[test]
    fn request_tokens() {
        let mut out = Vec::new();
        parse_request(
            b"x=1|URL=http://a.com/?q=1=2|Ip= 1.2.3.4 |md5=ab|ip=5.6.7.8|",
            &mut out,
        );
        let got: Vec<_> = out
            .iter()
            .map(|i| (i.kind, String::from_utf8_lossy(i.value).into_owned()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Kind::Url, "http://a.com/?q=1=2".to_string()),
                (Kind::Ip, "1.2.3.4".to_string()),
                (Kind::Hash, "ab".to_string()),
                (Kind::Ip, "5.6.7.8".to_string()),
            ]
        );
    }

    #[test]
    fn splunk_style_and_bare_values() {
        let mut out = Vec::new();
        parse_request(
            b"ip=1.2.3.4 md5=D41D8CD98F00B204E9800998ECF8427E url=http://x/?a=b c",
            &mut out,
        );
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].value, b"http://x/?a=b c");
        parse_request(b"  gmer.com ", &mut out);
        assert_eq!(
            out,
            vec![Indicator {
                kind: Kind::Url,
                value: b"gmer.com"
            }]
        );
        parse_request(b"10.0.0.1", &mut out);
        assert_eq!(out[0].kind, Kind::Ip);
        parse_request(b"foo=bar|baz", &mut out);
        assert_eq!(
            out,
            vec![Indicator {
                kind: Kind::Url,
                value: b"foo=bar|baz"
            }]
        );
        parse_request(b"url=|x=1", &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn hit_encoding_and_category_suffixes() {
        let mut cats = Categories::default();
        let mut out = Vec::new();
        encode_hit(
            &mut out,
            b"Phish",
            cats.next(b"Phish"),
            b"a.com",
            b"mask=a.com",
        );
        encode_hit(&mut out, b"Phish", cats.next(b"Phish"), b"a.com", b"");
        encode_hit(&mut out, b"Other", cats.next(b"Other"), b"a|b", b"k=v");
        encode_hit(&mut out, b"Phish", cats.next(b"Phish"), b"a.com", b"k=v");
        assert_eq!(
            String::from_utf8_lossy(&out),
            "Category=Phish|MatchedIndicator=a.com|mask=a.com\n\
             Category=Phish_2|MatchedIndicator=a.com\n\
             Category=Other|MatchedIndicator=a%7Cb|k=v\n\
             Category=Phish_3|MatchedIndicator=a.com|k=v\n"
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_split_gives_the_same_frames(
                body in proptest::collection::vec(prop_oneof![
                    Just(b"url=a.com\n".to_vec()), Just(b"\r\n".to_vec()), Just(b"PING\n".to_vec()),
                    Just(b"ip=1.2.3.4|x\r\n".to_vec()), Just(vec![b'z'; 30]), Just(b"\n".to_vec()),
                ], 0..12),
                flags in proptest::collection::vec(0usize..3, 0..3),
                cut in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
            ) {
                let mut stream: Vec<u8> = flags.iter().flat_map(|&f| FLAGS[f].to_vec()).collect();
                stream.extend(body.concat());
                let whole = decode_chunks(&[&stream], 25);
                let mut cuts: Vec<usize> = cut.iter().map(|c| c.index(stream.len() + 1)).collect();
                cuts.sort_unstable();
                let mut chunks = Vec::new();
                let mut last = 0;
                for c in cuts {
                    chunks.push(&stream[last..c]);
                    last = c;
                }
                chunks.push(&stream[last..]);
                prop_assert_eq!(decode_chunks(&chunks, 25), whole);
            }

            #[test]
            fn decoder_and_parser_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
                let mut dec = Decoder::new(16);
                let mut pos = 0;
                let mut inds = Vec::new();
                loop {
                    let (n, f) = dec.next(&bytes[pos..]);
                    pos += n;
                    if let Some(Frame::Line(l)) = f {
                        parse_request(l, &mut inds);
                    }
                    if f.is_none() && n == 0 {
                        break;
                    }
                }
                let _ = dec.finish(&bytes[pos..]);
            }
        }
    }
}
