//! Indicator kinds and THE normalization functions.
//!
//! Compile and lookup both call these functions. If the two sides ever normalized
//! differently, lookups would miss without any error, so nothing else in the crate
//! normalizes. Every function works on bytes: requests may hold anything, and a
//! malformed value must come out as *some* key (that then misses), never as a panic.
//!
//! Normalized forms:
//! - URL: `host[/path][?query]` (SPEC §3), written into a caller-owned buffer so the
//!   request path does not allocate. The function is idempotent, which matters because
//!   feed masks arrive already normalized and are normalized again at compile time.
//! - domain: the host part of the URL normalization.
//! - IP: an inclusive range of 128-bit integers in one family (v4 or v6); a single
//!   address is a range of one, `::ffff:a.b.c.d` is the v4 address.
//! - hash: hex of 32, 40 or 64 digits, either case; the index stores the binary
//!   digest ([`hash_digest`]), so `AbC…` and `ABC…` are one key.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What an indicator value is, which decides how it is normalized and matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Url,
    Domain,
    Ip,
    Hash,
    Raw,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Url, Kind::Domain, Kind::Ip, Kind::Hash, Kind::Raw];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Url => "url",
            Kind::Domain => "domain",
            Kind::Ip => "ip",
            Kind::Hash => "hash",
            Kind::Raw => "raw",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// `auto` detection shared by feeds (`--kind auto`) and bare request values: hex of a
/// digest length is a hash, an address/CIDR/range is an IP, anything else is a URL.
pub fn detect(value: &[u8]) -> Kind {
    let v = value.trim_ascii();
    if is_hash(v) {
        Kind::Hash
    } else if parse_ip_entry(v).is_some() {
        Kind::Ip
    } else {
        Kind::Url
    }
}

fn is_hash(v: &[u8]) -> bool {
    matches!(v.len(), 32 | 40 | 64) && v.iter().all(|&b| HEX[b as usize] != NOT_HEX)
}

/// Each byte's value as a hex digit, or `NOT_HEX`.
const NOT_HEX: u8 = 0xff;
static HEX: [u8; 256] = {
    let mut t = [NOT_HEX; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Decode a normalized hash into its binary digest (16, 20 or 32 bytes).
///
/// A table lookup per digit and one validity check at the end: hex digits in a
/// digest are random, so a decoder that branches on "digit or letter" mispredicts
/// about every other character, which made decoding a third of an MD5 lookup.
pub fn hash_digest(value: &[u8], out: &mut [u8; 32]) -> Option<usize> {
    let v = value.trim_ascii();
    if !matches!(v.len(), 32 | 40 | 64) {
        return None;
    }
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(v.chunks_exact(2)) {
        let (hi, lo) = (HEX[pair[0] as usize], HEX[pair[1] as usize]);
        bad |= hi | lo;
        *o = (hi << 4) | (lo & 0x0f);
    }
    // A valid digit is at most 0x0f: any high bit set came from NOT_HEX.
    (bad & 0xf0 == 0).then_some(v.len() / 2)
}

/// One hex digit's value.
pub fn hex_val(b: u8) -> Option<u8> {
    let v = HEX[b as usize];
    (v != NOT_HEX).then_some(v)
}

/// Address family of an IP entry; v4 and v6 live in separate tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn bits(self) -> u32 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// An inclusive range of addresses in one family. Addresses are right-aligned in a
/// `u128` (a v4 address uses the low 32 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    pub family: Family,
    pub start: u128,
    pub end: u128,
}

impl std::fmt::Display for IpRange {
    /// An address, a CIDR network, or `first-last`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addr = |v: u128| match self.family {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(v as u32)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(v)),
        };
        match range_to_cidrs(*self)[..] {
            [(net, len)] if len as u32 == self.family.bits() => write!(f, "{}", addr(net)),
            [(net, len)] => write!(f, "{}/{len}", addr(net)),
            _ => write!(f, "{}-{}", addr(self.start), addr(self.end)),
        }
    }
}

