//! A Google token shared by every worker: read from memory per request, renewed ahead of its
//! expiry by one background task, and fetched by one worker at a time (the others wait
//! without blocking a thread) if it ever runs out.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use anyhow::Context;
use gcp_auth::{Token, TokenProvider};
use http::header::HeaderValue;
use tokio::time::Instant;

/// Renew this long before expiry (or at half the lifetime of a shorter token).
const RENEW_AHEAD: Duration = Duration::from_secs(5 * 60);
/// A token this close to expiry (or a quarter of a shorter lifetime) is not sent: the
/// request waits for a fresh one.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

pub struct SharedToken {
    provider: Arc<dyn TokenProvider>,
    scope: &'static str,
    pub source: String,
    current: RwLock<Arc<Bearer>>,
    /// The token before the current one: requests still in flight may carry it, and an
    /// error body may echo it, so it is redacted too.
    previous: RwLock<Option<Arc<Bearer>>>,
    fetching: tokio::sync::Mutex<()>,
}

/// A token with its header built once, so that a request costs a look-up, not a format.
pub struct Bearer {
    pub token: Arc<Token>,
    pub header: HeaderValue,
    renew_at: Instant,
    use_until: Instant,
    expires_at: Instant,
}

impl Bearer {
    fn new(token: Arc<Token>) -> anyhow::Result<Self> {
        let mut header = HeaderValue::from_str(&format!("Bearer {}", token.as_str()))
            .context("the access token cannot go in an HTTP header")?;
        header.set_sensitive(true);
        let now = Instant::now();
        let lifetime = (token.expires_at() - chrono::Utc::now())
            .to_std()
            .unwrap_or_default();
        Ok(Self {
            token,
            header,
            renew_at: now + lifetime - RENEW_AHEAD.min(lifetime / 2),
            use_until: now + lifetime - EXPIRY_MARGIN.min(lifetime / 4),
            expires_at: now + lifetime,
        })
    }

    fn usable(&self) -> bool {
        Instant::now() < self.use_until
    }
}

impl SharedToken {
    /// Fetches the first token (so a broken credential stops the run before any data moves)
    /// and starts the task that renews it.
    pub async fn start(
        provider: Arc<dyn TokenProvider>,
        scope: &'static str,
        source: String,
    ) -> anyhow::Result<Arc<Self>> {
        let token = provider.token(&[scope]).await?;
        let shared = Arc::new(Self {
            provider,
            scope,
            source,
            current: RwLock::new(Arc::new(Bearer::new(token)?)),
            previous: RwLock::new(None),
            fetching: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(renew_ahead(Arc::downgrade(&shared)));
        Ok(shared)
    }

    pub fn current(&self) -> Arc<Bearer> {
        self.current.read().expect("token lock").clone()
    }

    /// The tokens this run has sent, newest first.
    pub fn sent(&self) -> Vec<Arc<Bearer>> {
        let mut sent = vec![self.current()];
        sent.extend(self.previous.read().expect("token lock").clone());
        sent
    }

    /// The header for a request now: from memory, unless the token is (nearly) out.
    pub async fn header(&self) -> anyhow::Result<HeaderValue> {
        let bearer = self.current();
        if bearer.usable() {
            return Ok(bearer.header.clone());
        }
        Ok(self.renew(&bearer).await?.header.clone())
    }

    /// Replaces `stale` with a new token, unless another task already did: one request to
    /// the provider however many workers ask at once.
    pub async fn renew(&self, stale: &Arc<Bearer>) -> anyhow::Result<Arc<Bearer>> {
        let _fetching = self.fetching.lock().await;
        let current = self.current();
        if !Arc::ptr_eq(&current, stale) {
            return Ok(current);
        }
        let token = self
            .provider
            .token(&[self.scope])
            .await
            .map_err(|e| anyhow::anyhow!("{}", super::token::error_chain(&e)))
            .with_context(|| format!("renewing the access token from {}", self.source))?;
        if token.as_str() == stale.token.as_str() {
            return Ok(current);
        }
        let fresh = Arc::new(Bearer::new(token)?);
        *self.previous.write().expect("token lock") = Some(current);
        *self.current.write().expect("token lock") = fresh.clone();
        Ok(fresh)
    }
}

/// Renews the token ahead of its expiry until the credential is dropped.
async fn renew_ahead(shared: Weak<SharedToken>) {
    let mut next = match shared.upgrade() {
        Some(shared) => shared.current().renew_at,
        None => return,
    };
    loop {
        tokio::time::sleep_until(next).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let before = shared.current();
        let now = Instant::now();
        next = match shared.renew(&before).await {
            Ok(after) if !Arc::ptr_eq(&after, &before) => after.renew_at,
            // The provider still hands out a cached token (gcp_auth's metadata-server and
            // gcloud providers keep one until 20 s before expiry): ask again inside that window.
            Ok(_) => before
                .expires_at
                .checked_sub(Duration::from_secs(15))
                .unwrap_or(now)
                .max(now + Duration::from_secs(1)),
            // A request that finds the token out of date asks itself and stops the run
            // with the provider's error if that fails too.
            Err(_) => now + Duration::from_secs(10),
        };
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;

    use super::*;

    /// Issues `token-N`, each valid for an hour, and counts the calls.
    #[derive(Default)]
    struct CountingProvider {
        calls: AtomicU32,
    }

    #[async_trait]
    impl TokenProvider for CountingProvider {
        async fn token(&self, _scopes: &[&str]) -> Result<Arc<Token>, gcp_auth::Error> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(super::super::token::token(&format!("token-{n}"), 3600).unwrap())
        }

        async fn project_id(&self) -> Result<Arc<str>, gcp_auth::Error> {
            Err(gcp_auth::Error::Str("none"))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn renews_once_five_minutes_before_expiry_and_workers_never_wait() {
        let provider = Arc::new(CountingProvider::default());
        let shared = SharedToken::start(provider.clone(), "scope", "test".into())
            .await
            .unwrap();
        assert_eq!(shared.header().await.unwrap(), "Bearer token-0");
        tokio::time::sleep(Duration::from_secs(54 * 60)).await;
        assert_eq!(provider.calls.load(Ordering::SeqCst), 1);
        assert_eq!(shared.header().await.unwrap(), "Bearer token-0");
        // Just past the 55-minute mark the background task has fetched the next token.
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(provider.calls.load(Ordering::SeqCst), 2);
        assert_eq!(shared.header().await.unwrap(), "Bearer token-1");
        let sent: Vec<_> = shared
            .sent()
            .iter()
            .map(|b| b.token.as_str().to_owned())
            .collect();
        assert_eq!(sent, ["token-1", "token-0"]);
    }

    #[tokio::test(start_paused = true)]
    async fn many_workers_asking_at_once_fetch_one_token() {
        let provider = Arc::new(CountingProvider::default());
        let shared = SharedToken::start(provider.clone(), "scope", "test".into())
            .await
            .unwrap();
        let stale = shared.current();
        let renewals: Vec<_> = (0..16)
            .map(|_| {
                let shared = shared.clone();
                let stale = stale.clone();
                tokio::spawn(async move { shared.renew(&stale).await.unwrap() })
            })
            .collect();
        for renewal in renewals {
            assert_eq!(renewal.await.unwrap().token.as_str(), "token-1");
        }
        assert_eq!(provider.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_renewing_task_ends_with_the_credential() {
        let provider = Arc::new(CountingProvider::default());
        let shared = SharedToken::start(provider.clone(), "scope", "test".into())
            .await
            .unwrap();
        drop(shared);
        tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
        assert_eq!(provider.calls.load(Ordering::SeqCst), 1);
    }
}
