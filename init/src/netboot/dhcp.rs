//! Stage 1's own DHCPv4 client (RFC 2131), for a network boot whose command
//! line carries no `ballast.root.ip=` (a UKI booted by the firmware's PXE, or
//! `ballast netboot --dhcp`): DISCOVER, OFFER, REQUEST, ACK, and nothing more.
//! The lease is used only to fetch the root; stage 2's network container
//! leases again from scratch, so there is no renewal here.
//!
//! It owns the message format (encode the two requests, parse the two
//! replies) and the exchange over a [`Link`]; [`UdpLink`] is the real one, a
//! UDP socket on port 68 bound to the NIC that sends to the limited broadcast
//! address. Requests ask for a broadcast reply (the flag bit), since an
//! interface without an address does not receive unicast.

use std::net::Ipv4Addr;
use std::time::Duration;

const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
const COOKIE: [u8; 4] = [99, 130, 83, 99];
/// The fixed BOOTP header before the magic cookie.
const HEADER: usize = 236;
/// Requests are padded to the 548 bytes of a full BOOTP message: some
/// servers (QEMU's among them) ignore shorter ones.
const MIN_MESSAGE: usize = 548;
const FLAG_BROADCAST: u16 = 0x8000;

const OPT_PAD: u8 = 0;
const OPT_SUBNET: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_LEASE: u8 = 51;
const OPT_MSG_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_PARAMS: u8 = 55;
const OPT_END: u8 = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Ack = 5,
    Nak = 6,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Discover,
            2 => Kind::Offer,
            3 => Kind::Request,
            5 => Kind::Ack,
            6 => Kind::Nak,
            _ => return None,
        })
    }
}

/// What a reply says (the fields stage 1 uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: Kind,
    pub xid: u32,
    pub chaddr: [u8; 6],
    pub yiaddr: Ipv4Addr,
    pub server_id: Option<Ipv4Addr>,
    pub netmask: Option<Ipv4Addr>,
    pub router: Option<Ipv4Addr>,
    pub lease_secs: Option<u32>,
}

/// The address stage 1 got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub addr: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub gateway: Option<Ipv4Addr>,
    pub server: Ipv4Addr,
    pub lease_secs: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("no DHCP offer after {tries} DISCOVERs (is a DHCP server on this network?)")]
    NoOffer { tries: u32 },
    #[error("no DHCP ACK from {server} for {addr} after {tries} REQUESTs")]
    NoAck {
        server: Ipv4Addr,
        addr: Ipv4Addr,
        tries: u32,
    },
    #[error("the DHCP server {server} refused {addr} (NAK)")]
    Nak { server: Ipv4Addr, addr: Ipv4Addr },
    #[error("DHCP socket: {0}")]
    Io(#[from] std::io::Error),
}

/// A DISCOVER or a REQUEST from `mac`.
pub fn request(
    kind: Kind,
    xid: u32,
    mac: [u8; 6],
    wanted: Option<(Ipv4Addr, Ipv4Addr)>,
) -> Vec<u8> {
    let mut m = vec![0u8; HEADER];
    m[0] = BOOTREQUEST;
    m[1] = 1; // Ethernet
    m[2] = 6;
    m[4..8].copy_from_slice(&xid.to_be_bytes());
    m[10..12].copy_from_slice(&FLAG_BROADCAST.to_be_bytes());
    m[28..34].copy_from_slice(&mac);
    m.extend_from_slice(&COOKIE);
    m.extend_from_slice(&[OPT_MSG_TYPE, 1, kind as u8]);
    if let Some((addr, server)) = wanted {
        m.extend_from_slice(&[OPT_REQUESTED_IP, 4]);
        m.extend_from_slice(&addr.octets());
        m.extend_from_slice(&[OPT_SERVER_ID, 4]);
        m.extend_from_slice(&server.octets());
    }
    m.extend_from_slice(&[
        OPT_PARAMS,
        4,
        OPT_SUBNET,
        OPT_ROUTER,
        OPT_LEASE,
        OPT_SERVER_ID,
    ]);
    m.push(OPT_END);
    if m.len() < MIN_MESSAGE {
        m.resize(MIN_MESSAGE, OPT_PAD);
    }
    m
}

