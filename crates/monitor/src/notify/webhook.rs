//! The webhook: the alert as a signed JSON POST, retried with backoff.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretSlice};
use ureq::http::{HeaderMap, Uri};
use zeroize::Zeroizing;

use super::alert::Alert;
use super::sign::{hex_encode, sign};
use super::{Cancel, NotifyError};

/// The header with the unix time (seconds, decimal) the request was signed at.
pub const TIMESTAMP_HEADER: &str = "X-Airlock-Timestamp";
/// The header with the signature, `sha256=<hex>` (see [`super::verify`]).
pub const SIGNATURE_HEADER: &str = "X-Airlock-Signature";
/// The header with the delivery id: random hex, the same on every attempt
/// to deliver one alert, so a receiver can drop a duplicate.
pub const DELIVERY_HEADER: &str = "X-Airlock-Delivery";
/// The `User-Agent` the webhook sends.
pub const USER_AGENT: &str = concat!("airlock/", env!("CARGO_PKG_VERSION"));

/// The key a webhook signs with.
///
/// Held in a [`SecretSlice`], wiped from memory when dropped; its `Debug`
/// shows no byte of it.
pub struct WebhookKey(SecretSlice<u8>);

impl WebhookKey {
    /// The shortest key [`WebhookKey::from_file`] accepts, in bytes.
    pub const MIN_LEN: usize = 16;
    /// The longest key file [`WebhookKey::from_file`] reads, in bytes.
    pub const MAX_LEN: usize = 4096;

    /// A key of these bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> WebhookKey {
        WebhookKey(SecretSlice::from(bytes))
    }

    /// The key in the file at `path`: its bytes, less trailing whitespace
    /// (so the newline `echo` or an editor leaves is not part of it).
    ///
    /// The file must be a regular file that neither group nor others can
    /// read or write (mode 0600 or stricter), and hold 16 to 4096 bytes.
    pub fn from_file(path: &Path) -> Result<WebhookKey, NotifyError> {
        let read_err = |source| NotifyError::KeyRead {
            path: path.to_path_buf(),
            source,
        };
        let invalid = |reason| NotifyError::KeyInvalid {
            path: path.to_path_buf(),
            reason,
        };
        // Opening a fifo would block: look before opening. The checks that
        // matter are then made on the opened file, so the file read is the
        // one checked.
        if !std::fs::metadata(path).map_err(read_err)?.is_file() {
            return Err(invalid("not a regular file"));
        }
        let file = File::open(path).map_err(read_err)?;
        let meta = file.metadata().map_err(read_err)?;
        if !meta.is_file() {
            return Err(invalid("not a regular file"));
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(NotifyError::KeyMode {
                path: path.to_path_buf(),
                mode,
            });
        }
        // Room for one byte past the limit, so the buffer never grows (a
        // grown buffer would leave a copy of the key behind, unwiped).
        let mut buf = Zeroizing::new(Vec::with_capacity(Self::MAX_LEN + 1));
        let limit = u64::try_from(Self::MAX_LEN + 1).unwrap_or(u64::MAX);
        file.take(limit).read_to_end(&mut buf).map_err(read_err)?;
        if buf.len() > Self::MAX_LEN {
            return Err(invalid("longer than 4096 bytes"));
        }
        let len = buf
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |last| last + 1);
        if len < Self::MIN_LEN {
            return Err(invalid("shorter than 16 bytes"));
        }
        Ok(WebhookKey::from_bytes(buf[..len].to_vec()))
    }

    fn bytes(&self) -> &[u8] {
        self.0.expose_secret()
    }
}

impl fmt::Debug for WebhookKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookKey(<redacted>)")
    }
}

/// How a webhook retries.
///
/// An attempt is retried after a connection error, a timeout, a 5xx, a 408
/// or a 429; any other status is final. The wait before attempt `n + 1` is
/// `backoff * 2^(n - 1)`, capped at `max_backoff`, or the receiver's
/// `Retry-After` seconds if longer (capped the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, the first included (at least one is made).
    pub attempts: u32,
    /// The wait before the second attempt.
    pub backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// How long one attempt may take, connecting included.
    pub timeout: Duration,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            attempts: 4,
            backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
            timeout: Duration::from_secs(5),
        }
    }
}

impl Retry {
    /// The wait before attempt `attempt` (counted from 1; none before the first).
    pub fn backoff_before(&self, attempt: u32) -> Duration {
        if attempt <= 1 {
            return Duration::ZERO;
        }
        let doublings = (attempt - 2).min(31);
        self.backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }
}

