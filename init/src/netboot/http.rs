//! A plain HTTP/1.1 GET over `std::net::TcpStream` into a file: enough to
//! fetch the root image (no TLS, no redirects, no chunked bodies; the root is
//! pinned by its dm-verity hash, so the transport need not be trusted). A body
//! shorter than its `Content-Length` is an error, never a short file.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

/// `http://HOST[:PORT]/PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    /// Starts with `/`.
    pub path: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("ballast.root={0:?} is not an http:// URL (https is not supported in stage 1)")]
    NotHttp(String),
    #[error("ballast.root={0:?} has no host or a bad port")]
    BadHost(String),
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<HttpUrl, UrlError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| UrlError::NotHttp(url.to_string()))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| UrlError::BadHost(url.to_string()))?,
            ),
            None => (authority, 80),
        };
        if host.is_empty() {
            return Err(UrlError::BadHost(url.to_string()));
        }
        Ok(HttpUrl {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.path)
    }
}

/// Why a fetch failed; every one is retried by the caller.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot connect to {addr}: {err}")]
    Connect { addr: String, err: io::Error },
    #[error("the server answered {0:?} (expected 200 OK)")]
    Status(String),
    #[error("the server's answer has no Content-Length (stage 1 needs the size to refuse a truncated root)")]
    NoLength,
    #[error("bad HTTP answer: {0}")]
    Bad(String),
    #[error("truncated: the connection ended after {got} of {want} bytes")]
    Truncated { got: u64, want: u64 },
    #[error("network error after {got} bytes: {err}")]
    Io { got: u64, err: io::Error },
    #[error("cannot write {path}: {err}")]
    Write { path: String, err: io::Error },
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The status line and `Content-Length` of a response head (up to the blank line).
pub fn parse_head(head: &str) -> Result<u64, FetchError> {
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split(' ').nth(1).unwrap_or_default();
    if !status.starts_with("HTTP/1.") {
        return Err(FetchError::Bad(format!("status line {status:?}")));
    }
    if code != "200" {
        return Err(FetchError::Status(status.to_string()));
    }
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                return value
                    .trim()
                    .parse()
                    .map_err(|_| FetchError::Bad(format!("Content-Length {:?}", value.trim())));
            }
        }
    }
    Err(FetchError::NoLength)
}

/// GETs `url` into `dest` (created or truncated); `progress(got, total)` is
/// called after each chunk. Returns the body's length.
pub fn get_to_file(
    url: &HttpUrl,
    dest: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64, FetchError> {
    let authority = format!("{}:{}", url.host, url.port);
    let addrs: Vec<SocketAddr> = authority
        .to_socket_addrs()
        .map_err(|err| FetchError::Connect {
            addr: authority.clone(),
            err,
        })?
        .collect();
    let addr = addrs.first().ok_or_else(|| FetchError::Connect {
        addr: authority.clone(),
        err: io::Error::new(io::ErrorKind::NotFound, "no address"),
    })?;
    let mut stream =
        TcpStream::connect_timeout(addr, CONNECT_TIMEOUT).map_err(|err| FetchError::Connect {
            addr: authority.clone(),
            err,
        })?;
    let io_err = |got| move |err| FetchError::Io { got, err };
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .map_err(io_err(0))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: ballast-init\r\nConnection: close\r\n\r\n",
        url.path
    );
    stream.write_all(request.as_bytes()).map_err(io_err(0))?;

    // The head, then whatever of the body came with it.
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    let body_start = loop {
        let n = stream.read(&mut buf).map_err(io_err(0))?;
        if n == 0 {
            return Err(FetchError::Bad(
                "the connection ended inside the header".into(),
            ));
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > 16 * 1024 {
            return Err(FetchError::Bad("header longer than 16 KiB".into()));
        }
    };
    let want = parse_head(&String::from_utf8_lossy(&head[..body_start]))?;
    let write_err = |err| FetchError::Write {
        path: dest.display().to_string(),
        err,
    };
    let mut file = std::fs::File::create(dest).map_err(write_err)?;
    let first = &head[body_start..];
    let first = &first[..first.len().min(want as usize)];
    file.write_all(first).map_err(write_err)?;
    let mut got = first.len() as u64;
    progress(got, want);
    while got < want {
        let n = stream.read(&mut buf).map_err(io_err(got))?;
        if n == 0 {
            return Err(FetchError::Truncated { got, want });
        }
        let n = n.min((want - got) as usize);
        file.write_all(&buf[..n]).map_err(write_err)?;
        got += n as u64;
        progress(got, want);
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn urls() {
        assert_eq!(
            HttpUrl::parse("http://10.0.2.2:8080/a/root.img"),
            Ok(HttpUrl {
                host: "10.0.2.2".into(),
                port: 8080,
                path: "/a/root.img".into()
            })
        );
        assert_eq!(HttpUrl::parse("http://h").map(|u| u.port), Ok(80));
        assert!(matches!(
            HttpUrl::parse("https://h/x"),
            Err(UrlError::NotHttp(_))
        ));
        assert!(matches!(
            HttpUrl::parse("http://h:x/"),
            Err(UrlError::BadHost(_))
        ));
        assert!(matches!(
            HttpUrl::parse("http:///"),
            Err(UrlError::BadHost(_))
        ));
    }

    #[test]
    fn heads() {
        assert_eq!(
            parse_head("HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n").ok(),
            Some(12)
        );
        assert!(matches!(
            parse_head("HTTP/1.0 404 Not Found\r\n\r\n"),
            Err(FetchError::Status(s)) if s.contains("404")
        ));
        assert!(matches!(
            parse_head("HTTP/1.1 200 OK\r\n\r\n"),
            Err(FetchError::NoLength)
        ));
    }

    /// A one-shot server on 127.0.0.1 that answers `head` then `body`.
    fn serve(head: String, body: Vec<u8>) -> HttpUrl {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req);
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        });
        HttpUrl {
            host: "127.0.0.1".into(),
            port,
            path: "/root.img".into(),
        }
    }

    #[test]
    fn a_whole_body_is_written_and_a_truncated_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("root.img");
        let body: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let url = serve(
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()),
            body.clone(),
        );
        let mut calls = 0;
        let n = get_to_file(&url, &dest, &mut |_, total| {
            calls += 1;
            assert_eq!(total, 200_000);
        })
        .unwrap();
        assert_eq!(n, 200_000);
        assert!(calls >= 1);
        assert_eq!(std::fs::read(&dest).unwrap(), body);

        let url = serve(
            "HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n".into(),
            body,
        );
        let e = get_to_file(&url, &dest, &mut |_, _| {}).unwrap_err();
        assert!(
            matches!(
                e,
                FetchError::Truncated {
                    got: 200_000,
                    want: 300_000
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn a_server_that_does_not_answer_is_a_connect_error() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = HttpUrl {
            host: "127.0.0.1".into(),
            port,
            path: "/".into(),
        };
        let dir = tempfile::tempdir().unwrap();
        let e = get_to_file(&url, &dir.path().join("x"), &mut |_, _| {}).unwrap_err();
        assert!(matches!(e, FetchError::Connect { .. }), "{e}");
    }
}
