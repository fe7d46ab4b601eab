//! Local time in a named zone, from the device's tzdata (TZif files under
//! `/usr/share/zoneinfo`, RFC 8536): the transitions table, and past its end the
//! POSIX TZ rule in the file's footer (`CET-1CEST,M3.5.0,M10.5.0/3`). Only the UTC
//! offset at an instant is needed: the maintenance window is wall-clock time.

use std::path::{Path, PathBuf};

/// A zone file that could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum TzError {
    #[error("time zone {zone}: cannot read {}: {source} (is the zone name right? see /usr/share/zoneinfo)", path.display())]
    Read {
        zone: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("time zone {zone}: {} is not a TZif zone file: {what}", path.display())]
    Format {
        zone: String,
        path: PathBuf,
        what: String,
    },
}

/// A zone's offsets: transitions (UTC seconds, offset after it), the offset before
/// the first, and the rule after the last.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    transitions: Vec<(i64, i32)>,
    initial: i32,
    rule: Option<Rule>,
}

/// A POSIX TZ string: standard offset, and optionally DST with its two rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Seconds east of UTC.
    std: i32,
    dst: Option<(i32, DateRule, i32, DateRule, i32)>,
}

/// `Mm.w.d` (month, week 1-5 where 5 = last, weekday 0 = Sunday), `Jn` (1-365,
/// no Feb 29) or `n` (0-365).
#[derive(Debug, Clone, Copy, PartialEq)]
enum DateRule {
    M(u32, u32, u32),
    J(u32),
    N(u32),
}

impl Zone {
    /// UTC, with no file.
    pub fn utc() -> Zone {
        Zone {
            transitions: Vec::new(),
            initial: 0,
            rule: None,
        }
    }

    /// A zone given by its POSIX rule alone.
    #[cfg(test)]
    pub fn from_rule(rule: Rule) -> Zone {
        Zone {
            transitions: Vec::new(),
            initial: rule.std,
            rule: Some(rule),
        }
    }

