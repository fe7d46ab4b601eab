//! Health probes that touch the outside world. The decision of when to probe and what a
//! result means lives in the supervisor; this module only performs the probe.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// A probe never holds the supervisor loop longer than this.
pub const TCP_TIMEOUT: Duration = Duration::from_millis(200);

/// Healthy when a TCP connect to `addr` succeeds within [`TCP_TIMEOUT`].
pub fn tcp_ok(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, TCP_TIMEOUT).is_ok()
}

/// Longest an HTTP-over-unix-socket probe waits for each read or write.
pub const UNIX_HTTP_TIMEOUT: Duration = Duration::from_millis(500);

/// Healthy when `GET path` over the unix socket `socket` answers with status
/// 200 within [`UNIX_HTTP_TIMEOUT`] per read/write (Docker's `/_ping`).
pub fn unix_http_ok(socket: &Path, path: &str) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return false;
    };
    if s.set_read_timeout(Some(UNIX_HTTP_TIMEOUT)).is_err()
        || s.set_write_timeout(Some(UNIX_HTTP_TIMEOUT)).is_err()
    {
        return false;
    }
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return false;
    }
    // The status line is all we need: `HTTP/1.x 200 ...`.
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 64];
    while !head.contains(&b'\n') && head.len() < 1024 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    status_is_200(&head)
}

/// Healthy when a connect to the unix socket `socket` succeeds: a daemon that
/// speaks gRPC (containerd) listens there once its API is served. A socket file
/// left without a listener refuses the connect, so it does not count.
pub fn unix_ok(socket: &Path) -> bool {
    UnixStream::connect(socket).is_ok()
}

fn status_is_200(head: &[u8]) -> bool {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|b| *b == b' ');
    matches!(words.next(), Some(v) if v.starts_with(b"HTTP/1.")) && words.next() == Some(b"200")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A one-shot HTTP server on a unix socket answering `status`; returns the
    /// request line it got.
    fn serve(listener: UnixListener, status: &'static str) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let mut buf = [0u8; 512];
            let n = c.read(&mut buf).unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            write!(c, "HTTP/1.1 {status}\r\nContent-Length: 2\r\n\r\nOK").unwrap();
            req.lines().next().unwrap_or_default().to_owned()
        })
    }

    #[test]
    fn unix_http_is_healthy_on_200_only() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        let server = serve(UnixListener::bind(&sock).unwrap(), "200 OK");
        assert!(unix_http_ok(&sock, "/_ping"));
        assert_eq!(server.join().unwrap(), "GET /_ping HTTP/1.0");
        std::fs::remove_file(&sock).unwrap();
        let server = serve(
            UnixListener::bind(&sock).unwrap(),
            "503 Service Unavailable",
        );
        assert!(!unix_http_ok(&sock, "/_ping"));
        server.join().unwrap();
    }

    #[test]
    fn unix_http_without_a_listener_or_a_reply_is_unhealthy() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("absent.sock");
        assert!(!unix_http_ok(&sock, "/_ping"));
        // A listener that accepts and never answers: the probe gives up.
        let l = UnixListener::bind(&sock).unwrap();
        let started = std::time::Instant::now();
        assert!(!unix_http_ok(&sock, "/_ping"));
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(l);
    }

    #[test]
    fn unix_is_healthy_while_a_listener_is_bound_only() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("containerd.sock");
        assert!(!unix_ok(&sock));
        let l = UnixListener::bind(&sock).unwrap();
        assert!(unix_ok(&sock));
        // The daemon exited and left its socket file behind.
        drop(l);
        assert!(sock.exists());
        assert!(!unix_ok(&sock));
    }

    #[test]
    fn listening_port_is_healthy_closed_port_is_not() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert!(tcp_ok(addr));
        drop(l);
        assert!(!tcp_ok(addr));
    }
}
