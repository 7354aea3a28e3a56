//! The `relay-control` HTTPS daemon: the management API over TLS, the link to relayd, and
//! the background tasks that keep both fresh.
//!
//! Threads: a tokio multi-thread runtime runs the accept loop, one task per connection
//! (HTTP/1.1 over rustls), the periodic tasks (certificate reload, rate-limit and replay
//! cache pruning), and the monitor ([`monitoring`]: relayd polls every 500 ms, alert
//! delivery, autoblock decisions). Store writes (fsync) and the monitor's blocking polls run
//! on tokio's blocking pool. The relayd push link is one dedicated OS thread with a blocking
//! Unix-socket client ([`push`]).
//!
//! Invariants: no plaintext listener; every request passes [`auth::gate`]; a TLS handshake or
//! an idle connection cannot hold a slot forever (handshake timeout, header-read timeout,
//! connection cap); shutdown on SIGTERM/SIGINT stops accepting and lets in-flight requests
//! finish for a bounded time.

pub mod auth;
pub mod clustering;
pub mod config;
pub mod errors;
pub mod monitoring;
pub mod openapi;
pub mod push;
pub mod routes;
pub mod tls;

pub use relay::time::unix_now;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::cluster::Cluster;
use crate::observe::ControlCounters;
use crate::observe::Latest;
use crate::state::{Mutation, Output};
use crate::store::{Actor, Store};
use crate::tc3::{ReplayCache, Verifier};

/// Most signatures the replay cache holds (one skew window's worth of requests).
pub const REPLAY_CACHE_CAPACITY: usize = 200_000;
/// Most TLS connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Time a client has to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Ended blocklist entries and bans are pruned every this many 10-s housekeeping ticks.
pub const PRUNE_EVERY_TICKS: u64 = 6;
/// How often the certificate files are checked for changes.
pub const CERT_POLL: Duration = Duration::from_secs(2);

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// The TLS configuration failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The monitor could not start (its HTTP client for the webhook).
    #[error(transparent)]
    Monitor(#[from] crate::monitor::MonitorError),
}

/// Shared state of the API.
pub struct Server {
    /// The loaded config.
    pub cfg: config::Config,
    /// The store: the whole state of a single node, a cluster node's working copy. Every
    /// read comes from here; every change goes through [`Server::write`].
    pub store: Arc<Store>,
    /// The cluster agent, when `[cluster]` is configured.
    pub cluster: Option<Arc<Cluster>>,
    /// TC3 verification for the configured service.
    pub verifier: Verifier,
    /// Signatures seen within the skew window.
    pub replay: Mutex<ReplayCache>,
    /// Request rate limits.
    pub limits: auth::RateLimits,
    /// The relayd link.
    pub link: push::Link,
    /// The served certificate.
    pub certs: Arc<tls::CertStore>,
    /// Start time, for uptime.
    pub started: Instant,
    /// The daemon's own counters (requests, auth failures, alerts, autoblock, polls), shared
    /// with the monitor and the webhook sender.
    pub counters: Arc<ControlCounters>,
    /// The monitor's latest poll (`None` before the first), for `/metrics`.
    pub latest: watch::Receiver<Option<Arc<Latest>>>,
    /// The served certificate's expiry (Unix seconds), watched by the `cert_expiry` rule;
    /// updated on every reload.
    pub cert_not_after: watch::Sender<Option<u64>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("listen", &self.cfg.listen).finish_non_exhaustive()
    }
}