    /// The zone `name` from the zoneinfo directories `dirs`, first found wins.
    pub fn load(name: &str, dirs: &[PathBuf]) -> Result<Zone, TzError> {
        if matches!(name, "UTC" | "Etc/UTC" | "Etc/UCT" | "UCT" | "Zulu") {
            return Ok(Zone::utc());
        }
        let mut last = None;
        for d in dirs {
            let path = d.join(name);
            match std::fs::read(&path) {
                Ok(bytes) => {
                    return Zone::parse(&bytes).map_err(|what| TzError::Format {
                        zone: name.into(),
                        path,
                        what,
                    })
                }
                Err(source) => last = Some((path, source)),
            }
        }
        let (path, source) = last.unwrap_or_else(|| {
            (
                Path::new("/usr/share/zoneinfo").join(name),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        });
        Err(TzError::Read {
            zone: name.into(),
            path,
            source,
        })
    }

    /// Parse a TZif file (version 1 data, or the 64-bit data of version 2+).
    pub fn parse(b: &[u8]) -> Result<Zone, String> {
        let header = |at: usize| -> Result<[usize; 6], String> {
            if b.get(at..at + 4) != Some(b"TZif") {
                return Err("no TZif magic".into());
            }
            let mut c = [0usize; 6];
            for (i, v) in c.iter_mut().enumerate() {
                let o = at + 20 + i * 4;
                let w = b.get(o..o + 4).ok_or("header cut short")?;
                *v = u32::from_be_bytes([w[0], w[1], w[2], w[3]]) as usize;
            }
            Ok(c)
        };
        let c1 = header(0)?;
        let version = b.get(4).copied().unwrap_or(0);
        let block = |c: &[usize; 6], tsize: usize| {
            let [isut, isstd, leap, time, typ, chars] = *c;
            time * tsize + time + typ * 6 + chars + leap * (tsize + 4) + isstd + isut
        };
        let (at, c, tsize) = if version >= b'2' {
            let second = 44 + block(&c1, 4);
            (second + 44, header(second)?, 8usize)
        } else {
            (44, c1, 4usize)
        };
        let [_, _, _, timecnt, typecnt, _] = c;
        if typecnt == 0 {
            return Err("no local time types".into());
        }
        let get = |o: usize, n: usize| b.get(o..o + n).ok_or_else(|| "data cut short".to_string());
        let times: Vec<i64> = (0..timecnt)
            .map(|i| {
                let w = get(at + i * tsize, tsize)?;
                Ok(if tsize == 8 {
                    i64::from_be_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]])
                } else {
                    i64::from(i32::from_be_bytes([w[0], w[1], w[2], w[3]]))
                })
            })
            .collect::<Result<_, String>>()?;
        let idx = get(at + timecnt * tsize, timecnt)?;
        let types_at = at + timecnt * tsize + timecnt;
        let offsets: Vec<i32> = (0..typecnt)
            .map(|i| {
                let w = get(types_at + i * 6, 4)?;
                Ok(i32::from_be_bytes([w[0], w[1], w[2], w[3]]))
            })
            .collect::<Result<_, String>>()?;
        let transitions = times
            .iter()
            .zip(idx)
            .map(|(t, i)| {
                offsets
                    .get(usize::from(*i))
                    .map(|o| (*t, *o))
                    .ok_or_else(|| format!("transition to type {i} of {typecnt}"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let rule = if tsize == 8 {
            let end = at + block(&c, 8);
            let footer = b.get(end..).unwrap_or_default();
            let text = String::from_utf8_lossy(footer);
            let tz = text.trim_matches('\n').trim();
            if tz.is_empty() {
                None
            } else {
                Some(Rule::parse(tz).map_err(|e| format!("footer `{tz}`: {e}"))?)
            }
        } else {
            None
        };
        Ok(Zone {
            transitions,
            initial: offsets[0],
            rule,
        })
    }

    /// Seconds east of UTC at the UTC instant `t`.
    pub fn offset_at(&self, t: i64) -> i32 {
        match self.transitions.last() {
            Some((last, off)) if t >= *last => match &self.rule {
                Some(r) => r.offset_at(t),
                None => *off,
            },
            Some(_) => {
                let i = self.transitions.partition_point(|(tt, _)| *tt <= t);
                if i == 0 {
                    self.initial
                } else {
                    self.transitions[i - 1].1
                }
            }
            None => self.rule.as_ref().map_or(self.initial, |r| r.offset_at(t)),
        }
    }
}

impl Rule {
    pub fn parse(s: &str) -> Result<Rule, String> {
        let mut p = s;
        let _std_name = name(&mut p)?;
        let std = -offset(&mut p)?;
        if p.is_empty() {
            return Ok(Rule { std, dst: None });
        }
        let _dst_name = name(&mut p)?;
        let dst_off = if p.starts_with(',') || p.is_empty() {
            std + 3600
        } else {
            -offset(&mut p)?
        };
        let p = p
            .strip_prefix(',')
            .ok_or("DST without rules (`,M3.5.0,M10.5.0/3`)")?;
        let (a, b) = p
            .split_once(',')
            .ok_or("DST needs a start and an end rule")?;
        let (sd, st) = date_rule(a)?;
        let (ed, et) = date_rule(b)?;
        Ok(Rule {
            std,
            dst: Some((dst_off, sd, st, ed, et)),
        })
    }

    fn offset_at(&self, t: i64) -> i32 {
        let Some((dst, sd, st, ed, et)) = self.dst else {
            return self.std;
        };
        let year = civil_from_days((t + i64::from(self.std)).div_euclid(86_400)).0;
        // Start is given in standard time, end in daylight time.
        let start = day_of(year, sd) * 86_400 + i64::from(st) - i64::from(self.std);
        let end = day_of(year, ed) * 86_400 + i64::from(et) - i64::from(dst);
        let in_dst = if start < end {
            t >= start && t < end
        } else {
            t < end || t >= start
        };
        if in_dst {
            dst
        } else {
            self.std
        }
    }
}

fn name(p: &mut &str) -> Result<String, String> {
    if let Some(rest) = p.strip_prefix('<') {
        let (n, rest) = rest.split_once('>').ok_or("unclosed `<`")?;
        *p = rest;
        return Ok(n.into());
    }
    let n: String = p.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    if n.len() < 3 {
        return Err(format!("zone abbreviation expected at `{p}`"));
    }
    *p = &p[n.len()..];
    Ok(n)
}

/// `[+-]hh[:mm[:ss]]`: seconds.
fn hms(s: &str) -> Result<i32, String> {
    let (sign, body) = match s.as_bytes().first() {
        Some(b'-') => (-1, &s[1..]),
        Some(b'+') => (1, &s[1..]),
        _ => (1, s),
    };
    let mut total = 0i32;
    for (i, part) in body.split(':').enumerate() {
        let v: i32 = part.parse().map_err(|_| format!("`{s}` is not a time"))?;
        total += v * [3600, 60, 1].get(i).copied().ok_or("too many `:`")?;
    }
    Ok(sign * total)
}

fn offset(p: &mut &str) -> Result<i32, String> {
    let n = p
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || *c == ':' || (*i == 0 && (*c == '+' || *c == '-'))))
        .map_or(p.len(), |(i, _)| i);
    let v = hms(&p[..n])?;
    *p = &p[n..];
    Ok(v)
}

