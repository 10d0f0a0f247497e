//! `p2pfs-ctl`'s side of the control socket: one request and its reply, and the streamed
//! transfers of `put`, `get` and `leave`.

use std::path::Path;

use super::proto::*;
use super::{ControlError, SOCKET_FILE};

fn connect(
    data_dir: &Path,
    timeout: std::time::Duration,
) -> Result<std::os::unix::net::UnixStream, ControlError> {
    let path = data_dir.join(SOCKET_FILE);
    let stream = std::os::unix::net::UnixStream::connect(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ControlError::NotRunning(data_dir.to_path_buf())
        }
        _ => ControlError::Io(e),
    })?;
    stream.set_read_timeout(Some(timeout))?;
    Ok(stream)
}

fn write_request(w: &mut impl std::io::Write, request: &Request) -> Result<(), ControlError> {
    let mut line =
        serde_json::to_vec(request).map_err(|e| ControlError::Protocol(e.to_string()))?;
    line.push(b'\n');
    w.write_all(&line)?;
    Ok(())
}

fn read_reply(r: &mut impl std::io::BufRead) -> Result<Reply, ControlError> {
    let mut reply = String::new();
    if r.read_line(&mut reply)? == 0 {
        return Err(ControlError::Protocol(
            "the node closed the connection".into(),
        ));
    }
    serde_json::from_str(&reply).map_err(|e| ControlError::Protocol(format!("bad reply: {e}")))
}

/// Client side: one request, one reply.
pub fn call(data_dir: &Path, request: &Request) -> Result<Reply, ControlError> {
    call_within(data_dir, request, std::time::Duration::from_secs(30))
}

/// As [`call`], waiting up to `timeout` for the reply (a health census asks every peer).
pub fn call_within(
    data_dir: &Path,
    request: &Request,
    timeout: std::time::Duration,
) -> Result<Reply, ControlError> {
    let mut stream = connect(data_dir, timeout)?;
    write_request(&mut stream, request)?;
    read_reply(&mut std::io::BufReader::new(stream))
}

/// How long a transfer may stall before the client gives up.
const TRANSFER_STALL: std::time::Duration = std::time::Duration::from_secs(120);

/// How long `put` waits for `Ready` before it sends anyway: a node older than the `ready`
/// check reads the bytes right after the request and says nothing before them.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Client side of `put`: asks the node to check the destination (`path`, or `path/name` when
/// `path` names a directory), and only once it is ready sends `size` bytes from `data`
/// (reporting progress); returns the node's reply: `Done`, or the `Error` that refused the
/// destination before a byte was read from `data`. A node that does not answer within a few
/// seconds (an older one) gets the bytes anyway.
pub fn put(
    data_dir: &Path,
    path: &str,
    name: Option<&str>,
    mode: u32,
    size: u64,
    data: &mut impl std::io::Read,
    progress: impl FnMut(u64),
) -> Result<Reply, ControlError> {
    put_waiting(data_dir, path, name, mode, size, data, progress, READY_WAIT)
}

#[allow(clippy::too_many_arguments)]
fn put_waiting(
    data_dir: &Path,
    path: &str,
    name: Option<&str>,
    mode: u32,
    size: u64,
    data: &mut impl std::io::Read,
    mut progress: impl FnMut(u64),
    ready_wait: std::time::Duration,
) -> Result<Reply, ControlError> {
    let stream = connect(data_dir, ready_wait)?;
    let mut reader = std::io::BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    write_request(
        &mut stream,
        &Request::Put {
            path: path.to_string(),
            size,
            mode,
            name: name.map(str::to_string),
            ready: true,
        },
    )?;
    let answered = match read_reply(&mut reader) {
        Ok(Reply::Ready { .. }) => true,
        Ok(other) => return Ok(other),
        Err(ControlError::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            tracing::debug!("no Ready within {ready_wait:?}: an older node; sending anyway");
            false
        }
        Err(e) => return Err(e),
    };
    stream.set_read_timeout(Some(TRANSFER_STALL))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut sent = 0u64;
    while sent < size {
        let want = (size - sent).min(buf.len() as u64) as usize;
        let n = data.read(&mut buf[..want])?;
        if n == 0 {
            return Err(ControlError::Protocol(format!(
                "the local file ended after {sent} of {size} bytes (changed while sending?)"
            )));
        }
        if let Err(e) = std::io::Write::write_all(&mut stream, &buf[..n]) {
            // A slow node that refused the destination after all closed the connection.
            if !answered && let Ok(refusal @ Reply::Error { .. }) = read_reply(&mut reader) {
                return Ok(refusal);
            }
            return Err(e.into());
        }
        sent += n as u64;
        progress(sent);
    }
    match read_reply(&mut reader)? {
        // A slow node's `Ready`, come after the bytes were sent: its verdict is next.
        Reply::Ready { .. } if !answered => read_reply(&mut reader),
        reply => Ok(reply),
    }
}

