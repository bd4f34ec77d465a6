//! HTTP Basic authentication for the HTTP API (SPEC §12): users with argon2id password
//! hashes (or a password read from a file), checked without blocking a worker thread.
//!
//! Checking an argon2id hash takes tens of milliseconds of CPU by design, far too long
//! for a worker thread that answers thousands of lookups per second. So:
//! - a credential that passed once is remembered: the SHA-256 of a per-process random
//!   key and the `Authorization` header, for [`REMEMBER`] (the cache is cleared when
//!   the users change); KUMA sends the same header on every request, so only its first
//!   request on a fresh server pays for the check;
//! - the checks themselves run on one thread of their own, fed through a short queue:
//!   when it is full, the request is answered `429` (try again) rather than queued
//!   without bound, so a flood of bad passwords costs one core at most.
//!
//! Unknown users are checked against a dummy hash, so the time taken does not tell
//! which names exist; a password kept in a file is compared by its digest. Failed
//! logins are counted and logged, at most once per [`LOG_EVERY`] with the count.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::PasswordVerifier;
use base64::Engine as _;

use super::config::{Credential, HttpUser};

/// How long a credential that passed is remembered.
pub const REMEMBER: Duration = Duration::from_secs(300);
/// Remembered credentials, at most.
const REMEMBERED: usize = 10_000;
/// Checks waiting for the checking thread, at most.
const QUEUE: usize = 64;
/// Failed logins are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// What a request's credentials come to.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Missing, malformed or wrong.
    Denied,
    /// Too many checks under way: try again later.
    Busy,
}

struct Job {
    user: Option<Arc<StoredUser>>,
    password: Vec<u8>,
    reply: tokio::sync::oneshot::Sender<bool>,
}

struct StoredUser {
    credential: Credential,
}

/// The users of one configuration, and the means to check them.
pub struct Users {
    by_name: HashMap<String, Arc<StoredUser>>,
    key: [u8; 32],
    remembered: Mutex<HashMap<[u8; 32], Instant>>,
    jobs: mpsc::SyncSender<Job>,
    /// Failed logins, shared with the users this configuration replaces and the one
    /// that replaces it, so the counter only grows.
    failures: Arc<AtomicU64>,
    logged: Mutex<(Option<Instant>, u64)>,
}

impl Users {
    /// Users from the settings (none: anyone is let in), counting failed logins in
    /// `failures`. Starts the checking thread, which ends with the `Users`.
    pub fn new(users: &[HttpUser], failures: Arc<AtomicU64>) -> std::io::Result<Users> {
        let (jobs, rx) = mpsc::sync_channel::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("tracer-auth".into())
            .spawn(move || {
                // A hash no password matches, for unknown names.
                let dummy = dummy_hash();
                for job in rx {
                    let ok = match &job.user {
                        // A password kept in a file is compared by digest, in
                        // microseconds: the dummy hash too, so that an answer's time
                        // does not tell such a name from an unknown one.
                        Some(u) if matches!(u.credential, Credential::Password(_)) => {
                            let _ = check(&dummy, &job.password);
                            check(&u.credential, &job.password)
                        }
                        Some(u) => check(&u.credential, &job.password),
                        None => {
                            let _ = check(&dummy, &job.password);
                            false
                        }
                    };
                    let _ = job.reply.send(ok);
                }
            })?;
        let mut key = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
            .map_err(|_| std::io::Error::other("no randomness for the credential cache"))?;
        Ok(Users {
            by_name: users
                .iter()
                .map(|u| {
                    (
                        u.name.clone(),
                        Arc::new(StoredUser {
                            credential: u.credential.clone(),
                        }),
                    )
                })
                .collect(),
            key,
            remembered: Mutex::new(HashMap::new()),
            jobs,
            failures,
            logged: Mutex::new((None, 0)),
        })
    }

