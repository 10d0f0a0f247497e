//! The web dashboard's API against a real node: the token and download tickets, the JSON shapes (the same as
//! `p2pfs-ctl --json`), file upload and download through the node, the event stream and the
//! guarded `/metrics`. Needs root (mounts). The browser tests are in tests/web_ui.rs.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

struct Reply {
    status: u16,
    /// Lower-case header names.
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One HTTP/1.1 request with `Connection: close`.
fn request(addr: &str, method: &str, path: &str, headers: &[&str], body: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&reply[..split]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        head,
        body: reply[split + 4..].to_vec(),
    }
}

/// The dashboard's address (host:port) and login token, from `p2pfs-ctl web --json`.
fn web_of(node: &Node) -> (String, String) {
    let web: serde_json::Value = serde_json::from_str(&node.ctl_ok(&["web", "--json"])).unwrap();
    let login = web["login_url"].as_str().unwrap();
    let addr = web["url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let token = login.split("token=").nth(1).unwrap().to_string();
    (addr, token)
}

/// The keys of a JSON object, and of the first element of each array in it, recursively.
fn shape(v: &serde_json::Value, at: &str, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let path = format!("{at}.{k}");
                out.push(path.clone());
                shape(v, &path, out);
            }
        }
        serde_json::Value::Array(a) => {
            if let Some(first) = a.first() {
                shape(first, &format!("{at}[]"), out);
            }
        }
        _ => {}
    }
}

fn shape_of(v: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    shape(v, "", &mut out);
    out.sort();
    out
}

