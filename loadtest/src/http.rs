//! `--http`: the load as KUMA's `cybertrace-http` source makes it (SPEC §12).
//!
//! Each connection is one HTTP/1.1 keep-alive connection (plain, or TLS with rustls)
//! carrying one request at a time, as KUMA's enrichment does: `POST` a JSON array of
//! bare objects, wait for the answer, send the next. hyper's low-level client is used
//! rather than a pooled one so that a connection here is a connection on the server,
//! and a broken one is seen (its request counted as lost) rather than retried out of
//! sight. This module owns the endpoint (URL, loopback check, trust, credentials), a
//! connection, and one exchange on it; pacing, checking, counting and reconnecting
//! are [`crate::run`]'s, as for the TCP mode.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

use crate::workload::Sent;

/// How an `https://` target's certificate is trusted. There are no bundled roots:
/// the targets are on this machine, with a certificate the user made.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Any certificate (`--insecure`); the handshake signatures are still verified.
    Any,
    /// Certificates that chain to one in this PEM file, or are one of them
    /// (`--ca-file`).
    CaFile(PathBuf),
}

/// Where and how the requests go: everything about the URL, decided once at start.
pub struct Endpoint {
    /// The URL as given, for the report.
    pub url: String,
    /// The loopback address connected to.
    pub addr: SocketAddr,
    /// `https://`: the TLS client and the name the certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// The request target (origin form: path and query).
    path: Uri,
    host: HeaderValue,
    authorization: Option<HeaderValue>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url)
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Check `url` (http or https, a loopback host), resolve it, and prepare TLS and
    /// the `Authorization` header. `credentials` is `(user, password)`.
    pub fn new(
        url: &str,
        credentials: Option<(&str, &str)>,
        trust: Option<Trust>,
    ) -> anyhow::Result<Endpoint> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("--http {url}: not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => anyhow::bail!("--http {url}: the URL must start with http:// or https://"),
        };
        let authority = uri
            .authority()
            .with_context(|| format!("--http {url}: no host in the URL"))?;
        anyhow::ensure!(
            !authority.as_str().contains('@'),
            "--http {url}: give credentials with --user and --password, not in the URL"
        );
        let host = authority.host();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let addr = loopback_addr(host, port).with_context(|| format!("--http {url}"))?;
        let tls = match (https, trust) {
            (true, Some(trust)) => {
                let bare = host.trim_start_matches('[').trim_end_matches(']');
                let name = ServerName::try_from(bare.to_string())
                    .with_context(|| format!("--http {url}: {host} is not a TLS server name"))?;
                Some((TlsConnector::from(tls_config(&trust)?), name))
            }
            (true, None) => anyhow::bail!(
                "--http {url}: https needs --ca-file PEM (the certificate or CA the server's \
                 certificate comes from, e.g. the cert.pem `tracer cert` wrote) or --insecure \
                 (accept any certificate); loadtest bundles no root certificates"
            ),
            (false, Some(_)) => {
                anyhow::bail!("--http {url}: --ca-file and --insecure are for https:// URLs only")
            }
            (false, None) => None,
        };
        let path = match uri.path_and_query() {
            Some(pq) => pq.as_str().parse()?,
            None => Uri::from_static("/"),
        };
        let authorization = credentials
            .map(|(user, password)| {
                let token =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                let mut value = HeaderValue::from_str(&format!("Basic {token}"))?;
                value.set_sensitive(true);
                Ok::<_, anyhow::Error>(value)
            })
            .transpose()?;
        Ok(Endpoint {
            url: url.to_string(),
            addr,
            tls,
            path,
            host: HeaderValue::from_str(authority.as_str())?,
            authorization,
        })
    }

    /// The `POST` for `sent`: a JSON array of `{"object": value}`.
    fn request(&self, sent: &[Sent]) -> Request<Full<Bytes>> {
        #[derive(serde::Serialize)]
        struct Object<'a> {
            object: &'a str,
        }
        let objects: Vec<Object<'_>> = sent.iter().map(|s| Object { object: &s.value }).collect();
        // Strings into memory: serde_json fails only on I/O errors and non-string map
        // keys, neither of which can happen here.
        let body = serde_json::to_vec(&objects).expect("JSON of strings into a Vec");
        let mut req = Request::new(Full::new(Bytes::from(body)));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.path.clone();
        let headers = req.headers_mut();
        headers.insert(HOST, self.host.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(auth) = &self.authorization {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        req
    }
}