fn ip(v: &[u8]) -> Option<Ipv4Addr> {
    let b: [u8; 4] = v.get(..4)?.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

/// Parses a server's reply; `None` for anything that is not a well-formed
/// BOOTREPLY with a DHCP message type (other traffic on port 68 is ignored).
pub fn parse(m: &[u8]) -> Option<Reply> {
    if m.len() < HEADER + 4 || m[0] != BOOTREPLY || m[HEADER..HEADER + 4] != COOKIE {
        return None;
    }
    let mut reply = Reply {
        kind: Kind::Offer,
        xid: u32::from_be_bytes(m[4..8].try_into().ok()?),
        chaddr: m[28..34].try_into().ok()?,
        yiaddr: ip(&m[16..20])?,
        server_id: None,
        netmask: None,
        router: None,
        lease_secs: None,
    };
    let mut kind = None;
    let mut opts = &m[HEADER + 4..];
    while let Some((&code, rest)) = opts.split_first() {
        match code {
            OPT_PAD => {
                opts = rest;
                continue;
            }
            OPT_END => break,
            _ => {}
        }
        let (&len, rest) = rest.split_first()?;
        let value = rest.get(..usize::from(len))?;
        match code {
            OPT_MSG_TYPE => kind = value.first().copied().and_then(Kind::from_u8),
            OPT_SUBNET => reply.netmask = ip(value),
            OPT_ROUTER => reply.router = ip(value).filter(|r| !r.is_unspecified()),
            OPT_SERVER_ID => reply.server_id = ip(value),
            OPT_LEASE => reply.lease_secs = value.try_into().ok().map(u32::from_be_bytes),
            _ => {}
        }
        opts = &rest[usize::from(len)..];
    }
    reply.kind = kind?;
    Some(reply)
}

/// The classful mask of `addr`, for a server that names no subnet mask.
fn classful(addr: Ipv4Addr) -> Ipv4Addr {
    match addr.octets()[0] {
        0..=127 => Ipv4Addr::new(255, 0, 0, 0),
        128..=191 => Ipv4Addr::new(255, 255, 0, 0),
        _ => Ipv4Addr::new(255, 255, 255, 0),
    }
}

/// Where DHCP messages go: the NIC, or a test's script.
pub trait Link {
    fn send(&mut self, message: &[u8]) -> std::io::Result<()>;
    /// The next datagram within `timeout`, or `None`.
    fn recv(&mut self, timeout: Duration) -> std::io::Result<Option<Vec<u8>>>;
}

/// How long to wait for each answer: 1, 2, 4, 4 s (RFC 2131 backs off from 4 s;
/// a boot wants to say something sooner, and the caller retries anyway).
const WAITS: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(4),
];

/// Sends `message` and waits for a reply of ours accepted by `pick`, resending
/// after each wait.
fn ask(
    link: &mut impl Link,
    message: &[u8],
    xid: u32,
    mac: [u8; 6],
    pick: &dyn Fn(&Reply) -> bool,
) -> Result<Option<Reply>, DhcpError> {
    for wait in WAITS {
        link.send(message)?;
        // Other clients' replies (broadcast too) and other traffic: skip them
        // until this wait is used up.
        let mut left = wait;
        while !left.is_zero() {
            let before = std::time::Instant::now();
            let Some(bytes) = link.recv(left)? else {
                break;
            };
            left = left.saturating_sub(before.elapsed());
            if let Some(r) = parse(&bytes).filter(|r| r.xid == xid && r.chaddr == mac) {
                if pick(&r) {
                    return Ok(Some(r));
                }
            }
        }
    }
    Ok(None)
}

