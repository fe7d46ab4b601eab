//! Users of the plan merged into the admin userland's account files.
//!
//! The SSH container (the admin environment) runs on the image's read-only
//! userland; its start script bind-mounts the files made here over its
//! `/etc/passwd`, `/etc/group`, `/etc/shadow`, adds the sudoers rules and lets
//! the listed users log in with their keys. Pure text in, text out.

use std::collections::{BTreeMap, BTreeSet};

use ballast_config::{Group, User};

/// Homes live on the state partition, like `ballast`'s.
pub const HOME_DIR: &str = "/state/home";
/// First uid/gid given to a user without one.
const FIRST_UID: u32 = 1001;
/// First gid of a supplementary group the userland does not have.
const FIRST_GROUP_GID: u32 = 2000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounts {
    pub passwd: String,
    pub group: String,
    pub shadow: String,
    /// sudoers rules (`NAME RULE` lines) for `/etc/sudoers.d/90-config`.
    pub sudoers: String,
    /// Users sshd lets in (`AllowUsers`); always `ballast` first.
    pub allow: Vec<String>,
    /// name → authorized keys from the config.
    pub keys: BTreeMap<String, Vec<String>>,
    /// name → (uid, gid) of every user of the plan (for write_files owners).
    pub ids: BTreeMap<String, (u32, u32)>,
    /// name → whether the SSH container creates the home directory
    /// (false: `no_create_home`, or a system user without `homedir`).
    pub homes: BTreeMap<String, bool>,
}

struct Table {
    /// (fields, original line)
    rows: Vec<Vec<String>>,
}

impl Table {
    fn parse(text: &str) -> Table {
        Table {
            rows: text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.split(':').map(str::to_string).collect())
                .collect(),
        }
    }
    fn find(&self, name: &str) -> Option<usize> {
        self.rows
            .iter()
            .position(|r| r.first().map(String::as_str) == Some(name))
    }
    fn ids(&self, col: usize) -> BTreeSet<u32> {
        self.rows
            .iter()
            .filter_map(|r| r.get(col).and_then(|v| v.parse().ok()))
            .collect()
    }
    fn text(&self) -> String {
        let mut s: String = self
            .rows
            .iter()
            .map(|r| r.join(":"))
            .collect::<Vec<_>>()
            .join("\n");
        s.push('\n');
        s
    }
}

fn free(taken: &BTreeSet<u32>, from: u32) -> u32 {
    (from..).find(|i| !taken.contains(i)).unwrap_or(from)
}

/// First uid/gid of a `system: true` user, counted down (as `useradd --system`).
const SYSTEM_MAX_ID: u32 = 999;
/// The group of a user with `no_user_group` and no `primary_group` (Debian's `users`).
const USERS_GID: u32 = 100;

