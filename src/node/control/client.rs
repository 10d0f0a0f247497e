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

/// Client side of `put`: asks the node to check the destination (`path`, or `path/name` when
/// `path` names a directory), and only once it is ready sends `size` bytes from `data`
/// (reporting progress); returns the node's reply: `Done`, or the `Error` that refused the
/// destination before a byte was read from `data`.
pub fn put(
    data_dir: &Path,
    path: &str,
    name: Option<&str>,
    mode: u32,
    size: u64,
    data: &mut impl std::io::Read,
    mut progress: impl FnMut(u64),
) -> Result<Reply, ControlError> {
    let stream = connect(data_dir, TRANSFER_STALL)?;
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
    match read_reply(&mut reader)? {
        Reply::Ready { .. } => {}
        other => return Ok(other),
    }
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
        std::io::Write::write_all(&mut stream, &buf[..n])?;
        sent += n as u64;
        progress(sent);
    }
    read_reply(&mut reader)
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