/// A single address as `(family, value)`, with v4-mapped v6 folded to v4.
pub fn canonical_ip(ip: IpAddr) -> (Family, u128) {
    match ip {
        IpAddr::V4(a) => (Family::V4, u32::from(a) as u128),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => (Family::V4, u32::from(v4) as u128),
            None => (Family::V6, u128::from(a)),
        },
    }
}

/// Parse one address (no CIDR, no range), tolerating `[v6]` brackets.
pub fn parse_ip(value: &[u8]) -> Option<(Family, u128)> {
    let v = value.trim_ascii();
    let v = v
        .strip_prefix(b"[")
        .and_then(|x| x.strip_suffix(b"]"))
        .unwrap_or(v);
    let s = std::str::from_utf8(v).ok()?;
    let ip: IpAddr = s.parse().ok()?;
    Some(canonical_ip(ip))
}

/// Parse a feed IP entry: an address, a CIDR network (`10.0.0.0/8`, host bits are
/// masked off) or an inclusive `a-b` range of the same family.
pub fn parse_ip_entry(value: &[u8]) -> Option<IpRange> {
    let v = value.trim_ascii();
    if let Some(slash) = memchr::memchr(b'/', v) {
        let (fam, addr) = parse_ip(&v[..slash])?;
        let len: u32 = std::str::from_utf8(&v[slash + 1..]).ok()?.parse().ok()?;
        // A v4-mapped v6 network (::ffff:0:0/96 and longer) folds into v4.
        let len = if fam == Family::V4 && v[..slash].contains(&b':') {
            len.checked_sub(96)?
        } else {
            len
        };
        if len > fam.bits() {
            return None;
        }
        let mask = low_bits(fam.bits() - len);
        let start = addr & !mask;
        return Some(IpRange {
            family: fam,
            start,
            end: start | mask,
        });
    }
    if let Some(dash) = memchr::memchr(b'-', v) {
        let (fa, a) = parse_ip(&v[..dash])?;
        let (fb, b) = parse_ip(&v[dash + 1..])?;
        if fa != fb || a > b {
            return None;
        }
        return Some(IpRange {
            family: fa,
            start: a,
            end: b,
        });
    }
    let (family, a) = parse_ip(v)?;
    Some(IpRange {
        family,
        start: a,
        end: a,
    })
}

/// Split an inclusive range into the minimal list of aligned CIDR blocks
/// `(network, prefix_len)`. Blocks are disjoint, so an address lies in exactly one and
/// a range never yields the same record twice for one lookup.
pub fn range_to_cidrs(r: IpRange) -> Vec<(u128, u8)> {
    let bits = r.family.bits();
    let mut out = Vec::new();
    let mut start = r.start;
    loop {
        // Largest block aligned at `start` that does not pass `end`; a block of one
        // address always fits, so this ends.
        let mut size_bits = if start == 0 {
            bits
        } else {
            start.trailing_zeros().min(bits)
        };
        let last = loop {
            match start.checked_add(low_bits(size_bits)) {
                Some(l) if l <= r.end => break l,
                _ => size_bits -= 1,
            }
        };
        out.push((start, (bits - size_bits) as u8));
        if last >= r.end {
            return out;
        }
        start = last + 1;
    }
}

/// A mask of the `n` lowest bits (`n` up to 128).
fn low_bits(n: u32) -> u128 {
    if n >= 128 {
        u128::MAX
    } else {
        (1u128 << n) - 1
    }
}

/// The host of a domain value (which may also be written as a URL), normalized as URL
/// hosts are. Returns false when no host remains.
pub fn normalize_domain(value: &[u8], out: &mut Vec<u8>) -> bool {
    normalize_url(value, out);
    let end = memchr::memchr2(b'/', b'?', out).unwrap_or(out.len());
    out.truncate(end);
    !out.is_empty()
}