/// The address of a loopback `host`: an address literal (IPv6 in brackets) must be
/// loopback; a name is resolved once, and all its addresses must be (IPv4 preferred,
/// as servers often listen on 127.0.0.1 only).
fn loopback_addr(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        anyhow::ensure!(
            ip.is_loopback(),
            "{ip} is not a loopback address: loadtest only targets this machine"
        );
        return Ok(SocketAddr::new(ip, port));
    }
    let addrs: Vec<SocketAddr> = (bare, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {bare}"))?
        .collect();
    anyhow::ensure!(
        !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()),
        "{bare} does not resolve to loopback addresses only ({addrs:?}): loadtest only \
         targets this machine"
    );
    Ok(*addrs.iter().find(|a| a.is_ipv4()).unwrap_or(&addrs[0]))
}

/// rustls on ring, TLS 1.2 and 1.3, trusting what `trust` says; ALPN `http/1.1`.
fn tls_config(trust: &Trust) -> anyhow::Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let mut config = match trust {
        Trust::Any => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
        Trust::CaFile(path) => {
            let verifier = CaFile::new(path, provider)
                .with_context(|| format!("--ca-file {}", path.display()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `--ca-file`: the certificates of a PEM file, as trust anchors for webpki's usual
/// checks (chain, name, validity), and also pinned: a server that shows one of them
/// as its own certificate is trusted as it is. Self-signed certificates made with
/// `CA:TRUE` (openssl's `req -x509` default) are refused by webpki as end-entity
/// certificates; pinning lets `--ca-file` take the server's own `cert.pem` whatever
/// made it. Handshake signatures are verified either way.
#[derive(Debug)]
struct CaFile {
    pinned: Vec<CertificateDer<'static>>,
    webpki: Arc<WebPkiServerVerifier>,
}

impl CaFile {
    fn new(path: &Path, provider: Arc<CryptoProvider>) -> anyhow::Result<CaFile> {
        let pinned = CertificateDer::pem_file_iter(path)?.collect::<Result<Vec<_>, _>>()?;
        anyhow::ensure!(!pinned.is_empty(), "no certificate in the file");
        let mut roots = RootCertStore::empty();
        for cert in &pinned {
            roots.add(cert.clone())?;
        }
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
        Ok(CaFile { pinned, webpki })
    }
}

impl ServerCertVerifier for CaFile {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|c| c.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// `--insecure`: any certificate, for any name, at any time. The handshake's
/// signatures are still verified with the certificate's key, so the peer must hold
/// the key of the certificate it shows (a broken TLS stack still fails).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

type Sender = SendRequest<Full<Bytes>>;

/// One open HTTP/1.1 connection: hyper's sender, and the local task that drives the
/// connection's I/O (stopped when this is dropped).
pub struct Connection {
    sender: Sender,
    driver: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Endpoint {
    /// Open one connection: TCP, TLS for https, then HTTP/1.1. On failure, why.
    pub async fn connect(&self) -> Result<Connection, String> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => handshake(tcp).await,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                handshake(tls).await
            }
        }
    }
}

async fn handshake<S>(io: S) -> Result<Connection, String>
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {}", chain(&e)))?;
    // Its error, if any, reaches the request in flight through the sender.
    let driver = tokio::task::spawn_local(async move {
        let _ = connection.await;
    });
    Ok(Connection { sender, driver })
}

impl Connection {
    /// Wait until the connection can take the next request. An error means the
    /// server closed it since the last answer (`Connection: close`, an idle timeout).
    pub async fn ready(&mut self) -> Result<(), String> {
        self.sender.ready().await.map_err(|e| chain(&e))
    }

    /// `POST` `sent` to `ep` and read the whole answer: its status and body. An error
    /// means the connection failed with the request outstanding.
    pub async fn lookup(&mut self, ep: &Endpoint, sent: &[Sent]) -> Result<(u16, Bytes), String> {
        let exchange = async {
            let response = self.sender.send_request(ep.request(sent)).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        };
        exchange.await.map_err(|e| chain(&e))
    }
}

/// An error and its causes, `a: b: c` (hyper's own message is often only the first).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_are_accepted() {
        for url in [
            "http://127.0.0.1:9443/api/1.1/lookup",
            "http://127.1.2.3/api/1.1/lookup",
            "http://[::1]:9443/api/1.1/lookup",
            "http://localhost:9443/api/1.1/lookup",
        ] {
            let ep = Endpoint::new(url, None, None).unwrap_or_else(|e| panic!("{url}: {e:#}"));
            assert!(ep.addr.ip().is_loopback(), "{url}");
        }
        assert_eq!(
            Endpoint::new("http://[::1]:9443/x", None, None)
                .map(|e| e.addr)
                .ok(),
            Some("[::1]:9443".parse().expect("addr"))
        );
        for url in [
            "http://192.0.2.1:9443/api/1.1/lookup",
            "https://[2001:db8::1]/api/1.1/lookup",
            "http://0.0.0.0:9443/",
        ] {
            let e = Endpoint::new(url, None, Some(Trust::Any)).err();
            let text = e.map(|e| format!("{e:#}")).unwrap_or_default();
            assert!(text.contains("not a loopback address"), "{url}: {text}");
        }
    }

    #[test]
    fn bad_urls_and_trust_are_refused_with_a_reason() {
        let err = |url: &str, trust: Option<Trust>| {
            Endpoint::new(url, None, trust)
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default()
        };
        assert!(err("ftp://127.0.0.1/", None).contains("http:// or https://"));
        assert!(err("127.0.0.1:9443", None).contains("http:// or https://"));
        assert!(err("https://127.0.0.1:9443/api/1.1/lookup", None).contains("--ca-file"));
        assert!(err("http://127.0.0.1/", Some(Trust::Any)).contains("https:// URLs only"));
        assert!(err("http://u:p@127.0.0.1/", None).contains("--user"));
        assert!(err(
            "https://127.0.0.1/",
            Some(Trust::CaFile("/nonexistent/ca.pem".into()))
        )
        .contains("--ca-file /nonexistent/ca.pem"));
    }

    #[test]
    fn requests_carry_json_objects_auth_and_headers() {
        let ep = Endpoint::new(
            "http://127.0.0.1:9443/api/1.1/lookup?x=1",
            Some(("kuma", "s3cret")),
            None,
        )
        .expect("endpoint");
        let sent = vec![
            Sent {
                value: "http://example.com/x".into(),
                hit: true,
            },
            Sent {
                value: "a\"b".into(),
                hit: false,
            },
        ];
        let req = ep.request(&sent);
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri(), "/api/1.1/lookup?x=1");
        let h = req.headers();
        assert_eq!(h[HOST], "127.0.0.1:9443");
        assert_eq!(h[CONTENT_TYPE], "application/json");
        assert_eq!(h[ACCEPT], "application/json");
        // base64("kuma:s3cret")
        assert_eq!(h[AUTHORIZATION], "Basic a3VtYTpzM2NyZXQ=");
        assert!(h[AUTHORIZATION].is_sensitive());
        let body: serde_json::Value =
            serde_json::from_slice(&futures_body(req.into_body())).expect("JSON body");
        assert_eq!(
            body,
            serde_json::json!([{"object": "http://example.com/x"}, {"object": "a\"b"}])
        );
        let anonymous = Endpoint::new("http://127.0.0.1/", None, None).expect("endpoint");
        let req = anonymous.request(&sent);
        assert!(req.headers().get(AUTHORIZATION).is_none());
        assert_eq!(req.uri(), "/");
    }

    /// The bytes of a `Full` body.
    fn futures_body(body: Full<Bytes>) -> Bytes {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(body.collect())
            .map(|c| c.to_bytes())
            .unwrap_or_default()
    }
}
