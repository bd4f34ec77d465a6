//! Feeds that update themselves (SPEC §13): a `[[feed]]` with a `url` is downloaded
//! into the state directory, compiled there into an index, and refreshed every
//! `refresh`, on a thread of its own; the serving threads only ever see a finished
//! index swapped in by a reload.
//!
//! For each feed `NAME` the state directory holds `NAME.<ext>` (the feed as last
//! downloaded, decompressed), `NAME.tracer` (its index, which the engine serves) and
//! `NAME.meta.json` (where it came from, its `ETag`/`Last-Modified`, when it was
//! fetched and last confirmed current, and a fingerprint of the compile settings the
//! index was built with). The URL there is the one logs show: without credentials,
//! secret-looking query values masked. It is also what tells a changed `url` apart:
//! a new password fetches the same data, and anything derived from the secret (even
//! a hash) could be attacked offline by whoever reads the file. Every file is
//! written under a temporary name and renamed into place, so a crash leaves the
//! previous copy whole; a restart serves what the directory holds before any network
//! access.
//!
//! An index is only trusted while it opens and was built from the configured URL
//! with the configured settings. Opening reads and checks the whole file, so it is
//! done once per version of the file this process sees (its length and modification
//! time), not at every refresh. One that does not open (an older build's format, a
//! damaged file) or was built with other settings is recompiled from the kept feed
//! file at once, at start or when the configuration is re-read; when that cannot be
//! done (no kept file, another URL, the file refused) the feed is downloaded again
//! without validators, so a `304` cannot keep the stale index.
//!
//! A refresh asks with `If-None-Match`/`If-Modified-Since`; `304 Not Modified` only
//! records that the data is current. A new body (gzip accepted, as a
//! `Content-Encoding` or as a `.gz` file) is decompressed, compiled, and swapped in
//! only if all of that worked and no more than `max_skipped` rows were malformed.
//! Anything else (no connection, a status other than 2xx/304, a truncated download,
//! a feed that no longer parses) keeps the data served before, is logged with the
//! age of that data, and is retried after 10 s, doubling up to `refresh`.
//!
//! The downloads before the first load share one deadline, [`STARTUP_DEADLINE`], so a
//! slow feed server cannot hold back the start (and systemd's readiness); a feed not
//! downloaded by then is left to the background refresh. Only the network is under
//! that deadline: the feeds downloaded in time are compiled after it, as local feeds
//! are, so a long compile neither outlasts the deadline nor stalls other downloads.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::enrich::{client, Tls};
use crate::index::compile::{Compiler, FeedSpec, FeedSummary};
use crate::index::Index;

/// How long the downloads before the first load may take, all together.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(60);

/// How many redirects a download follows.
const MAX_REDIRECTS: usize = 5;

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

    /// The URL as logs show it, and as the meta file identifies the data: without
    /// credentials, secret-looking query values masked.
    pub fn shown_url(&self) -> String {
        client::shown_url(&self.url)
    }

    /// A fingerprint of everything the compiled index depends on besides the feed
    /// file (whose format follows the URL, compared apart). Debug text keeps it
    /// short to write; should it differ between builds, that costs one recompile.
    fn settings_fingerprint(&self) -> u64 {
        let s = &self.spec;
        let text = format!(
            "{:?}",
            (
                &s.key,
                s.kind,
                &s.category,
                s.format,
                &s.records,
                s.max_skipped,
                self.strict,
                self.allow_broad_masks,
            )
        );
        xxhash_rust::xxh3::xxh3_64(text.as_bytes())
    }

    /// Whether requests carry secrets (headers, credentials) that must not follow a
    /// redirect to another server.
    fn sends_secrets(&self) -> bool {
        !self.headers.is_empty() || self.basic.is_some() || self.shown_url() != self.url
    }
}

/// What the state directory remembers of a feed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Meta {
    /// Where it came from, as [`RemoteFeed::shown_url`] shows it; older builds wrote
    /// the whole URL, credentials included (see [`Meta::holds_secrets`]).
    url: String,
    /// Written by one older build: a fast unsalted hash of the whole URL, password
    /// included. Read only to be dropped from the file.
    #[serde(default, skip_serializing)]
    url_xxh3: Option<u64>,
    /// [`RemoteFeed::settings_fingerprint`] of the settings the index was built with.
    #[serde(default)]
    settings_xxh3: Option<u64>,
    etag: Option<String>,
    last_modified: Option<String>,
    /// When the data served was downloaded.
    fetched_unix: u64,
    /// When the data served was last confirmed current (downloaded, or `304`).
    checked_unix: u64,
    records: u64,
    skipped: u64,
}

impl Meta {
    /// Whether the kept files were downloaded from `feed`'s URL, credentials and
    /// secret query values aside (files of every build: the whole URL, or as shown).
    fn same_url(&self, feed: &RemoteFeed) -> bool {
        !self.url.is_empty() && client::shown_url(&self.url) == feed.shown_url()
    }

    /// Whether an older build left a secret here: the whole URL, or its hash.
    fn holds_secrets(&self) -> bool {
        self.url_xxh3.is_some() || client::shown_url(&self.url) != self.url
    }

    /// Times that cannot be true (see [`from_unix`]) become unknown (0), so nothing
    /// downstream computes with them or writes them back.
    fn with_known_times(mut self) -> Meta {
        for t in [&mut self.fetched_unix, &mut self.checked_unix] {
            if from_unix(*t).is_none() {
                *t = 0;
            }
        }
        self
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The last second of the year 9999: RFC 3339 (and humantime, which fails to
/// format, so `format!` panics) has no later time.
const LAST_SHOWN_UNIX: u64 = 253_402_300_799;

/// How far ahead of the clock a time from the meta file may be and still be taken
/// as true (the clock set back a little since); further is a damaged file.
const CLOCK_SLACK: Duration = Duration::from_secs(24 * 3600);

/// A time from the meta file; `None` (unknown) for 0 (never), for one after the
/// year 9999 or more than [`CLOCK_SLACK`] ahead of the clock (a damaged file).
fn from_unix(s: u64) -> Option<SystemTime> {
    if s == 0 || s > LAST_SHOWN_UNIX {
        return None;
    }
    let t = UNIX_EPOCH.checked_add(Duration::from_secs(s))?;
    let latest = SystemTime::now().checked_add(CLOCK_SLACK);
    latest.is_none_or(|latest| t <= latest).then_some(t)
}

/// `t` in RFC 3339; `None` for a time it cannot write (before 1970, after 9999:
/// only a clock set far wrong gives one).
fn shown_time(t: SystemTime) -> Option<String> {
    let s = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
    (s <= LAST_SHOWN_UNIX).then(|| humantime::format_rfc3339_seconds(t).to_string())
}

/// How long ago `s` was; `None` when unknown. A time ahead of the clock (by less
/// than [`CLOCK_SLACK`]) is now.
fn age(s: u64) -> Option<Duration> {
    from_unix(s).map(|t| SystemTime::now().duration_since(t).unwrap_or_default())
}

/// The instant `wait` from now; a wait past what the clock holds is a year (and is
/// cut short by anything that wakes the updater).
fn after(wait: Duration) -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_add(wait)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
}

/// A scratch file in the state directory, removed however the code holding it ends
/// (an error, a cancelled download); renaming it away first keeps it.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A file's length and modification time: which version of an index this process
/// last wrote or opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: SystemTime,
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp {
            len: m.len(),
            modified: m.modified().ok()?,
        })
    }
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
    /// Feeds [`Updater::fetch_missing`] found (or made) current, as configured then:
    /// the thread need not look at them again before they are due.
    current_at_start: Mutex<Vec<RemoteFeed>>,
    /// Per feed, the [`Stamp`] of its index when this process last wrote it or
    /// opened it without error: while the file still has it, it is not read again.
    sound: Mutex<BTreeMap<String, Stamp>>,
}