/// Normalize a URL (or a URL mask: `*` passes through untouched) into
/// `host[/path][?query]`, per SPEC §3. `out` is cleared first.
pub fn normalize_url(input: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut s = input;
    // Fragment goes first: nothing after `#` takes part in matching.
    if let Some(h) = memchr::memchr(b'#', s) {
        s = &s[..h];
    }
    let s = strip_scheme(s.trim_ascii());
    // Authority ends at the first `/`, `\`, or `?`.
    let auth_end = s
        .iter()
        .position(|&b| b == b'/' || b == b'\\' || b == b'?')
        .unwrap_or(s.len());
    let (authority, rest) = s.split_at(auth_end);
    push_host(authority, out);

    let (path, query) = match memchr::memchr(b'?', rest) {
        Some(q) => (&rest[..q], Some(&rest[q + 1..])),
        None => (rest, None),
    };
    let path_start = out.len();
    let decoded_query = push_path(path, out);
    if query.is_some() || decoded_query.is_some() {
        // `a.com?q` and `a.com/?q` are one URL; the spec's form keeps the `/`.
        if out.len() == path_start {
            out.push(b'/');
        }
        let mark = out.len();
        out.push(b'?');
        if let Some(d) = &decoded_query {
            out.extend_from_slice(d);
        }
        if let Some(q) = query {
            if decoded_query.is_some() {
                out.push(b'?');
            }
            push_decoded(q, out, false);
        }
        if out.len() == mark + 1 {
            out.pop();
        }
    }
    // Trailing whitespace (from decoding), an empty `?` and a trailing `/` carry no
    // meaning; strip them in any combination so the result is a fixed point.
    let host_end = memchr::memchr2(b'/', b'?', out).unwrap_or(out.len());
    while out.len() > host_end {
        match out.last() {
            Some(&b) if b == b'/' || b == b'?' || b.is_ascii_whitespace() => {
                out.pop();
            }
            _ => break,
        }
    }
}

/// Strip `scheme:` followed by one or more slashes (either direction).
fn strip_scheme(s: &[u8]) -> &[u8] {
    let Some(first) = s.first() else { return s };
    if !first.is_ascii_alphabetic() {
        return s;
    }
    let mut i = 1;
    while i < s.len() && (s[i].is_ascii_alphanumeric() || matches!(s[i], b'+' | b'-' | b'.')) {
        i += 1;
    }
    if i < s.len() && s[i] == b':' && matches!(s.get(i + 1), Some(b'/' | b'\\')) {
        let mut j = i + 1;
        while j < s.len() && (s[j] == b'/' || s[j] == b'\\') {
            j += 1;
        }
        return &s[j..];
    }
    s
}

