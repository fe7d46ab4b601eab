//! Stage 1 of a diskless network boot (`ballast.root=URL`, written by
//! `ballast netboot` into `boot.ipxe`): give the NIC the address iPXE leased
//! (`ballast.root.ip=`), or without one lease an address by DHCP ([`dhcp`]),
//! fetch the root image over HTTP into RAM (`/run`, a
//! tmpfs), check every block against the root hash of `ballast.verity=`, then
//! attach it to a loop device, map it through dm-verity, mount it, keep the
//! state on a local partition labelled `ballast-state` when one exists
//! ([`state`]), else in RAM as a live boot does, and switch_root.
//!
//! A server that does not answer, a truncated body or an HTTP error is retried
//! forever with a console line each time (a rack boots before its server
//! sometimes; the machine never powers off). A root whose blocks do not match
//! the hash is refused and never mounted.
//!
//! The network and the image check go through [`Net`] so that the flow is
//! tested with init's testsys seam; [`LinuxNet`] is the real one.

pub mod dhcp;
pub mod http;
pub mod ifconfig;
pub mod state;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::log;
use crate::root::{self, RootError};
use crate::stage1::Ending;
use crate::sys::Sys;
use ballast_device::cmdline::Cmdline;
use http::{FetchError, HttpUrl};

/// Where the fetched root image lives: `/run` is a tmpfs, moved under the new
/// root at switch_root (the loop device keeps the file).
pub const ROOT_FILE: &str = "/run/ballast/net-root.img";
/// How long to wait between tries, at most.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// `ballast.root.ip=ADDR,NETMASK[,GATEWAY[,MAC]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    pub addr: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub gateway: Option<Ipv4Addr>,
    pub mac: Option<String>,
}

impl IpConfig {
    pub fn parse(value: &str) -> Result<IpConfig, String> {
        let bad = |what: &str| {
            format!("ballast.root.ip={value:?}: {what}; expected ADDR,NETMASK[,GATEWAY[,MAC]] (boot.ipxe fills it from iPXE's DHCP lease)")
        };
        let mut parts = value.split(',').map(str::trim);
        let addr = parts
            .next()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| bad("bad address"))?;
        let netmask = parts
            .next()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| bad("bad netmask"))?;
        let gateway = match parts.next().filter(|g| !g.is_empty()) {
            Some(g) => Some(g.parse().map_err(|_| bad("bad gateway"))?),
            None => None,
        };
        let mac = parts
            .next()
            .filter(|m| !m.is_empty())
            .map(str::to_ascii_lowercase);
        Ok(IpConfig {
            addr,
            netmask,
            gateway,
            mac,
        })
    }
}

