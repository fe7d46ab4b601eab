//! The NTP packet (RFC 5905, section 7.3) as an SNTP client (RFC 4330) uses
//! it: one 48-byte client request, the server's reply checked the way RFC
//! 4330 section 5 asks, and the offset and round-trip delay of the four
//! timestamps. Timestamps stay in NTP's 32.32 fixed point; only differences
//! are taken (wrapping), so the 2036 era change and a clock decades off do
//! not matter.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bytes of a packet without extension fields or MAC.
pub const LEN: usize = 48;

/// Seconds from NTP's epoch (1900-01-01) to the Unix epoch.
const UNIX_OFFSET: u64 = 2_208_988_800;

/// An NTP timestamp: seconds since 1900 (modulo 2^32) and a binary fraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn from_system(t: SystemTime) -> Timestamp {
        // Before 1970 only on a broken clock; it still gives a timestamp.
        let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let secs = since.as_secs().wrapping_add(UNIX_OFFSET) & 0xffff_ffff;
        let frac = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
        Timestamp((secs << 32) | frac)
    }

    pub fn now() -> Timestamp {
        Timestamp::from_system(SystemTime::now())
    }

    /// `self - earlier` in seconds (the shorter way round the era).
    pub fn since(self, earlier: Timestamp) -> f64 {
        self.0.wrapping_sub(earlier.0) as i64 as f64 / 4_294_967_296.0
    }
}

/// A client request (version 4, mode 3) whose transmit timestamp is `sent`.
/// The server echoes it as the reply's origin timestamp.
pub fn request(sent: Timestamp) -> [u8; LEN] {
    let mut p = [0u8; LEN];
    p[0] = 4 << 3 | 3;
    p[40..48].copy_from_slice(&sent.0.to_be_bytes());
    p
}

/// What a valid reply says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reply {
    pub stratum: u8,
    /// When the request arrived (T2) and the reply left (T3), server time.
    pub received: Timestamp,
    pub transmitted: Timestamp,
}

/// Why a reply is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("a reply of {0} bytes (an NTP reply has at least 48)")]
    Short(usize),
    #[error("not a server reply (mode {0})")]
    Mode(u8),
    #[error("NTP version {0}")]
    Version(u8),
    #[error("the server's clock is not synchronised (leap indicator 3)")]
    Unsynchronised,
    #[error("the server sent a kiss-o'-death {0:?}")]
    Kiss(String),
    #[error("stratum {0}")]
    Stratum(u8),
    #[error("the reply does not answer this request (origin timestamp differs)")]
    NotOurs,
    #[error("the reply has no receive or transmit time")]
    NoTime,
}

/// Check `bytes` as the answer to the request sent at `sent`.
pub fn parse(bytes: &[u8], sent: Timestamp) -> Result<Reply, Refused> {
    if bytes.len() < LEN {
        return Err(Refused::Short(bytes.len()));
    }
    let (leap, version, mode) = (bytes[0] >> 6, (bytes[0] >> 3) & 7, bytes[0] & 7);
    let stamp = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        Timestamp(u64::from_be_bytes(b))
    };
    if mode != 4 {
        return Err(Refused::Mode(mode));
    }
    if !(3..=4).contains(&version) {
        return Err(Refused::Version(version));
    }
    if stamp(24) != sent {
        return Err(Refused::NotOurs);
    }
    let stratum = bytes[1];
    if stratum == 0 {
        let code: String = bytes[12..16]
            .iter()
            .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
            .collect();
        return Err(Refused::Kiss(code));
    }
    if stratum > 15 {
        return Err(Refused::Stratum(stratum));
    }
    if leap == 3 {
        return Err(Refused::Unsynchronised);
    }
    let (received, transmitted) = (stamp(32), stamp(40));
    if received.0 == 0 || transmitted.0 == 0 {
        return Err(Refused::NoTime);
    }
    Ok(Reply {
        stratum,
        received,
        transmitted,
    })
}

/// One exchange's result, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// How far the server's clock is ahead of ours.
    pub offset: f64,
    /// The round trip, less the server's time between T2 and T3.
    pub delay: f64,
    pub stratum: u8,
}