/// What one attempt came to.
enum Fetched {
    NotModified,
    Updated { records: u64, skipped: u64 },
}

/// What a feed server answered, before anything is compiled.
enum Answer {
    /// `304 Not Modified` to the validators sent (the meta file says so already).
    NotModified,
    /// A body, whole, in `NAME.download`.
    Body(Downloaded),
}

struct Downloaded {
    /// Removed unless installed.
    file: Scratch,
    etag: Option<String>,
    last_modified: Option<String>,
}

/// What the state directory holds for a feed, once made to fit its configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Local {
    /// An index that opens, built from the configured URL with the configured settings.
    Ready,
    /// Just recompiled from the kept download: a reload serves it.
    Rebuilt,
    /// Nothing that fits: download without validators. `served`: an index that
    /// opens (from another URL or other settings) is there, served until then.
    Missing { served: bool },
}

/// When a feed is next due, for the configuration that was computed for.
struct Due {
    when: std::time::Instant,
    /// Failed attempts in a row.
    failures: u32,
    feed: RemoteFeed,
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
            current_at_start: Mutex::new(Vec::new()),
            sound: Mutex::new(BTreeMap::new()),
        };
        updater.set_feeds(feeds);
        Ok(updater)
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// New or changed feeds start with the age of an index this process knows to
    /// open (else none, until [`Updater::prepare`] says); unchanged ones keep theirs.
    fn set_feeds(&self, feeds: Vec<RemoteFeed>) {
        let mut current = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        for f in feeds.iter().filter(|f| !current.contains(f)) {
            let meta = self.meta(f);
            let sound = self.is_sound(f);
            self.status.update(&f.name, |s| {
                s.url = f.shown_url();
                s.checked = if sound && meta.same_url(f) {
                    from_unix(meta.checked_unix)
                } else {
                    None
                };
            });
        }
        {
            let mut status = self.status.feeds.lock().unwrap_or_else(|p| p.into_inner());
            status.retain(|name, _| feeds.iter().any(|f| &f.name == name));
        }
        *current = feeds;
    }

    /// Replace the feeds (a re-read configuration): new ones are fetched, changed
    /// ones recompiled or fetched, at once.
    pub fn reconfigure(&self, feeds: Vec<RemoteFeed>) {
        self.set_feeds(feeds);
        self.wake.notify_one();
    }

    fn feeds(&self) -> Vec<RemoteFeed> {
        self.feeds.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What the state directory remembers of `feed` (the default when nothing),
    /// times that cannot be true as unknown.
    fn meta(&self, feed: &RemoteFeed) -> Meta {
        std::fs::read(feed.meta_path(&self.state_dir))
            .ok()
            .and_then(|b| serde_json::from_slice::<Meta>(&b).ok())
            .unwrap_or_default()
            .with_known_times()
    }

    /// Whether `feed`'s index is, unchanged, one this process wrote or opened.
    fn is_sound(&self, feed: &RemoteFeed) -> bool {
        let stamp = Stamp::of(&feed.index_path(&self.state_dir));
        let sound = self.sound.lock().unwrap_or_else(|p| p.into_inner());
        stamp.is_some_and(|s| sound.get(&feed.name) == Some(&s))
    }

    /// Remember `feed`'s index as it is now as sound, or (`false`) forget it.
    fn mark_sound(&self, feed: &RemoteFeed, sound: bool) {
        let stamp = Stamp::of(&feed.index_path(&self.state_dir)).filter(|_| sound);
        let mut all = self.sound.lock().unwrap_or_else(|p| p.into_inner());
        match stamp {
            Some(s) => all.insert(feed.name.clone(), s),
            None => all.remove(&feed.name),
        };
    }

    /// Whether `feed`'s index opens: `None` when there is none. Read and checked only
    /// when it is not the file this process last wrote or opened.
    fn index_opens(&self, feed: &RemoteFeed) -> Option<Result<(), String>> {
        let index = feed.index_path(&self.state_dir);
        if !index.exists() {
            self.mark_sound(feed, false);
            return None;
        }
        if self.is_sound(feed) {
            return Some(Ok(()));
        }
        let opened = Index::open(&index).map(drop).map_err(|e| e.to_string());
        self.mark_sound(feed, opened.is_ok());
        Some(opened)
    }

    /// Make what the state directory holds for `feed` fit its configuration without
    /// the network: an index that does not open, or was built from this URL with
    /// other settings, is recompiled from the kept download. The feed's age in the
    /// status follows: none while nothing that fits is there.
    fn prepare(&self, feed: &RemoteFeed) -> Local {
        let local = self.make_fit(feed);
        let checked = match local {
            Local::Ready | Local::Rebuilt => from_unix(self.meta(feed).checked_unix),
            Local::Missing { .. } => None,
        };
        self.status.update(&feed.name, |s| s.checked = checked);
        local
    }

    fn make_fit(&self, feed: &RemoteFeed) -> Local {
        let mut meta = self.meta(feed);
        if meta.holds_secrets() {
            meta.url = client::shown_url(&meta.url);
            meta.url_xxh3 = None;
            match write_meta(&feed.meta_path(&self.state_dir), &meta) {
                Ok(()) => {
                    tracing::info!(feed = %feed.name, "the URL's credentials written by an older build were removed from the feed's meta file")
                }
                Err(e) => {
                    tracing::warn!(feed = %feed.name, "the URL's credentials written by an older build cannot be removed from the feed's meta file: {e}")
                }
            }
        }
        let opened = self.index_opens(feed);
        let served = matches!(opened, Some(Ok(())));
        let why = match &opened {
            None => "it has no index".to_string(),
            Some(Err(e)) => format!("its index does not open: {e}"),
            Some(Ok(())) if !meta.same_url(feed) => "its url changed".to_string(),
            Some(Ok(())) => match meta.settings_xxh3 {
                Some(s) if s == feed.settings_fingerprint() => return Local::Ready,
                Some(_) => "its compile settings changed".to_string(),
                None => "the settings its index was compiled with are not recorded".to_string(),
            },
        };
        let kept = feed.feed_path(&self.state_dir);
        if meta.same_url(feed) && kept.exists() {
            match self.rebuild(feed, &meta, &kept) {
                Ok(summary) => {
                    tracing::info!(
                        feed = %feed.name,
                        file = %kept.display(),
                        records = summary.records,
                        skipped = summary.skipped,
                        "feed recompiled from its kept download ({why})"
                    );
                    return Local::Rebuilt;
                }
                Err(e) => tracing::warn!(
                    feed = %feed.name,
                    url = %feed.shown_url(),
                    "feed cannot be recompiled from its kept download ({why}): {e}; downloading it again"
                ),
            }
        } else if opened.is_some() {
            tracing::info!(feed = %feed.name, url = %feed.shown_url(), "{why}: downloading the feed again");
        }
        Local::Missing { served }
    }

    /// Before the first load: make the state directory fit the configuration and
    /// download the feeds it has nothing for (one attempt each, all together within
    /// [`STARTUP_DEADLINE`]). One not downloaded is served once a later attempt
    /// succeeds.
    pub fn fetch_missing(&self) {
        self.fetch_missing_within(STARTUP_DEADLINE);
    }

    fn fetch_missing_within(&self, limit: Duration) {
        // Made when first polled: a timer needs the runtime, which starts inside.
        self.fetch_missing_until(limit, async move { tokio::time::sleep(limit).await });
    }

    /// [`Updater::fetch_missing`], the downloads cut when `deadline` completes
    /// (`limit` says when, for the logs). The feeds downloaded by then are compiled
    /// after it, with the runtime gone: nothing else is read meanwhile, and nothing
    /// runs late against the files the background refresh will use.
    fn fetch_missing_until(
        &self,
        limit: Duration,
        deadline: impl std::future::Future<Output = ()>,
    ) {
        let mut missing = Vec::new();
        let mut current = Vec::new();
        for f in self.feeds() {
            match self.prepare(&f) {
                local @ Local::Missing { .. } => {
                    let meta = self.meta(&f);
                    missing.push((f, local, meta));
                }
                Local::Ready | Local::Rebuilt => current.push(f),
            }
        }
        if !missing.is_empty() {
            let Some(rt) = downloader_runtime() else {
                return;
            };
            let started = std::time::Instant::now();
            let answers: std::cell::RefCell<Vec<Option<Result<Answer, String>>>> =
                std::cell::RefCell::new(missing.iter().map(|_| None).collect());
            rt.block_on(async {
                let all = futures_util::future::join_all(missing.iter().enumerate().map(
                    |(i, (f, local, meta))| {
                        let answers = &answers;
                        async move {
                            let answer = self.download(f, meta, conditional(*local)).await;
                            answers.borrow_mut()[i] = Some(answer);
                        }
                    },
                ));
                tokio::select! {
                    biased;
                    _ = all => {}
                    () = deadline => {}
                }
            });
            // Connections still open are closed, and a name lookup still blocked in
            // the resolver's thread is let go: the start waits for neither.
            rt.shutdown_background();
            let answers = answers.into_inner();
            let left: Vec<&str> = missing
                .iter()
                .zip(&answers)
                .filter(|(_, a)| a.is_none())
                .map(|((f, _, _), _)| f.name.as_str())
                .collect();
            if !left.is_empty() {
                let reason = format!(
                    "not downloaded within {} of starting",
                    humantime::format_duration(limit)
                );
                for name in &left {
                    self.status.update(name, |s| {
                        s.failures += 1;
                        s.last_error = Some(reason.clone());
                    });
                }
                tracing::warn!(
                    feeds = %left.join(", "),
                    "feed downloads before start: {reason}; served once the background refresh downloads them"
                );
            }
            for ((f, local, meta), answer) in missing.into_iter().zip(answers) {
                let Some(answer) = answer else { continue };
                let (ok, _) = self.settle(&f, local, &meta, started, answer);
                if ok {
                    current.push(f);
                }
            }
        }
        *self
            .current_at_start
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = current;
    }

    /// Whether `fetch_missing` left `feed`, configured as it is now, current.
    fn current_at_start(&self, feed: &RemoteFeed) -> bool {
        let mut current = self
            .current_at_start
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let found = current.iter().position(|f| f == feed);
        found.map(|i| current.swap_remove(i)).is_some()
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
                let Some(rt) = downloader_runtime() else {
                    return;
                };
                rt.block_on(async move {
                    let mut due: BTreeMap<String, Due> = BTreeMap::new();
                    loop {
                        if stop.borrow().is_some() {
                            return;
                        }
                        let feeds = me.feeds();
                        due.retain(|name, _| feeds.iter().any(|f| &f.name == name));
                        let mut changed = false;
                        // What was found just now, for the attempts below.
                        let mut prepared: BTreeMap<String, Local> = BTreeMap::new();
                        for f in &feeds {
                            if due.get(&f.name).is_some_and(|d| d.feed == *f) {
                                continue;
                            }
                            // New, or configured otherwise: made to fit at once, and
                            // due when what the state directory holds is `refresh` old.
                            let local = if me.current_at_start(f) {
                                Local::Ready
                            } else {
                                me.prepare(f)
                            };
                            changed |= local == Local::Rebuilt;
                            let wait = match local {
                                Local::Missing { .. } => Duration::ZERO,
                                Local::Ready | Local::Rebuilt => age(me.meta(f).checked_unix)
                                    .map_or(Duration::ZERO, |a| f.refresh.saturating_sub(a)),
                            };
                            prepared.insert(f.name.clone(), local);
                            due.insert(
                                f.name.clone(),
                                Due {
                                    when: after(wait),
                                    failures: 0,
                                    feed: f.clone(),
                                },
                            );
                        }
                        for f in &feeds {
                            let Some(failures) = due
                                .get(&f.name)
                                .filter(|d| d.when <= std::time::Instant::now())
                                .map(|d| d.failures)
                            else {
                                continue;
                            };
                            // Checked again at each refresh: an index replaced or
                            // touched since this process wrote or opened it is opened
                            // again, and rebuilt or downloaded whole if damaged.
                            let local = match prepared.remove(&f.name) {
                                Some(local) => local,
                                None => {
                                    let local = me.prepare(f);
                                    changed |= local == Local::Rebuilt;
                                    local
                                }
                            };
                            let (ok, updated) = me.attempt(f, local).await;
                            changed |= updated;
                            let failures = if ok { 0 } else { failures.saturating_add(1) };
                            let wait = if ok {
                                f.refresh
                            } else {
                                backoff(f.refresh, failures)
                            };
                            due.insert(
                                f.name.clone(),
                                Due {
                                    when: after(wait),
                                    failures,
                                    feed: f.clone(),
                                },
                            );
                        }
                        if changed {
                            reload();
                        }
                        let next = due.values().map(|d| d.when).min();
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

    /// One attempt at a feed whose state directory is as `local` says, logged and
    /// counted: (it worked, new data was swapped in).
    async fn attempt(&self, feed: &RemoteFeed, local: Local) -> (bool, bool) {
        let meta = self.meta(feed);
        let started = std::time::Instant::now();
        let answer = self.download(feed, &meta, conditional(local)).await;
        self.settle(feed, local, &meta, started, answer)
    }

    /// Install what a download brought, then log and count the outcome: (it worked,
    /// new data was swapped in).
    fn settle(
        &self,
        feed: &RemoteFeed,
        local: Local,
        meta: &Meta,
        started: std::time::Instant,
        answer: Result<Answer, String>,
    ) -> (bool, bool) {
        let fetched = answer.and_then(|answer| match answer {
            Answer::NotModified => Ok(Fetched::NotModified),
            Answer::Body(body) => self.install(feed, body),
        });
        match fetched {
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
                let served = match local {
                    Local::Ready | Local::Rebuilt => true,
                    Local::Missing { served } => served,
                };
                let still = match served.then(|| age(meta.checked_unix)).flatten() {
                    Some(a) => format!(
                        "still serving the data confirmed {} ago",
                        humantime::format_duration(Duration::from_secs(a.as_secs()))
                    ),
                    None if served => "still serving the data kept before".to_string(),
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

    /// Ask the feed server; a body is kept whole in a scratch file, a `304` recorded
    /// in the meta file. `conditional`: the index fits `meta`, so its validators may
    /// be sent.
    async fn download(
        &self,
        feed: &RemoteFeed,
        meta: &Meta,
        conditional: bool,
    ) -> Result<Answer, String> {
        let dir = &self.state_dir;
        let client = client(feed)?;
        let mut req = client.get(&feed.url);
        for (k, v) in &feed.headers {
            req = req.header(k, v);
        }
        if let Some((user, password)) = &feed.basic {
            req = req.basic_auth(user, Some(password));
        }
        let mut validated = false;
        if conditional {
            if let Some(etag) = &meta.etag {
                req = req.header(reqwest::header::IF_NONE_MATCH, etag);
                validated = true;
            }
            if let Some(lm) = &meta.last_modified {
                req = req.header(reqwest::header::IF_MODIFIED_SINCE, lm);
                validated = true;
            }
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| format!("request: {}", client::error_message(e)))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_MODIFIED {
            // Only an answer to validators says which data is current.
            if !validated {
                return Err(format!(
                    "HTTP status {status} to a request without If-None-Match or If-Modified-Since"
                ));
            }
            let mut meta = meta.clone();
            meta.checked_unix = unix(SystemTime::now());
            write_meta(&feed.meta_path(dir), &meta)?;
            return Ok(Answer::NotModified);
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
        // The body, to a temporary file: gone on any error, and if this future is
        // dropped (the start's deadline).
        let download = Scratch(dir.join(format!("{}.download", feed.name)));
        let shown = |e: std::io::Error| format!("{}: {e}", download.0.display());
        let mut out = std::fs::File::create(&download.0).map_err(shown)?;
        let mut bytes = 0u64;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    bytes += chunk.len() as u64;
                    out.write_all(&chunk).map_err(shown)?;
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(format!(
                        "download cut after {bytes} bytes: {}",
                        client::error_message(e)
                    ));
                }
            }
        }
        out.flush().map_err(shown)?;
        drop(out);
        Ok(Answer::Body(Downloaded {
            file: download,
            etag,
            last_modified,
        }))
    }

    /// A downloaded body → the feed file (decompressed), its index, its meta; the
    /// old files stay on error.
    fn install(&self, feed: &RemoteFeed, body: Downloaded) -> Result<Fetched, String> {
        let Downloaded {
            file,
            etag,
            last_modified,
        } = body;
        let download = file.0.as_path();
        let dir = &self.state_dir;
        let final_feed = feed.feed_path(dir);
        let new_feed = Scratch(final_feed.with_extension(format!(
            "{}.new",
            final_feed
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("feed")
        )));
        let mut head = [0u8; 2];
        let gz = std::fs::File::open(download)
            .and_then(|mut f| f.read(&mut head))
            .map(|n| n == 2 && head == [0x1f, 0x8b])
            .map_err(|e| format!("{}: {e}", download.display()))?;
        if gz {
            let src = std::fs::File::open(download).map_err(|e| e.to_string())?;
            let mut dec = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(src));
            let mut dst = std::fs::File::create(&new_feed.0)
                .map_err(|e| format!("{}: {e}", new_feed.0.display()))?;
            std::io::copy(&mut dec, &mut dst).map_err(|e| format!("gzip: {e}"))?;
        } else {
            std::fs::rename(download, &new_feed.0)
                .map_err(|e| format!("{}: {e}", new_feed.0.display()))?;
        }
        let now = SystemTime::now();
        let summary = self
            .compile(feed, &new_feed.0, Some(now), &etag, &last_modified)
            .map_err(|e| format!("the new data is refused: {e}"))?;
        std::fs::rename(&new_feed.0, &final_feed)
            .map_err(|e| format!("{}: {e}", final_feed.display()))?;
        let meta = Meta {
            etag,
            last_modified,
            fetched_unix: unix(now),
            checked_unix: unix(now),
            ..Meta::default()
        };
        write_meta(&feed.meta_path(dir), &fitted(meta, feed, &summary))?;
        Ok(Fetched::Updated {
            records: summary.records,
            skipped: summary.skipped,
        })
    }

    /// The kept download, compiled again with `feed`'s settings; `meta` keeps its
    /// validators and times (it is the same data).
    fn rebuild(&self, feed: &RemoteFeed, meta: &Meta, kept: &Path) -> Result<FeedSummary, String> {
        let fetched = from_unix(meta.fetched_unix);
        let summary = self.compile(feed, kept, fetched, &meta.etag, &meta.last_modified)?;
        write_meta(
            &feed.meta_path(&self.state_dir),
            &fitted(meta.clone(), feed, &summary),
        )?;
        Ok(summary)
    }

    /// Compile the feed file `source` (`feed`'s download, maybe under a temporary
    /// name) into `feed`'s index, written atomically. `fetched`: when it was
    /// downloaded, if known.
    fn compile(
        &self,
        feed: &RemoteFeed,
        source: &Path,
        fetched: Option<SystemTime>,
        etag: &Option<String>,
        last_modified: &Option<String>,
    ) -> Result<FeedSummary, String> {
        let final_feed = feed.feed_path(&self.state_dir);
        let mut spec = feed.spec.clone();
        spec.path = source.to_path_buf();
        if spec.category.is_none() {
            spec.category = Some(feed.name.clone());
        }
        if spec.format.is_none() {
            // Maybe named `…json.new`: give the reader the extension it knows.
            spec.format = crate::feed::Format::detect(&final_feed)
                .ok()
                .filter(|_| final_feed.extension().is_some_and(|e| e != "feed"));
        }
        let validator = match (etag, last_modified) {
            (Some(e), _) => format!(", ETag {e}"),
            (None, Some(lm)) => format!(", Last-Modified {lm}"),
            _ => String::new(),
        };
        let when = match fetched.and_then(shown_time) {
            Some(t) => format!("downloaded {t}"),
            None => "download time unknown".to_string(),
        };
        spec.origin = Some(format!("{} ({when}{validator})", feed.shown_url()));
        let compiled = (|| {
            let mut compiler = Compiler::new(feed.strict).allow_broad_masks(feed.allow_broad_masks);
            let summary = compiler.add_feed(&spec)?;
            let sections = compiler.finish()?;
            crate::index::storage::write_atomically(&feed.index_path(&self.state_dir), &sections)?;
            Ok::<_, Box<dyn std::error::Error>>(summary)
        })();
        // What was just written opens; on a failure the file before is untouched.
        if compiled.is_ok() {
            self.mark_sound(feed, true);
        }
        compiled.map_err(|e| e.to_string())
    }
}

/// Whether a download for a feed whose state directory is as `local` says may send
/// the meta file's validators: only when the index there fits them.
/// The runtime downloads run on (the start's, then the feeds' thread's); `None`,
/// logged, when it cannot be made.
fn downloader_runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| tracing::error!("cannot start the feed downloader: {e}"))
        .ok()
}

fn conditional(local: Local) -> bool {
    matches!(local, Local::Ready | Local::Rebuilt)
}

/// `meta` for an index just compiled from `feed` as configured now.
fn fitted(meta: Meta, feed: &RemoteFeed, summary: &FeedSummary) -> Meta {
    Meta {
        url: feed.shown_url(),
        url_xxh3: None,
        settings_xxh3: Some(feed.settings_fingerprint()),
        records: summary.records,
        skipped: summary.skipped,
        ..meta
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

/// The HTTP client for a feed: its TLS settings, gzip, bounded waits, and
/// redirects that never take its headers or credentials to another server.
fn client(feed: &RemoteFeed) -> Result<reqwest::Client, String> {
    let ca = client::ca_certs(&feed.tls)?;
    let secrets = feed.sends_secrets();
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        match redirect_check(attempt.previous(), attempt.url(), secrets) {
            Ok(()) => attempt.follow(),
            Err(reason) => attempt.error(reason),
        }
    });
    client::builder(&feed.tls, &ca, Duration::from_secs(30))
        .read_timeout(Duration::from_secs(120))
        .redirect(redirects)
        .build()
        .map_err(client::error_message)
}

/// Whether a download that asked `previous` (the feed's URL first) may follow a
/// redirect to `next`. reqwest itself strips only `Authorization` and cookies on the
/// way to another host, not a feed's own headers (`X-Api-Key`), so a feed that sends
/// any secret stays on its scheme, host and port.
fn redirect_check(
    previous: &[reqwest::Url],
    next: &reqwest::Url,
    sends_secrets: bool,
) -> Result<(), String> {
    if previous.len() > MAX_REDIRECTS {
        return Err(format!(
            "more than {MAX_REDIRECTS} redirects (the last to {})",
            shown_target(next)
        ));
    }
    let Some(first) = previous.first() else {
        return Ok(());
    };
    if sends_secrets && first.origin() != next.origin() {
        return Err(format!(
            "redirect to {} refused: the feed's headers and credentials are sent only to {}",
            shown_target(next),
            shown_origin(first),
        ));
    }
    Ok(())
}

/// A redirect target as errors show it: without credentials, and without the query
/// (a signed URL carries its credential there).
fn shown_target(u: &reqwest::Url) -> String {
    format!("{}{}", shown_origin(u), u.path())
}

/// `scheme://host[:port]` (the port when it is not the scheme's default).
fn shown_origin(u: &reqwest::Url) -> String {
    u.origin().ascii_serialization()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn feed(url: &str) -> RemoteFeed {
        RemoteFeed {
            name: "feed".into(),
            url: url.into(),
            refresh: Duration::from_secs(1800),
            headers: Vec::new(),
            basic: None,
            tls: Tls {
                ca_file: None,
                verify: true,
            },
            spec: FeedSpec::new("", "ioc"),
            strict: false,
            allow_broad_masks: false,
        }
    }

    /// A state directory of its own, removed at the end.
    struct StateDir(PathBuf);

    impl StateDir {
        fn new(tag: &str) -> StateDir {
            let dir =
                std::env::temp_dir().join(format!("tracer-update-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("state dir");
            StateDir(dir)
        }

        /// A kept download of feed `feed` (one row), as a finished download leaves it.
        fn keep_download(&self) {
            std::fs::write(self.0.join("feed.csv"), "ioc,context\nfeed.example,v1\n")
                .expect("feed");
        }
    }

    impl Drop for StateDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// `feed(url)` named `name`.
    fn named(name: &str, url: &str) -> RemoteFeed {
        RemoteFeed {
            name: name.into(),
            ..feed(url)
        }
    }

    /// A meta file as a build before fingerprints wrote it: `url` whole, settings
    /// not recorded, so the first `prepare` recompiles a kept download.
    fn old_meta(dir: &Path, url: &str, etag: Option<&str>, fetched: u64, checked: u64) {
        let meta = serde_json::json!({
            "url": url, "etag": etag, "last_modified": null,
            "fetched_unix": fetched, "checked_unix": checked, "records": 1, "skipped": 0,
        });
        std::fs::write(dir.join("feed.meta.json"), meta.to_string()).expect("meta");
    }

    fn meta_json(dir: &Path) -> serde_json::Value {
        let text = std::fs::read_to_string(dir.join("feed.meta.json")).expect("meta");
        serde_json::from_str(&text).expect("meta json")
    }

    /// An HTTP server on 127.0.0.1: each connection on a thread of its own, given
    /// to `answer` once the request's head is read.
    fn http_server(
        answer: impl Fn(&mut std::net::TcpStream) + Send + Sync + 'static,
    ) -> std::net::SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let answer = Arc::new(answer);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let answer = answer.clone();
                std::thread::spawn(move || {
                    let Ok(r) = s.try_clone() else { return };
                    let mut r = std::io::BufReader::new(r);
                    let mut line = String::new();
                    while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                        line.clear();
                    }
                    answer(&mut s);
                });
            }
        });
        addr
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn times_past_what_the_clock_holds_are_unknown_not_a_panic() {
        let now = unix(SystemTime::now());
        assert_eq!(from_unix(0), None);
        assert_eq!(from_unix(u64::MAX), None);
        assert_eq!(from_unix(300_000_000_000), None, "after the year 9999");
        assert_eq!(from_unix(now + 2 * 24 * 3600), None, "days ahead");
        assert!(from_unix(1).is_some());
        assert_eq!(age(u64::MAX), None);
        assert_eq!(
            age(now + 3600),
            Some(Duration::ZERO),
            "a little ahead of the clock"
        );
        assert!(after(Duration::MAX) > std::time::Instant::now());
        let far = UNIX_EPOCH + Duration::from_secs(LAST_SHOWN_UNIX + 1);
        assert_eq!(shown_time(far), None);
        assert_eq!(
            shown_time(UNIX_EPOCH + Duration::from_secs(LAST_SHOWN_UNIX)).as_deref(),
            Some("9999-12-31T23:59:59Z")
        );
    }

    #[test]
    fn a_meta_file_time_after_the_year_9999_is_unknown_when_recompiling() {
        let dir = StateDir::new("far");
        let url = "http://127.0.0.1:1/feeds/feed.csv";
        dir.keep_download();
        std::fs::write(dir.0.join("feed.tracer"), b"damaged").expect("index");
        old_meta(&dir.0, url, None, 300_000_000_000, 300_000_000_000);
        let f = feed(url);
        let u = Updater::new(dir.0.clone(), vec![f.clone()]).expect("updater");
        assert_eq!(u.prepare(&f), Local::Rebuilt);
        assert_eq!(u.status.snapshot()[0].1.checked, None);
        let meta = meta_json(&dir.0);
        assert_eq!(
            (&meta["fetched_unix"], &meta["checked_unix"]),
            (&serde_json::json!(0), &serde_json::json!(0)),
            "{meta}"
        );
        let index = Index::open(&dir.0.join("feed.tracer")).expect("rebuilt index");
        let source = &index.meta().feeds[0].source;
        assert!(source.contains("download time unknown"), "{source}");
    }

    #[test]
    fn a_damaged_meta_file_does_not_stop_the_start() {
        let dir = StateDir::new("meta");
        let url = "http://127.0.0.1:1/feeds/feed.csv";
        std::fs::write(dir.0.join("feed.tracer"), b"an index").expect("index");
        std::fs::write(
            dir.0.join("feed.meta.json"),
            format!(
                r#"{{"url":{url:?},"etag":null,"last_modified":null,"fetched_unix":{0},"checked_unix":{0},"records":1,"skipped":0}}"#,
                u64::MAX
            ),
        )
        .expect("meta");
        let u = Updater::new(dir.0.clone(), vec![feed(url)]).expect("updater");
        assert_eq!(u.status.snapshot()[0].1.checked, None);
    }

    #[test]
    fn every_compile_setting_changes_the_fingerprint() {
        let base = feed("http://feeds.example/f.csv");
        let changes: [fn(&mut RemoteFeed); 8] = [
            |f| f.spec.key = "other".into(),
            |f| f.spec.kind = Some(crate::indicator::Kind::Url),
            |f| f.spec.records = Some("data".into()),
            |f| f.spec.format = Some(crate::feed::Format::Json),
            |f| f.spec.category = Some("c".into()),
            |f| f.spec.max_skipped = Some(3),
            |f| f.strict = true,
            |f| f.allow_broad_masks = true,
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut f = base.clone();
            change(&mut f);
            assert_ne!(
                f.settings_fingerprint(),
                base.settings_fingerprint(),
                "change {i}"
            );
        }
        // What only the download depends on does not.
        let mut f = base.clone();
        f.refresh = Duration::from_secs(60);
        f.headers = vec![("X-Api-Key".into(), "k".into())];
        f.spec.path = PathBuf::from("elsewhere.csv");
        f.spec.origin = Some("somewhere".into());
        assert_eq!(f.settings_fingerprint(), base.settings_fingerprint());
    }

    #[test]
    fn the_url_identifies_the_data_without_its_secrets() {
        let meta = |url: &str| Meta {
            url: url.into(),
            ..Meta::default()
        };
        let shown = meta(&feed("http://u:old@feeds.example/f.csv?apikey=old").shown_url());
        assert!(!shown.holds_secrets());
        for same in [
            "http://u:new@feeds.example/f.csv?apikey=new",
            "http://feeds.example/f.csv?apikey=other",
        ] {
            assert!(shown.same_url(&feed(same)), "{same}");
        }
        for other in [
            "http://u:old@feeds.example/g.csv?apikey=old",
            "http://u:old@feeds.example/f.csv?apikey=old&day=2",
        ] {
            assert!(!shown.same_url(&feed(other)), "{other}");
        }
        // As an older build wrote it: the whole URL.
        let whole = meta("http://u:old@feeds.example/f.csv");
        assert!(whole.holds_secrets());
        assert!(whole.same_url(&feed("http://u:new@feeds.example/f.csv")));
        assert!(!meta("").same_url(&feed("http://feeds.example/f.csv")));
    }

    #[test]
    fn a_changed_password_and_an_older_builds_url_hash_keep_the_index() {
        let dir = StateDir::new("password");
        let url = "http://feeder:old-pw@127.0.0.1:1/feeds/feed.csv";
        dir.keep_download();
        old_meta(&dir.0, url, Some("\"e1\""), 1_700_000_000, 1_700_000_000);
        let f = feed(url);
        let u = Updater::new(dir.0.clone(), vec![f.clone()]).expect("updater");
        assert_eq!(u.prepare(&f), Local::Rebuilt);
        // What the build before this one wrote: the URL shown and a hash of the whole
        // URL, which no password tried offline must be checked against.
        let mut meta = meta_json(&dir.0);
        meta["url_xxh3"] = serde_json::json!(xxhash_rust::xxh3::xxh3_64(url.as_bytes()));
        std::fs::write(dir.0.join("feed.meta.json"), meta.to_string()).expect("meta");
        let g = feed("http://feeder:new-pw@127.0.0.1:1/feeds/feed.csv");
        u.reconfigure(vec![g.clone()]);
        assert_eq!(u.prepare(&g), Local::Ready);
        let meta = meta_json(&dir.0);
        assert!(meta.get("url_xxh3").is_none(), "{meta}");
        assert_eq!(meta["url"], "http://127.0.0.1:1/feeds/feed.csv");
        assert_eq!(meta["etag"], "\"e1\"");
        assert_eq!(u.prepare(&g), Local::Ready);
    }

    #[test]
    fn an_index_is_read_again_only_when_its_file_changed() {
        let dir = StateDir::new("stamp");
        let url = "http://127.0.0.1:1/feeds/feed.csv";
        dir.keep_download();
        old_meta(&dir.0, url, None, 1_700_000_000, 1_700_000_000);
        let f = feed(url);
        let u = Updater::new(dir.0.clone(), vec![f.clone()]).expect("updater");
        assert_eq!(u.prepare(&f), Local::Rebuilt);
        // Damaged where the length and modification time do not show it: taken for
        // the file this process wrote, so a refresh does not read it.
        let index = dir.0.join("feed.tracer");
        let modified = std::fs::metadata(&index)
            .and_then(|m| m.modified())
            .expect("mtime");
        let mut bytes = std::fs::read(&index).expect("index");
        bytes[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&index, bytes).expect("damage");
        let set_modified = |t: SystemTime| {
            std::fs::File::options()
                .write(true)
                .open(&index)
                .and_then(|file| file.set_modified(t))
                .expect("set mtime");
        };
        set_modified(modified);
        assert_eq!(u.prepare(&f), Local::Ready);
        // Touched since: read, found damaged, rebuilt.
        set_modified(modified + Duration::from_secs(1));
        assert_eq!(u.prepare(&f), Local::Rebuilt);
        assert!(Index::open(&index).is_ok());
        assert_eq!(u.prepare(&f), Local::Ready);
    }

    #[test]
    fn an_index_that_does_not_open_has_no_age_and_an_older_builds_secret_url_is_removed() {
        let dir = StateDir::new("unusable");
        let url = "http://feeder:s3cret@127.0.0.1:1/feeds/feed.csv";
        let checked = unix(SystemTime::now()) - 60;
        std::fs::write(dir.0.join("feed.tracer"), b"damaged").expect("index");
        old_meta(&dir.0, url, Some("\"e1\""), checked, checked);
        let f = feed(url);
        let u = Updater::new(dir.0.clone(), vec![f.clone()]).expect("updater");
        // No kept download: nothing is recompiled, the feed is downloaded again.
        assert_eq!(u.prepare(&f), Local::Missing { served: false });
        let age = || u.status.snapshot()[0].1.checked;
        assert_eq!(age(), None);
        let meta = meta_json(&dir.0);
        assert_eq!(meta["url"], "http://127.0.0.1:1/feeds/feed.csv", "{meta}");
        assert_eq!(meta["checked_unix"], checked, "{meta}");
        // The configuration re-read unchanged: still no age.
        u.reconfigure(vec![f.clone()]);
        assert_eq!(age(), None);
        // A kept download to rebuild from: the data confirmed then is served.
        dir.keep_download();
        assert_eq!(u.prepare(&f), Local::Rebuilt);
        assert_eq!(age(), from_unix(checked));
    }

    #[test]
    fn a_304_counts_only_as_the_answer_to_a_validator() {
        let addr = http_server(|s| {
            let _ = s.write_all(b"HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n");
        });
        let dir = StateDir::new("304");
        let url = format!("http://{addr}/feeds/feed.csv");
        dir.keep_download();
        old_meta(&dir.0, &url, None, 1_700_000_000, 1_700_000_000);
        let f = feed(&url);
        let u = Updater::new(dir.0.clone(), vec![f.clone()]).expect("updater");
        assert_eq!(u.prepare(&f), Local::Rebuilt);
        // No ETag or Last-Modified kept: nothing was asked that a 304 answers.
        assert_eq!(block_on(u.attempt(&f, Local::Ready)), (false, false));
        let status = u.status.snapshot()[0].1.clone();
        assert_eq!(status.failures, 1);
        assert!(
            status
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("304") && e.contains("without If-None-Match")),
            "{status:?}"
        );
        assert_eq!(meta_json(&dir.0)["checked_unix"], 1_700_000_000);
        // With an ETag kept and sent, the same answer confirms the data.
        let mut meta = meta_json(&dir.0);
        meta["etag"] = serde_json::json!("\"e1\"");
        std::fs::write(dir.0.join("feed.meta.json"), meta.to_string()).expect("meta");
        assert_eq!(block_on(u.attempt(&f, Local::Ready)), (true, false));
        assert_ne!(meta_json(&dir.0)["checked_unix"], 1_700_000_000);
    }

    #[test]
    fn the_state_directory_is_made_to_fit_the_configuration() {
        let dir = StateDir::new("fit");
        // As an older build left it: the whole URL in the meta file, no fingerprints.
        let url = "http://feeder:s3cret@127.0.0.1:1/feeds/feed.csv";
        std::fs::write(
            dir.0.join("feed.csv"),
            "ioc,alt\nfeed.example,alt.example\n",
        )
        .expect("feed");
        std::fs::write(
            dir.0.join("feed.meta.json"),
            format!(
                r#"{{"url":{url:?},"etag":"\"e1\"","last_modified":null,"fetched_unix":1700000000,"checked_unix":1700000000,"records":1,"skipped":0}}"#
            ),
        )
        .expect("meta");
        let f = feed(url);
        let u = Updater::new(dir.0.clone(), vec![f.clone()]).expect("updater");
        assert_eq!(u.prepare(&f), Local::Rebuilt);
        let meta = std::fs::read_to_string(dir.0.join("feed.meta.json")).expect("meta");
        assert!(
            !meta.contains("s3cret")
                && meta.contains("\"http://127.0.0.1:1/feeds/feed.csv\"")
                && meta.contains("e1"),
            "{meta}"
        );
        assert_eq!(u.prepare(&f), Local::Ready);
        // Other settings: compiled again from the kept download.
        let mut g = f.clone();
        g.spec.key = "alt".into();
        assert_eq!(u.prepare(&g), Local::Rebuilt);
        assert_eq!(u.prepare(&g), Local::Ready);
        // An index that does not open: compiled again.
        std::fs::write(dir.0.join("feed.tracer"), b"damaged").expect("damage");
        assert_eq!(u.prepare(&g), Local::Rebuilt);
        // Settings the kept download does not fit: downloaded again, the index that
        // opens served meanwhile.
        let mut h = g.clone();
        h.spec.key = "no such column".into();
        h.strict = true;
        assert_eq!(u.prepare(&h), Local::Missing { served: true });
        // Another URL: downloaded.
        let other = feed("http://127.0.0.1:1/other/feed.csv");
        assert_eq!(u.prepare(&other), Local::Missing { served: true });
        // Neither index nor download.
        std::fs::remove_file(dir.0.join("feed.tracer")).expect("remove");
        std::fs::remove_file(dir.0.join("feed.csv")).expect("remove");
        assert_eq!(u.prepare(&g), Local::Missing { served: false });
    }

    #[test]
    fn the_downloads_before_start_stop_at_their_deadline_and_compile_after_it() {
        let dir = StateDir::new("deadline");
        let quick_body = "ioc,context\nquick.example,q\n";
        let quick = http_server(move |s| {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                quick_body.len()
            );
            let _ = s.write_all(format!("{head}{quick_body}").as_bytes());
        });
        // The start of a body, then nothing until the client lets go. Meanwhile it
        // watches for the quick feed's index: written while this download is still
        // open, it was compiled under the deadline.
        let sent = Arc::new(AtomicBool::new(false));
        let compiled_while_open = Arc::new(AtomicBool::new(false));
        let slow = {
            let (sent, compiled_while_open) = (sent.clone(), compiled_while_open.clone());
            let quick_index = dir.0.join("quick.tracer");
            http_server(move |s| {
                let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nioc,context\n";
                if s.write_all(head).is_err() || s.set_nonblocking(true).is_err() {
                    return;
                }
                sent.store(true, Ordering::SeqCst);
                loop {
                    // The index first: if the connection is still open after it was
                    // seen, both were at once.
                    let compiled = quick_index.exists();
                    match s.read(&mut [0u8; 64]) {
                        Ok(0) => return,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            if compiled {
                                compiled_while_open.store(true, Ordering::SeqCst);
                            }
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            })
        };
        let u = Updater::new(
            dir.0.clone(),
            vec![
                named("quick", &format!("http://{quick}/feeds/quick.csv")),
                named("slow", &format!("http://{slow}/feeds/slow.csv")),
            ],
        )
        .expect("updater");
        // The deadline passes once the slow body has started arriving and the quick
        // one is whole (or was compiled already), not at a time that may come first
        // on a loaded machine.
        let reached = Arc::new(AtomicBool::new(false));
        let deadline = {
            let (sent, compiled_while_open, reached) =
                (sent.clone(), compiled_while_open.clone(), reached.clone());
            let len = |path: PathBuf| std::fs::metadata(path).map_or(0, |m| m.len());
            let (slow_download, quick_download) =
                (dir.0.join("slow.download"), dir.0.join("quick.download"));
            async move {
                let started = std::time::Instant::now();
                while started.elapsed() < Duration::from_secs(30) {
                    let slow_started =
                        sent.load(Ordering::SeqCst) && len(slow_download.clone()) > 0;
                    let quick_done = len(quick_download.clone()) == quick_body.len() as u64
                        || compiled_while_open.load(Ordering::SeqCst);
                    if slow_started && quick_done {
                        reached.store(true, Ordering::SeqCst);
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        u.fetch_missing_until(Duration::from_millis(500), deadline);
        assert!(
            reached.load(Ordering::SeqCst),
            "the downloads never got there"
        );
        assert!(
            !compiled_while_open.load(Ordering::SeqCst),
            "a feed was compiled while another was still downloading"
        );
        assert!(!dir.0.join("slow.download").exists());
        assert!(!dir.0.join("quick.download").exists());
        assert!(Index::open(&dir.0.join("quick.tracer")).is_ok());
        let status: BTreeMap<_, _> = u.status.snapshot().into_iter().collect();
        assert_eq!((status["quick"].updates, status["quick"].failures), (1, 0));
        let slow = &status["slow"];
        assert_eq!(slow.failures, 1);
        assert!(
            slow.last_error
                .as_deref()
                .is_some_and(|e| e.contains("not downloaded within 500ms")),
            "{slow:?}"
        );
        assert!(u.current_at_start(&named("quick", &format!("http://{quick}/feeds/quick.csv"))));
    }

    #[test]
    fn redirects_keep_a_feeds_secrets_on_its_server() {
        let u = |s: &str| reqwest::Url::parse(s).expect("url");
        let first = [u("https://feeds.example/f.csv")];
        assert!(redirect_check(&first, &u("https://feeds.example/g.csv"), true).is_ok());
        assert!(redirect_check(&first, &u("https://feeds.example:443/g.csv"), true).is_ok());
        for other in [
            "https://cdn.example/f.csv",
            "http://feeds.example/f.csv",
            "https://feeds.example:8443/f.csv",
        ] {
            let e = redirect_check(&first, &u(other), true).expect_err(other);
            assert!(
                e.contains("refused") && e.contains("https://feeds.example"),
                "{e}"
            );
            assert!(redirect_check(&first, &u(other), false).is_ok(), "{other}");
        }
        let e = redirect_check(
            &first,
            &u("https://user:pw@cdn.example/f.csv?sig=t0k"),
            true,
        )
        .expect_err("another host");
        assert!(
            e.contains("redirect to https://cdn.example/f.csv refused")
                && !e.contains("pw")
                && !e.contains("t0k"),
            "{e}"
        );
        let hops: Vec<_> = (0..=MAX_REDIRECTS)
            .map(|i| u(&format!("https://feeds.example/{i}")))
            .collect();
        let next = u("https://feeds.example/next");
        assert!(redirect_check(&hops[..MAX_REDIRECTS], &next, false).is_ok());
        assert!(
            redirect_check(&hops, &next, false).is_err_and(|e| e.contains("more than 5 redirects"))
        );
        assert!(feed("http://u:p@feeds.example/f.csv").sends_secrets());
        let mut f = feed("http://feeds.example/f.csv");
        assert!(!f.sends_secrets());
        f.headers = vec![("X-Api-Key".into(), "k".into())];
        assert!(f.sends_secrets());
    }

    #[test]
    fn backoff_doubles_up_to_the_refresh() {
        let r = Duration::from_secs(1800);
        assert_eq!(backoff(r, 1), Duration::from_secs(10));
        assert_eq!(backoff(r, 2), Duration::from_secs(20));
        assert_eq!(backoff(r, 9), Duration::from_secs(1800));
        assert_eq!(backoff(Duration::from_secs(1), 3), Duration::from_secs(1));
    }
}
