//! Feeds that update themselves (SPEC §13): a `[[feed]]` with a `url` is downloaded
//! into the state directory, compiled there into an index, and refreshed every
//! `refresh`, on a thread of its own; the serving threads only ever see a finished
//! index swapped in by a reload.
//!
//! For each feed `NAME` the state directory holds `NAME.<ext>` (the feed as last
//! downloaded, decompressed), `NAME.tracer` (its index, which the engine serves) and
//! `NAME.meta.json` (where it came from, its `ETag`/`Last-Modified`, when it was
//! fetched and last confirmed current). Every file is written under a temporary name
//! and renamed into place, so a crash leaves the previous copy whole; a restart serves
//! what the directory holds before any network access.
//!
//! A refresh asks with `If-None-Match`/`If-Modified-Since`; `304 Not Modified` only
//! records that the data is current. A new body (gzip accepted, as a
//! `Content-Encoding` or as a `.gz` file) is decompressed, compiled, and swapped in
//! only if all of that worked and no more than `max_skipped` rows were malformed.
//! Anything else (no connection, a status other than 2xx/304, a truncated download,
//! a feed that no longer parses) keeps the data served before, is logged with the
//! age of that data, and is retried after 10 s, doubling up to `refresh`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::enrich::{client, Tls};
use crate::index::compile::{Compiler, FeedSpec};

/// A feed to download.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteFeed {
    /// The stem of its files in the state directory (unique among feeds).
    pub name: String,
    pub url: String,
    pub refresh: Duration,
    pub headers: Vec<(String, String)>,
    /// HTTP Basic credentials.
    pub basic: Option<(String, String)>,
    pub tls: Tls,
    /// How to read and compile it (`path` is ignored: it is the download).
    pub spec: FeedSpec,
    pub strict: bool,
    pub allow_broad_masks: bool,
}

impl RemoteFeed {
    /// Its compiled index in `state_dir`: what the engine serves.
    pub fn index_path(&self, state_dir: &Path) -> PathBuf {
        state_dir.join(format!("{}.tracer", self.name))
    }

    fn meta_path(&self, state_dir: &Path) -> PathBuf {
        state_dir.join(format!("{}.meta.json", self.name))
    }

    /// The downloaded feed's file: the URL's extension (without `.gz`), so the
    /// format is recognized as for a local file.
    fn feed_path(&self, state_dir: &Path) -> PathBuf {
        let path = reqwest::Url::parse(&self.url)
            .map(|u| u.path().to_string())
            .unwrap_or_default();
        let last = path.rsplit('/').next().unwrap_or("");
        let last = last.strip_suffix(".gz").unwrap_or(last);
        let ext = Path::new(last)
            .extension()
            .and_then(|e| e.to_str())
            .filter(|e| {
                matches!(
                    *e,
                    "json" | "jsonl" | "ndjson" | "csv" | "tsv" | "txt" | "list"
                )
            })
            .unwrap_or("feed");
        state_dir.join(format!("{}.{ext}", self.name))
    }

    /// The URL as logs show it: without credentials.
    pub fn shown_url(&self) -> String {
        client::shown_url(&self.url)
    }
}

/// What the state directory remembers of a feed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Meta {
    url: String,
    etag: Option<String>,
    last_modified: Option<String>,
    /// When the data served was downloaded.
    fetched_unix: u64,
    /// When the data served was last confirmed current (downloaded, or `304`).
    checked_unix: u64,
    records: u64,
    skipped: u64,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn from_unix(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s)
}

/// One feed's state, as the metrics and logs show it.
#[derive(Clone, Debug, Default)]
pub struct FeedStatus {
    pub url: String,
    /// When the data served was last confirmed current; `None`: never downloaded.
    pub checked: Option<SystemTime>,
    pub updates: u64,
    pub failures: u64,
    pub last_error: Option<String>,
}

/// Every feed's state, read by `/metrics`.
#[derive(Default)]
pub struct Status {
    feeds: Mutex<BTreeMap<String, FeedStatus>>,
}

impl Status {
    pub fn snapshot(&self) -> Vec<(String, FeedStatus)> {
        self.feeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut FeedStatus)) {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        f(feeds.entry(name.to_string()).or_default());
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("state directory {}: {source}", dir.display())]
    StateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("feed `{name}`: {reason}")]
    Client { name: String, reason: String },
}

/// Downloads, compiles and swaps in the feeds, on a thread of its own.
pub struct Updater {
    state_dir: PathBuf,
    feeds: Mutex<Vec<RemoteFeed>>,
    pub status: Arc<Status>,
    /// Wakes the thread when the feeds change.
    wake: tokio::sync::Notify,
}