#[test]
fn the_api_answers_as_p2pfs_ctl_and_moves_files_through_the_node() {
    let mut node = Node::init();
    node.start();
    let (addr, token) = web_of(&node);
    let bearer = format!("Authorization: Bearer {token}");
    let auth: &[&str] = &[&bearer];
    let change: &[&str] = &[&bearer, "X-P2pfs-Request: 1"];
    let call: &[&str] = &[
        &bearer,
        "X-P2pfs-Request: 1",
        "Content-Type: application/json",
    ];

    // Without the token: the page loads, the API does not.
    let page = request(&addr, "GET", "/", &[], b"");
    assert_eq!(page.status, 200);
    assert!(
        page.head
            .contains("content-security-policy: default-src 'self'"),
        "{}",
        page.head
    );
    assert_eq!(
        request(&addr, "GET", "/assets/app.js", &[], b"").status,
        200
    );
    let refused = request(&addr, "GET", "/api/status", &[], b"");
    assert_eq!(refused.status, 401);
    assert!(
        refused.json()["error"]
            .as_str()
            .unwrap()
            .contains("p2pfs-ctl web")
    );
    assert_eq!(request(&addr, "GET", "/metrics", &[], b"").status, 401);

    // The login link carries the token in its fragment, which no server sees; a cookie is no
    // login (browsers send cookies to every port of a host).
    let web: serde_json::Value = serde_json::from_str(&node.ctl_ok(&["web", "--json"])).unwrap();
    assert_eq!(
        web["login_url"].as_str().unwrap(),
        format!("http://{addr}/#token={token}")
    );
    let by_cookie = request(
        &addr,
        "GET",
        "/api/status",
        &[&format!("Cookie: p2pfs_session={token}")],
        b"",
    );
    assert_eq!(by_cookie.status, 401);

    // The same shapes as p2pfs-ctl --json.
    let status = request(&addr, "GET", "/api/status", auth, b"").json();
    let ctl_status: serde_json::Value =
        serde_json::from_str(&node.ctl_ok(&["status", "--json"])).unwrap();
    assert_eq!(shape_of(&status), shape_of(&ctl_status));
    assert_eq!(status["peer_id"], ctl_status["peer_id"]);
    let volumes = request(&addr, "GET", "/api/volumes", auth, b"").json();
    let ctl_volumes: serde_json::Value =
        serde_json::from_str(&node.ctl_ok(&["volume", "list", "--json"])).unwrap();
    assert_eq!(volumes, ctl_volumes);
    let limits = request(&addr, "GET", "/api/limits", auth, b"").json();
    let ctl_limits: serde_json::Value =
        serde_json::from_str(&node.ctl_ok(&["limit", "--json"])).unwrap();
    assert_eq!(limits, ctl_limits);
    let df = request(&addr, "GET", "/api/df", auth, b"").json();
    let ctl_df: serde_json::Value = serde_json::from_str(&node.ctl_ok(&["df", "--json"])).unwrap();
    assert_eq!(shape_of(&df), shape_of(&ctl_df));

    // Upload, read through the mount, download.
    std::fs::create_dir(node.p("web")).unwrap();
    let data = random_bytes(23, 3 * 1024 * 1024 + 17);
    let put = request(
        &addr,
        "PUT",
        "/api/files?path=web/h%C3%A9llo.bin",
        change,
        &data,
    );
    assert_eq!(put.status, 200, "{}", String::from_utf8_lossy(&put.body));
    assert_eq!(put.json()["result"], "done");
    assert_bytes_eq(
        "uploaded",
        &std::fs::read(node.p("web/héllo.bin")).unwrap(),
        &data,
    );
    let got = request(
        &addr,
        "GET",
        "/api/files?path=web/h%C3%A9llo.bin",
        auth,
        b"",
    );
    assert_eq!(got.status, 200);
    assert!(got.head.contains("content-disposition: attachment; filename=\"h_llo.bin\"; filename*=utf-8''h%c3%a9llo.bin"), "{}", got.head);
    assert_bytes_eq("downloaded", &got.body, &data);
    // A download as a browser makes it (a navigation, no header): with a ticket, once.
    let ticket = request(
        &addr,
        "POST",
        "/api/ticket?path=web/h%C3%A9llo.bin",
        change,
        b"",
    )
    .json();
    let ticket = ticket["ticket"].as_str().expect("a ticket").to_string();
    let by_ticket = format!("/api/files?path=web/h%C3%A9llo.bin&ticket={ticket}");
    let got = request(&addr, "GET", &by_ticket, &[], b"");
    assert_eq!(got.status, 200);
    assert_bytes_eq("downloaded with a ticket", &got.body, &data);
    assert_eq!(request(&addr, "GET", &by_ticket, &[], b"").status, 401);
    // Without the request header, or into a missing directory: refused, nothing written.
    let csrf = request(&addr, "PUT", "/api/files?path=web/x.bin", auth, b"abc");
    assert_eq!(csrf.status, 403);
    let missing = request(
        &addr,
        "PUT",
        "/api/files?path=nowhere/x.bin",
        change,
        b"abc",
    );
    assert_eq!(
        missing.status,
        400,
        "{}",
        String::from_utf8_lossy(&missing.body)
    );
    assert!(
        missing.json()["error"]
            .as_str()
            .unwrap()
            .contains("nowhere"),
        "{}",
        missing.json()
    );
    assert!(!node.p("web/x.bin").exists() && !node.p("nowhere").exists());
    let absent = request(&addr, "GET", "/api/files?path=web/none", auth, b"");
    assert_eq!(absent.status, 404);

    // The generic call: a reply as on the control socket; streaming requests refused.
    let ls = request(
        &addr,
        "POST",
        "/api/call",
        call,
        br#"{"cmd":"ls","path":"web"}"#,
    )
    .json();
    assert_eq!(ls["result"], "listing");
    assert_eq!(ls["entries"][0]["name"], "héllo.bin");
    assert_eq!(ls["entries"][0]["size"], data.len());
    let listed = request(&addr, "GET", "/api/ls?path=web", auth, b"").json();
    assert_eq!(listed, ls["entries"]);
    let ctl_ls: serde_json::Value =
        serde_json::from_str(&node.ctl_ok(&["ls", "--json", "web"])).unwrap();
    assert_eq!(listed, ctl_ls);
    for refused in [
        &br#"{"cmd":"leave"}"#[..],
        br#"{"cmd":"get","path":"web/h"}"#,
        b"{nonsense",
    ] {
        let r = request(&addr, "POST", "/api/call", call, refused);
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(refused));
        assert!(r.json()["error"].is_string());
    }
    let versions = request(
        &addr,
        "GET",
        "/api/versions?path=web/h%C3%A9llo.bin",
        auth,
        b"",
    );
    assert_eq!(
        versions.status,
        200,
        "{}",
        String::from_utf8_lossy(&versions.body)
    );
    let bad_path = request(&addr, "GET", "/api/versions?path=web/none", auth, b"");
    assert_eq!(bad_path.status, 400);
    assert!(node.is_running(), "the node survived the bad requests");

    // /metrics behind the login; the QR code of a token; the hour of samples.
    let metrics = request(&addr, "GET", "/metrics", auth, b"");
    assert_eq!(metrics.status, 200);
    assert!(String::from_utf8_lossy(&metrics.body).contains("p2pfs_node_info"));
    let qr = request(&addr, "GET", "/api/qr?text=p2pfs-invite-3-abc", auth, b"");
    assert_eq!(qr.status, 200);
    assert!(qr.head.contains("content-type: image/svg+xml"));
    let history = request(&addr, "GET", "/api/history", auth, b"").json();
    assert_eq!(history["interval_secs"], 10);

    // The event stream: a status event first.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /api/events HTTP/1.1\r\nHost: {addr}\r\n{bearer}\r\n\r\n"
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("event: status\ndata: {") {
        let n = s.read(&mut buf).expect("events within 30 s");
        assert!(
            n > 0,
            "the stream ended: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(
        String::from_utf8_lossy(&seen)
            .to_ascii_lowercase()
            .contains("content-type: text/event-stream")
    );
    drop(s);
    node.stop();
}
