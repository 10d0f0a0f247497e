//! The smallest HTTP/1.1 server the metrics endpoint needs: one request per connection, `GET`
//! (or `HEAD`) of one path, the response with `Connection: close`. The request head is bounded
//! (the request line to [`MAX_REQUEST_LINE`], everything to [`MAX_HEAD`]) and must arrive within
//! [`READ_TIMEOUT`]; whatever a client sends gets a status line back or a closed connection,
//! never a panic. No request body is read (a scrape has none).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest request head (request line and headers) read; past it: 431.
pub const MAX_HEAD: usize = 8 * 1024;
/// Longest request line; past it: 414.
pub const MAX_REQUEST_LINE: usize = 2 * 1024;
/// The whole request head must arrive within this.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The response must be taken within this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the client asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// The path, without a query string.
    pub path: String,
    /// `HEAD`: the response's headers only.
    pub head_only: bool,
}

/// A response to send.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn ok(content_type: &'static str, body: Vec<u8>) -> Self {
        Self {
            status: 200,
            content_type,
            body,
        }
    }

    /// A status with a one-line plain-text body naming it.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{status} {}\n", reason(status)).into_bytes(),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// Reads one request head. `Err(None)`: the client went away before sending anything (nothing
/// to answer); `Err(Some(response))`: what to answer a bad request.
pub async fn read_request<R: AsyncRead + Unpin>(r: &mut R) -> Result<Request, Option<Response>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let end = loop {
        if let Some(end) = head_end(&head) {
            break end;
        }
        let line_len = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
        if line_len > MAX_REQUEST_LINE {
            return Err(Some(Response::status(414)));
        }
        if head.len() >= MAX_HEAD {
            return Err(Some(Response::status(431)));
        }
        let want = buf.len().min(MAX_HEAD - head.len());
        let n = match r.read(&mut buf[..want]).await {
            Ok(n) => n,
            Err(_) => return Err(None),
        };
        if n == 0 {
            return Err(if head.is_empty() {
                None
            } else {
                Some(Response::status(400))
            });
        }
        head.extend_from_slice(&buf[..n]);
    };
    let head = &head[..end];
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_REQUEST_LINE {
        return Err(Some(Response::status(414)));
    }
    parse_request_line(line)
}

/// Where the head ends (the index just past its blank line), if it has.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `METHOD SP origin-form-target SP HTTP/1.x`.
fn parse_request_line(line: &[u8]) -> Result<Request, Option<Response>> {
    let bad = || Some(Response::status(400));
    let line = std::str::from_utf8(line).map_err(|_| bad())?;
    if !line.is_ascii() || line.bytes().any(|b| b.is_ascii_control()) {
        return Err(bad());
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(bad());
    }
    if !target.starts_with('/') {
        return Err(bad());
    }
    match version {
        "HTTP/1.1" | "HTTP/1.0" => {}
        v if v.starts_with("HTTP/") => return Err(Some(Response::status(505))),
        _ => return Err(bad()),
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Err(Some(Response::status(405))),
    };
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    Ok(Request {
        path: path.to_string(),
        head_only,
    })
}

/// Writes `response` (headers only for a `HEAD` request) and closes the write side.
pub async fn write_response<W: AsyncWrite + Unpin>(
    w: &mut W,
    response: &Response,
    head_only: bool,
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    if response.status == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(&response.body);
    }
    w.write_all(&bytes).await?;
    w.flush().await?;
    w.shutdown().await
}

/// Serves one connection: reads a request, answers it with `route(path)` (`None`: 404), closes.
pub async fn serve_connection<S, F, Fut>(stream: S, route: F)
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Option<Response>>,
{
    serve_connection_within(stream, route, READ_TIMEOUT).await
}