/// DISCOVER, OFFER, REQUEST, ACK: the lease of `mac`.
pub fn lease(link: &mut impl Link, mac: [u8; 6], xid: u32) -> Result<Lease, DhcpError> {
    let tries = WAITS.len() as u32;
    let discover = request(Kind::Discover, xid, mac, None);
    let offer = ask(link, &discover, xid, mac, &|r| {
        r.kind == Kind::Offer && !r.yiaddr.is_unspecified()
    })?
    .ok_or(DhcpError::NoOffer { tries })?;
    // A server that names no server identifier is asked by its address anyway
    // (the request is broadcast; the identifier only picks among offers).
    let server = offer.server_id.unwrap_or(Ipv4Addr::UNSPECIFIED);
    let req = request(Kind::Request, xid, mac, Some((offer.yiaddr, server)));
    let ack = ask(link, &req, xid, mac, &|r| {
        matches!(r.kind, Kind::Ack | Kind::Nak)
    })?
    .ok_or(DhcpError::NoAck {
        server,
        addr: offer.yiaddr,
        tries,
    })?;
    if ack.kind == Kind::Nak {
        return Err(DhcpError::Nak {
            server,
            addr: offer.yiaddr,
        });
    }
    let addr = if ack.yiaddr.is_unspecified() {
        offer.yiaddr
    } else {
        ack.yiaddr
    };
    Ok(Lease {
        addr,
        netmask: ack
            .netmask
            .or(offer.netmask)
            .unwrap_or_else(|| classful(addr)),
        gateway: ack.router.or(offer.router),
        server: ack.server_id.unwrap_or(server),
        lease_secs: ack.lease_secs,
    })
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn mac_bytes(mac: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = mac.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The real link: UDP port 68 on `iface`, to the limited broadcast address.
pub struct UdpLink {
    sock: std::net::UdpSocket,
}

impl UdpLink {
    pub fn open(iface: &str) -> std::io::Result<UdpLink> {
        let sock = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 68))?;
        sock.set_broadcast(true)?;
        // Bound to the NIC: sends leave through it with no route or address
        // yet, and only its datagrams are received.
        let name = iface.as_bytes();
        use std::os::fd::AsRawFd;
        // SAFETY: setsockopt with a pointer and the length of `name`.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                name.as_ptr().cast(),
                name.len() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(UdpLink { sock })
    }
}

impl Link for UdpLink {
    fn send(&mut self, message: &[u8]) -> std::io::Result<()> {
        self.sock
            .send_to(message, (Ipv4Addr::BROADCAST, 67))
            .map(|_| ())
    }