/// Days since 1970-01-01 of a `YYYY-MM-DD` date (shadow's `expire` field).
pub fn epoch_days(date: &str) -> Option<i64> {
    let mut it = date.trim().splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// Make sure group `name` exists (a new gid from `from` up, or `gid` when
/// free); its row index.
fn ensure_group(gr: &mut Table, name: &str, gid: Option<u32>, from: u32) -> usize {
    if let Some(i) = gr.find(name) {
        return i;
    }
    let taken = gr.ids(2);
    let gid = match gid {
        Some(g) if !taken.contains(&g) => g,
        _ => free(&taken, from),
    };
    gr.rows.push(vec![
        name.into(),
        "x".into(),
        gid.to_string(),
        String::new(),
    ]);
    gr.rows.len() - 1
}

fn add_member(gr: &mut Table, i: usize, user: &str) {
    let row = &mut gr.rows[i];
    while row.len() < 4 {
        row.push(String::new());
    }
    let mut members: Vec<String> = row[3]
        .split(',')
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect();
    if !members.iter().any(|m| m == user) {
        members.push(user.to_string());
    }
    row[3] = members.join(",");
}

fn gid_of(gr: &Table, i: usize) -> u32 {
    gr.rows[i]
        .get(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or(USERS_GID)
}

/// A free id for a system account: the highest free one at or below 999.
fn free_system(taken: &BTreeSet<u32>) -> u32 {
    (100..=SYSTEM_MAX_ID)
        .rev()
        .find(|i| !taken.contains(i))
        .unwrap_or(SYSTEM_MAX_ID)
}

/// Merge the top-level `groups` and the `users` into the userland's files.
/// Returns the files and warnings.
pub fn merge(
    passwd: &str,
    group: &str,
    shadow: &str,
    users: &[User],
    groups: &[Group],
) -> (Accounts, Vec<String>) {
    let mut pw = Table::parse(passwd);
    let mut gr = Table::parse(group);
    let mut sh = Table::parse(shadow);
    let mut warnings = Vec::new();
    let mut acc = Accounts {
        allow: vec![ballast_config::DEFAULT_USER.to_string()],
        ..Accounts::default()
    };
    // cloud-init creates the groups before the users.
    for g in groups {
        ensure_group(&mut gr, &g.name, None, FIRST_GROUP_GID);
    }
    for u in users {
        if u.name == "root" {
            warnings.push("users: root: root never logs in over SSH on Ballast; its keys and rules are ignored (use user ballast and sudo)".to_string());
            continue;
        }
        let (uid, gid) = match pw.find(&u.name) {
            Some(i) => {
                let id =
                    |r: &Vec<String>, c: usize| r.get(c).and_then(|v| v.parse().ok()).unwrap_or(0);
                let uid = id(&pw.rows[i], 2);
                let mut gid = id(&pw.rows[i], 3);
                if let Some(pg) = &u.primary_group {
                    let gi = ensure_group(&mut gr, pg, None, FIRST_GROUP_GID);
                    gid = gid_of(&gr, gi);
                    pw.rows[i][3] = gid.to_string();
                }
                if let Some(h) = &u.homedir {
                    if let Some(f) = pw.rows[i].get_mut(5) {
                        *f = h.clone();
                    }
                }
                (uid, gid)
            }
            None => {
                let taken = pw.ids(2);
                let pick = || {
                    if u.system {
                        free_system(&taken)
                    } else {
                        free(&taken, FIRST_UID)
                    }
                };
                let uid = match u.uid {
                    Some(x) if !taken.contains(&x) => x,
                    Some(x) => {
                        let n = pick();
                        warnings.push(format!(
                            "users: {}: uid {x} is taken in the admin userland; given uid {n}",
                            u.name
                        ));
                        n
                    }
                    None => pick(),
                };
                let gid = if let Some(pg) = &u.primary_group {
                    let gi = ensure_group(&mut gr, pg, None, FIRST_GROUP_GID);
                    gid_of(&gr, gi)
                } else if u.no_user_group {
                    gr.find("users").map_or(USERS_GID, |i| gid_of(&gr, i))
                } else {
                    let from = if u.system { uid } else { FIRST_UID };
                    let gi = ensure_group(&mut gr, &u.name, Some(uid), from);
                    gid_of(&gr, gi)
                };
                let home = u
                    .homedir
                    .clone()
                    .unwrap_or_else(|| format!("{HOME_DIR}/{}", u.name));
                let shell = u.shell.clone().unwrap_or_else(|| "/bin/sh".into());
                pw.rows.push(vec![
                    u.name.clone(),
                    "x".into(),
                    uid.to_string(),
                    gid.to_string(),
                    u.gecos
                        .clone()
                        .unwrap_or_default()
                        .replace([':', '\n'], " "),
                    home,
                    shell,
                ]);
                (uid, gid)
            }
        };
        // `*`: no password can ever match, and unlike `!` sshd does not treat
        // the account as locked for key logins.
        let si = match sh.find(&u.name) {
            Some(i) => i,
            None => {
                sh.rows.push(
                    [u.name.as_str(), "*", "19000", "0", "99999", "7", "", "", ""]
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                );
                sh.rows.len() - 1
            }
        };
        let row = &mut sh.rows[si];
        while row.len() < 9 {
            row.push(String::new());
        }
        if let Some(days) = u.inactive {
            row[6] = days.to_string();
        }
        if let Some(date) = &u.expiredate {
            match epoch_days(date) {
                Some(d) => row[7] = d.to_string(),
                None => warnings.push(format!(
                    "users: {}: expiredate {date}: not a YYYY-MM-DD date; the account does not expire",
                    u.name
                )),
            }
        }
        for g in &u.groups {
            let i = ensure_group(&mut gr, g, None, FIRST_GROUP_GID);
            add_member(&mut gr, i, &u.name);
        }
        for rule in &u.sudo {
            acc.sudoers
                .push_str(&format!("{} {}\n", u.name, rule.replace('\n', " ")));
        }
        if !acc.allow.contains(&u.name) {
            acc.allow.push(u.name.clone());
        }
        acc.keys
            .insert(u.name.clone(), u.ssh_authorized_keys.clone());
        acc.ids.insert(u.name.clone(), (uid, gid));
        // A system user gets no home unless one is named (`useradd --system`).
        let create = !(u.no_create_home || (u.system && u.homedir.is_none()));
        acc.homes.insert(u.name.clone(), create);
    }
    for g in groups {
        let i = ensure_group(&mut gr, &g.name, None, FIRST_GROUP_GID);
        for m in &g.members {
            if pw.find(m).is_none() {
                warnings.push(format!(
                    "groups: {}: member {m} is not a user (of the image or of `users`); added anyway",
                    g.name
                ));
            }
            add_member(&mut gr, i, m);
        }
    }
    acc.passwd = pw.text();
    acc.group = gr.text();
    acc.shadow = sh.text();
    (acc, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nballast:x:1000:1000:Ballast admin:/state/home/ballast:/bin/bash\n";
    const GROUP: &str = "root:x:0:\nsudo:x:27:ballast\nballast:x:1000:\n";
    const SHADOW: &str = "root:*:19000:0:99999:7:::\nballast:*:19000:0:99999:7:::\n";

    fn user(name: &str, groups: &[&str], sudo: bool) -> User {
        User {
            name: name.into(),
            gecos: Some("A User".into()),
            uid: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            sudo: if sudo {
                vec!["ALL=(ALL) NOPASSWD:ALL".into()]
            } else {
                vec![]
            },
            shell: Some("/bin/bash".into()),
            ssh_authorized_keys: vec!["ssh-ed25519 AAAA alice".into()],
            ..User::named(name)
        }
    }

    #[test]
    fn a_new_user_gets_ids_home_groups_and_a_password_that_never_matches() {
        let (a, w) = merge(
            PASSWD,
            GROUP,
            SHADOW,
            &[user("alice", &["sudo", "video"], true)],
            &[],
        );
        assert!(w.is_empty(), "{w:?}");
        assert!(
            a.passwd
                .contains("alice:x:1001:1001:A User:/state/home/alice:/bin/bash\n"),
            "{}",
            a.passwd
        );
        assert!(a.group.contains("alice:x:1001:\n"), "{}", a.group);
        assert!(a.group.contains("sudo:x:27:ballast,alice\n"), "{}", a.group);
        assert!(a.group.contains("video:x:2000:alice\n"), "{}", a.group);
        assert!(a.shadow.contains("alice:*:19000"), "{}", a.shadow);
        assert_eq!(a.sudoers, "alice ALL=(ALL) NOPASSWD:ALL\n");
        assert_eq!(a.allow, ["ballast", "alice"]);
        assert_eq!(a.ids["alice"], (1001, 1001));
    }

    #[test]
    fn the_default_user_keeps_its_entry_and_root_is_refused() {
        let mut b = user("ballast", &["sudo", "docker"], true);
        b.uid = Some(5);
        let (a, w) = merge(PASSWD, GROUP, SHADOW, &[b, user("root", &[], true)], &[]);
        assert_eq!(a.passwd.matches("\nballast:").count(), 1);
        assert_eq!(a.ids["ballast"], (1000, 1000));
        assert!(a.group.contains("sudo:x:27:ballast\n"));
        assert!(a.group.contains("docker:x:2000:ballast"));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(!a.sudoers.contains("root"));
        assert_eq!(a.allow, ["ballast"]);
    }

    #[test]
    fn groups_and_the_full_user_fields_land_in_the_account_files() {
        let mut bob = User::named("bob");
        bob.primary_group = Some("staff".into());
        bob.homedir = Some("/state/srv/bob".into());
        bob.expiredate = Some("2030-01-02".into());
        bob.inactive = Some(5);
        let mut svc = User::named("svc");
        svc.system = true;
        svc.no_user_group = true;
        let mut nohome = User::named("carol");
        nohome.no_create_home = true;
        let mut ballast = User::named("ballast");
        ballast.groups = vec!["ops".into()];
        ballast.ssh_authorized_keys = vec!["ssh-ed25519 AAAA extra".into()];
        let groups = [Group {
            name: "ops".into(),
            members: vec!["bob".into(), "ghost".into()],
        }];
        let (a, w) = merge(PASSWD, GROUP, SHADOW, &[bob, svc, nohome, ballast], &groups);
        assert!(
            a.group.contains("ops:x:2000:ballast,bob,ghost\n"),
            "{}",
            a.group
        );
        assert!(a.group.contains("staff:x:2001:\n"), "{}", a.group);
        assert!(!a.group.contains("\nbob:"), "no user group: {}", a.group);
        assert!(
            a.passwd
                .contains("bob:x:1001:2001::/state/srv/bob:/bin/sh\n"),
            "{}",
            a.passwd
        );
        assert!(
            a.passwd
                .contains("svc:x:999:100::/state/home/svc:/bin/sh\n"),
            "{}",
            a.passwd
        );
        // 2030-01-02 is day 21916 since the epoch.
        assert!(
            a.shadow.contains("bob:*:19000:0:99999:7:5:21916:"),
            "{}",
            a.shadow
        );
        assert!(a.homes["bob"]);
        assert!(!a.homes["svc"]);
        assert!(!a.homes["carol"]);
        assert_eq!(a.keys["ballast"], ["ssh-ed25519 AAAA extra"]);
        assert_eq!(w.len(), 1, "ghost is not a user: {w:?}");
    }

    #[test]
    fn dates_count_days_from_the_epoch() {
        assert_eq!(epoch_days("1970-01-01"), Some(0));
        assert_eq!(epoch_days("2000-03-01"), Some(11017));
        assert_eq!(epoch_days("2030-13-01"), None);
        assert_eq!(epoch_days("soon"), None);
    }
}