fn date_rule(s: &str) -> Result<(DateRule, i32), String> {
    let (d, time) = match s.split_once('/') {
        Some((d, t)) => (d, hms(t)?),
        None => (s, 7200),
    };
    let num = |x: &str| {
        x.parse::<u32>()
            .map_err(|_| format!("`{s}` is not a date rule"))
    };
    let rule = if let Some(m) = d.strip_prefix('M') {
        let v: Vec<&str> = m.split('.').collect();
        let [mo, w, wd] = v.as_slice() else {
            return Err(format!("`{s}` is not Mm.w.d"));
        };
        DateRule::M(num(mo)?, num(w)?, num(wd)?)
    } else if let Some(j) = d.strip_prefix('J') {
        DateRule::J(num(j)?)
    } else {
        DateRule::N(num(d)?)
    };
    Ok((rule, time))
}

/// Days since 1970-01-01 of the rule's date in `year`.
fn day_of(year: i64, r: DateRule) -> i64 {
    match r {
        DateRule::J(n) => {
            let leap = is_leap(year) && n >= 60;
            days_from_civil(year, 1, 1) + i64::from(n) - 1 + i64::from(leap)
        }
        DateRule::N(n) => days_from_civil(year, 1, 1) + i64::from(n),
        DateRule::M(m, w, d) => {
            let first = days_from_civil(year, m, 1);
            // 1970-01-01 was a Thursday (4, Sunday = 0).
            let wd_first = (first + 4).rem_euclid(7);
            let mut day = first + (i64::from(d) - wd_first).rem_euclid(7) + 7 * (i64::from(w) - 1);
            let next_month = if m == 12 {
                days_from_civil(year + 1, 1, 1)
            } else {
                days_from_civil(year, m + 1, 1)
            };
            while day >= next_month {
                day -= 7;
            }
            day
        }
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// Howard Hinnant's days_from_civil.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(y: i64, mo: u32, d: u32, h: i64, mi: i64) -> i64 {
        days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60
    }

    #[test]
    fn civil_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn posix_rule_for_central_europe() {
        let r = Rule::parse("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        // 2026: DST from Sun 29 March 01:00 UTC to Sun 25 October 01:00 UTC.
        assert_eq!(r.offset_at(utc(2026, 3, 29, 0, 59)), 3600);
        assert_eq!(r.offset_at(utc(2026, 3, 29, 1, 0)), 7200);
        assert_eq!(r.offset_at(utc(2026, 10, 25, 0, 59)), 7200);
        assert_eq!(r.offset_at(utc(2026, 10, 25, 1, 0)), 3600);
        assert_eq!(r.offset_at(utc(2026, 12, 6, 5, 0)), 3600);
    }

    #[test]
    fn posix_rule_south_and_west() {
        // Sydney: DST from the first Sunday of October to the first of April.
        let r = Rule::parse("AEST-10AEDT,M10.1.0,M4.1.0/3").unwrap();
        assert_eq!(r.offset_at(utc(2026, 1, 10, 0, 0)), 11 * 3600);
        assert_eq!(r.offset_at(utc(2026, 7, 10, 0, 0)), 10 * 3600);
        let ny = Rule::parse("EST5EDT,M3.2.0,M11.1.0").unwrap();
        assert_eq!(ny.offset_at(utc(2026, 7, 1, 12, 0)), -4 * 3600);
        assert_eq!(ny.offset_at(utc(2026, 12, 1, 12, 0)), -5 * 3600);
        let q = Rule::parse("<+0545>-5:45").unwrap();
        assert_eq!(q.offset_at(0), 5 * 3600 + 45 * 60);
    }

    /// The build host's own tzdata, as the device's userland carries it.
    #[test]
    fn zone_files_from_tzdata() {
        let dirs = [PathBuf::from("/usr/share/zoneinfo")];
        let Ok(berlin) = Zone::load("Europe/Berlin", &dirs) else {
            panic!("tzdata is not installed on this host (scripts/setup installs it)");
        };
        assert_eq!(berlin.offset_at(utc(2026, 12, 6, 5, 0)), 3600);
        assert_eq!(berlin.offset_at(utc(2026, 7, 1, 5, 0)), 7200);
        assert_eq!(berlin.offset_at(utc(2050, 7, 1, 5, 0)), 7200);
        assert_eq!(berlin.offset_at(utc(1995, 7, 1, 5, 0)), 7200);
        let kolkata = Zone::load("Asia/Kolkata", &dirs).unwrap();
        assert_eq!(kolkata.offset_at(utc(2026, 1, 1, 0, 0)), 19_800);
        let e = Zone::load("Mars/Olympus", &dirs).unwrap_err().to_string();
        assert!(
            e.contains("Mars/Olympus") && e.contains("cannot read"),
            "{e}"
        );
        assert!(Zone::parse(b"not a zone").is_err());
    }
}
