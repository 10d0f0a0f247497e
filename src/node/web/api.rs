//! The dashboard's JSON API, under `/api`. It answers with the control protocol's types
//! (`node/control/proto.rs`): `POST /api/call` takes any one-reply control request and gives
//! its reply; the `GET` endpoints give what `p2pfs-ctl X --json` prints; `/api/files` moves
//! file bytes both ways through the same code as `p2pfs-ctl put` and `get`.

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::io::AsyncBufReadExt;

use super::WebState;
use super::auth::error;
use crate::node::control::{Reply, Request};

/// Bytes a download moves per piece (and buffers between the file's reader and the socket).
const DOWNLOAD_PIECE: usize = 256 * 1024;

pub fn router() -> Router<WebState> {
    Router::new()
        .route("/call", post(call))
        .route("/ticket", post(super::auth::ticket))
        .route("/status", get(|s| read(s, Request::Status)))
        .route("/df", get(|s| read(s, Request::Df)))
        .route("/health", get(|s| read(s, Request::Health)))
        .route("/volumes", get(|s| read(s, Request::VolumeList)))
        .route("/pins", get(|s| read(s, Request::Pins)))
        .route("/members", get(|s| read(s, Request::Members)))
        .route("/invites", get(|s| read(s, Request::Invites)))
        .route(
            "/retention",
            get(|s| read(s, Request::Retention { set: None })),
        )
        .route(
            "/limits",
            get(|s| {
                read(
                    s,
                    Request::Limit {
                        set: None,
                        use_config: false,
                    },
                )
            }),
        )
        .route("/ls", get(ls))
        .route("/versions", get(versions))
        .route("/files", get(download).put(upload))
        .route("/qr", get(super::qr::qr))
        .route("/events", get(super::events::events))
        .route("/history", get(super::events::history))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such API endpoint") })
}

/// `POST /api/call`: one control request (`{"cmd": ...}`), its reply (`{"result": ...}`, an
/// `error` result with status 200 as on the socket). The streaming ones are refused: files go
/// through `/api/files`, and leaving is for `p2pfs-ctl leave`, which shows its progress.
async fn call(
    State(state): State<WebState>,
    body: Result<axum::Json<Request>, JsonRejection>,
) -> Response {
    let request = match body {
        Ok(axum::Json(r)) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("bad request: {}", e.body_text()),
            );
        }
    };
    if matches!(
        request,
        Request::Leave | Request::Put { .. } | Request::Get { .. }
    ) {
        return error(
            StatusCode::BAD_REQUEST,
            "put and get go through /api/files; leave through `p2pfs-ctl leave`",
        );
    }
    axum::Json(state.control.answer(request, owner()).await).into_response()
}

/// What `p2pfs-ctl X --json` prints of a reply: its payload. An error reply is a 400 with
/// `{"error": message}`.
pub fn payload(reply: Reply) -> Response {
    use axum::Json;
    match reply {
        Reply::Status(s) => Json(s).into_response(),
        Reply::Df(d) => Json(d).into_response(),
        Reply::Health(h) => Json(h).into_response(),
        Reply::Volumes { volumes } => Json(volumes).into_response(),
        Reply::Pins { pins } => Json(pins).into_response(),
        Reply::Members { members } => Json(members).into_response(),
        Reply::Invites { invites } => Json(invites).into_response(),
        Reply::Retention { volumes } => Json(volumes).into_response(),
        Reply::Listing { entries } => Json(entries).into_response(),
        Reply::Versions(v) => Json(v).into_response(),
        Reply::Limits { limits, source } => {
            Json(serde_json::json!({ "limits": limits, "source": source })).into_response()
        }
        Reply::Error { message } | Reply::NoSuchNode { message } => {
            error(StatusCode::BAD_REQUEST, message)
        }
        other => Json(other).into_response(),
    }
}

async fn read(State(state): State<WebState>, request: Request) -> Response {
    payload(state.control.answer(request, owner()).await)
}

/// Who the dashboard acts as: the node's own user (whoever holds its token owns the node).
fn owner() -> crate::fs::Caller {
    crate::fs::Caller {
        // SAFETY: geteuid and getegid cannot fail.
        uid: unsafe { libc::geteuid() },
        gid: unsafe { libc::getegid() },
    }
}

#[derive(serde::Deserialize)]
struct PathQuery {
    #[serde(default)]
    path: String,
}

async fn ls(State(state): State<WebState>, Query(q): Query<PathQuery>) -> Response {
    read(State(state), Request::Ls { path: q.path }).await
}

async fn versions(State(state): State<WebState>, Query(q): Query<PathQuery>) -> Response {
    read(State(state), Request::Versions { path: q.path }).await
}

/// `GET /api/files?path=P`: the file's bytes, as an attachment named after it.
async fn download(State(state): State<WebState>, Query(q): Query<PathQuery>) -> Response {
    let path = state.control.relative(&q.path).into_bytes();
    let (mut to_browser, from_node) = tokio::io::duplex(DOWNLOAD_PIECE);
    let control = state.control.clone();
    state.workers.spawn(async move {
        if let Err(e) = control.get(path, &mut to_browser).await {
            tracing::debug!(error = %e, "web: download ended early");
        }
    });
    let mut from_node = tokio::io::BufReader::new(from_node);
    let mut line = String::new();
    if let Err(e) = from_node.read_line(&mut line).await {
        return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    let size = match serde_json::from_str::<Reply>(&line) {
        Ok(Reply::Data { size }) => size,
        Ok(Reply::Error { message }) => return error(StatusCode::NOT_FOUND, message),
        _ => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the node's answer was not a file",
            );
        }
    };
    let name = q.path.rsplit('/').find(|s| !s.is_empty()).unwrap_or("file");
    // RFC 6266: an ASCII fallback, and the name itself percent-encoded.
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let disposition = format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        percent_encode(name)
    );
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        tokio::io::AsyncReadExt::take(from_node, size),
        DOWNLOAD_PIECE,
    ));
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[derive(serde::Deserialize)]
struct UploadQuery {
    path: String,
    /// Permission bits; 0644 when absent.
    mode: Option<u32>,
}

/// `PUT /api/files?path=P[&mode=M]`: stores the body at P (a temporary name, renamed over P
/// once complete, as `p2pfs-ctl put`). The body's length must be declared.
async fn upload(
    State(state): State<WebState>,
    Query(q): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    use futures::TryStreamExt;
    let Some(size) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return error(
            StatusCode::LENGTH_REQUIRED,
            "an upload must declare its length",
        );
    };
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let mut reader = tokio_util::io::StreamReader::new(stream);
    let path = state.control.relative(&q.path);
    let mode = q.mode.unwrap_or(0o644);
    // Checked before a byte is read (`ready`): a missing directory is refused at once, the
    // browser's bytes unread; the `Ready` line the check writes has nowhere to go.
    let mut ready_line = tokio::io::sink();
    let put = state.control.put(
        path,
        None,
        size,
        mode,
        true,
        owner(),
        &mut reader,
        &mut ready_line,
    );
    match put.await {
        Ok(reply @ Reply::Done { .. }) => axum::Json(reply).into_response(),
        Ok(Reply::Error { message }) => error(StatusCode::BAD_REQUEST, message),
        Ok(other) => axum::Json(other).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, format!("upload failed: {e}")),
    }
}