    /// Whether any user is configured (none: no authentication).
    pub fn required(&self) -> bool {
        !self.by_name.is_empty()
    }

    /// Check an `Authorization` header.
    pub async fn check(&self, header: Option<&[u8]>, peer: std::net::SocketAddr) -> Verdict {
        if !self.required() {
            return Verdict::Allowed;
        }
        let Some(header) = header else {
            return self.denied(peer, "no credentials");
        };
        let digest = self.digest(header);
        let now = Instant::now();
        {
            let remembered = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
            if remembered.get(&digest).is_some_and(|&until| until > now) {
                return Verdict::Allowed;
            }
        }
        let Some((name, password)) = basic(header) else {
            return self.denied(peer, "not HTTP Basic credentials");
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            user: self.by_name.get(&name).cloned(),
            password,
            reply,
        };
        if self.jobs.try_send(job).is_err() {
            return Verdict::Busy;
        }
        match answer.await {
            Ok(true) => {
                let mut remembered = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
                if remembered.len() >= REMEMBERED {
                    remembered.retain(|_, until| *until > now);
                    if remembered.len() >= REMEMBERED {
                        remembered.clear();
                    }
                }
                remembered.insert(digest, Instant::now() + REMEMBER);
                Verdict::Allowed
            }
            Ok(false) => self.denied(
                peer,
                &format!("wrong password or unknown user `{}`", printable(&name)),
            ),
            Err(_) => Verdict::Busy,
        }
    }

    fn digest(&self, header: &[u8]) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&self.key);
        ctx.update(header);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    fn denied(&self, peer: std::net::SocketAddr, why: &str) -> Verdict {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if logged.0.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            logged.1 += 1;
        } else {
            let unlogged = std::mem::take(&mut logged.1);
            logged.0 = Some(now);
            tracing::warn!(%peer, failed_logins = n, unlogged_since_last = unlogged, "HTTP API login refused: {why}");
        }
        Verdict::Denied
    }
}

/// `Basic base64(name:password)` → the name and the password.
fn basic(header: &[u8]) -> Option<(String, Vec<u8>)> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let name = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((name, decoded[colon + 1..].to_vec()))
}

/// A user name as the log may show it.
fn printable(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).take(64).collect()
}

fn check(credential: &Credential, password: &[u8]) -> bool {
    match credential {
        Credential::Hash(phc) => match PasswordHash::new(phc) {
            Ok(hash) => argon2::Argon2::default()
                .verify_password(password, &hash)
                .is_ok(),
            Err(_) => false,
        },
        Credential::Password(stored) => {
            // Digests of equal length, compared whole: the time taken says nothing
            // about how much of the password was right.
            let a = ring::digest::digest(&ring::digest::SHA256, stored.as_bytes());
            let b = ring::digest::digest(&ring::digest::SHA256, password);
            a.as_ref()
                .iter()
                .zip(b.as_ref())
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0
        }
    }
}

fn dummy_hash() -> Credential {
    Credential::Hash(hash_password(b"no password matches this one").unwrap_or_default())
}

/// An argon2id hash (PHC string) of `password`, with a random salt: what `tracer
/// passwd` prints.
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials() {
        let h = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("kuma:p:w")
        );
        assert_eq!(
            basic(h.as_bytes()),
            Some(("kuma".to_string(), b"p:w".to_vec()))
        );
        assert_eq!(basic(b"Bearer abc"), None);
        assert_eq!(basic(b"Basic !!!"), None);
    }

    #[test]
    fn hashes_and_files_check() {
        let phc = hash_password(b"s3cret").expect("hash");
        assert!(phc.starts_with("$argon2id$"));
        assert!(check(&Credential::Hash(phc.clone()), b"s3cret"));
        assert!(!check(&Credential::Hash(phc), b"s3cret "));
        assert!(check(&Credential::Password("pw".into()), b"pw"));
        assert!(!check(&Credential::Password("pw".into()), b"pW"));
    }
}
