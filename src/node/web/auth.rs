//! Who may use the dashboard: the holder of the login token (`DATA_DIR/web.token`, 0600, the
//! same trust as the control socket), through a browser that came from a page this node
//! served.
//!
//! - `GET /login?token=T` sets the session cookie (HttpOnly, SameSite=Strict) and sends the
//!   browser to `/`. The API and `/metrics` need the cookie or `Authorization: Bearer T`.
//! - Requests that change something (any method but GET and HEAD) also need the header
//!   `X-P2pfs-Request: 1`, which a cross-site form cannot send and a cross-site script cannot
//!   without a CORS preflight this server never allows.
//! - Unless `allow_remote`, the Host header must name this machine (an IP literal or
//!   `localhost`): a page of another site whose name is made to resolve to 127.0.0.1 (DNS
//!   rebinding) is refused before anything else.

use std::path::Path;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use std::sync::Arc;

use super::{WebError, WebState};

/// The session cookie's name.
pub const COOKIE: &str = "p2pfs_session";
/// The header every changing request carries.
pub const REQUEST_HEADER: &str = "x-p2pfs-request";

/// What lets a browser in.
#[derive(Debug, Clone)]
pub struct Access {
    /// 64 hex digits.
    pub token: String,
    pub allow_remote: bool,
}

/// The token in `path`, made (32 random bytes as hex, mode 0600) if the file does not exist.
pub fn load_or_make_token(path: &Path) -> Result<String, WebError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| WebError::Token {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim();
            if token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(token.to_ascii_lowercase());
            }
            Err(err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not a login token (64 hex digits); delete the file and a new one is made",
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = hex::encode(rand::random::<[u8; 32]>());
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(err)?;
            file.write_all(format!("{token}\n").as_bytes())
                .map_err(err)?;
            Ok(token)
        }
        Err(e) => Err(err(e)),
    }
}

impl axum::extract::FromRef<WebState> for Arc<Access> {
    fn from_ref(state: &WebState) -> Self {
        state.access.clone()
    }
}

/// Equal without telling by its timing how much of a guess matched.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the request carries the token, as the session cookie or a bearer header.
pub fn logged_in(headers: &HeaderMap, token: &str) -> bool {
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.strip_prefix("Bearer "))
        .any(|t| same(t.trim().as_bytes(), token.as_bytes()));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .any(|(name, value)| name == COOKIE && same(value.as_bytes(), token.as_bytes()));
    bearer || cookie
}

/// Whether a Host header names this machine: an IP literal (with or without a port) or
/// `localhost`. A name another site controls is not.
pub fn host_is_literal(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inside, port))
                if port.is_empty() || port.strip_prefix(':').is_some_and(is_port) =>
            {
                return inside.parse::<std::net::Ipv6Addr>().is_ok();
            }
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        }
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u16>().is_ok()
}

/// A JSON error answer: `{"error": message}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

/// Refuses a request whose Host header names another machine (unless `allow_remote`).
pub async fn check_host(
    State(access): State<Arc<Access>>,
    request: Request,
    next: Next,
) -> Response {
    if !access.allow_remote {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !host_is_literal(host) {
            return error(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "the dashboard answers only to an address of this machine (127.0.0.1, [::1], localhost), not to Host {host:?}"
                ),
            );
        }
    }
    next.run(request).await
}

/// Lets a logged-in request through; a changing one must also carry [`REQUEST_HEADER`].
pub async fn require_login(
    State(access): State<Arc<Access>>,
    request: Request,
    next: Next,
) -> Response {
    if !logged_in(request.headers(), &access.token) {
        return error(
            StatusCode::UNAUTHORIZED,
            "not logged in: open the link `p2pfs-ctl web` prints on this node",
        );
    }
    let changes = !matches!(*request.method(), Method::GET | Method::HEAD);
    if changes
        && request
            .headers()
            .get(REQUEST_HEADER)
            .is_none_or(|v| v != "1")
    {
        return error(
            StatusCode::FORBIDDEN,
            format!("a request that changes something needs the header {REQUEST_HEADER}: 1"),
        );
    }
    next.run(request).await
}

#[derive(serde::Deserialize)]
pub struct LoginQuery {
    token: Option<String>,
}

/// `GET /login?token=T`: sets the session cookie and sends the browser to the dashboard.
pub async fn login(State(access): State<Arc<Access>>, Query(q): Query<LoginQuery>) -> Response {
    let given = q.token.unwrap_or_default();
    if !same(given.trim().as_bytes(), access.token.as_bytes()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "this login link is not this node's: run `p2pfs-ctl web` on the node for its link",
        );
    }
    let cookie = format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
        access.token
    );
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        cookie.parse().expect("the cookie is ASCII"),
    );
    response
}