/// Client side of `get`: writes the file's bytes to `out` (reporting progress with the total);
/// returns the size, or the node's error message.
/// `path` may be any bytes (names from peers need not be UTF-8).
pub fn get(
    data_dir: &Path,
    path: &[u8],
    out: &mut impl std::io::Write,
    mut progress: impl FnMut(u64, u64),
) -> Result<Result<u64, String>, ControlError> {
    use std::io::Read;
    let mut stream = connect(data_dir, TRANSFER_STALL)?;
    write_request(
        &mut stream,
        &Request::Get {
            path: String::from_utf8_lossy(path).into_owned(),
            path_bytes: std::str::from_utf8(path)
                .is_err()
                .then(|| hex::encode(path)),
        },
    )?;
    let mut reader = std::io::BufReader::new(stream);
    let size = match read_reply(&mut reader)? {
        Reply::Data { size } => size,
        Reply::Error { message } => return Ok(Err(message)),
        other => {
            return Err(ControlError::Protocol(format!(
                "unexpected reply {other:?}"
            )));
        }
    };
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    while got < size {
        let want = (size - got).min(buf.len() as u64) as usize;
        let n = reader.read(&mut buf[..want])?;
        if n == 0 {
            return Err(ControlError::Protocol(format!(
                "the transfer stopped after {got} of {size} bytes (see the node's log)"
            )));
        }
        out.write_all(&buf[..n])?;
        got += n as u64;
        progress(got, size);
    }
    out.flush()?;
    Ok(Ok(size))
}

/// Client side of `leave`: asks the node to leave and waits for the result of its handoff,
/// reporting the copies still to push as they go. The node's error message, if it refused.
pub fn leave(
    data_dir: &Path,
    mut progress: impl FnMut(u64),
) -> Result<Result<LeaveReport, String>, ControlError> {
    // Progress lines come every 250 ms while the node works; silence this long means it is gone.
    let mut stream = connect(data_dir, std::time::Duration::from_secs(60))?;
    write_request(&mut stream, &Request::Leave)?;
    let mut reader = std::io::BufReader::new(stream);
    loop {
        match read_reply(&mut reader)? {
            Reply::Leaving => {}
            Reply::LeaveProgress { copies_to_push } => progress(copies_to_push),
            Reply::Left(report) => return Ok(Ok(report)),
            Reply::Error { message } => return Ok(Err(message)),
            other => {
                return Err(ControlError::Protocol(format!(
                    "unexpected reply {other:?}"
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, Read, Write};

    /// A node older than the `ready` check reads the bytes right after the request and never
    /// says `Ready`: `put` sends them after a short wait instead of hanging.
    #[test]
    fn put_to_a_node_that_ignores_ready_sends_anyway() {
        let dir = tempfile::tempdir().unwrap();
        let listener =
            std::os::unix::net::UnixListener::bind(dir.path().join(SOCKET_FILE)).unwrap();
        let old_node = std::thread::spawn(move || -> Vec<u8> {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let Request::Put { size, .. } = serde_json::from_str(&line).unwrap() else {
                panic!("not a put: {line}");
            };
            let mut got = vec![0u8; size as usize];
            reader.read_exact(&mut got).unwrap();
            let mut done = serde_json::to_vec(&Reply::Done {
                message: "stored".into(),
            })
            .unwrap();
            done.push(b'\n');
            (&stream).write_all(&done).unwrap();
            got
        });
        let data = b"bytes for an old node".to_vec();
        let reply = put_waiting(
            dir.path(),
            "f",
            None,
            0o644,
            data.len() as u64,
            &mut &data[..],
            |_| {},
            std::time::Duration::from_millis(300),
        )
        .unwrap();
        assert!(matches!(reply, Reply::Done { .. }), "{reply:?}");
        assert_eq!(old_node.join().unwrap(), data);
    }
}