/// What one attempt came to.
enum Fetched {
    NotModified,
    Updated { records: u64, skipped: u64 },
}

impl Updater {
    /// An updater for `feeds`, keeping its files in `state_dir` (created if needed).
    pub fn new(state_dir: PathBuf, feeds: Vec<RemoteFeed>) -> Result<Updater, UpdateError> {
        std::fs::create_dir_all(&state_dir).map_err(|source| UpdateError::StateDir {
            dir: state_dir.clone(),
            source,
        })?;
        for f in &feeds {
            client(f).map_err(|reason| UpdateError::Client {
                name: f.name.clone(),
                reason,
            })?;
        }
        let updater = Updater {
            state_dir,
            feeds: Mutex::new(Vec::new()),
            status: Arc::new(Status::default()),
            wake: tokio::sync::Notify::new(),
        };
        updater.set_feeds(feeds);
        Ok(updater)
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    fn set_feeds(&self, feeds: Vec<RemoteFeed>) {
        for f in &feeds {
            let meta = self.meta(f);
            let present = f.index_path(&self.state_dir).exists();
            self.status.update(&f.name, |s| {
                s.url = f.shown_url();
                s.checked =
                    (present && meta.checked_unix > 0).then(|| from_unix(meta.checked_unix));
            });
        }
        {
            let mut status = self.status.feeds.lock().unwrap_or_else(|p| p.into_inner());
            status.retain(|name, _| feeds.iter().any(|f| &f.name == name));
        }
        *self.feeds.lock().unwrap_or_else(|p| p.into_inner()) = feeds;
    }

    /// Replace the feeds (a re-read configuration): new ones are fetched at once.
    pub fn reconfigure(&self, feeds: Vec<RemoteFeed>) {
        self.set_feeds(feeds);
        self.wake.notify_one();
    }

    fn feeds(&self) -> Vec<RemoteFeed> {
        self.feeds.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn meta(&self, feed: &RemoteFeed) -> Meta {
        std::fs::read(feed.meta_path(&self.state_dir))
            .ok()
            .and_then(|b| serde_json::from_slice::<Meta>(&b).ok())
            .filter(|m| m.url == feed.url)
            .unwrap_or_default()
    }

    /// Before the first load: download the feeds that have no copy in the state
    /// directory yet (one attempt each). One that fails is served once a later
    /// attempt succeeds.
    pub fn fetch_missing(&self) {
        let missing: Vec<RemoteFeed> = self
            .feeds()
            .into_iter()
            .filter(|f| !f.index_path(&self.state_dir).exists())
            .collect();
        if missing.is_empty() {
            return;
        }
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!("cannot start the feed downloader: {e}");
                return;
            }
        };
        rt.block_on(async {
            for f in &missing {
                self.attempt(f).await;
            }
        });
    }