impl Sample {
    /// From the request's send time (T1), the reply and its arrival (T4).
    pub fn new(sent: Timestamp, reply: &Reply, arrived: Timestamp) -> Sample {
        let there = reply.received.since(sent);
        let back = reply.transmitted.since(arrived);
        Sample {
            offset: (there + back) / 2.0,
            delay: arrived.since(sent) - reply.transmitted.since(reply.received),
            stratum: reply.stratum,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply_to(sent: Timestamp, received: Timestamp, transmitted: Timestamp) -> [u8; LEN] {
        let mut p = [0u8; LEN];
        p[0] = 4 << 3 | 4;
        p[1] = 2;
        p[24..32].copy_from_slice(&sent.0.to_be_bytes());
        p[32..40].copy_from_slice(&received.0.to_be_bytes());
        p[40..48].copy_from_slice(&transmitted.0.to_be_bytes());
        p
    }

    fn at(unix_secs: u64, nanos: u32) -> Timestamp {
        Timestamp::from_system(UNIX_EPOCH + Duration::new(unix_secs, nanos))
    }

    #[test]
    fn timestamps_count_from_1900_with_a_binary_fraction() {
        // 2026-12-07 00:00:00.5 UTC.
        let t = at(1_796_601_600, 500_000_000);
        assert_eq!(t.0 >> 32, 1_796_601_600 + UNIX_OFFSET);
        assert_eq!(t.0 & 0xffff_ffff, 1 << 31);
        // Era 1 (after 2036-02-07) wraps; differences across it still hold.
        let before = at(2_085_978_495, 0);
        let after = at(2_085_978_497, 0);
        assert!(after.0 < before.0);
        assert_eq!(after.since(before), 2.0);
        assert_eq!(before.since(after), -2.0);
    }

    #[test]
    fn a_request_is_version_4_client_mode_with_its_transmit_time() {
        let sent = at(1_800_000_000, 250_000_000);
        let p = request(sent);
        assert_eq!(p[0], 0x23);
        assert!(p[1..40].iter().all(|&b| b == 0));
        assert_eq!(u64::from_be_bytes(p[40..48].try_into().unwrap()), sent.0);
    }

    #[test]
    fn offset_and_delay_come_from_the_four_timestamps() {
        // Our clock is 3 days behind; 40 ms each way; the server took 1 ms.
        let sent = at(1_800_000_000, 0);
        let received = at(1_800_259_200, 40_000_000);
        let transmitted = at(1_800_259_200, 41_000_000);
        let arrived = at(1_800_000_000, 81_000_000);
        let reply = parse(&reply_to(sent, received, transmitted), sent).unwrap();
        let s = Sample::new(sent, &reply, arrived);
        assert!((s.offset - 259_200.0).abs() < 1e-6, "{s:?}");
        assert!((s.delay - 0.080).abs() < 1e-6, "{s:?}");
        assert_eq!(s.stratum, 2);
        // And a clock ahead gives a negative offset.
        let arrived_later = at(1_800_518_400, 81_000_000);
        let sent_later = at(1_800_518_400, 0);
        let reply = parse(&reply_to(sent_later, received, transmitted), sent_later).unwrap();
        let s = Sample::new(sent_later, &reply, arrived_later);
        assert!((s.offset + 259_200.0).abs() < 1e-6, "{s:?}");
    }

    #[test]
    fn replies_that_rfc_4330_says_to_discard_are_refused() {
        let sent = at(1_800_000_000, 0);
        let good = reply_to(sent, at(1_800_000_001, 0), at(1_800_000_001, 1000));
        assert!(parse(&good, sent).is_ok());
        assert_eq!(parse(&good[..47], sent), Err(Refused::Short(47)));
        let mut p = good;
        p[0] = 4 << 3 | 3;
        assert_eq!(parse(&p, sent), Err(Refused::Mode(3)));
        let mut p = good;
        p[0] = 3 << 6 | 4 << 3 | 4;
        assert_eq!(parse(&p, sent), Err(Refused::Unsynchronised));
        let mut p = good;
        p[1] = 0;
        p[12..16].copy_from_slice(b"RATE");
        assert_eq!(parse(&p, sent), Err(Refused::Kiss("RATE".into())));
        let mut p = good;
        p[1] = 16;
        assert_eq!(parse(&p, sent), Err(Refused::Stratum(16)));
        assert_eq!(
            parse(&good, at(1_800_000_000, 1)),
            Err(Refused::NotOurs),
            "a reply to another request"
        );
        let mut p = good;
        p[40..48].fill(0);
        assert_eq!(parse(&p, sent), Err(Refused::NoTime));
        let mut p = good;
        p[0] = 2 << 3 | 4;
        assert_eq!(parse(&p, sent), Err(Refused::Version(2)));
    }
}