async fn serve_connection_within<S, F, Fut>(mut stream: S, route: F, read_timeout: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Option<Response>>,
{
    let (response, head_only) =
        match tokio::time::timeout(read_timeout, read_request(&mut stream)).await {
            Err(_) => (Response::status(408), false),
            Ok(Err(None)) => return,
            Ok(Err(Some(response))) => (response, false),
            Ok(Ok(request)) => (
                route(request.path)
                    .await
                    .unwrap_or_else(|| Response::status(404)),
                request.head_only,
            ),
        };
    let write = write_response(&mut stream, &response, head_only);
    if let Ok(Err(e)) = tokio::time::timeout(WRITE_TIMEOUT, write).await {
        tracing::debug!(error = %e, "metrics: could not send a response");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `request` to a server answering `/metrics` with "hello", returns the whole reply.
    async fn exchange(request: &[u8]) -> String {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let served = tokio::spawn(serve_connection(server, |path| async move {
            (path == "/metrics").then(|| Response::ok("text/plain", b"hello\n".to_vec()))
        }));
        client.write_all(request).await.unwrap();
        // Half-close: a request cut off here ends, rather than waits for the read timeout.
        client.shutdown().await.unwrap();
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.unwrap();
        served.await.unwrap();
        String::from_utf8(reply).unwrap()
    }

    fn status_of(reply: &str) -> &str {
        reply.lines().next().unwrap_or_default()
    }

    #[tokio::test]
    async fn a_good_request_gets_the_body_with_its_length() {
        let reply =
            exchange(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n").await;
        assert_eq!(status_of(&reply), "HTTP/1.1 200 OK");
        assert!(
            reply.contains("\r\nContent-Type: text/plain\r\n"),
            "{reply}"
        );
        assert!(reply.contains("\r\nContent-Length: 6\r\n"), "{reply}");
        assert!(reply.contains("\r\nConnection: close\r\n"), "{reply}");
        assert!(reply.ends_with("\r\n\r\nhello\n"), "{reply}");
        // A query string is ignored; bare LF line ends and HTTP/1.0 are accepted.
        let reply = exchange(b"GET /metrics?x=1 HTTP/1.0\n\n").await;
        assert_eq!(status_of(&reply), "HTTP/1.1 200 OK");
        // HEAD: the headers alone.
        let reply = exchange(b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(status_of(&reply), "HTTP/1.1 200 OK");
        assert!(reply.contains("Content-Length: 6\r\n") && reply.ends_with("\r\n\r\n"));
    }

    #[tokio::test]
    async fn a_bad_request_line_is_a_400() {
        for bad in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET /metrics\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1 extra\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET http://x/metrics HTTP/1.1\r\n\r\n",
            b"get /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics FTP/1.1\r\n\r\n",
            b"GET /m\xffetrics HTTP/1.1\r\n\r\n",
            b"GET /m\x01 HTTP/1.1\r\n\r\n",
            b"\r\n\r\n",
            // Cut off before the blank line.
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n",
        ] {
            let reply = exchange(bad).await;
            assert_eq!(
                status_of(&reply),
                "HTTP/1.1 400 Bad Request",
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let reply = exchange(b"POST /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(status_of(&reply), "HTTP/1.1 405 Method Not Allowed");
        assert!(reply.contains("Allow: GET, HEAD\r\n"));
        let reply = exchange(b"GET /metrics HTTP/2.0\r\n\r\n").await;
        assert_eq!(status_of(&reply), "HTTP/1.1 505 HTTP Version Not Supported");
        // Nothing sent: nothing answered, no panic.
        assert_eq!(exchange(b"").await, "");
    }

    #[tokio::test]
    async fn oversized_heads_are_refused_without_reading_them_all() {
        let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
        while big.len() < MAX_HEAD * 2 {
            big.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        let reply = exchange(&big).await;
        assert_eq!(
            status_of(&reply),
            "HTTP/1.1 431 Request Header Fields Too Large"
        );
        // A request line over its own bound, even without a line end yet.
        let mut long = b"GET /".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_REQUEST_LINE + 10));
        let reply = exchange(&long).await;
        assert_eq!(status_of(&reply), "HTTP/1.1 414 URI Too Long");
        long.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        let reply = exchange(&long).await;
        assert_eq!(status_of(&reply), "HTTP/1.1 414 URI Too Long");
    }

    #[tokio::test]
    async fn other_paths_are_404() {
        for path in ["/", "/metric", "/metrics/", "/favicon.ico"] {
            let reply = exchange(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes()).await;
            assert_eq!(status_of(&reply), "HTTP/1.1 404 Not Found", "{path}");
        }
    }

    #[tokio::test]
    async fn a_client_that_stalls_gets_a_408() {
        let (mut client, server) = tokio::io::duplex(1024);
        let served = tokio::spawn(serve_connection_within(
            server,
            |_| async { None },
            Duration::from_millis(100),
        ));
        client.write_all(b"GET /metrics HT").await.unwrap();
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.unwrap();
        served.await.unwrap();
        assert!(
            String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 408 "),
            "{}",
            String::from_utf8_lossy(&reply)
        );
    }
}
