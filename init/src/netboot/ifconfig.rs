//! Gives one NIC an IPv4 address in stage 1 with the classic socket ioctls
//! (`SIOCSIFFLAGS`, `SIOCSIFADDR`, `SIOCSIFNETMASK`, `SIOCADDRT`): the few
//! calls `ifconfig`/`route` make, without netlink. Stage 2's network system
//! container configures the interface again from scratch.

use std::net::Ipv4Addr;
use std::path::Path;

use super::IpConfig;

const SIOCGIFFLAGS: u32 = 0x8913;
const SIOCSIFFLAGS: u32 = 0x8914;
const SIOCSIFADDR: u32 = 0x8916;
const SIOCSIFNETMASK: u32 = 0x891c;
const SIOCADDRT: u32 = 0x890b;
const IFF_UP: i16 = 0x1;
const RTF_UP: u16 = 0x1;
const RTF_GATEWAY: u16 = 0x2;

/// `struct ifreq`: a name and a 24-byte union (a sockaddr, or the flags).
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    data: [u8; 24],
}

/// `struct rtentry` (linux/route.h).
#[repr(C)]
struct RtEntry {
    pad1: libc::c_ulong,
    dst: [u8; 16],
    gateway: [u8; 16],
    genmask: [u8; 16],
    flags: libc::c_ushort,
    pad2: libc::c_short,
    pad3: libc::c_ulong,
    pad4: *mut libc::c_void,
    metric: libc::c_short,
    dev: *mut libc::c_char,
    mtu: libc::c_ulong,
    window: libc::c_ulong,
    irtt: libc::c_ushort,
}

/// A `struct sockaddr_in` as 16 bytes.
fn sockaddr_in(addr: Ipv4Addr) -> [u8; 16] {
    let mut s = [0u8; 16];
    s[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    s[4..8].copy_from_slice(&addr.octets());
    s
}

/// The interfaces under `/sys/class/net` but `lo`, with their MAC addresses.
pub fn interfaces() -> Vec<(String, String)> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut found: Vec<(String, String)> = dir
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lo")
        .map(|n| {
            let mac = std::fs::read_to_string(Path::new("/sys/class/net").join(&n).join("address"))
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            (n, mac)
        })
        .collect();
    found.sort();
    found
}

/// The interface to use: the one with `mac`, else the first.
pub fn pick(found: &[(String, String)], mac: Option<&str>) -> Option<String> {
    match mac {
        Some(mac) => found
            .iter()
            .find(|(_, m)| m.eq_ignore_ascii_case(mac))
            .map(|(n, _)| n.clone()),
        None => found.first().map(|(n, _)| n.clone()),
    }
}

struct Socket(libc::c_int);

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: the fd is ours and closed once.
        unsafe { libc::close(self.0) };
    }
}

fn ioctl<T>(sock: &Socket, req: u32, arg: &mut T, what: &str) -> Result<(), String> {
    // SAFETY: `arg` is a live, correctly laid out struct for `req`.
    let r = unsafe { libc::ioctl(sock.0, req as _, arg as *mut T) };
    if r < 0 {
        return Err(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn socket() -> Result<Socket, String> {
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    Ok(Socket(fd))
}

fn ifreq(iface: &str) -> Result<IfReq, String> {
    let mut req = IfReq {
        name: [0; 16],
        data: [0; 24],
    };
    let name = iface.as_bytes();
    if name.len() >= 16 {
        return Err(format!("interface name {iface:?} is too long"));
    }
    req.name[..name.len()].copy_from_slice(name);
    Ok(req)
}

/// Sets the link of `iface` up, with no address (for DHCP).
pub fn link_up(iface: &str) -> Result<(), String> {
    let sock = socket()?;
    let mut req = ifreq(iface)?;
    ioctl(&sock, SIOCGIFFLAGS, &mut req, "SIOCGIFFLAGS")?;
    let flags = i16::from_ne_bytes([req.data[0], req.data[1]]) | IFF_UP;
    req.data[..2].copy_from_slice(&flags.to_ne_bytes());
    ioctl(&sock, SIOCSIFFLAGS, &mut req, "SIOCSIFFLAGS (up)")
}

/// Brings `iface` up with `cfg`'s address, netmask and default route.
pub fn configure(iface: &str, cfg: &IpConfig) -> Result<(), String> {
    let sock = socket()?;
    let mut req = ifreq(iface)?;
    let name = iface.as_bytes();
    req.data[..16].copy_from_slice(&sockaddr_in(cfg.addr));
    ioctl(&sock, SIOCSIFADDR, &mut req, "SIOCSIFADDR")?;
    req.data[..16].copy_from_slice(&sockaddr_in(cfg.netmask));
    ioctl(&sock, SIOCSIFNETMASK, &mut req, "SIOCSIFNETMASK")?;
    req.data = [0; 24];
    ioctl(&sock, SIOCGIFFLAGS, &mut req, "SIOCGIFFLAGS")?;
    let flags = i16::from_ne_bytes([req.data[0], req.data[1]]) | IFF_UP;
    req.data[..2].copy_from_slice(&flags.to_ne_bytes());
    ioctl(&sock, SIOCSIFFLAGS, &mut req, "SIOCSIFFLAGS (up)")?;
    if let Some(gw) = cfg.gateway {
        let mut dev = [0 as libc::c_char; 16];
        for (d, b) in dev.iter_mut().zip(name) {
            *d = *b as libc::c_char;
        }
        let mut rt = RtEntry {
            pad1: 0,
            dst: sockaddr_in(Ipv4Addr::UNSPECIFIED),
            gateway: sockaddr_in(gw),
            genmask: sockaddr_in(Ipv4Addr::UNSPECIFIED),
            flags: RTF_UP | RTF_GATEWAY,
            pad2: 0,
            pad3: 0,
            pad4: std::ptr::null_mut(),
            metric: 0,
            dev: dev.as_mut_ptr(),
            mtu: 0,
            window: 0,
            irtt: 0,
        };
        ioctl(&sock, SIOCADDRT, &mut rt, "SIOCADDRT (default route)")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_by_mac_or_the_first() {
        let found = vec![
            ("eth0".to_string(), "52:54:00:12:34:56".to_string()),
            ("eth1".to_string(), "52:54:00:12:34:57".to_string()),
        ];
        assert_eq!(
            pick(&found, Some("52:54:00:12:34:57")).as_deref(),
            Some("eth1")
        );
        assert_eq!(pick(&found, None).as_deref(), Some("eth0"));
        assert_eq!(pick(&found, Some("aa:bb:cc:dd:ee:ff")), None);
        assert_eq!(pick(&[], None), None);
    }

    #[test]
    fn sockaddr_layout() {
        let s = sockaddr_in(Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(u16::from_ne_bytes([s[0], s[1]]), libc::AF_INET as u16);
        assert_eq!(&s[4..8], &[10, 0, 2, 15]);
    }
}
