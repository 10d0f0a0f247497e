//! The HTTP layer as a client meets it: raw requests over TCP to [`serve_router`] with the
//! dashboard's guards, so that what hyper and the guards answer is what is tested.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::auth::{self, Access};
use super::*;

const TOKEN: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A server with the dashboard's guards around two routes, on a free loopback port.
async fn server(allow_remote: bool, max_connections: usize) -> SocketAddr {
    let access = Arc::new(Access::new(TOKEN.into(), allow_remote));
    let router = Router::new()
        .route(
            "/api/ping",
            get(|| async { "pong\n" }).post(|| async { "posted\n" }),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            access.clone(),
            auth::require_login,
        ))
        .route("/metrics", get(|| async { "hello\n" }))
        .layer(axum::middleware::from_fn_with_state(
            allow_remote,
            auth::check_host,
        ))
        .with_state(access);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_router(
        listener,
        router,
        Workers::new(),
        max_connections,
    ));
    addr
}

/// Sends `request` and reads until the server closes (requests say `Connection: close`) or
/// 10 s pass.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client.write_all(request).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).into_owned()
}

fn get_req(path: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}\r\n")
        .into_bytes()
}

fn status_of(reply: &str) -> &str {
    reply.lines().next().unwrap_or_default()
}

#[tokio::test]
async fn a_good_request_gets_the_body_with_its_length() {
    let addr = server(false, 4).await;
    let reply = exchange(addr, &get_req("/metrics", "")).await;
    assert_eq!(status_of(&reply), "HTTP/1.1 200 OK", "{reply}");
    assert!(
        reply
            .to_ascii_lowercase()
            .contains("\r\ncontent-length: 6\r\n"),
        "{reply}"
    );
    assert!(reply.ends_with("\r\n\r\nhello\n"), "{reply}");
    // HTTP/1.0 and a query string.
    let reply = exchange(
        addr,
        b"GET /metrics?x=1 HTTP/1.0\r\nHost: localhost\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&reply), "HTTP/1.0 200 OK", "{reply}");
    // HEAD: the headers alone.
    let reply = exchange(
        addr,
        b"HEAD /metrics HTTP/1.1\r\nHost: [::1]:80\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&reply), "HTTP/1.1 200 OK", "{reply}");
    assert!(reply.ends_with("\r\n\r\n"), "{reply}");
}

#[tokio::test]
async fn bad_requests_get_a_status_line_and_other_paths_a_404() {
    let addr = server(false, 8).await;
    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /metrics FTP/1.1\r\n\r\n",
        b"GET /m\x01 HTTP/1.1\r\n\r\n",
        b"GET  /metrics HTTP/1.1\r\n\r\n",
    ] {
        let reply = exchange(addr, bad).await;
        assert!(
            status_of(&reply).starts_with("HTTP/1.1 400"),
            "{:?}: {reply}",
            String::from_utf8_lossy(bad)
        );
    }
    let reply = exchange(
        addr,
        b"POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        status_of(&reply),
        "HTTP/1.1 405 Method Not Allowed",
        "{reply}"
    );
    for path in ["/", "/metric", "/metrics/", "/favicon.ico"] {
        let reply = exchange(addr, &get_req(path, "")).await;
        assert_eq!(
            status_of(&reply),
            "HTTP/1.1 404 Not Found",
            "{path}: {reply}"
        );
    }
    // Nothing sent, the connection closed: nothing answered, no panic.
    assert_eq!(exchange(addr, b"").await, "");
}

#[tokio::test]
async fn oversized_heads_are_refused() {
    let addr = server(false, 4).await;
    let mut big = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_vec();
    while big.len() < MAX_HEAD * 4 {
        big.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    big.extend_from_slice(b"\r\n");
    let reply = exchange(addr, &big).await;
    assert_eq!(
        status_of(&reply),
        "HTTP/1.1 431 Request Header Fields Too Large",
        "{reply}"
    );
}

#[tokio::test]
async fn a_client_that_stalls_is_cut_off() {
    let addr = server(false, 4).await;
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client.write_all(b"GET /metrics HT").await.unwrap();
    let t0 = std::time::Instant::now();
    let mut reply = Vec::new();
    let read = tokio::time::timeout(READ_TIMEOUT * 3, client.read_to_end(&mut reply)).await;
    assert!(
        read.is_ok(),
        "the connection was still open after {:?}",
        t0.elapsed()
    );
    assert!(t0.elapsed() >= READ_TIMEOUT - Duration::from_millis(500));
    assert!(!String::from_utf8_lossy(&reply).contains("200 OK"));
}

#[tokio::test]
async fn connections_past_the_bound_are_closed() {
    let addr = server(false, 2).await;
    // Two connections that send nothing hold both slots.
    let _a = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _b = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reply = exchange(addr, &get_req("/metrics", "")).await;
    assert_eq!(reply, "", "a third connection was served");
    drop((_a, _b));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reply = exchange(addr, &get_req("/metrics", "")).await;
    assert_eq!(status_of(&reply), "HTTP/1.1 200 OK", "{reply}");
}

#[tokio::test]
async fn the_api_needs_the_token_and_changes_need_the_request_header() {
    let addr = server(false, 8).await;
    let bearer = format!("Authorization: Bearer {TOKEN}\r\n");
    // A cookie is no login: browsers send cookies to every port of a host.
    let cookie = format!("Cookie: p2pfs_session={TOKEN}\r\n");
    let wrong = format!("Authorization: Bearer {}\r\n", &TOKEN[..63]);
    assert!(
        exchange(addr, &get_req("/api/ping", ""))
            .await
            .starts_with("HTTP/1.1 401")
    );
    assert!(
        exchange(addr, &get_req("/api/ping", &wrong))
            .await
            .starts_with("HTTP/1.1 401")
    );
    assert!(
        exchange(
            addr,
            &get_req("/api/ping", "Authorization: Bearer nope\r\n")
        )
        .await
        .starts_with("HTTP/1.1 401")
    );
    assert!(
        exchange(addr, &get_req("/api/ping", &cookie))
            .await
            .starts_with("HTTP/1.1 401")
    );
    for ok in [&bearer] {
        let reply = exchange(addr, &get_req("/api/ping", ok)).await;
        assert_eq!(status_of(&reply), "HTTP/1.1 200 OK", "{reply}");
        assert!(reply.ends_with("pong\n"));
    }
    let post = |headers: &str| {
        format!(
            "POST /api/ping HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n{headers}\r\n"
        )
        .into_bytes()
    };
    let reply = exchange(addr, &post(&bearer)).await;
    assert_eq!(status_of(&reply), "HTTP/1.1 403 Forbidden", "{reply}");
    assert!(reply.contains(auth::REQUEST_HEADER), "{reply}");
    let reply = exchange(addr, &post(&format!("{bearer}X-P2pfs-Request: 1\r\n"))).await;
    assert_eq!(status_of(&reply), "HTTP/1.1 200 OK", "{reply}");
    assert!(reply.ends_with("posted\n"));
}

#[tokio::test]
async fn a_download_ticket_opens_one_download_of_its_path_only() {
    let access = Arc::new(Access::new(TOKEN.into(), false));
    let router = Router::new()
        .route("/api/files", get(|| async { "the file\n" }))
        .route("/api/ping", get(|| async { "pong\n" }))
        .route_layer(axum::middleware::from_fn_with_state(
            access.clone(),
            auth::require_login,
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_router(listener, router, Workers::new(), 8));

    let ticket = access.issue_ticket("docs/a b.txt").unwrap();
    let url = |path: &str, ticket: &str| format!("/api/files?path={path}&ticket={ticket}");
    // Another path, another endpoint: refused, and the ticket is not used up by them.
    let reply = exchange(addr, &get_req(&url("docs/other", &ticket), "")).await;
    assert_eq!(status_of(&reply), "HTTP/1.1 401 Unauthorized", "{reply}");
    let reply = exchange(
        addr,
        &get_req(
            &format!("/api/ping?path=docs/a%20b.txt&ticket={ticket}"),
            "",
        ),
    )
    .await;
    assert_eq!(status_of(&reply), "HTTP/1.1 401 Unauthorized", "{reply}");
    let reply = exchange(addr, &get_req(&url("docs/a%20b.txt", &ticket), "")).await;
    assert_eq!(status_of(&reply), "HTTP/1.1 200 OK", "{reply}");
    assert!(reply.ends_with("the file\n"));
    // Used up.
    let reply = exchange(addr, &get_req(&url("docs/a%20b.txt", &ticket), "")).await;
    assert_eq!(status_of(&reply), "HTTP/1.1 401 Unauthorized", "{reply}");
    // Bounded: past MAX_TICKETS outstanding, none is issued.
    for _ in 0..auth::MAX_TICKETS {
        assert!(access.issue_ticket("x").is_some());
    }
    assert!(access.issue_ticket("x").is_none());
}

#[tokio::test]
async fn a_host_naming_another_machine_is_refused_unless_remote_is_allowed() {
    let addr = server(false, 8).await;
    let bearer = format!("Authorization: Bearer {TOKEN}\r\n");
    let with_host = |host: &str| {
        format!("GET /api/ping HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{bearer}\r\n")
            .into_bytes()
    };
    for host in [
        "evil.example",
        "evil.example:7464",
        "127.0.0.1.evil.example",
        "localhost.evil",
    ] {
        let reply = exchange(addr, &with_host(host)).await;
        assert_eq!(
            status_of(&reply),
            "HTTP/1.1 421 Misdirected Request",
            "{host}: {reply}"
        );
    }
    for host in [
        "127.0.0.1",
        "127.0.0.1:7464",
        "localhost:7464",
        "[::1]:7464",
        "192.168.1.4",
    ] {
        let reply = exchange(addr, &with_host(host)).await;
        assert_eq!(status_of(&reply), "HTTP/1.1 200 OK", "{host}: {reply}");
    }
    let open = server(true, 8).await;
    let reply = exchange(open, &with_host("nas.example:7464")).await;
    assert_eq!(status_of(&reply), "HTTP/1.1 200 OK", "{reply}");
}

#[test]
fn host_literals() {
    for ok in [
        "localhost",
        "LOCALHOST:1",
        "127.0.0.1",
        "10.1.2.3:80",
        "[::1]",
        "[fe80::1]:7464",
    ] {
        assert!(auth::host_is_literal(ok), "{ok}");
    }
    for bad in [
        "",
        "example.com",
        "[::1",
        "[::1]x",
        "127.0.0.1:",
        "127.0.0.1:99999",
        "1.2.3.4.5",
        "[evil]:80",
    ] {
        assert!(!auth::host_is_literal(bad), "{bad}");
    }
}

#[test]
fn the_token_is_made_once_private_and_kept() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(TOKEN_FILE);
    let made = auth::load_or_make_token(&path).unwrap();
    assert_eq!(made.len(), 64);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(auth::load_or_make_token(&path).unwrap(), made);
    std::fs::write(&path, "not a token").unwrap();
    let e = auth::load_or_make_token(&path).unwrap_err().to_string();
    assert!(e.contains("not a login token"), "{e}");
}

#[test]
fn the_default_port_taken_gives_a_free_one_and_another_taken_port_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    // Hold the default port if free; if another process holds it, that is the same case.
    let _held = std::net::TcpListener::bind(crate::node::config::DEFAULT_WEB_LISTEN);
    let web = bind(&WebConfig::default(), dir.path()).unwrap().unwrap();
    assert_ne!(web.local_addr().port(), 7464);
    assert!(web.local_addr().ip().is_loopback());
    let urls = web.urls();
    assert_eq!(
        urls.login_url,
        format!(
            "{}#token={}",
            urls.url,
            auth::load_or_make_token(&dir.path().join(TOKEN_FILE)).unwrap()
        )
    );
    assert!(
        urls.note.as_deref().is_some_and(|n| n.contains("7464")),
        "{urls:?}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = WebConfig {
        listen: taken.local_addr().unwrap().to_string(),
        allow_remote: false,
    };
    let e = bind(&config, dir.path()).err().unwrap().to_string();
    assert!(e.contains("cannot listen on"), "{e}");
    let off = WebConfig {
        listen: String::new(),
        allow_remote: false,
    };
    assert!(bind(&off, dir.path()).unwrap().is_none());
    let remote = WebConfig {
        listen: "0.0.0.0:7464".into(),
        allow_remote: false,
    };
    let e = bind(&remote, dir.path()).err().unwrap().to_string();
    assert!(e.contains("allow_remote = true"), "{e}");
}

#[test]
fn invite_tokens_draw_as_qr_codes() {
    let svg = qr::svg(&format!("p2pfs-invite-3-{}", "a".repeat(600))).unwrap();
    assert!(
        svg.starts_with("<?xml") && svg.contains("<svg"),
        "{}",
        &svg[..80]
    );
    assert!(qr::svg(&"a".repeat(5000)).is_err());
}
