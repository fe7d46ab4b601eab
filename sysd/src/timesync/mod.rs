//! `sysd --time-sync`: the time system container's NTP client (ADR 0020).
//! An SNTP client (RFC 4330) in the way of systemd-timesyncd and Talos's
//! time service: each round it asks the configured servers and pools
//! ([`sources`]), keeps the answer with the shortest round trip, steps the
//! clock when it is [`clock::STEP_AT`] or more off (a board without an RTC
//! starts decades behind) and otherwise lets the kernel's PLL slew it; then
//! it waits 32 s, longer (up to 2048 s) while the clock stays within 50 ms.
//! A round without an answer is retried after 2, 4, ... 64 s, so a network
//! that comes up late or a name that did not resolve is tried again soon.
//!
//! It writes [`READY`] once its sources are read: the service is up (a bad
//! sources file stops it first, with the line to fix). Being in sync is not
//! part of ready: a machine without a network still boots. So the container
//! starts beside the network, not after it, and is ready before it; its
//! first round waits for the network's ready file ([`NETWORK_READY`]), as
//! the config's bootcmd does, so the first answer comes as soon as a lease
//! is bound rather than after a failed round's retry.

pub mod clock;
pub mod packet;
pub mod sources;

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use packet::{Refused, Sample, Timestamp};
use sources::Source;

/// The service's ready file (`[health] ready_file` of system/time).
pub const READY: &str = "/run/ballast/time/ready";
/// The network container's ready file (`[health] ready_file` of
/// system/network): an address is set, or its DHCP grace is over.
pub const NETWORK_READY: &str = "/run/ballast/network.ready";
/// The longest the first round waits for [`NETWORK_READY`] (the network
/// writes it within its 10 s DHCP grace).
const NETWORK_WAIT: Duration = Duration::from_secs(15);
const PORT: u16 = 123;
/// Requests per address in a round while the clock is not in sync (at the
/// start, after a step or a round nobody answered), like NTP's `iburst`;
/// the one with the least delay counts. In sync, one request per poll, as
/// the NTP pool asks of its clients.
const SAMPLES: usize = 4;
const REPLY_TIMEOUT: Duration = Duration::from_secs(1);
/// Poll intervals, as powers of two seconds.
const MIN_POLL: u32 = 5;
const MAX_POLL: u32 = 11;
/// Within this (seconds), the poll interval doubles; beyond it, it halves.
const SETTLED: f64 = 0.05;
/// Longest wait before asking again after a round nobody answered.
const MAX_RETRY: Duration = Duration::from_secs(64);

fn say(msg: &str) {
    eprintln!("time: {msg}");
}

/// The best answer of a round.
#[derive(Debug, Clone)]
struct Answer {
    name: String,
    addr: SocketAddr,
    sample: Sample,
}

