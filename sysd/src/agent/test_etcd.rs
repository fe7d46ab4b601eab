//! A throwaway etcd for unit tests (Debian's `etcd-server`): its own data
//! directory and free ports, killed when dropped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

fn free_port() -> Option<u16> {
    TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()
        .map(|a| a.port())
}

impl Server {
    /// `None` when etcd is not installed.
    pub fn start() -> Option<Server> {
        let bin = ["/usr/bin/etcd", "/usr/local/bin/etcd"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let dir = tempfile::tempdir().ok()?;
        let (client, peer) = (free_port()?, free_port()?);
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new(bin)
            .args(["--name", "t", "--data-dir"])
            .arg(dir.path())
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("t={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let s = Server {
            url,
            child,
            _dir: dir,
        };
        let http = ureq::Agent::new_with_defaults();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if http.get(format!("{}/health", s.url)).call().is_ok() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd did not answer on {} within 30 s", s.url);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
