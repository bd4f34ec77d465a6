//! The HTTP client both HTTP enrichers and feed downloads use: `reqwest` on rustls
//! with ring, the system's CAs plus a `ca_file`, certificate checks unless turned
//! off; and how its errors and URLs are shown (causes kept, credentials never).

use std::time::Duration;

use super::Tls;

/// rustls with ring (no cmake, no nasm), for every client and server in the process.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The extra CAs of `tls.ca_file` (none without one). Errors name the file.
pub fn ca_certs(tls: &Tls) -> Result<Vec<reqwest::Certificate>, String> {
    let Some(path) = &tls.ca_file else {
        return Ok(Vec::new());
    };
    let shown = |e: &dyn std::fmt::Display| format!("ca_file {}: {e}", path.display());
    let pem = std::fs::read(path).map_err(|e| shown(&e))?;
    reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| shown(&e))
}

/// A client builder with the TLS settings and a bounded connect; the caller adds
/// what is its own (timeouts, pool, user agent) and builds.
pub fn builder(
    tls: &Tls,
    ca: &[reqwest::Certificate],
    connect_timeout: Duration,
) -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
        .tls_certs_merge(ca.iter().cloned())
        .tls_danger_accept_invalid_certs(!tls.verify)
        .connect_timeout(connect_timeout)
        .user_agent(concat!("tracer/", env!("CARGO_PKG_VERSION")))
}

/// An error with its causes, `a: b: c` (reqwest's own message is terse: "error
/// sending request"), without the URL (which may carry credentials or the value).
pub fn error_message(e: reqwest::Error) -> String {
    error_chain(&e.without_url())
}

/// An error with its causes, `a: b: c`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(cause) = cur {
        let text = cause.to_string();
        // Some errors repeat their cause's message at the end of their own.
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = cause.source();
    }
    s
}

/// A URL (or URL template) as logs, `check-config` and `inspect` show it: without
/// the `user:password@` of its authority, and with the values of query parameters
/// named like a secret (`apikey=`, `token=`, `sig=`, …) masked.
pub fn shown_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let start = scheme_end + 3;
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let host_start = url[start..authority_end]
        .rfind('@')
        .map_or(start, |at| start + at + 1);
    let mut shown = format!("{}{}", &url[..start], &url[host_start..authority_end]);
    let rest = &url[authority_end..];
    let (before_fragment, fragment) = rest.split_at(rest.find('#').unwrap_or(rest.len()));
    match before_fragment.split_once('?') {
        None => shown.push_str(before_fragment),
        Some((path, query)) => {
            shown.push_str(path);
            shown.push('?');
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    shown.push('&');
                }
                match pair.split_once('=') {
                    Some((name, value)) if secret_name(name) && !is_placeholder(value) => {
                        shown.push_str(name);
                        shown.push_str("=********");
                    }
                    _ => shown.push_str(pair),
                }
            }
        }
    }
    shown.push_str(fragment);
    shown
}

/// A query parameter name that usually carries a secret.
fn secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "key",
        "token",
        "secret",
        "pass",
        "auth",
        "sig",
        "session",
        "credential",
    ]
    .iter()
    .any(|s| name.contains(s))
}

/// `{value}` or `{kind}`: filled in per lookup, not a secret.
fn is_placeholder(value: &str) -> bool {
    value.starts_with('{') && value.ends_with('}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_credentials() {
        for (url, shown) in [
            (
                "https://user:pw@feeds.example/x.json",
                "https://feeds.example/x.json",
            ),
            ("https://pw@feeds.example", "https://feeds.example"),
            (
                "http://u:p@h:8080/q?v={value}#f@x",
                "http://h:8080/q?v={value}#f@x",
            ),
            ("https://a.example/p@q", "https://a.example/p@q"),
            ("https://a:b@c@d.example/", "https://d.example/"),
            (
                "https://ti.example/v1?apikey=s3cret&q={value}&format=csv",
                "https://ti.example/v1?apikey=********&q={value}&format=csv",
            ),
            (
                "https://f.example/x.csv?X-Amz-Signature=abc&Token={kind}#top",
                "https://f.example/x.csv?X-Amz-Signature=********&Token={kind}#top",
            ),
            ("not a url", "not a url"),
        ] {
            assert_eq!(shown_url(url), shown, "{url}");
        }
    }

    #[test]
    fn an_error_keeps_its_causes() {
        #[derive(Debug)]
        struct Wrap(&'static str, std::io::Error);
        impl std::fmt::Display for Wrap {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Wrap {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.1)
            }
        }
        let refused = || std::io::Error::other("connection refused");
        let e = Wrap("sending the request", refused());
        assert_eq!(error_chain(&e), "sending the request: connection refused");
        let e = Wrap("connect: connection refused", refused());
        assert_eq!(error_chain(&e), "connect: connection refused");
    }
}