/// Write the normalized host of `authority` (userinfo and port removed).
fn push_host(authority: &[u8], out: &mut Vec<u8>) {
    let mut host = match memchr::memrchr(b'@', authority) {
        Some(at) => &authority[at + 1..],
        None => authority,
    }
    .trim_ascii();
    // Bracketed IPv6 literal, optionally followed by a port.
    if host.first() == Some(&b'[') {
        if let Some(close) = memchr::memchr(b']', host) {
            if let Some((fam, v)) = parse_ip(&host[1..close]) {
                push_ip(fam, v, out);
                return;
            }
            host = &host[..=close];
        }
    } else if memchr::memchr(b':', host) != memchr::memrchr(b':', host) {
        // Bare IPv6 (an `ip` value sent as `url`): no port is possible here.
        if let Some((fam, v)) = parse_ip(host) {
            push_ip(fam, v, out);
            return;
        }
    }

    let start = out.len();
    // Lowercase, collapse dot runs, trim leading/trailing dots.
    let mut prev_dot = true;
    for &b in host {
        if b == b'.' {
            if !prev_dot {
                out.push(b'.');
            }
            prev_dot = true;
        } else {
            out.push(b.to_ascii_lowercase());
            prev_dot = false;
        }
    }
    // Trim dots and blanks at both ends, a `:port`, and every leading `www.`, until
    // nothing changes, so `www.www.x`, ` .x.:80 ` and `x` are one host and the
    // function stays idempotent.
    loop {
        while out.len() > start
            && out
                .last()
                .is_some_and(|&b| b == b'.' || b.is_ascii_whitespace())
        {
            out.pop();
        }
        let h = &out[start..];
        if let Some(colon) = memchr::memrchr(b':', h) {
            let one_colon = memchr::memchr(b':', h) == Some(colon);
            if one_colon && h[colon + 1..].iter().all(u8::is_ascii_digit) {
                out.truncate(start + colon);
                continue;
            }
        }
        let lead = out[start..]
            .iter()
            .take_while(|&&b| b == b'.' || b.is_ascii_whitespace())
            .count();
        let www = out[start + lead..].starts_with(b"www.") && out.len() > start + lead + 4;
        let cut = lead + if www { 4 } else { 0 };
        if cut == 0 {
            break;
        }
        out.drain(start..start + cut);
    }
    // The cleanup can turn a host that was no address (`::ffff:1.2.3..4`) into one;
    // it must then be written as an address now, or normalizing the result again
    // would change it.
    // A host that starts with `[` only now is treated as one that did at first: what
    // follows its `]` is a port.
    let h = &out[start..];
    if h.first() == Some(&b'[') {
        if let Some(close) = memchr::memchr(b']', h) {
            out.truncate(start + close + 1);
        }
    }
    let h = &out[start..];
    let bracketed = h.len() >= 2 && h[0] == b'[' && h[h.len() - 1] == b']';
    // The inside of brackets is parsed as the early path above parses it.
    let literal = if bracketed { &h[1..h.len() - 1] } else { h };
    if bracketed || memchr::memchr(b':', h) != memchr::memrchr(b':', h) {
        if let Some((fam, v)) = parse_ip(literal) {
            out.truncate(start);
            push_ip(fam, v, out);
        }
        return;
    }
    if let Some(v4) = parse_ipv4_loose(&out[start..]) {
        out.truncate(start);
        push_ip(Family::V4, v4 as u128, out);
    }
}

fn push_ip(fam: Family, v: u128, out: &mut Vec<u8>) {
    use std::io::Write;
    // Writing to a Vec cannot fail.
    let _ = match fam {
        Family::V4 => write!(out, "{}", Ipv4Addr::from(v as u32)),
        Family::V6 => write!(out, "[{}]", Ipv6Addr::from(v)),
    };
}

/// IPv4 in the forms browsers accept (inet_aton): 1 to 4 dot-separated parts, each
/// decimal, `0x` hex or `0`-prefixed octal; the last part fills the remaining bytes.
fn parse_ipv4_loose(host: &[u8]) -> Option<u32> {
    if host.is_empty() || !host[0].is_ascii_digit() {
        return None;
    }
    let n = host.split(|&b| b == b'.').count();
    if n > 4 {
        return None;
    }
    let mut addr: u64 = 0;
    for (i, part) in host.split(|&b| b == b'.').enumerate() {
        let num = parse_ipv4_part(part)?;
        if i + 1 < n {
            if num > 255 {
                return None;
            }
            addr |= num << (8 * (3 - i));
        } else {
            // The last part fills the remaining bytes.
            let room = 8 * (5 - n as u64);
            if room < 64 && num >= (1u64 << room) {
                return None;
            }
            addr |= num;
        }
    }
    Some(addr as u32)
}