    /// Refresh the feeds until `stop` says so, calling `reload` after each swap.
    pub fn spawn(
        self: &Arc<Self>,
        reload: Box<dyn Fn() + Send>,
        mut stop: tokio::sync::watch::Receiver<Option<std::time::Instant>>,
    ) -> std::io::Result<()> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("tracer-feeds".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("cannot start the feed downloader: {e}");
                        return;
                    }
                };
                rt.block_on(async move {
                    // When each feed is due next, and how many times in a row it failed.
                    let mut due: BTreeMap<String, (std::time::Instant, u32)> = BTreeMap::new();
                    loop {
                        if stop.borrow().is_some() {
                            return;
                        }
                        let feeds = me.feeds();
                        let now = std::time::Instant::now();
                        due.retain(|name, _| feeds.iter().any(|f| &f.name == name));
                        for f in &feeds {
                            due.entry(f.name.clone()).or_insert_with(|| {
                                // From the age of what the state directory holds.
                                let checked = me.meta(f).checked_unix;
                                let age = SystemTime::now()
                                    .duration_since(from_unix(checked))
                                    .unwrap_or_default();
                                let present = f.index_path(&me.state_dir).exists();
                                let wait = if present {
                                    f.refresh.saturating_sub(age)
                                } else {
                                    Duration::ZERO
                                };
                                (now + wait, 0)
                            });
                        }
                        let mut changed = false;
                        for f in &feeds {
                            let Some(&(when, failures)) = due.get(&f.name) else {
                                continue;
                            };
                            if when > std::time::Instant::now() {
                                continue;
                            }
                            let (ok, updated) = me.attempt(f).await;
                            changed |= updated;
                            let failures = if ok { 0 } else { failures + 1 };
                            let wait = if ok {
                                f.refresh
                            } else {
                                backoff(f.refresh, failures)
                            };
                            due.insert(
                                f.name.clone(),
                                (std::time::Instant::now() + wait, failures),
                            );
                        }
                        if changed {
                            reload();
                        }
                        let next = due.values().map(|(w, _)| *w).min();
                        let sleep = next.map_or(Duration::from_secs(3600), |w| {
                            w.saturating_duration_since(std::time::Instant::now())
                        });
                        tokio::select! {
                            _ = tokio::time::sleep(sleep) => {}
                            _ = me.wake.notified() => {}
                            _ = stop.changed() => return,
                        }
                    }
                });
            })?;
        Ok(())
    }

    /// One attempt at a feed, logged and counted: (it worked, new data was swapped in).
    async fn attempt(&self, feed: &RemoteFeed) -> (bool, bool) {
        let meta = self.meta(feed);
        let started = std::time::Instant::now();
        match self.fetch(feed, &meta).await {
            Ok(Fetched::NotModified) => {
                tracing::info!(feed = %feed.name, url = %feed.shown_url(), "feed not modified (304): the data served is current");
                self.status.update(&feed.name, |s| {
                    s.checked = Some(SystemTime::now());
                    s.last_error = None;
                });
                (true, false)
            }
            Ok(Fetched::Updated { records, skipped }) => {
                tracing::info!(
                    feed = %feed.name,
                    url = %feed.shown_url(),
                    records,
                    skipped,
                    ms = started.elapsed().as_millis() as u64,
                    "feed downloaded and compiled; swapping it in"
                );
                self.status.update(&feed.name, |s| {
                    s.checked = Some(SystemTime::now());
                    s.updates += 1;
                    s.last_error = None;
                });
                (true, true)
            }
            Err(reason) => {
                let served = feed.index_path(&self.state_dir).exists();
                let age = (served && meta.checked_unix > 0).then(|| {
                    SystemTime::now()
                        .duration_since(from_unix(meta.checked_unix))
                        .unwrap_or_default()
                });
                let still = match age {
                    Some(a) => format!(
                        "still serving the data confirmed {} ago",
                        humantime::format_duration(Duration::from_secs(a.as_secs()))
                    ),
                    None => "nothing from it is served yet".to_string(),
                };
                tracing::warn!(feed = %feed.name, url = %feed.shown_url(), "feed update failed: {reason}; {still}");
                self.status.update(&feed.name, |s| {
                    s.failures += 1;
                    s.last_error = Some(reason);
                });
                (false, false)
            }
        }
    }

    /// Download, decompress, compile and put in place; the old files stay on error.
    async fn fetch(&self, feed: &RemoteFeed, meta: &Meta) -> Result<Fetched, String> {
        let dir = &self.state_dir;
        let index = feed.index_path(dir);
        let client = client(feed)?;
        let mut req = client.get(&feed.url);
        for (k, v) in &feed.headers {
            req = req.header(k, v);
        }
        if let Some((user, password)) = &feed.basic {
            req = req.basic_auth(user, Some(password));
        }
        if index.exists() {
            if let Some(etag) = &meta.etag {
                req = req.header(reqwest::header::IF_NONE_MATCH, etag);
            }
            if let Some(lm) = &meta.last_modified {
                req = req.header(reqwest::header::IF_MODIFIED_SINCE, lm);
            }
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| format!("request: {}", client::error_message(e)))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_MODIFIED && index.exists() {
            let mut meta = meta.clone();
            meta.checked_unix = unix(SystemTime::now());
            write_meta(&feed.meta_path(dir), &meta)?;
            return Ok(Fetched::NotModified);
        }
        if !status.is_success() {
            return Err(format!("HTTP status {status}"));
        }
        let header = |name: reqwest::header::HeaderName| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let etag = header(reqwest::header::ETAG);
        let last_modified = header(reqwest::header::LAST_MODIFIED);
        // The body, to a temporary file.
        let download = dir.join(format!("{}.download", feed.name));
        let mut out =
            std::fs::File::create(&download).map_err(|e| format!("{}: {e}", download.display()))?;
        let mut bytes = 0u64;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    bytes += chunk.len() as u64;
                    out.write_all(&chunk)
                        .map_err(|e| format!("{}: {e}", download.display()))?;
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = std::fs::remove_file(&download);
                    return Err(format!(
                        "download cut after {bytes} bytes: {}",
                        client::error_message(e)
                    ));
                }
            }
        }
        drop(out);
        let result = self.install(feed, &download, etag, last_modified);
        let _ = std::fs::remove_file(&download);
        result
    }

    /// A downloaded body → the feed file (decompressed), its index, its meta.
    fn install(
        &self,
        feed: &RemoteFeed,
        download: &Path,
        etag: Option<String>,
        last_modified: Option<String>,
    ) -> Result<Fetched, String> {
        let dir = &self.state_dir;
        let final_feed = feed.feed_path(dir);
        let new_feed = final_feed.with_extension(format!(
            "{}.new",
            final_feed
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("feed")
        ));
        let mut head = [0u8; 2];
        let gz = std::fs::File::open(download)
            .and_then(|mut f| f.read(&mut head))
            .map(|n| n == 2 && head == [0x1f, 0x8b])
            .map_err(|e| format!("{}: {e}", download.display()))?;
        if gz {
            let src = std::fs::File::open(download).map_err(|e| e.to_string())?;
            let mut dec = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(src));
            let mut dst = std::fs::File::create(&new_feed)
                .map_err(|e| format!("{}: {e}", new_feed.display()))?;
            if let Err(e) = std::io::copy(&mut dec, &mut dst) {
                let _ = std::fs::remove_file(&new_feed);
                return Err(format!("gzip: {e}"));
            }
        } else {
            std::fs::rename(download, &new_feed)
                .map_err(|e| format!("{}: {e}", new_feed.display()))?;
        }
        let now = SystemTime::now();
        let mut spec = feed.spec.clone();
        spec.path = new_feed.clone();
        if spec.category.is_none() {
            spec.category = Some(feed.name.clone());
        }
        if spec.format.is_none() {
            // Named `…json.new`: give the reader the extension it knows.
            spec.format = crate::feed::Format::detect(&final_feed)
                .ok()
                .filter(|_| final_feed.extension().is_some_and(|e| e != "feed"));
        }
        let validator = match (&etag, &last_modified) {
            (Some(e), _) => format!(", ETag {e}"),
            (None, Some(lm)) => format!(", Last-Modified {lm}"),
            _ => String::new(),
        };
        spec.origin = Some(format!(
            "{} (downloaded {}{validator})",
            feed.shown_url(),
            humantime::format_rfc3339_seconds(now)
        ));
        let compiled = (|| {
            let mut compiler = Compiler::new(feed.strict).allow_broad_masks(feed.allow_broad_masks);
            let summary = compiler.add_feed(&spec)?;
            let sections = compiler.finish()?;
            crate::index::storage::write_atomically(&feed.index_path(dir), &sections)?;
            Ok::<_, Box<dyn std::error::Error>>(summary)
        })();
        let summary = match compiled {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&new_feed);
                return Err(format!("the new data is refused: {e}"));
            }
        };
        std::fs::rename(&new_feed, &final_feed)
            .map_err(|e| format!("{}: {e}", final_feed.display()))?;
        let meta = Meta {
            url: feed.url.clone(),
            etag,
            last_modified,
            fetched_unix: unix(now),
            checked_unix: unix(now),
            records: summary.records,
            skipped: summary.skipped,
        };
        write_meta(&feed.meta_path(dir), &meta)?;
        Ok(Fetched::Updated {
            records: summary.records,
            skipped: summary.skipped,
        })
    }
}

/// The wait before the `failures`-th retry: 10 s doubling, at most `refresh`.
fn backoff(refresh: Duration, failures: u32) -> Duration {
    let exp = Duration::from_secs(10).saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    exp.min(refresh).max(Duration::from_secs(1).min(refresh))
}

fn write_meta(path: &Path, meta: &Meta) -> Result<(), String> {
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(meta).map_err(|e| e.to_string())?;
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The HTTP client for a feed: its TLS settings, gzip, bounded waits.
fn client(feed: &RemoteFeed) -> Result<reqwest::Client, String> {
    let ca = client::ca_certs(&feed.tls)?;
    client::builder(&feed.tls, &ca, Duration::from_secs(30))
        .read_timeout(Duration::from_secs(120))
        .build()
        .map_err(client::error_message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_refresh() {
        let r = Duration::from_secs(1800);
        assert_eq!(backoff(r, 1), Duration::from_secs(10));
        assert_eq!(backoff(r, 2), Duration::from_secs(20));
        assert_eq!(backoff(r, 9), Duration::from_secs(1800));
        assert_eq!(backoff(Duration::from_secs(1), 3), Duration::from_secs(1));
    }
}
