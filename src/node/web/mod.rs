//! The web dashboard and the metrics endpoint, over HTTP/1.1 (axum on hyper).
//!
//! - The dashboard (`[web] listen`, default `127.0.0.1:7464`, on by default; a free port on the
//!   same IP when that one is taken; loopback only unless `web.allow_remote`): a single page
//!   ([`assets`]) and a JSON API ([`api`]) that answers with the control protocol's replies, so
//!   its shapes are those of `p2pfs-ctl --json`. Live updates come as server-sent events
//!   ([`events`]). Everything but the page and its assets needs the login token
//!   ([`auth`]), kept in the data dir; `p2pfs-ctl web` prints a login link.
//!   The metrics endpoint checks the Host header as the dashboard does (unless
//!   `metrics.allow_remote`), so that a page from another site cannot read it through DNS
//!   rebinding.
//! - The Prometheus endpoint (`[metrics] listen`): `GET /metrics` only, no login (as a scraper
//!   expects), loopback only unless `metrics.allow_remote`. The dashboard's listener serves
//!   `/metrics` too, behind the login.
//!
//! Both run through one accept loop ([`serve_router`]): a bounded number of connections, the
//! request head bounded to [`MAX_HEAD`] bytes (431 past it) and required within
//! [`READ_TIMEOUT`] (the connection is closed otherwise).

pub mod api;
pub mod assets;
pub mod auth;
pub mod events;
pub mod qr;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;

use crate::node::config::WebConfig;
use crate::node::control::ControlService;
use crate::node::status::StatusReader;
use crate::util::workers::Workers;

/// Longest request head (request line and headers) read; past it: 431. hyper's smallest
/// read buffer.
pub const MAX_HEAD: usize = 8 * 1024;
/// The whole request head must arrive within this, or the connection is closed.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections the metrics endpoint serves at once (a scraper needs one); more are closed.
const METRICS_CONNECTIONS: usize = 4;
/// Connections the dashboard serves at once: a few tabs, each with its event stream and a
/// handful of requests in flight.
const WEB_CONNECTIONS: usize = 64;
/// The login token's file in the data dir.
pub const TOKEN_FILE: &str = "web.token";

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The dashboard's listener, bound before the node starts (a bad address stops the start).
pub struct WebListener {
    listener: std::net::TcpListener,
    /// The default address, when another program held it and a free port was taken instead.
    default_taken: Option<SocketAddr>,
    /// What the dashboard needs to let a browser in: the token and whether a Host header
    /// naming another machine is fine.
    access: auth::Access,
}

impl WebListener {
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound socket has an address")
    }

    /// The dashboard's address as a browser opens it, and the login link.
    pub fn urls(&self) -> WebUrls {
        let mut urls = WebUrls::new(self.local_addr(), &self.access.token);
        urls.note = self.default_taken.map(|taken| {
            format!(
                "{taken}, the default address, was taken by another program when this node started: a bookmark of http://{taken}/ does not reach this node (and whatever listens there is not p2pfs)"
            )
        });
        urls
    }
}

/// Where the dashboard is, for `p2pfs-ctl web`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebUrls {
    pub url: String,
    pub login_url: String,
    /// Said with the URLs: the default port was taken.
    pub note: Option<String>,
}

impl WebUrls {
    fn new(addr: SocketAddr, token: &str) -> Self {
        let url = format!("http://{addr}/");
        Self {
            login_url: format!("{url}#token={token}"),
            url,
            note: None,
        }
    }
}

/// Binds the dashboard, if on: the configured address, else (when that port is taken and it
/// is the default one) a free port on the same IP. Makes the login token on first use.
pub fn bind(config: &WebConfig, data_dir: &Path) -> Result<Option<WebListener>, WebError> {
    let Some(addr) = config.listen_addr().map_err(WebError::Config)? else {
        return Ok(None);
    };
    let mut default_taken = None;
    let listener = match std::net::TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e)
            if e.kind() == std::io::ErrorKind::AddrInUse
                && config.listen.trim() == crate::node::config::DEFAULT_WEB_LISTEN =>
        {
            let other = SocketAddr::new(addr.ip(), 0);
            let l = std::net::TcpListener::bind(other).map_err(|source| WebError::Listen {
                addr: other,
                source,
            })?;
            tracing::info!(
                taken = %addr,
                "the dashboard's default port is taken (another node on this machine?): using a free one"
            );
            default_taken = Some(addr);
            l
        }
        Err(source) => return Err(WebError::Listen { addr, source }),
    };
    listener
        .set_nonblocking(true)
        .map_err(|source| WebError::Listen { addr, source })?;
    let token = auth::load_or_make_token(&data_dir.join(TOKEN_FILE))?;
    Ok(Some(WebListener {
        listener,
        default_taken,
        access: auth::Access::new(token, config.allow_remote),
    }))
}