fn parse_ipv4_part(p: &[u8]) -> Option<u64> {
    let (digits, radix) = if let Some(h) = p.strip_prefix(b"0x").or_else(|| p.strip_prefix(b"0X")) {
        (h, 16)
    } else if p.len() > 1 && p[0] == b'0' {
        (&p[1..], 8)
    } else {
        (p, 10)
    };
    if digits.is_empty() || digits.len() > 12 {
        return if radix == 16 && digits.is_empty() {
            Some(0)
        } else {
            None
        };
    }
    let s = std::str::from_utf8(digits).ok()?;
    u64::from_str_radix(s, radix).ok()
}

/// Write the normalized path: decoded once, `\` as `/`, dot segments resolved, empty
/// segments dropped, lowercased. Decodes into `out`, then resolves segments in place
/// (the write cursor never passes the read cursor), so nothing is allocated.
///
/// A `?` that decoding produced (`%3F`) ends the path, as it would when the result is
/// normalized again: what follows it is returned, decoded, to go first in the query.
fn push_path(path: &[u8], out: &mut Vec<u8>) -> Option<Vec<u8>> {
    if path.is_empty() {
        return None;
    }
    let base = out.len();
    push_decoded(path, out, true);
    let tail = memchr::memchr(b'?', &out[base..]).map(|q| {
        let tail = out[base + q + 1..].to_vec();
        out.truncate(base + q);
        tail
    });
    let end = out.len();
    let mut w = base;
    let mut r = base;
    // A path naming a directory (`/x/`, `/`, `/a/..`) keeps its final `/`; only a `/`
    // at the very end of the whole URL is dropped, by the caller.
    let mut dir = false;
    while r <= end {
        let next = memchr::memchr(b'/', &out[r..end]).map_or(end, |i| r + i);
        // Blanks that end a segment are dropped: the end of a URL loses its blanks
        // anyway, and a segment that did not would turn into `.` or `..` once they
        // were gone, which a second normalization would resolve.
        let seg_end = r + out[r..next].trim_ascii_end().len();
        match &out[r..seg_end] {
            b"" | b"." => dir = true,
            b".." => {
                dir = true;
                while w > base {
                    w -= 1;
                    if out[w] == b'/' {
                        break;
                    }
                }
            }
            _ => {
                dir = false;
                out[w] = b'/';
                w += 1;
                out.copy_within(r..seg_end, w);
                w += seg_end - r;
            }
        }
        r = next + 1;
    }
    out.truncate(w);
    if dir {
        out.push(b'/');
    }
    tail
}

/// Percent-decode once, lowercase ASCII, and re-escape the bytes a second pass would
/// read differently (`%` and `#`), which keeps normalization idempotent. In paths a
/// decoded `\` becomes `/`.
fn push_decoded(src: &[u8], out: &mut Vec<u8>, is_path: bool) {
    let mut i = 0;
    while i < src.len() {
        // Copy the run up to the next byte that needs care in one go.
        let special = memchr::memchr3(b'%', b'#', b'\\', &src[i..]).map_or(src.len(), |j| i + j);
        out.extend(src[i..special].iter().map(u8::to_ascii_lowercase));
        i = special;
        if i == src.len() {
            break;
        }
        if src[i] == b'%' {
            let hi = src.get(i + 1).and_then(|&c| hex_val(c));
            let lo = src.get(i + 2).and_then(|&c| hex_val(c));
            if let (Some(h), Some(l)) = (hi, lo) {
                push_byte((h << 4) | l, out, is_path);
                i += 3;
                continue;
            }
        }
        push_byte(src[i], out, is_path);
        i += 1;
    }
}

