//! The fleet's reboot lock, on an existing distributed engine.
//!
//! * etcd v3, through its HTTP/JSON gateway (`/v3/kv/range`, `/v3/kv/txn`, keys and
//!   values base64): one key, `PREFIX + "semaphore"`, holds
//!   `{"semaphore":N,"holders":[machine ids]}` (locksmith's shape). Taking a slot
//!   and giving it back are compare-and-swap transactions on the key's
//!   `mod_revision`, so two machines never both take the last slot, and etcd's
//!   history of the key is the lock's history. Each holder also keeps a key of
//!   its own, `PREFIX + "holders/" + id`, under an etcd lease of [`LEASE_TTL`]
//!   (written in the same transaction as the semaphore, renewed while it holds
//!   the lock, deleted with its release): a machine that dies holding a slot
//!   loses that key when its lease runs out, and the next machine that finds the
//!   semaphore full drops it from the holders.
//! * FleetLock (as Zincati): `POST URL/v1/pre-reboot` to take the lock,
//!   `POST URL/v1/steady-state` to give it back, each with the header
//!   `fleet-lock-protocol: true` and `{"client_params":{"id":..,"group":..}}`.
//!
//! Every call has a short timeout; an unreachable engine means "not held", never
//! "go ahead".

use std::time::Duration;

use ballast_config::RebootLock;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Longest one call to the lock engine may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a holder's etcd lease lasts unless renewed: it must outlast a
/// reboot into the new version (the holder renews it again once up).
pub const LEASE_TTL: u64 = 900;

/// The lock engine did not answer, or answered something unexpected.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("reboot lock: {url}: {detail}")]
    Http { url: String, detail: String },
    #[error("reboot lock: {url}: unexpected answer: {detail}")]
    Answer { url: String, detail: String },
    #[error("reboot lock: etcd key {key} changed under us {tries} times; try again later")]
    Contended { key: String, tries: u32 },
}

/// The semaphore's value as locksmith stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Semaphore {
    pub semaphore: u32,
    pub holders: Vec<String>,
}

/// One of the configured lock engines.
pub struct Lock {
    cfg: RebootLock,
    http: ureq::Agent,
    /// Seconds of a holder's etcd lease ([`LEASE_TTL`]; shorter in tests).
    pub lease_ttl: u64,
}