/// Ask `addr` up to `samples` times; the sample with the least delay.
fn ask(addr: SocketAddr, samples: usize) -> Result<Sample, String> {
    let local: SocketAddr = if addr.is_ipv4() {
        ([0u8; 4], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = UdpSocket::bind(local).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    socket
        .connect(addr)
        .and_then(|()| socket.set_read_timeout(Some(REPLY_TIMEOUT)))
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut best: Option<Sample> = None;
    let mut problem = String::from("no reply");
    let mut buf = [0u8; 512];
    for _ in 0..samples {
        let sent = Timestamp::now();
        if let Err(e) = socket.send(&packet::request(sent)) {
            problem = e.to_string();
            break;
        }
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let got = loop {
            match socket.recv(&mut buf) {
                Ok(n) => {
                    let arrived = Timestamp::now();
                    match packet::parse(&buf[..n], sent) {
                        // A late answer to an earlier request of this round.
                        Err(Refused::NotOurs) if Instant::now() < deadline => continue,
                        Ok(reply) => break Ok(Sample::new(sent, &reply, arrived)),
                        Err(e) => break Err(e.to_string()),
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break Err(format!("no reply within {} s", REPLY_TIMEOUT.as_secs()))
                }
                Err(e) => break Err(e.to_string()),
            }
        };
        match got {
            Ok(s) if best.is_none_or(|b| s.delay < b.delay) => best = Some(s),
            Ok(_) => {}
            Err(e) => {
                problem = e;
                // A server that does not answer, or refuses, is not asked again
                // this round; one good answer is enough to go on.
                break;
            }
        }
    }
    best.ok_or_else(|| format!("{addr}: {problem}"))
}

/// Addresses of one name asked at most each round.
const MAX_ADDRESSES: usize = 8;

/// One round over every source: the answer with the least delay, and what
/// went wrong with the others.
fn round(sources: &[Source], samples: usize) -> (Option<Answer>, Vec<String>) {
    let mut best: Option<Answer> = None;
    let mut problems = Vec::new();
    for source in sources {
        let name = source.name();
        let addrs: Vec<SocketAddr> = match (name, PORT).to_socket_addrs() {
            Ok(a) => a.take(MAX_ADDRESSES).collect(),
            Err(e) => {
                problems.push(format!("{name}: cannot resolve: {e}"));
                continue;
            }
        };
        if addrs.is_empty() {
            problems.push(format!("{name}: no address"));
        }
        let (answers, failed) = ask_until(&addrs, source.answers(), |a| ask(a, samples));
        problems.extend(failed.into_iter().map(|e| format!("{name}: {e}")));
        for (addr, sample) in answers {
            if best.as_ref().is_none_or(|b| sample.delay < b.sample.delay) {
                best = Some(Answer {
                    name: name.to_string(),
                    addr,
                    sample,
                });
            }
        }
    }
    (best, problems)
}

/// Ask `addrs` in order until `wanted` have answered: the answers, and the
/// failures on the way.
fn ask_until<F>(
    addrs: &[SocketAddr],
    wanted: usize,
    mut ask: F,
) -> (Vec<(SocketAddr, Sample)>, Vec<String>)
where
    F: FnMut(SocketAddr) -> Result<Sample, String>,
{
    let (mut answers, mut failed) = (Vec::new(), Vec::new());
    for &addr in addrs {
        if answers.len() >= wanted {
            break;
        }
        match ask(addr) {
            Ok(sample) => answers.push((addr, sample)),
            Err(e) => failed.push(e),
        }
    }
    (answers, failed)
}

/// How long to wait after `failures` rounds in a row without an answer.
fn retry_after(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(6)).min(MAX_RETRY)
}

/// The poll interval after an answer `offset` seconds off, from `poll`.
fn next_poll(poll: u32, offset: f64, stepped: bool) -> u32 {
    if stepped {
        MIN_POLL
    } else if offset.abs() < SETTLED {
        (poll + 1).min(MAX_POLL)
    } else {
        poll.saturating_sub(1).max(MIN_POLL)
    }
}

/// SIGTERM and SIGINT stop it at once: as its container's PID 1 it would
/// otherwise ignore them and be killed only after sysd's grace time.
extern "C" fn on_term(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe; there is nothing to flush.
    unsafe { libc::_exit(0) }
}

/// The program: exit code 2 for a sources file that cannot be used, 1 when
/// the clock cannot be set (no `CAP_SYS_TIME`); otherwise it runs until
/// stopped.
pub fn main_code() -> i32 {
    let _ = rustix::thread::set_name(c"time-sync");
    if let Err(e) = crate::sys::on_term_signals(on_term) {
        say(&format!("cannot catch SIGTERM: {e}"));
    }
    let root = Path::new("/");
    let (mut sources, mut from) = match sources::load(root) {
        Ok(s) => s,
        Err(e) => {
            say(&e);
            return 2;
        }
    };
    if let Err(e) = std::fs::write(READY, b"") {
        say(&format!("cannot write {READY}: {e}"));
    }
    announce(&sources, &from);
    if !wait_for(Path::new(NETWORK_READY), NETWORK_WAIT) {
        say(&format!(
            "the network is not ready after {} s ({NETWORK_READY}); asking anyway",
            NETWORK_WAIT.as_secs()
        ));
    }
    let mut poll = MIN_POLL;
    let mut failures = 0u32;
    let mut in_sync = false;
    loop {
        // `osctl config apply` may have changed them: read them each round.
        match sources::load(root) {
            Ok(now) if now != (sources.clone(), from.clone()) => {
                (sources, from) = now;
                announce(&sources, &from);
                (poll, failures, in_sync) = (MIN_POLL, 0, false);
            }
            Ok(_) => {}
            Err(e) => say(&format!("{e}; still asking the sources read before")),
        }
        if sources.is_empty() {
            std::thread::sleep(MAX_RETRY);
            continue;
        }
        let (best, problems) = round(&sources, if in_sync { 1 } else { SAMPLES });
        let Some(a) = best else {
            failures += 1;
            // The first failure and then ever more rarely: the log stays short.
            if failures.is_power_of_two() {
                say(&format!("no NTP server answered: {}", problems.join("; ")));
            }
            in_sync = false;
            std::thread::sleep(retry_after(failures));
            continue;
        };
        failures = 0;
        let offset = a.sample.offset;
        let from = format!("{} ({}, stratum {})", a.name, a.addr, a.sample.stratum);
        let stepped = offset.abs() >= clock::STEP_AT;
        let set = if stepped {
            clock::step(offset)
        } else {
            clock::slew(offset, poll)
        };
        if let Err(e) = set {
            say(&format!(
                "cannot set the clock ({offset:+.3} s off {from}): {e}; the container needs CAP_SYS_TIME"
            ));
            return 1;
        }
        if stepped {
            say(&format!("stepped the clock by {offset:+.3} s to {from}"));
        } else if !in_sync {
            say(&format!(
                "in sync with {from}: {:+.1} ms off, slewing",
                offset * 1000.0
            ));
        }
        // After a step, the next round takes a burst again and says when
        // the clock is in sync.
        in_sync = !stepped;
        poll = next_poll(poll, offset, stepped);
        std::thread::sleep(Duration::from_secs(1u64 << poll));
    }
}

/// Whether `path` exists within `limit` (looked for every 50 ms).
fn wait_for(path: &Path, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    loop {
        if path.exists() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn announce(sources: &[Source], from: &str) {
    if sources.is_empty() {
        say(&format!(
            "{from} names no NTP source: the clock is left as it is"
        ));
    } else {
        let names: Vec<&str> = sources.iter().map(Source::name).collect();
        say(&format!("asking {} (from {from})", names.join(", ")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sources::POOL_ADDRESSES as POOL;

    #[test]
    fn retries_come_sooner_than_polls_and_back_off_to_a_minute() {
        let waits: Vec<u64> = (1..=8).map(|f| retry_after(f).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 64, 64]);
    }

    #[test]
    fn the_first_round_waits_for_the_network_file_and_no_longer() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("network.ready");
        let t = Instant::now();
        assert!(!wait_for(&file, Duration::from_millis(200)));
        assert!(t.elapsed() >= Duration::from_millis(200));
        let writer = {
            let file = file.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                std::fs::write(file, b"").unwrap();
            })
        };
        let t = Instant::now();
        assert!(wait_for(&file, Duration::from_secs(10)));
        assert!(t.elapsed() < Duration::from_secs(5));
        writer.join().unwrap();
    }

    #[test]
    fn the_poll_interval_grows_while_settled_and_restarts_after_a_step() {
        assert_eq!(next_poll(MIN_POLL, 0.001, false), MIN_POLL + 1);
        assert_eq!(next_poll(MAX_POLL, 0.001, false), MAX_POLL);
        assert_eq!(next_poll(8, 0.2, false), 7);
        assert_eq!(next_poll(MIN_POLL, 0.2, false), MIN_POLL);
        assert_eq!(next_poll(9, 3.0, true), MIN_POLL);
    }

    /// A real exchange over UDP on loopback with a server written here from
    /// RFC 5905's reply rules: the client's sample and its refusals.
    #[test]
    fn a_round_asks_a_server_and_keeps_its_sample() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let serve = std::thread::spawn(move || {
            let mut buf = [0u8; 48];
            for _ in 0..SAMPLES {
                let (n, from) = server.recv_from(&mut buf).unwrap();
                assert_eq!(n, 48);
                let mut reply = [0u8; 48];
                reply[0] = 4 << 3 | 4;
                reply[1] = 3;
                reply[24..32].copy_from_slice(&buf[40..48]);
                // The server's clock: ours plus 100 s.
                let t = Timestamp(Timestamp::now().0.wrapping_add(100 << 32));
                reply[32..40].copy_from_slice(&t.0.to_be_bytes());
                reply[40..48].copy_from_slice(&t.0.to_be_bytes());
                server.send_to(&reply, from).unwrap();
            }
        });
        let s = ask(addr, SAMPLES).unwrap();
        serve.join().unwrap();
        assert!((s.offset - 100.0).abs() < 0.5, "{s:?}");
        assert!(s.delay >= 0.0 && s.delay < 0.5, "{s:?}");
        assert_eq!(s.stratum, 3);
    }

    #[test]
    fn a_server_name_uses_its_first_address_that_answers_and_a_pool_four() {
        let addrs: Vec<SocketAddr> = (1..=6)
            .map(|i| SocketAddr::from(([192, 0, 2, i], PORT)))
            .collect();
        let sample = Sample {
            offset: 0.0,
            delay: 0.01,
            stratum: 2,
        };
        // The first two cannot be reached (say, IPv6 without a route).
        let reply = |a: SocketAddr| match a.ip().to_string().as_str() {
            "192.0.2.1" | "192.0.2.2" => Err(format!("{a}: Network unreachable")),
            _ => Ok(sample),
        };
        let (answers, failed) = ask_until(&addrs, 1, reply);
        assert_eq!(answers, vec![(addrs[2], sample)]);
        assert_eq!(failed.len(), 2);
        let (answers, _) = ask_until(&addrs, POOL, reply);
        let asked: Vec<SocketAddr> = answers.iter().map(|(a, _)| *a).collect();
        assert_eq!(asked, addrs[2..6]);
    }

    #[test]
    fn a_server_that_does_not_answer_is_named() {
        // A bound socket that never replies.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let e = ask(addr, SAMPLES).unwrap_err();
        assert_eq!(e, format!("{addr}: no reply within 1 s"));
    }
}
