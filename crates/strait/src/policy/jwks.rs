//! A `jwt` policy's JWK set from a URL (`jwks_url`). The keys are held behind an
//! `ArcSwap`, so verifying a token never waits on a lock. The set is fetched on first use,
//! again in the background once it is older than `jwks_refresh`, and on demand when a token
//! names a key the set lacks (or while no set could be fetched) — on demand at most once per
//! [`ON_DEMAND_EVERY`], not counting the first fetch, so tokens with made-up `kid`s cannot
//! hammer the server. A failed fetch (unreachable, no answer within [`TIMEOUT`], not 2xx,
//! not a usable set) is logged as a warning and keeps the keys held before.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The longest a fetch may take, connecting included.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// On-demand fetches (an unknown `kid`) are at most this often.
pub const ON_DEMAND_EVERY: Duration = Duration::from_secs(10);
/// The largest JWK set accepted.
const MAX_BYTES: usize = 1 << 20;

type FetchClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the request failed: {0}")]
    Request(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the server answered {0}")]
    Status(StatusCode),
    #[error("the answer's body failed: {0}")]
    Body(String),
    #[error("{0}")]
    Keys(String),
}

/// The keys of one successful fetch.
pub struct Fetched<K> {
    pub keys: K,
    at: Instant,
}

/// A JWK set at a URL, parsed into `K` by `parse`.
pub struct Remote<K> {
    url: Uri,
    refresh: Duration,
    parse: fn(&[u8]) -> Result<K, String>,
    keys: ArcSwapOption<Fetched<K>>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
    /// Fetches finished so far, successful or not.
    attempts: AtomicU64,
    /// When the last on-demand fetch started (milliseconds since `epoch`, plus one; 0: never).
    on_demand_at: AtomicU64,
    /// When the last fetch of any kind started, as above.
    any_at: AtomicU64,
    /// A background refresh is running.
    refreshing: AtomicBool,
    epoch: Instant,
    client: OnceLock<FetchClient>,
}

impl<K: Send + Sync + 'static> Remote<K> {
    pub fn new(url: Uri, refresh: Duration, parse: fn(&[u8]) -> Result<K, String>) -> Self {
        Remote {
            url,
            refresh,
            parse,
            keys: ArcSwapOption::empty(),
            fetching: tokio::sync::Mutex::new(()),
            attempts: AtomicU64::new(0),
            on_demand_at: AtomicU64::new(0),
            any_at: AtomicU64::new(0),
            refreshing: AtomicBool::new(false),
            epoch: Instant::now(),
            client: OnceLock::new(),
        }
    }

    /// The keys held now, if a fetch ever succeeded.
    pub fn current(&self) -> Option<Arc<Fetched<K>>> {
        self.keys.load_full()
    }

    /// Starts a background fetch when the keys held are older than the refresh period (and
    /// no fetch started within [`ON_DEMAND_EVERY`]); the keys held are used meanwhile.
    pub fn refresh_if_stale(self: &Arc<Self>) {
        let stale = self
            .keys
            .load()
            .as_ref()
            .is_some_and(|held| held.at.elapsed() >= self.refresh);
        if !stale || !self.elapsed_since(&self.any_at) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        runtime.spawn(async move {
            {
                let _one = this.fetching.lock().await;
                this.fetch().await;
            }
            this.refreshing.store(false, Ordering::Release);
        });
    }

    /// A fetch for a token whose key is not held, unless one ran within [`ON_DEMAND_EVERY`]
    /// (the first fetch does not count). It resolves once that fetch, or one already
    /// running, has finished.
    pub fn on_demand(self: &Arc<Self>) -> Option<impl Future<Output = ()> + Send + 'static> {
        if !self.elapsed_since(&self.on_demand_at) {
            return None;
        }
        let seen = self.attempts.load(Ordering::Acquire);
        let this = self.clone();
        Some(async move {
            let _one = this.fetching.lock().await;
            // Another fetch finished while this one waited: its keys stand.
            if this.attempts.load(Ordering::Acquire) != seen
                || !this.elapsed_since(&this.on_demand_at)
            {
                return;
            }
            if seen > 0 {
                this.on_demand_at.store(this.now(), Ordering::Release);
            }
            this.fetch().await;
        })
    }

    /// Milliseconds since `epoch`, plus one (0 means never).
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    /// Whether [`ON_DEMAND_EVERY`] has passed since the time held in `at` (or it is never).
    fn elapsed_since(&self, at: &AtomicU64) -> bool {
        let at = at.load(Ordering::Acquire);
        let every = u64::try_from(ON_DEMAND_EVERY.as_millis()).unwrap_or(u64::MAX);
        at == 0 || self.now().saturating_sub(at) >= every
    }

    /// Fetches the set once (the caller holds `fetching`); on failure the keys held stay.
    async fn fetch(&self) {
        self.any_at.store(self.now(), Ordering::Release);
        match self.get().await {
            Ok(keys) => self.keys.store(Some(Arc::new(Fetched {
                keys,
                at: Instant::now(),
            }))),
            Err(error) => {
                tracing::warn!(url = %self.url, %error, "fetching the JWK set failed; tokens its keys would verify are refused");
            }
        }
        self.attempts.fetch_add(1, Ordering::AcqRel);
    }

    async fn get(&self) -> Result<K, FetchError> {
        let client = match self.client.get() {
            Some(client) => client,
            None => {
                let built = build_client()?;
                self.client.get_or_init(|| built)
            }
        };
        let request = Request::get(self.url.clone())
            .header(header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|why| FetchError::Request(why.to_string()))?;
        let fetched = async {
            let response = client
                .request(request)
                .await
                .map_err(|why| FetchError::Request(causes(&why)))?;
            if !response.status().is_success() {
                return Err(FetchError::Status(response.status()));
            }
            let body = Limited::new(response.into_body(), MAX_BYTES)
                .collect()
                .await
                .map_err(|why| FetchError::Body(why.to_string()))?
                .to_bytes();
            (self.parse)(&body).map_err(FetchError::Keys)
        };
        tokio::time::timeout(TIMEOUT, fetched)
            .await
            .map_err(|_| FetchError::Timeout(TIMEOUT))?
    }
}

/// An error and its causes, as one line.
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

/// An HTTP(S) client trusting the system's roots (loaded once per process).
fn build_client() -> Result<FetchClient, FetchError> {
    static ROOTS: OnceLock<Arc<rustls::RootCertStore>> = OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        let _ = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        Arc::new(roots)
    });
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots.clone())
    .with_no_client_auth();
    let mut connector = HttpConnector::new();
    connector.enforce_http(false);
    connector.set_connect_timeout(Some(TIMEOUT));
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(https))
}
