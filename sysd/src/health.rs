//! Health probes that touch the outside world. The decision of when to probe and what a
//! result means lives in the supervisor; this module only performs the probe.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A probe never holds the supervisor loop longer than this.
pub const TCP_TIMEOUT: Duration = Duration::from_millis(200);

/// Healthy when a TCP connect to `addr` succeeds within [`TCP_TIMEOUT`].
pub fn tcp_ok(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, TCP_TIMEOUT).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_port_is_healthy_closed_port_is_not() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert!(tcp_ok(addr));
        drop(l);
        assert!(!tcp_ok(addr));
    }
}
