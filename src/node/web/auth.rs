//! Who may use the dashboard: the holder of the login token (`DATA_DIR/web.token`, 0600, the
//! same trust as the control socket).
//!
//! - `p2pfs-ctl web` prints a link `URL#token=T`: the fragment never leaves the browser, whose
//!   page keeps the token in its origin's storage (its scheme, host *and port*: another program
//!   on another port of 127.0.0.1 cannot read it, as it could read a cookie, which browsers
//!   send to every port of a host). Every API request carries `Authorization: Bearer T`.
//! - A download, which the browser makes as a plain navigation (no header), carries a ticket
//!   instead: `POST /api/ticket?path=P` gives one, good for one `GET /api/files?path=P&ticket=X`
//!   within [`TICKET_LIFE`].
//! - Requests that change something (any method but GET and HEAD) also need the header
//!   `X-P2pfs-Request: 1`.
//! - Unless `allow_remote`, the Host header must name this machine (an IP literal or
//!   `localhost`): a page of another site whose name is made to resolve to 127.0.0.1 (DNS
//!   rebinding) is refused before anything else.

use std::path::Path;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;

use super::{WebError, WebState};

/// The header every changing request carries.
pub const REQUEST_HEADER: &str = "x-p2pfs-request";
/// How long a download ticket is good for.
pub const TICKET_LIFE: Duration = Duration::from_secs(60);
/// Tickets outstanding at most; past it, new ones are refused until some are used or expire.
pub const MAX_TICKETS: usize = 256;

/// What lets a browser in.
#[derive(Debug)]
pub struct Access {
    /// 64 hex digits.
    pub token: String,
    pub allow_remote: bool,
    /// Download tickets: ticket -> (the path it is for, when it expires).
    tickets: Mutex<HashMap<String, (String, Instant)>>,
}

impl Access {
    pub fn new(token: String, allow_remote: bool) -> Self {
        Self {
            token,
            allow_remote,
            tickets: Mutex::new(HashMap::new()),
        }
    }

    /// A ticket for one download of `path`; `None` when too many are outstanding.
    pub fn issue_ticket(&self, path: &str) -> Option<String> {
        let now = Instant::now();
        let mut tickets = self.tickets.lock();
        tickets.retain(|_, (_, expires)| *expires > now);
        if tickets.len() >= MAX_TICKETS {
            return None;
        }
        let ticket = hex::encode(rand::random::<[u8; 16]>());
        tickets.insert(ticket.clone(), (path.to_string(), now + TICKET_LIFE));
        Some(ticket)
    }

    /// Uses up `ticket` if it is live and for `path`.
    pub fn redeem_ticket(&self, ticket: &str, path: &str) -> bool {
        let mut tickets = self.tickets.lock();
        match tickets.get(ticket) {
            Some((for_path, expires)) if for_path == path && *expires > Instant::now() => {
                tickets.remove(ticket);
                true
            }
            _ => false,
        }
    }
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

/// Whether the request carries the token as a bearer header.
pub fn logged_in(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.strip_prefix("Bearer "))
        .any(|t| same(t.trim().as_bytes(), token.as_bytes()))
}

/// Whether the request is a download (`GET /api/files`) with a live ticket for its path; the
/// ticket is used up.
fn ticketed(request: &Request, access: &Access) -> bool {
    if request.method() != Method::GET || request.uri().path() != "/api/files" {
        return false;
    }
    let Ok(Query(q)) = Query::<HashMap<String, String>>::try_from_uri(request.uri()) else {
        return false;
    };
    match (q.get("ticket"), q.get("path")) {
        (Some(ticket), Some(path)) => access.redeem_ticket(ticket, path),
        _ => false,
    }
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
    State(allow_remote): State<bool>,
    request: Request,
    next: Next,
) -> Response {
    if !allow_remote {
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
    if !logged_in(request.headers(), &access.token) && !ticketed(&request, &access) {
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
pub struct TicketQuery {
    path: String,
}

/// `POST /api/ticket?path=P`: `{"ticket": X}`, good for one `GET /api/files?path=P&ticket=X`
/// within [`TICKET_LIFE`].
pub async fn ticket(State(access): State<Arc<Access>>, Query(q): Query<TicketQuery>) -> Response {
    match access.issue_ticket(&q.path) {
        Some(ticket) => axum::Json(serde_json::json!({ "ticket": ticket })).into_response(),
        None => error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many downloads waiting to start; try again in a minute",
        ),
    }
}