impl Lock {
    pub fn new(cfg: RebootLock) -> Lock {
        let http = crate::http::device_agent(crate::http::Limits::call(TIMEOUT));
        Lock {
            cfg,
            http,
            lease_ttl: LEASE_TTL,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self.cfg {
            RebootLock::Etcd { .. } => "etcd",
            RebootLock::Fleetlock { .. } => "fleetlock",
        }
    }

    /// Take the lock for `id`: `Ok(true)` when held (also when it already was),
    /// `Ok(false)` when every slot is taken.
    pub fn acquire(&self, id: &str) -> Result<bool, LockError> {
        match &self.cfg {
            RebootLock::Etcd {
                endpoints,
                slots,
                prefix,
            } => self.etcd(endpoints, prefix, |gw, s| {
                if s.holders.iter().any(|h| h == id) {
                    return Ok((true, None));
                }
                // The configured size wins over the stored one: changing
                // `slots` in the config resizes the semaphore.
                s.semaphore = *slots;
                let mut changed = false;
                if s.holders.len() >= *slots as usize {
                    // Holders whose lease ran out are dead: free their slots.
                    let before = s.holders.len();
                    let mut alive = Vec::new();
                    for h in &s.holders {
                        if gw.get(&holder_key(prefix, h))?.is_some() {
                            alive.push(h.clone());
                        }
                    }
                    s.holders = alive;
                    changed = s.holders.len() != before;
                }
                if s.holders.len() < *slots as usize {
                    s.holders.push(id.to_string());
                    let lease = gw.grant(self.lease_ttl)?;
                    let put = put_op(&holder_key(prefix, id), id.as_bytes(), lease);
                    Ok((true, Some((s.clone(), vec![put]))))
                } else if changed {
                    Ok((false, Some((s.clone(), Vec::new()))))
                } else {
                    Ok((false, None))
                }
            }),
            RebootLock::Fleetlock { url, group } => self.fleetlock(url, "pre-reboot", id, group),
        }
    }

    /// Renew `id`'s hold (etcd: its holder key under a fresh lease; the old one
    /// runs out by itself). Nothing to do when it does not hold the lock, or for
    /// FleetLock (its server keeps the lock until steady-state).
    pub fn renew(&self, id: &str) -> Result<(), LockError> {
        let RebootLock::Etcd {
            endpoints, prefix, ..
        } = &self.cfg
        else {
            return Ok(());
        };
        self.etcd(endpoints, prefix, |gw, s| {
            if !s.holders.iter().any(|h| h == id) {
                return Ok((false, None));
            }
            let lease = gw.grant(self.lease_ttl)?;
            let put = put_op(&holder_key(prefix, id), id.as_bytes(), lease);
            // The semaphore is written unchanged: the CAS makes sure `id` still
            // holds a slot when its key comes back.
            Ok((true, Some((s.clone(), vec![put]))))
        })
        .map(|_| ())
    }

    /// Give the lock back (also fine when not held).
    pub fn release(&self, id: &str) -> Result<(), LockError> {
        match &self.cfg {
            RebootLock::Etcd {
                endpoints,
                slots,
                prefix,
            } => self
                .etcd(endpoints, prefix, |_, s| {
                    let before = s.holders.len();
                    s.holders.retain(|h| h != id);
                    s.semaphore = *slots;
                    let delete = serde_json::json!({"request_delete_range": {
                        "key": b64(holder_key(prefix, id).as_bytes())
                    }});
                    if s.holders.len() == before {
                        Ok((true, None))
                    } else {
                        Ok((true, Some((s.clone(), vec![delete]))))
                    }
                })
                .map(|_| ()),
            RebootLock::Fleetlock { url, group } => self
                .fleetlock(url, "steady-state", id, group)
                .and_then(|ok| {
                    if ok {
                        Ok(())
                    } else {
                        Err(LockError::Answer {
                            url: url.clone(),
                            detail: "steady-state refused".into(),
                        })
                    }
                }),
        }
    }

    /// Read-modify-CAS on the semaphore key, over the endpoints in turn. `change`
    /// says whether the caller got what it wanted and the new value to write, if
    /// any, with more operations for the same transaction (holder keys).
    fn etcd(
        &self,
        endpoints: &[String],
        prefix: &str,
        mut change: impl FnMut(
            &Etcd<'_>,
            &mut Semaphore,
        )
            -> Result<(bool, Option<(Semaphore, Vec<serde_json::Value>)>), LockError>,
    ) -> Result<bool, LockError> {
        let key = format!("{prefix}semaphore");
        let mut last = None;
        for ep in endpoints {
            let gw = Etcd {
                http: &self.http,
                base: ep.trim_end_matches('/'),
            };
            for _ in 0..5 {
                let current = match gw.get(&key) {
                    Ok(c) => c,
                    Err(e) => {
                        last = Some(e);
                        break;
                    }
                };
                let (rev, mut sem) = match current {
                    Some((rev, bytes)) => {
                        let sem: Semaphore =
                            serde_json::from_slice(&bytes).map_err(|e| LockError::Answer {
                                url: ep.clone(),
                                detail: format!("key {key} does not hold a semaphore: {e}"),
                            })?;
                        (rev, sem)
                    }
                    None => (
                        0,
                        Semaphore {
                            semaphore: 1,
                            holders: Vec::new(),
                        },
                    ),
                };
                let (ok, write) = match change(&gw, &mut sem) {
                    Ok(c) => c,
                    Err(e) => {
                        last = Some(e);
                        break;
                    }
                };
                let Some((new, more)) = write else {
                    return Ok(ok);
                };
                let value = serde_json::to_vec(&new).unwrap_or_default();
                match gw.cas_with(&key, rev, &value, more) {
                    Ok(true) => return Ok(ok),
                    Ok(false) => continue, // changed meanwhile: read again
                    Err(e) => {
                        last = Some(e);
                        break;
                    }
                }
            }
            if last.is_none() {
                return Err(LockError::Contended { key, tries: 5 });
            }
        }
        Err(last.unwrap_or_else(|| LockError::Http {
            url: "(no endpoints)".into(),
            detail: "ballast.update.reboot_lock.etcd.endpoints is empty".into(),
        }))
    }

    fn fleetlock(&self, url: &str, op: &str, id: &str, group: &str) -> Result<bool, LockError> {
        let u = format!("{}/v1/{op}", url.trim_end_matches('/'));
        let body = serde_json::json!({"client_params": {"id": id, "group": group}}).to_string();
        let resp = self
            .http
            .post(&u)
            .header("fleet-lock-protocol", "true")
            .content_type("application/json")
            .send(body.as_str())
            .map_err(|e| LockError::Http {
                url: u.clone(),
                detail: e.to_string(),
            })?;
        Ok(resp.status().is_success())
    }
}

/// The key `id` keeps under its lease while it holds a slot.
fn holder_key(prefix: &str, id: &str) -> String {
    format!("{prefix}holders/{id}")
}

/// A transaction's put of `key` under `lease`.
fn put_op(key: &str, value: &[u8], lease: i64) -> serde_json::Value {
    serde_json::json!({"request_put": {
        "key": b64(key.as_bytes()),
        "value": b64(value),
        "lease": lease.to_string(),
    }})
}

/// etcd's v3 HTTP/JSON gateway.
pub struct Etcd<'a> {
    pub http: &'a ureq::Agent,
    pub base: &'a str,
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// int64 fields come as JSON strings from the gateway (and are left out when 0).
fn num(v: &serde_json::Value) -> i64 {
    match v {
        serde_json::Value::String(s) => s.parse().unwrap_or(0),
        serde_json::Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

impl Etcd<'_> {
    fn call(&self, path: &str, body: serde_json::Value) -> Result<serde_json::Value, LockError> {
        let url = format!("{}{path}", self.base);
        let err = |detail: String| LockError::Http {
            url: url.clone(),
            detail,
        };
        let mut resp = self
            .http
            .post(&url)
            .content_type("application/json")
            .send(body.to_string().as_str())
            .map_err(|e| err(e.to_string()))?;
        let status = resp.status();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| err(e.to_string()))?;
        if !status.is_success() {
            return Err(err(format!("HTTP {status}: {}", text.trim())));
        }
        serde_json::from_str(&text).map_err(|e| LockError::Answer {
            url: url.clone(),
            detail: format!("not JSON ({e})"),
        })
    }

    /// The key's value and mod_revision at `revision` (0: now); `None` when absent.
    pub fn get_at(&self, key: &str, revision: i64) -> Result<Option<(i64, Vec<u8>)>, LockError> {
        let mut req = serde_json::json!({"key": b64(key.as_bytes())});
        if revision > 0 {
            req["revision"] = serde_json::Value::String(revision.to_string());
        }
        let v = self.call("/v3/kv/range", req)?;
        let Some(kv) = v["kvs"].as_array().and_then(|a| a.first()) else {
            return Ok(None);
        };
        let value = base64::engine::general_purpose::STANDARD
            .decode(kv["value"].as_str().unwrap_or_default())
            .map_err(|e| LockError::Answer {
                url: self.base.to_string(),
                detail: format!("value of {key} is not base64: {e}"),
            })?;
        Ok(Some((num(&kv["mod_revision"]), value)))
    }

    pub fn get(&self, key: &str) -> Result<Option<(i64, Vec<u8>)>, LockError> {
        self.get_at(key, 0)
    }

    /// A new lease of `ttl` seconds: its id.
    pub fn grant(&self, ttl: u64) -> Result<i64, LockError> {
        let v = self.call(
            "/v3/lease/grant",
            serde_json::json!({"TTL": ttl.to_string()}),
        )?;
        match num(&v["ID"]) {
            0 => Err(LockError::Answer {
                url: format!("{}/v3/lease/grant", self.base),
                detail: format!("no lease id in {v}"),
            }),
            id => Ok(id),
        }
    }

    /// Put `value` if the key's mod_revision is still `rev` (0: the key must not
    /// exist). `Ok(false)` when someone changed it first. `more`: other operations
    /// of the same transaction.
    pub fn cas_with(
        &self,
        key: &str,
        rev: i64,
        value: &[u8],
        more: Vec<serde_json::Value>,
    ) -> Result<bool, LockError> {
        let k = b64(key.as_bytes());
        let compare = if rev == 0 {
            serde_json::json!({"key": k, "result": "EQUAL", "target": "CREATE", "create_revision": "0"})
        } else {
            serde_json::json!({"key": k, "result": "EQUAL", "target": "MOD", "mod_revision": rev.to_string()})
        };
        let mut success = vec![serde_json::json!({"request_put": {"key": k, "value": b64(value)}})];
        success.extend(more);
        let req = serde_json::json!({"compare": [compare], "success": success});
        let v = self.call("/v3/kv/txn", req)?;
        Ok(v["succeeded"].as_bool().unwrap_or(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A FleetLock server that answers each request with the next status, and
    /// reports what it was asked.
    fn fleetlock_server(statuses: Vec<u16>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for st in statuses {
                let (mut c, _) = l.accept().unwrap();
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                loop {
                    let n = c.read(&mut buf).unwrap();
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_string();
                    if let Some(i) = text.find("\r\n\r\n") {
                        let len: usize = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length: ")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if got.len() >= i + 4 + len {
                            break;
                        }
                    }
                }
                seen.push(String::from_utf8_lossy(&got).to_string());
                write!(
                    c,
                    "HTTP/1.1 {st} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                .unwrap();
            }
            seen
        });
        (url, h)
    }

    #[test]
    fn fleetlock_speaks_zincatis_protocol() {
        let (url, server) = fleetlock_server(vec![200, 409, 200]);
        let lock = Lock::new(RebootLock::Fleetlock {
            url,
            group: "workers".into(),
        });
        assert!(lock.acquire("m1").unwrap());
        assert!(!lock.acquire("m2").unwrap());
        lock.release("m1").unwrap();
        let seen = server.join().unwrap();
        assert!(seen[0].starts_with("POST /v1/pre-reboot "), "{}", seen[0]);
        assert!(seen[2].starts_with("POST /v1/steady-state "), "{}", seen[2]);
        for s in &seen {
            assert!(
                s.to_ascii_lowercase().contains("fleet-lock-protocol: true"),
                "{s}"
            );
        }
        assert!(
            seen[0].ends_with(r#"{"client_params":{"group":"workers","id":"m1"}}"#)
                || seen[0].ends_with(r#"{"client_params":{"id":"m1","group":"workers"}}"#),
            "{}",
            seen[0]
        );
    }

    #[test]
    fn unreachable_engines_never_say_go() {
        let etcd = Lock::new(RebootLock::Etcd {
            endpoints: vec!["http://127.0.0.1:9".into()],
            slots: 1,
            prefix: "/t/".into(),
        });
        assert!(etcd.acquire("m1").is_err());
        let fl = Lock::new(RebootLock::Fleetlock {
            url: "http://127.0.0.1:9".into(),
            group: "g".into(),
        });
        assert!(fl.acquire("m1").is_err());
    }

    /// Against a real etcd (Debian's etcd-server) when the host has one.
    #[test]
    fn etcd_semaphore_with_two_slots() {
        let Some(etcd) = crate::agent::test_etcd::Server::start() else {
            eprintln!("etcd not installed: skipped (scripts/setup installs etcd-server)");
            return;
        };
        let lock = Lock::new(RebootLock::Etcd {
            endpoints: vec![etcd.url.clone()],
            slots: 2,
            prefix: "/ballast/test/".into(),
        });
        assert!(lock.acquire("a").unwrap());
        assert!(lock.acquire("a").unwrap(), "held already");
        assert!(lock.acquire("b").unwrap());
        assert!(!lock.acquire("c").unwrap(), "both slots taken");
        lock.release("a").unwrap();
        assert!(lock.acquire("c").unwrap());
        lock.release("b").unwrap();
        lock.release("c").unwrap();
        lock.release("c").unwrap();
        let http = ureq::Agent::new_with_defaults();
        let gw = Etcd {
            http: &http,
            base: &etcd.url,
        };
        let (_, v) = gw.get("/ballast/test/semaphore").unwrap().unwrap();
        let s: Semaphore = serde_json::from_slice(&v).unwrap();
        assert_eq!(
            s,
            Semaphore {
                semaphore: 2,
                holders: vec![]
            }
        );
        // A stale revision does not write.
        assert!(!gw
            .cas_with("/ballast/test/semaphore", 1, b"{}", Vec::new())
            .unwrap());
        // Released holders leave no key behind.
        assert!(gw.get("/ballast/test/holders/a").unwrap().is_none());
    }

    /// A holder that dies (stops renewing) frees its slot when its lease runs
    /// out; one that renews keeps it.
    #[test]
    fn etcd_holders_lose_their_slot_when_their_lease_runs_out() {
        let Some(etcd) = crate::agent::test_etcd::Server::start() else {
            eprintln!("etcd not installed: skipped (scripts/setup installs etcd-server)");
            return;
        };
        let mut lock = Lock::new(RebootLock::Etcd {
            endpoints: vec![etcd.url.clone()],
            slots: 1,
            prefix: "/ballast/lease/".into(),
        });
        lock.lease_ttl = 2;
        assert!(lock.acquire("alive").unwrap());
        // Renewed for longer than its lease: still held.
        for _ in 0..5 {
            std::thread::sleep(Duration::from_secs(1));
            lock.renew("alive").unwrap();
            assert!(
                !lock.acquire("other").unwrap(),
                "renewed holder lost its slot"
            );
        }
        // Dies: no renewals. etcd expires the lease within a few seconds.
        let start = std::time::Instant::now();
        while !lock.acquire("other").unwrap() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the dead holder's slot was never freed"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let http = ureq::Agent::new_with_defaults();
        let gw = Etcd {
            http: &http,
            base: &etcd.url,
        };
        let (_, v) = gw.get("/ballast/lease/semaphore").unwrap().unwrap();
        let s: Semaphore = serde_json::from_slice(&v).unwrap();
        assert_eq!(s.holders, vec!["other".to_string()]);
        // The dead one, back, renews nothing and waits its turn.
        lock.renew("alive").unwrap();
        assert!(!lock.acquire("alive").unwrap());
    }
}