/// A webhook: where alerts are POSTed and the key they are signed with.
pub struct Webhook {
    /// Where to post, in full.
    endpoint: String,
    /// How messages show it.
    url: String,
    key: WebhookKey,
    retry: Retry,
    agent: ureq::Agent,
}

impl Webhook {
    /// A webhook posting to `url` (`http` or `https`), signing with `key`,
    /// retrying as [`Retry::default`].
    ///
    /// A URL with credentials in it (`user:pass@`) is refused: the
    /// signature is how the receiver knows the sender.
    pub fn new(url: &str, key: WebhookKey) -> Result<Webhook, NotifyError> {
        let shown = check_url(url)?;
        let retry = Retry::default();
        Ok(Webhook {
            endpoint: url.to_string(),
            url: shown,
            key,
            retry,
            agent: agent(&retry),
        })
    }

    /// The same webhook retrying as `retry`.
    pub fn with_retry(mut self, retry: Retry) -> Webhook {
        self.agent = agent(&retry);
        self.retry = retry;
        self
    }

    /// The URL as messages show it: any query string is elided, as it may
    /// hold a token.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How it retries.
    pub fn retry(&self) -> Retry {
        self.retry
    }

    /// POSTs `alert`, retrying as configured; returns the number of
    /// attempts it took. Blocks until delivered or given up.
    pub fn deliver(&self, alert: &Alert) -> Result<u32, NotifyError> {
        self.deliver_until(alert, &Cancel::default())
    }

    /// [`Webhook::deliver`], giving up (with the last attempt's error)
    /// rather than wait for another attempt once `cancel` is set.
    pub(crate) fn deliver_until(&self, alert: &Alert, cancel: &Cancel) -> Result<u32, NotifyError> {
        let body = alert.to_json();
        let delivery = delivery_id();
        let of = self.retry.attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (error, retry_after) = match self.attempt(&body, &delivery) {
                Ok(()) => return Ok(attempt),
                Err(Failed::Final(reason)) => return Err(self.error(reason, attempt, of)),
                Err(Failed::Retry(reason, retry_after)) => {
                    (self.error(reason, attempt, of), retry_after)
                }
            };
            if attempt >= of {
                return Err(error);
            }
            let mut wait = self.retry.backoff_before(attempt + 1);
            if let Some(asked) = retry_after {
                wait = wait.max(asked.min(self.retry.max_backoff));
            }
            if cancel.sleep(wait) {
                return Err(error);
            }
        }
    }

    fn attempt(&self, body: &[u8], delivery: &str) -> Result<(), Failed> {
        let timestamp = unix_now().to_string();
        let signature = sign(self.key.bytes(), &timestamp, body);
        let sent = self
            .agent
            .post(&self.endpoint)
            .header("Content-Type", "application/json")
            .header(TIMESTAMP_HEADER, &timestamp)
            .header(SIGNATURE_HEADER, &signature)
            .header(DELIVERY_HEADER, delivery)
            .send(body);
        match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                if (200..300).contains(&status) {
                    Ok(())
                } else if retryable_status(status) {
                    let retry_after = retry_after(response.headers());
                    Err(Failed::Retry(Reason::Status(status), retry_after))
                } else {
                    Err(Failed::Final(Reason::Status(status)))
                }
            }
            Err(e) => {
                let reason = match e {
                    ureq::Error::Timeout(_) => {
                        format!("no answer within {:?}", self.retry.timeout)
                    }
                    _ => e.to_string(),
                };
                if retryable_error(&e) {
                    Err(Failed::Retry(Reason::Transport(reason), None))
                } else {
                    Err(Failed::Final(Reason::Transport(reason)))
                }
            }
        }
    }

    fn error(&self, reason: Reason, attempt: u32, of: u32) -> NotifyError {
        let url = self.url.clone();
        match reason {
            Reason::Status(status) => NotifyError::Status {
                url,
                status,
                attempt,
                of,
            },
            Reason::Transport(reason) => NotifyError::Transport {
                url,
                reason,
                attempt,
                of,
            },
        }
    }
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .field("key", &self.key)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// Why an attempt failed.
enum Reason {
    Status(u16),
    Transport(String),
}

/// Whether it is worth another attempt.
enum Failed {
    Final(Reason),
    Retry(Reason, Option<Duration>),
}

/// An agent for one attempt at a time: statuses are returned, not errors;
/// redirects are not followed (a POST's body would not be signed for the
/// new address); the environment's proxy settings are not used, so alerts
/// go where the operator configured and nowhere else.
fn agent(retry: &Retry) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .timeout_global(Some(retry.timeout))
        .user_agent(USER_AGENT)
        .build()
        .new_agent()
}

