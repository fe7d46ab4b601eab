//! The user's health checks (`ballast.health`): an HTTP URL answering 2xx, a TCP
//! port accepting, a system container running. Each gives the reason it failed, in
//! words that go into the rollback line.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use ballast_config::HealthCheck;
use ballast_control::ServiceState;

/// Longest one probe may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Run `check`; `Err(reason)` when it fails. `container` answers a container's
/// state by name (from the supervisor).
pub fn run(
    check: &HealthCheck,
    container: &dyn Fn(&str) -> Option<ServiceState>,
) -> Result<(), String> {
    match check {
        HealthCheck::Http { url } => http(url),
        HealthCheck::Tcp { address } => tcp(address),
        HealthCheck::Container { name } => match container(name) {
            Some(ServiceState::Running | ServiceState::Healthy) => Ok(()),
            Some(s) => Err(format!("container {name} is {s}")),
            None => Err(format!("container {name} is not defined")),
        },
    }
}

/// The first failing check of `checks`, with why.
pub fn first_failure(
    checks: &[HealthCheck],
    container: &dyn Fn(&str) -> Option<ServiceState>,
) -> Option<String> {
    checks.iter().find_map(|c| {
        run(c, container)
            .err()
            .map(|why| format!("health check `{c}` failed: {why}"))
    })
}

fn http(url: &str) -> Result<(), String> {
    let trust = crate::http::Trust::device();
    let agent = crate::http::agent(&trust, crate::http::Limits::call(TIMEOUT));
    let resp = agent
        .get(url)
        .call()
        .map_err(|e| crate::http::explain(&e, &trust))?;
    let st = resp.status();
    if st.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {st}"))
    }
}

fn tcp(address: &str) -> Result<(), String> {
    let addrs: Vec<_> = address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?
        .collect();
    let mut last = String::from("no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn serve_once(status: &'static str) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let _ = write!(
                c,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        });
        format!("http://{addr}/healthz")
    }

    #[test]
    fn http_passes_on_2xx_only() {
        let none = |_: &str| None;
        let ok = HealthCheck::Http {
            url: serve_once("204 No Content"),
        };
        assert_eq!(run(&ok, &none), Ok(()));
        let bad = HealthCheck::Http {
            url: serve_once("503 Service Unavailable"),
        };
        let e = first_failure(std::slice::from_ref(&bad), &none).unwrap();
        assert!(
            e.contains("health check `http http://127.0.0.1:") && e.contains("503"),
            "{e}"
        );
    }

    #[test]
    fn tcp_and_containers() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let open = l.local_addr().unwrap().to_string();
        let state = |n: &str| match n {
            "web" => Some(ServiceState::Running),
            "db" => Some(ServiceState::Backoff),
            _ => None,
        };
        assert_eq!(run(&HealthCheck::Tcp { address: open }, &state), Ok(()));
        drop(l);
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        assert!(run(&HealthCheck::Tcp { address: closed }, &state).is_err());
        assert_eq!(
            run(&HealthCheck::Container { name: "web".into() }, &state),
            Ok(())
        );
        assert_eq!(
            run(&HealthCheck::Container { name: "db".into() }, &state),
            Err("container db is backoff".into())
        );
        assert!(run(&HealthCheck::Container { name: "x".into() }, &state)
            .unwrap_err()
            .contains("not defined"));
    }
}