impl Server {
    /// Shared state for `cfg`, with the monitor started (polling relayd, evaluating alerts,
    /// delivering them) and its autoblock decisions applied by a task of their own. Must run
    /// inside the tokio runtime.
    pub fn start(
        cfg: config::Config,
        store: Arc<Store>,
        cluster: Option<Arc<Cluster>>,
        link: push::Link,
        certs: Arc<tls::CertStore>,
    ) -> Result<Arc<Self>, ServerError> {
        let counters = Arc::new(ControlCounters::default());
        let (cert_not_after, cert_rx) = watch::channel(Some(certs.info().not_after));
        let monitor = monitoring::start(&cfg, counters.clone(), cert_rx, cluster.as_ref().map(|c| c.health.clone()))?;
        let st = Arc::new(Server {
            verifier: Verifier::new(cfg.service.clone()),
            replay: Mutex::new(ReplayCache::new(REPLAY_CACHE_CAPACITY)),
            limits: auth::RateLimits::new(&cfg.rate_limits),
            cfg,
            store,
            cluster,
            link,
            certs,
            started: Instant::now(),
            counters,
            latest: monitor.latest,
            cert_not_after,
        });
        tokio::spawn(monitoring::apply_decisions(st.clone(), monitor.decisions));
        if st.cluster.is_some() {
            tokio::spawn(clustering::heartbeat(st.clone()));
        }
        Ok(st)
    }

    /// Makes change `m` as `actor`: cluster-wide when this node is in a cluster, else in the
    /// store. Blocking (Redis round trips or an fsync): call it on the blocking pool.
    pub fn write(&self, m: &Mutation, actor: &Actor<'_>) -> Result<Output, crate::cluster::ClusterError> {
        match &self.cluster {
            Some(c) => c.mutate(m, actor),
            None => Ok(self.store.mutate(m, actor)?),
        }
    }

    /// Whether reads may be stale: this node is in a cluster and does not reach Redis.
    pub fn maybe_stale(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| !c.health.is_reachable())
    }

    /// The `/metrics` body: relayd's counters from the monitor's latest poll, and ours.
    pub fn render_metrics(&self) -> String {
        let latest = self.latest.borrow().clone();
        let mut text = crate::metrics::render(latest.as_deref(), &self.counters);
        if let Some(c) = &self.cluster {
            text.push_str(&crate::metrics::render_cluster(&c.health));
            text.push_str(&crate::metrics::render_legs(&c.legs));
        }
        text
    }
}

/// Reloads the certificate on SIGHUP and when its files change; prunes caches. Runs until
/// the runtime stops.
fn spawn_housekeeping(st: Arc<Server>) -> std::io::Result<()> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let reloader = st.clone();
    tokio::spawn(async move {
        let mut poll = tokio::time::interval(CERT_POLL);
        loop {
            let forced = tokio::select! {
                _ = hup.recv() => true,
                _ = poll.tick() => false,
            };
            let certs = &reloader.certs;
            let result = if forced { certs.reload().map(Some) } else { certs.reload_if_changed() };
            match result {
                Ok(Some(info)) => {
                    tracing::info!(fingerprint = %info.sha256, not_after = info.not_after, "certificate reloaded");
                    reloader.cert_not_after.send_replace(Some(info.not_after));
                    println!("relay-control: certificate {}", info.sha256);
                }
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "certificate reload failed; serving the previous one"),
            }
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        let mut ticks: u64 = 0;
        loop {
            tick.tick().await;
            st.limits.prune();
            st.replay.lock().unwrap_or_else(|p| p.into_inner()).prune(unix_now());
            ticks += 1;
            if ticks.is_multiple_of(PRUNE_EVERY_TICKS) {
                // Ended blocklist entries and bans leave the store (and the cluster state).
                let s = st.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let actor = Actor {
                        who: "housekeeping",
                        source_ip: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                        now: unix_now(),
                        via: "",
                    };
                    s.write(&Mutation::Prune, &actor)
                })
                .await;
            }
        }
    });
    Ok(())
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    st: Arc<Server>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(st.certs.clone())?);
    spawn_housekeeping(st.clone())?;
    let app = routes::router(st.clone());
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut shutdown = std::pin::pin!(shutdown);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(tcp); // over the connection cap: refuse at once
            continue;
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(auth::Peer(peer));
                tower::ServiceExt::oneshot(app.clone(), req.map(axum::body::Body::new))
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).max_buf_size(256 * 1024);
            if let Err(e) = builder.serve_connection(TokioIo::new(tls), svc).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let grace = tokio::time::timeout(Duration::from_secs(5), async { while tasks.join_next().await.is_some() {} });
    let _ = grace.await;
    tasks.abort_all();
    Ok(())
}