/// Checks `url`, returning how messages show it.
fn check_url(url: &str) -> Result<String, NotifyError> {
    let bad = |reason| NotifyError::BadUrl {
        url: elide_credentials(&elide_query(url)),
        reason,
    };
    let uri: Uri = url.parse().map_err(|_| bad("not a url"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("the scheme must be http or https")),
    }
    let Some(authority) = uri.authority() else {
        return Err(bad("no host"));
    };
    if authority.as_str().contains('@') {
        return Err(bad(
            "credentials in a url are refused; the key signs the request",
        ));
    }
    if authority.host().is_empty() {
        return Err(bad("no host"));
    }
    Ok(elide_query(url))
}

/// `url` without its query string, which may hold a token.
fn elide_query(url: &str) -> String {
    match url.split_once('?') {
        Some((before, _)) => format!("{before}?..."),
        None => url.to_string(),
    }
}

/// `url` with any `user:password@` replaced by `...@`.
fn elide_credentials(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let rest = match rest[..end].rfind('@') {
        Some(at) => format!("...{}", &rest[at..]),
        None => rest.to_string(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{rest}"),
        None => rest,
    }
}

/// Whether a response with `status` is worth another attempt.
pub(crate) fn retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status)
}

/// Whether an attempt that failed with `e` is worth another: connection
/// errors and timeouts are; a bad URL, a TLS refusal or a redirect are not.
fn retryable_error(e: &ureq::Error) -> bool {
    !matches!(
        e,
        ureq::Error::BadUri(_)
            | ureq::Error::Http(_)
            | ureq::Error::RedirectFailed
            | ureq::Error::TooManyRedirects
            | ureq::Error::InvalidProxyUrl
            | ureq::Error::BodyExceedsLimit(_)
            | ureq::Error::Tls(_)
            | ureq::Error::Pem(_)
            | ureq::Error::Rustls(_)
            | ureq::Error::RequireHttpsOnly(_)
            | ureq::Error::TlsRequired
    )
}

/// The receiver's `Retry-After`, when it is in seconds.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("retry-after")?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// 16 random bytes in hex. Without randomness (never, on Linux) the time and
/// a counter, which is still unique in this process.
fn delivery_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes[..8].copy_from_slice(&nanos.to_le_bytes()[..8]);
        bytes[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    }
    hex_encode(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let retry = Retry {
            attempts: 10,
            backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        };
        let waits: Vec<u128> = (1..=6)
            .map(|a| retry.backoff_before(a).as_millis())
            .collect();
        assert_eq!(waits, [0, 250, 500, 1000, 1000, 1000]);
        assert_eq!(retry.backoff_before(200), Duration::from_secs(1));
    }

    #[test]
    fn which_statuses_are_retried() {
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(retryable_status(status), "{status}");
        }
        for status in [301, 400, 401, 403, 404, 410, 422] {
            assert!(!retryable_status(status), "{status}");
        }
    }

    #[test]
    fn urls_are_checked_and_shown_without_query() {
        let key = || WebhookKey::from_bytes(b"0123456789abcdef".to_vec());
        let hook =
            Webhook::new("https://hooks.example/alert?token=s3cret", key()).expect("valid url");
        assert_eq!(hook.url(), "https://hooks.example/alert?...");
        assert!(!format!("{hook:?}").contains("s3cret"));
        for bad in [
            "ftp://hooks.example/alert",
            "hooks.example/alert",
            "https://user:pw@hooks.example/alert",
            "not a url",
        ] {
            let err = Webhook::new(bad, key()).expect_err(bad).to_string();
            assert!(!err.contains("pw"), "{err}");
        }
    }

    #[test]
    fn credentials_are_elided() {
        assert_eq!(
            elide_credentials("https://user:pw@hooks.example/a@b"),
            "https://...@hooks.example/a@b"
        );
        assert_eq!(elide_credentials("u:p@host/x"), "...@host/x");
        assert_eq!(
            elide_credentials("https://hooks.example/"),
            "https://hooks.example/"
        );
    }

    #[test]
    fn retry_after_seconds_are_read() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", "3".parse().expect("header value"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT"
                .parse()
                .expect("header value"),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn delivery_ids_are_random_hex() {
        let a = delivery_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, delivery_id());
    }

    #[test]
    fn key_debug_shows_nothing() {
        let key = WebhookKey::from_bytes(b"very-secret-key-bytes".to_vec());
        assert!(!format!("{key:?}").contains("secret-key"));
    }
}