/// What the dashboard's handlers share.
#[derive(Clone)]
pub struct WebState {
    pub control: Arc<ControlService>,
    pub status: Arc<StatusReader>,
    pub samples: Arc<events::Samples>,
    pub access: Arc<auth::Access>,
    /// Streams of downloads run among these, so that a stop ends them.
    pub workers: Workers,
}

/// The dashboard's routes: the page and its assets open, the rest behind the login, all
/// behind the Host check.
pub fn router(state: WebState) -> Router {
    let guarded = Router::new()
        .nest("/api", api::router())
        .route("/metrics", get(metrics_behind_login))
        .route_layer(axum::middleware::from_fn_with_state(
            state.access.clone(),
            auth::require_login,
        ));
    Router::new()
        .route("/", get(assets::index))
        .route("/assets/{file}", get(assets::asset))
        .merge(guarded)
        .layer(axum::middleware::from_fn_with_state(
            state.access.allow_remote,
            auth::check_host,
        ))
        .with_state(state)
}

async fn metrics_behind_login(
    axum::extract::State(state): axum::extract::State<WebState>,
) -> axum::response::Response {
    metrics_response(&state.status).await
}

async fn metrics_response(status: &StatusReader) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::node::metrics::CONTENT_TYPE,
        )],
        crate::node::metrics::render(status).await,
    )
        .into_response()
}

/// Serves the dashboard until the workers are cancelled; samples traffic for its plots.
pub async fn serve(web: WebListener, control: Arc<ControlService>, workers: Workers) {
    let Some(listener) = on_runtime(web.listener, "web") else {
        return;
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "web dashboard at http://{addr}/ (`p2pfs-ctl web` prints a login link)");
    }
    let samples = events::Samples::new();
    workers.spawn(samples.clone().run(control.clone()));
    let state = WebState {
        status: control.status.clone(),
        control,
        samples,
        access: Arc::new(web.access),
        workers: workers.clone(),
    };
    serve_router(listener, router(state), workers, WEB_CONNECTIONS).await;
}

/// Binds the metrics endpoint's socket, if one is configured (refusing a non-loopback address
/// without `allow_remote`). Done before the mount appears, so a bad address stops the start.
pub fn bind_metrics(
    config: &crate::node::config::MetricsConfig,
) -> Result<Option<std::net::TcpListener>, String> {
    let Some(addr) = config.listen_addr()? else {
        return Ok(None);
    };
    let listener =
        std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    Ok(Some(listener))
}

/// Serves `GET /metrics` (no login) on `listener` until the workers are cancelled.
pub async fn serve_metrics(
    listener: std::net::TcpListener,
    status: Arc<StatusReader>,
    allow_remote: bool,
    workers: Workers,
) {
    let Some(listener) = on_runtime(listener, "metrics") else {
        return;
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics at http://{addr}/metrics");
    }
    crate::fuse::counters::enable_timing();
    serve_router(
        listener,
        metrics_router(status, allow_remote),
        workers,
        METRICS_CONNECTIONS,
    )
    .await;
}

/// A listener bound before the runtime ran, handed to it; `None` (logged) if that fails.
fn on_runtime(listener: std::net::TcpListener, what: &str) -> Option<tokio::net::TcpListener> {
    tokio::net::TcpListener::from_std(listener)
        .inspect_err(|e| tracing::error!(error = %e, "{what}: cannot serve"))
        .ok()
}

fn metrics_router(status: Arc<StatusReader>, allow_remote: bool) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let status = status.clone();
                async move { metrics_response(&status).await }
            }),
        )
        .layer(axum::middleware::from_fn_with_state(
            allow_remote,
            auth::check_host,
        ))
}

/// Accepts connections on `listener` and serves `router` on each (HTTP/1.1), at most
/// `max_connections` at once (more are closed at once), each among `workers`.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    workers: Workers,
    max_connections: usize,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: do not spin.
                tracing::debug!(error = %e, "web: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue; // dropped: closed
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        workers.spawn(async move {
            let _permit = permit;
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(READ_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "web: connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests;