fn push_byte(b: u8, out: &mut Vec<u8>, is_path: bool) {
    match b {
        b'%' => out.extend_from_slice(b"%25"),
        b'#' => out.extend_from_slice(b"%23"),
        b'\\' if is_path => out.push(b'/'),
        _ => out.push(b.to_ascii_lowercase()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> String {
        let mut out = Vec::new();
        normalize_url(s.as_bytes(), &mut out);
        String::from_utf8(out).expect("test inputs decode to UTF-8")
    }

    #[test]
    fn spec_examples() {
        assert_eq!(
            url("https://www.Example.com:443/?q=hello%20world#frag"),
            "example.com/?q=hello world"
        );
        assert_eq!(url("http://example.com:80"), "example.com");
    }

    #[test]
    fn scheme_userinfo_port_fragment_are_dropped() {
        assert_eq!(
            url("ftp://user:pw@Files.Example.org:2121/a/b#x"),
            "files.example.org/a/b"
        );
        assert_eq!(url("example.com:8080/x"), "example.com/x");
        assert_eq!(url("HTTP:\\\\example.com\\a\\b"), "example.com/a/b");
    }

    #[test]
    fn host_dots_and_www() {
        assert_eq!(url("http://..a..b.com../x"), "a.b.com/x");
        assert_eq!(url("www.www.gmer.com"), "gmer.com");
        assert_eq!(url("WWW.GMER.COM/"), "gmer.com");
        assert_eq!(url("www.com"), "com");
    }

    #[test]
    fn ipv4_in_other_notations() {
        assert_eq!(url("http://0x7f.0.0.1/a"), "127.0.0.1/a");
        assert_eq!(url("http://0177.0.0.01/"), "127.0.0.1");
        assert_eq!(url("http://3232235777/x"), "192.168.1.1/x");
        assert_eq!(url("http://0xC0A80101"), "192.168.1.1");
        assert_eq!(url("http://1.2.3"), "1.2.0.3");
        assert_eq!(url("http://1.2.3.256"), "1.2.3.256");
        assert_eq!(url("http://123.com/"), "123.com");
    }

    #[test]
    fn hosts_that_become_addresses_once_cleaned_are_written_as_addresses() {
        // Found by the `url` fuzz target: the dot run collapses into a valid
        // v4-mapped address, which a second normalization would rewrite.
        assert_eq!(url("::ffff:1.2.3..4/150"), "1.2.3.4/150");
        assert_eq!(url("[::ffff:1.2.3..4]/x"), "1.2.3.4/x");
        // Also found by it: a host that starts with `[` only after its leading dots
        // and blanks are trimmed.
        assert_eq!(url(".\t[x&y]\x0c\x19 z"), "[x&y]");
        // And a `.` segment left behind once trailing blanks are stripped.
        assert_eq!(url("a.com/./.\x0c\x0c\\/"), "a.com");
        // And a `?` decoded in the path: it starts the query, as it will next time.
        assert_eq!(url("a.com/x\x0c%3Fy?z"), "a.com/x?y?z");
        assert_eq!(url("a.com/x%3Fy"), url("a.com/x?y"));
        for s in [
            "::ffff:1.2.3..4/150",
            "[::ffff:1.2.3..4]/x",
            "2001:DB8::..1",
            "::1..",
            "[::]",
            ".\t[x&y]\x0c\x19 z",
            ".[::1]:80/a",
            ".[\x0c::]%\u{8c}/03",
            "a.com/./.\x0c\x0c\\/",
            "a.com/x\x0c%3Fy?z",
            "a.com/%3F",
            "a.com/a/..%3F..",
        ] {
            assert_eq!(url(&url(s)), url(s), "{s}");
        }
    }

    #[test]
    fn ipv6_hosts() {
        assert_eq!(url("http://[2001:DB8:0:0::1]:8080/x"), "[2001:db8::1]/x");
        assert_eq!(url("http://[::ffff:1.2.3.4]/"), "1.2.3.4");
        assert_eq!(url("2001:db8::1"), "[2001:db8::1]");
    }

    #[test]
    fn path_rules() {
        assert_eq!(url("a.com/x/./y/../z"), "a.com/x/z");
        assert_eq!(url("a.com/../../x"), "a.com/x");
        assert_eq!(url("a.com//x///y/"), "a.com/x/y");
        assert_eq!(url("a.com/A%2Fb%2e%2E/C"), "a.com/a/b../c");
        assert_eq!(url("a.com/A/b/%2e%2E/C"), "a.com/a/c");
        assert_eq!(url("a.com/x/?q=1"), "a.com/x/?q=1");
        assert_eq!(url("a.com?q=1"), "a.com/?q=1");
        assert_eq!(url("a.com/a/..?q"), "a.com/?q");
        assert_eq!(url("a.com/Path?Q=A%41"), "a.com/path?q=aa");
        assert_eq!(url("a.com/?"), "a.com");
        assert_eq!(url("a.com/x/?"), "a.com/x");
        assert_eq!(url("a.com/100%25"), "a.com/100%25");
        assert_eq!(url("a.com/%23x"), "a.com/%23x");
    }

    #[test]
    fn masks_pass_through() {
        assert_eq!(url("*.Evil.com/*"), "*.evil.com/*");
        assert_eq!(url("discord*.gift/*"), "discord*.gift/*");
        assert_eq!(url("http://www.host.com/*.EXE"), "host.com/*.exe");
    }

    #[test]
    fn hashes() {
        let mut d = [0u8; 32];
        assert_eq!(
            hash_digest(b" d41d8cd98f00b204e9800998ecf8427e ", &mut d),
            Some(16)
        );
        let lower = d;
        assert_eq!(
            hash_digest(b"D41D8CD98F00B204E9800998ECF8427E", &mut d),
            Some(16)
        );
        assert_eq!(d, lower);
        assert_eq!(hash_digest(b"xyz", &mut d), None);
        assert_eq!(
            hash_digest(b"d41d8cd98f00b204e9800998ecf8427", &mut d),
            None
        );
        let mut d = [0u8; 32];
        assert_eq!(
            hash_digest(b"00ff00ff00ff00ff00ff00ff00ff00ff", &mut d),
            Some(16)
        );
        assert_eq!(&d[..2], &[0, 255]);
    }

    #[test]
    fn hash_digest_accepts_exactly_hex_digits_in_every_position() {
        // Every byte value, at the first, a middle and the last position of digests of
        // each length: decoded as `u8::from_str_radix` would, or refused.
        for len in [32, 40, 64] {
            let base: Vec<u8> = (0..len)
                .map(|i| b"0123456789abcdefABCDEF"[i % 22])
                .collect();
            for pos in [0, len / 2 + 1, len - 1] {
                for b in 0..=255u8 {
                    let mut v = base.clone();
                    v[pos] = b;
                    let mut d = [0u8; 32];
                    let got = hash_digest(&v, &mut d);
                    let want: Option<Vec<u8>> = v
                        .chunks(2)
                        .map(|p| {
                            std::str::from_utf8(p)
                                .ok()
                                .filter(|s| s.bytes().all(|c| c.is_ascii_hexdigit()))
                                .and_then(|s| u8::from_str_radix(s, 16).ok())
                        })
                        .collect();
                    match want {
                        Some(bytes) => {
                            assert_eq!(got, Some(len / 2), "{len} {pos} {b}");
                            assert_eq!(&d[..len / 2], &bytes[..], "{len} {pos} {b}");
                        }
                        // (Whitespace at either end is trimmed: one digit short.)
                        None => assert_eq!(got, None, "{len} {pos} {b}"),
                    }
                }
            }
        }
    }

    #[test]
    fn ip_entries() {
        let r = parse_ip_entry(b"10.0.0.0/8").expect("cidr");
        assert_eq!(
            (r.family, r.start, r.end),
            (Family::V4, 0x0a00_0000, 0x0aff_ffff)
        );
        let r = parse_ip_entry(b"10.1.2.3/8").expect("host bits are masked");
        assert_eq!(r.start, 0x0a00_0000);
        let r = parse_ip_entry(b"::ffff:1.2.3.4").expect("mapped");
        assert_eq!((r.family, r.start), (Family::V4, 0x0102_0304));
        let r = parse_ip_entry(b"1.1.1.1-1.1.1.10").expect("range");
        assert_eq!((r.start, r.end), (0x0101_0101, 0x0101_010a));
        assert!(parse_ip_entry(b"1.1.1.9-1.1.1.1").is_none());
        assert!(parse_ip_entry(b"1.1.1.1/33").is_none());
        let r = parse_ip_entry(b"2001:db8::/32").expect("v6 cidr");
        assert_eq!(r.family, Family::V6);
        assert!(parse_ip_entry(b"0.0.0.0/0").is_some());
        assert!(parse_ip_entry(b"::/0").is_some());
    }

    #[test]
    fn ranges_split_into_disjoint_cidrs() {
        let r = IpRange {
            family: Family::V4,
            start: 1,
            end: 10,
        };
        let cidrs = range_to_cidrs(r);
        assert_eq!(cidrs, vec![(1, 32), (2, 31), (4, 30), (8, 31), (10, 32)]);
        let all = IpRange {
            family: Family::V6,
            start: 0,
            end: u128::MAX,
        };
        assert_eq!(range_to_cidrs(all), vec![(0, 0)]);
        let all4 = IpRange {
            family: Family::V4,
            start: 0,
            end: u32::MAX as u128,
        };
        assert_eq!(range_to_cidrs(all4), vec![(0, 0)]);
    }

    #[test]
    fn detection() {
        assert_eq!(detect(b"D41D8CD98F00B204E9800998ECF8427E"), Kind::Hash);
        assert_eq!(detect(b"10.0.0.0/8"), Kind::Ip);
        assert_eq!(detect(b"1.2.3.4-1.2.3.9"), Kind::Ip);
        assert_eq!(detect(b"gmer.com"), Kind::Url);
        assert_eq!(detect(b"2001:db8::1"), Kind::Ip);
    }

    #[test]
    fn domains() {
        let mut out = Vec::new();
        assert!(normalize_domain(b"http://WWW.Evil.com./x", &mut out));
        assert_eq!(out, b"evil.com");
        assert!(!normalize_domain(b"", &mut out));
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn url_normalization_is_idempotent(s in "[a-zA-Z0-9:/@%?#.*\\\\ _\\-\\[\\]]{0,40}") {
                let mut once = Vec::new();
                normalize_url(s.as_bytes(), &mut once);
                let mut twice = Vec::new();
                normalize_url(&once, &mut twice);
                prop_assert_eq!(String::from_utf8_lossy(&once), String::from_utf8_lossy(&twice));
            }

            #[test]
            fn normalizers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
                let mut out = Vec::new();
                normalize_url(&bytes, &mut out);
                normalize_domain(&bytes, &mut out);
                let _ = hash_digest(&bytes, &mut [0u8; 32]);
                let _ = parse_ip_entry(&bytes);
                let _ = detect(&bytes);
            }

            #[test]
            fn url_normalization_of_arbitrary_bytes_is_idempotent(bytes in proptest::collection::vec(any::<u8>(), 0..60)) {
                let mut once = Vec::new();
                normalize_url(&bytes, &mut once);
                let mut twice = Vec::new();
                normalize_url(&once, &mut twice);
                prop_assert_eq!(once, twice);
            }

            #[test]
            fn cidr_cover_is_exact(a in any::<u32>(), b in any::<u32>()) {
                let (lo, hi) = (a.min(b) as u128, a.max(b) as u128);
                let cidrs = range_to_cidrs(IpRange { family: Family::V4, start: lo, end: hi });
                let mut next = lo;
                for (net, len) in cidrs {
                    prop_assert_eq!(net, next);
                    let size = 1u128 << (32 - len as u32);
                    prop_assert_eq!(net % size, 0);
                    next = net + size;
                }
                prop_assert_eq!(next, hi + 1);
            }
        }
    }
}
