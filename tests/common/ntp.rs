//! An NTP server on the host for the stories of the device's time service:
//! Debian's chronyd, which scripts/setup unpacks (not installs: chrony would
//! replace the host's systemd-timesyncd) into [`CHRONYD_ROOT`]. It serves the
//! host's clock as synchronised (stratum 3) on 127.0.0.1, UDP port 123, which
//! a guest reaches as 10.0.2.2 through QEMU's user network; it never touches
//! the host's clock (`-x`).

use std::io::Read;
use std::net::UdpSocket;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where scripts/setup unpacks Debian's chrony package.
pub const CHRONYD_ROOT: &str = "/usr/local/lib/ballast-test/chrony";

/// The port NTP clients ask (the device's `ntp:` servers name no port).
pub const PORT: u16 = 123;

/// A chronyd serving NTP on 127.0.0.1:123 until dropped. Its configuration,
/// pid file, drift file and output (`chronyd.log`) are in `DIR/ntp`.
pub struct NtpServer {
    child: Child,
    dir: PathBuf,
}

impl NtpServer {
    /// Start chronyd with its files in `work/ntp` and wait until it answers
    /// a client's request as a synchronised server.
    pub fn start(work: &Path) -> NtpServer {
        let chronyd = Path::new(CHRONYD_ROOT).join("usr/sbin/chronyd");
        assert!(
            chronyd.is_file(),
            "{} is missing: run scripts/setup (it unpacks Debian's chrony for the NTP stories)",
            chronyd.display()
        );
        // Say why before chronyd does it in its log.
        match UdpSocket::bind(("127.0.0.1", PORT)) {
            Ok(s) => drop(s),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => panic!(
                "UDP port {PORT} on 127.0.0.1 is taken, so the test NTP server cannot \
                 start: another NTP server, or a chronyd left by an earlier test run \
                 (`ss -ulpn 'sport = :{PORT}'` shows which)"
            ),
            Err(e) => panic!(
                "cannot bind UDP port {PORT} on 127.0.0.1 for the test NTP server ({e}): \
                 the NTP stories run as root"
            ),
        }
        let dir = work.join("ntp");
        std::fs::create_dir_all(&dir).expect("creating the NTP server's directory");
        let conf = dir.join("chrony.conf");
        // `local`: serve the own clock as synchronised at stratum 3 without
        // any source. `user root`: stay root (the compiled-in _chrony user
        // need not exist here). `bindcmdaddress /`: no command socket, so
        // nothing is created in the host's /run/chrony.
        std::fs::write(
            &conf,
            format!(
                "local stratum 3\n\
                 allow all\n\
                 bindaddress 127.0.0.1\n\
                 port {PORT}\n\
                 cmdport 0\n\
                 bindcmdaddress /\n\
                 user root\n\
                 pidfile {}\n\
                 driftfile {}\n",
                dir.join("chronyd.pid").display(),
                dir.join("chrony.drift").display()
            ),
        )
        .expect("writing chrony.conf");
        let log = std::fs::File::create(dir.join("chronyd.log")).expect("creating chronyd.log");
        let mut cmd = Command::new(&chronyd);
        // -x: never adjust the host's clock; -d: foreground, messages to
        // stderr (the log); -4: IPv4 only.
        cmd.args(["-x", "-d", "-4", "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("chronyd.log"))
            .stderr(log);
        // SAFETY: prctl in the child before exec; async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                // A killed test run must not leave port 123 taken.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}: run scripts/setup", chronyd.display()));
        let mut server = NtpServer { child, dir };
        server.wait_answering(Duration::from_secs(20));
        server
    }

    /// The server's output so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.join("chronyd.log")) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    fn wait_answering(&mut self, timeout: Duration) {
        let start = Instant::now();
        let mut last = String::from("no answer");
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the test NTP server (chronyd) exited ({status}) before answering; its log:\n{}",
                    self.log()
                );
            }
            match query(("127.0.0.1", PORT), Duration::from_millis(500)) {
                Ok(reply) if reply.synchronised() => return,
                Ok(reply) => {
                    last = format!(
                        "an unsynchronised answer (leap {}, stratum {})",
                        reply.leap, reply.stratum
                    )
                }
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "the test NTP server on 127.0.0.1:{PORT} gave {last} within {timeout:?}; its log:\n{}",
            self.log()
        );
    }
}

impl Drop for NtpServer {
    fn drop(&mut self) {
        // SIGTERM: chronyd removes its pid file and says so in its log.
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child, not yet reaped.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What an NTP server's answer says about itself.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    /// Leap indicator: 3 is "unsynchronised".
    pub leap: u8,
    /// 0 is a kiss-o'-death; 16 and up unsynchronised.
    pub stratum: u8,
    /// The server's transmit time, Unix seconds.
    pub transmit: f64,
}

impl Reply {
    /// An answer a client would take its time from.
    pub fn synchronised(&self) -> bool {
        self.leap != 3 && (1..16).contains(&self.stratum)
    }
}

/// Seconds from 1900 (NTP's era 0) to 1970.
const NTP_UNIX_OFFSET: f64 = 2_208_988_800.0;

/// Ask `server` once, as an NTP client (v4, mode 3, 48 bytes).
pub fn query(server: impl std::net::ToSocketAddrs, timeout: Duration) -> std::io::Result<Reply> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.set_read_timeout(Some(timeout))?;
    sock.connect(server)?;
    let mut request = [0u8; 48];
    request[0] = 4 << 3 | 3;
    sock.send(&request)?;
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf)?;
    if n < 48 || buf[0] & 7 != 4 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a {n}-byte answer that is not an NTP server's"),
        ));
    }
    let secs = u32::from_be_bytes(buf[40..44].try_into().expect("4 bytes"));
    let frac = u32::from_be_bytes(buf[44..48].try_into().expect("4 bytes"));
    Ok(Reply {
        leap: buf[0] >> 6,
        stratum: buf[1],
        transmit: f64::from(secs) + f64::from(frac) / 4_294_967_296.0 - NTP_UNIX_OFFSET,
    })
}

/// The host's time, Unix seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the host's clock is after 1970")
        .as_secs()
}

/// `secs` (Unix time) as `YYYY-MM-DDTHH:MM:SS`, UTC: what `ballast run
/// --clock` takes.
pub fn utc(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