/// The network and the image check, as stage 1 uses them.
pub trait Net {
    /// Configures the NIC (the one with `cfg.mac`, else the first); returns
    /// its name, or why not (no NIC yet: the caller waits).
    fn configure(&mut self, cfg: &IpConfig) -> Result<String, String>;
    /// Leases an address by DHCP on a NIC and configures it with the lease;
    /// returns the NIC and the lease, or why not (the caller retries).
    fn dhcp(&mut self) -> Result<(String, IpConfig), String>;
    fn fetch(
        &mut self,
        url: &HttpUrl,
        dest: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<u64, FetchError>;
    /// Checks every data block of `image` against the hash tree and the root hash.
    fn verify(&mut self, image: &Path, verity: &ballast_verity::Verity) -> Result<(), String>;
}

/// The real network: socket ioctls, std's TcpStream, `ballast-verity`.
#[derive(Default)]
pub struct LinuxNet;

impl Net for LinuxNet {
    fn configure(&mut self, cfg: &IpConfig) -> Result<String, String> {
        let found = ifconfig::interfaces();
        let iface = ifconfig::pick(&found, cfg.mac.as_deref()).ok_or_else(|| match &cfg.mac {
            Some(mac) => format!(
                "no network interface with MAC {mac} (found: {})",
                if found.is_empty() {
                    "none".to_string()
                } else {
                    found
                        .iter()
                        .map(|(n, m)| format!("{n} {m}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
            None => "no network interface (is its driver in modules.load?)".to_string(),
        })?;
        ifconfig::configure(&iface, cfg).map(|()| iface)
    }

    fn dhcp(&mut self) -> Result<(String, IpConfig), String> {
        let found = ifconfig::interfaces();
        if found.is_empty() {
            return Err("no network interface (is its driver in modules.load?)".into());
        }
        // Each NIC in turn: the firmware booted from one of them, and a
        // UKI's command line does not say which.
        let mut why = Vec::new();
        for (iface, mac) in &found {
            let Some(mac_bytes) = dhcp::mac_bytes(mac) else {
                why.push(format!("{iface}: no Ethernet MAC ({mac:?})"));
                continue;
            };
            if let Err(e) = ifconfig::link_up(iface) {
                why.push(format!("{iface}: {e}"));
                continue;
            }
            // A transaction id that differs between machines and boots.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let xid = nanos
                ^ u32::from_be_bytes([mac_bytes[2], mac_bytes[3], mac_bytes[4], mac_bytes[5]]);
            let leased = dhcp::UdpLink::open(iface)
                .map_err(dhcp::DhcpError::Io)
                .and_then(|mut link| dhcp::lease(&mut link, mac_bytes, xid));
            match leased {
                Ok(lease) => {
                    let cfg = IpConfig {
                        addr: lease.addr,
                        netmask: lease.netmask,
                        gateway: lease.gateway,
                        mac: Some(mac.clone()),
                    };
                    ifconfig::configure(iface, &cfg).map_err(|e| {
                        format!("{iface}: configuring the lease {}: {e}", lease.addr)
                    })?;
                    return Ok((iface.clone(), cfg));
                }
                Err(e) => why.push(format!("{iface}: {e}")),
            }
        }
        Err(why.join("; "))
    }

    fn fetch(
        &mut self,
        url: &HttpUrl,
        dest: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<u64, FetchError> {
        http::get_to_file(url, dest, progress)
    }

    fn verify(&mut self, image: &Path, verity: &ballast_verity::Verity) -> Result<(), String> {
        ballast_verity::verify(image, verity).map_err(|e| e.to_string())
    }
}

/// Stage 1 of a network boot, from the command line to exec of stage 2.
pub fn boot_net(sys: &mut impl Sys, net: &mut impl Net, cmdline: &Cmdline) -> Ending {
    match net_root(sys, net, cmdline) {
        Ok(()) => Ending::SwitchedRoot,
        Err(e) => root::refuse(sys, "net", &e),
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn net_root(sys: &mut impl Sys, net: &mut impl Net, cmdline: &Cmdline) -> Result<(), RootError> {
    let url = cmdline.root_url().ok_or(RootError::Missing("root"))?;
    let url = HttpUrl::parse(url).map_err(|e| RootError::Net(e.to_string()))?;
    let verity = cmdline.verity().ok_or(RootError::Missing("verity"))?;
    let verity = ballast_verity::Verity::from_cmdline(verity).map_err(RootError::BadVerity)?;
    match cmdline.root_ip() {
        Some(ip) => bring_up(sys, net, &IpConfig::parse(ip).map_err(RootError::Net)?),
        None => lease(sys, net),
    }
    sys.mkdir(Path::new("/run/ballast"), 0o755)
        .map_err(|e| RootError::Net(format!("mkdir /run/ballast: {e}")))?;
    let image = PathBuf::from(ROOT_FILE);
    fetch_until_done(sys, net, &url, &image);

    let start = sys.now();
    net.verify(&image, &verity).map_err(|e| {
        RootError::Net(format!(
            "the root image from {url} does not match the root hash {}: {e}; not mounting it",
            verity.root_hash_hex()
        ))
    })?;
    log!(
        sys,
        "netboot: every block of the root matches root hash {} ({:.1} s)",
        verity.root_hash_hex(),
        sys.now().saturating_sub(start).as_secs_f64()
    );
    // The loop device's module, and a local state disk's (SATA, USB), load
    // beside the lease, the fetch and the check (`modules.load`'s `# beside`).
    crate::stage1::finish_beside(sys);
    let dev = sys.loop_attach(&image).map_err(|errno| RootError::Medium {
        step: format!("attaching {} to a loop device", image.display()),
        errno,
    })?;
    root::verify_and_mount(sys, &dev.display().to_string(), &verity, "network root")?;
    state::local_or_ram(sys);
    root::switch_root(sys)
}

/// Waits for the NIC and configures it; retries forever (a NIC whose driver
/// loads late; a console line every 10 s).
fn bring_up(sys: &mut impl Sys, net: &mut impl Net, ip: &IpConfig) {
    let start = sys.now();
    let mut said = Duration::ZERO;
    loop {
        match net.configure(ip) {
            Ok(iface) => {
                log!(
                    sys,
                    "netboot: {iface} is {}/{}{}",
                    ip.addr,
                    ip.netmask,
                    ip.gateway.map(|g| format!(" via {g}")).unwrap_or_default()
                );
                return;
            }
            Err(e) => {
                let waited = sys.now().saturating_sub(start);
                if waited >= said {
                    log!(
                        sys,
                        "netboot: cannot configure the network yet: {e}; retrying (waited {} s)",
                        waited.as_secs()
                    );
                    said = waited + Duration::from_secs(10);
                }
                sys.sleep(Duration::from_millis(500));
            }
        }
    }
}

/// No address on the command line: DHCP until a lease; retries forever (a
/// DHCP server that is down, a link still without carrier).
fn lease(sys: &mut impl Sys, net: &mut impl Net) {
    log!(
        sys,
        "netboot: no ballast.root.ip=; asking DHCP for an address"
    );
    let start = sys.now();
    loop {
        match net.dhcp() {
            Ok((iface, ip)) => {
                log!(
                    sys,
                    "netboot: {iface} is {}/{}{} (DHCP)",
                    ip.addr,
                    ip.netmask,
                    ip.gateway.map(|g| format!(" via {g}")).unwrap_or_default()
                );
                return;
            }
            Err(e) => {
                log!(
                    sys,
                    "netboot: no DHCP lease yet: {e}; retrying (waited {} s)",
                    sys.now().saturating_sub(start).as_secs()
                );
                sys.sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Fetches until a whole body is on disk; never gives up.
fn fetch_until_done(sys: &mut impl Sys, net: &mut impl Net, url: &HttpUrl, dest: &Path) {
    let mut attempt = 1u32;
    let mut backoff = Duration::from_secs(1);
    loop {
        log!(sys, "netboot: fetching {url} (attempt {attempt})");
        let start = sys.now();
        let mut next = start;
        let result = net.fetch(url, dest, &mut |got, total| {
            // A progress line about every 2 s, and at the end.
            let now = sys.now();
            if now >= next || got == total {
                next = now + Duration::from_secs(2);
                log!(
                    sys,
                    "netboot: {:.1} of {:.1} MiB ({} %)",
                    mib(got),
                    mib(total),
                    (got * 100).checked_div(total).unwrap_or(100)
                );
            }
        });
        match result {
            Ok(bytes) => {
                let took = sys.now().saturating_sub(start);
                log!(
                    sys,
                    "netboot: root image: {bytes} bytes in {:.1} s",
                    took.as_secs_f64()
                );
                return;
            }
            Err(e) => {
                log!(
                    sys,
                    "netboot: cannot fetch the root from {url}: {e}; retrying in {} s (the machine keeps trying; check the HTTP server)",
                    backoff.as_secs()
                );
                sys.sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

#[cfg(test)]
mod tests;