    fn recv(&mut self, timeout: Duration) -> std::io::Result<Option<Vec<u8>>> {
        self.sock
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let mut buf = vec![0u8; 1500];
        match self.sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                buf.truncate(n);
                Ok(Some(buf))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

    /// A server's reply, the way QEMU's user network builds one.
    fn reply(kind: Kind, xid: u32, mac: [u8; 6], addr: Ipv4Addr) -> Vec<u8> {
        let mut m = vec![0u8; HEADER];
        m[0] = BOOTREPLY;
        m[1] = 1;
        m[2] = 6;
        m[4..8].copy_from_slice(&xid.to_be_bytes());
        m[16..20].copy_from_slice(&addr.octets());
        m[28..34].copy_from_slice(&mac);
        m.extend_from_slice(&COOKIE);
        m.extend_from_slice(&[OPT_MSG_TYPE, 1, kind as u8, OPT_PAD]);
        m.extend_from_slice(&[OPT_SERVER_ID, 4, 10, 0, 2, 2]);
        m.extend_from_slice(&[OPT_LEASE, 4, 0, 1, 0x51, 0x80]);
        m.extend_from_slice(&[OPT_SUBNET, 4, 255, 255, 255, 0]);
        m.extend_from_slice(&[OPT_ROUTER, 4, 10, 0, 2, 2]);
        m.extend_from_slice(&[6, 4, 10, 0, 2, 3, OPT_END]);
        m
    }

    /// A scripted network: what each send is answered with.
    #[derive(Default)]
    struct Script {
        answers: VecDeque<Vec<Vec<u8>>>,
        pending: VecDeque<Vec<u8>>,
        sent: Vec<Vec<u8>>,
    }

    impl Link for Script {
        fn send(&mut self, message: &[u8]) -> std::io::Result<()> {
            self.sent.push(message.to_vec());
            self.pending = self.answers.pop_front().unwrap_or_default().into();
            Ok(())
        }
        fn recv(&mut self, _timeout: Duration) -> std::io::Result<Option<Vec<u8>>> {
            Ok(self.pending.pop_front())
        }
    }

    #[test]
    fn requests_are_full_broadcast_bootp_messages() {
        let d = request(Kind::Discover, 0xdead_beef, MAC, None);
        assert_eq!(d.len(), MIN_MESSAGE);
        assert_eq!(&d[..3], &[BOOTREQUEST, 1, 6]);
        assert_eq!(&d[4..8], &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(&d[10..12], &[0x80, 0]);
        assert_eq!(&d[28..34], &MAC);
        assert_eq!(&d[HEADER..HEADER + 7], &[99, 130, 83, 99, 53, 1, 1]);
        let r = request(
            Kind::Request,
            7,
            MAC,
            Some((Ipv4Addr::new(10, 0, 2, 15), SERVER)),
        );
        assert_eq!(
            &r[HEADER + 4..HEADER + 19],
            &[53, 1, 3, 50, 4, 10, 0, 2, 15, 54, 4, 10, 0, 2, 2]
        );
    }

    #[test]
    fn replies_parse_and_junk_does_not() {
        let r = parse(&reply(Kind::Offer, 9, MAC, Ipv4Addr::new(10, 0, 2, 15))).unwrap();
        assert_eq!(r.kind, Kind::Offer);
        assert_eq!(r.xid, 9);
        assert_eq!(r.yiaddr, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(r.netmask, Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(r.router, Some(SERVER));
        assert_eq!(r.server_id, Some(SERVER));
        assert_eq!(r.lease_secs, Some(86400));
        // Our own broadcast request, a short datagram, a cut option.
        assert_eq!(parse(&request(Kind::Discover, 9, MAC, None)), None);
        assert_eq!(parse(&[2u8; 100]), None);
        let mut cut = reply(Kind::Ack, 9, MAC, Ipv4Addr::new(10, 0, 2, 15));
        cut.truncate(HEADER + 4 + 3 + 1 + 3);
        cut.pop();
        assert_eq!(parse(&cut), None);
    }

    #[test]
    fn the_exchange_skips_strangers_and_resends_until_answered() {
        let addr = Ipv4Addr::new(10, 0, 2, 15);
        let mut link = Script::default();
        // The first DISCOVER goes unanswered; the second gets another
        // client's offer, a stale transaction's, then ours.
        link.answers.push_back(vec![]);
        link.answers.push_back(vec![
            reply(Kind::Offer, 42, [1, 2, 3, 4, 5, 6], addr),
            reply(Kind::Offer, 41, MAC, addr),
            reply(Kind::Offer, 42, MAC, addr),
        ]);
        link.answers
            .push_back(vec![reply(Kind::Ack, 42, MAC, Ipv4Addr::UNSPECIFIED)]);
        let lease = lease(&mut link, MAC, 42).unwrap();
        assert_eq!(
            lease,
            Lease {
                addr,
                netmask: Ipv4Addr::new(255, 255, 255, 0),
                gateway: Some(SERVER),
                server: SERVER,
                lease_secs: Some(86400),
            }
        );
        assert_eq!(link.sent.len(), 3);
        assert_eq!(parse_sent_kind(&link.sent[2]), 3);
        assert_eq!(&link.sent[2][HEADER + 9..HEADER + 13], &addr.octets());
    }

    fn parse_sent_kind(m: &[u8]) -> u8 {
        m[HEADER + 6]
    }

    #[test]
    fn no_offer_and_a_nak_are_errors_that_say_so() {
        let mut link = Script::default();
        let e = lease(&mut link, MAC, 1).unwrap_err().to_string();
        assert!(e.contains("no DHCP offer after 4 DISCOVERs"), "{e}");
        assert_eq!(link.sent.len(), 4);

        let addr = Ipv4Addr::new(10, 0, 2, 15);
        let mut link = Script::default();
        link.answers
            .push_back(vec![reply(Kind::Offer, 1, MAC, addr)]);
        link.answers.push_back(vec![reply(Kind::Nak, 1, MAC, addr)]);
        let e = lease(&mut link, MAC, 1).unwrap_err().to_string();
        assert!(e.contains("refused 10.0.2.15 (NAK)"), "{e}");
    }

    #[test]
    fn macs_and_masks() {
        assert_eq!(mac_bytes("52:54:00:12:34:56"), Some(MAC));
        assert_eq!(mac_bytes("52:54:00:12:34"), None);
        assert_eq!(mac_bytes("52:54:00:12:34:56:78"), None);
        assert_eq!(mac_bytes("zz:54:00:12:34:56"), None);
        assert_eq!(
            classful(Ipv4Addr::new(192, 168, 1, 5)),
            Ipv4Addr::new(255, 255, 255, 0)
        );
        assert_eq!(
            classful(Ipv4Addr::new(10, 1, 1, 1)),
            Ipv4Addr::new(255, 0, 0, 0)
        );
    }
}
