//! Users of the plan merged into the admin userland's account files.
//!
//! The SSH container (the admin environment) runs on the image's read-only
//! userland; its start script bind-mounts the files made here over its
//! `/etc/passwd`, `/etc/group`, `/etc/shadow`, adds the sudoers rules and lets
//! the listed users log in with their keys. Pure text in, text out.

use std::collections::{BTreeMap, BTreeSet};

use ballast_config::User;

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

/// Merge `users` into the userland's files. Returns the files and warnings.
pub fn merge(passwd: &str, group: &str, shadow: &str, users: &[User]) -> (Accounts, Vec<String>) {
    let mut pw = Table::parse(passwd);
    let mut gr = Table::parse(group);
    let mut sh = Table::parse(shadow);
    let mut warnings = Vec::new();
    let mut acc = Accounts {
        allow: vec![ballast_config::DEFAULT_USER.to_string()],
        ..Accounts::default()
    };
    for u in users {
        if u.name == "root" {
            warnings.push("users: root: root never logs in over SSH on Ballast; its keys and rules are ignored (use user ballast and sudo)".to_string());
            continue;
        }
        let (uid, gid) = match pw.find(&u.name) {
            Some(i) => {
                let r = &pw.rows[i];
                let id = |c: usize| r.get(c).and_then(|v| v.parse().ok()).unwrap_or(0);
                (id(2), id(3))
            }
            None => {
                let taken = pw.ids(2);
                let uid = match u.uid {
                    Some(x) if !taken.contains(&x) => x,
                    Some(x) => {
                        let n = free(&taken, FIRST_UID);
                        warnings.push(format!(
                            "users: {}: uid {x} is taken in the admin userland; given uid {n}",
                            u.name
                        ));
                        n
                    }
                    None => free(&taken, FIRST_UID),
                };
                let gid = match gr.find(&u.name) {
                    Some(i) => gr.rows[i]
                        .get(2)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(uid),
                    None => {
                        let gids = gr.ids(2);
                        let gid = if gids.contains(&uid) {
                            free(&gids, FIRST_UID)
                        } else {
                            uid
                        };
                        gr.rows.push(vec![
                            u.name.clone(),
                            "x".into(),
                            gid.to_string(),
                            String::new(),
                        ]);
                        gid
                    }
                };
                let home = format!("{HOME_DIR}/{}", u.name);
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
        if sh.find(&u.name).is_none() {
            sh.rows.push(
                [u.name.as_str(), "*", "19000", "0", "99999", "7", "", "", ""]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            );
        }
        for g in &u.groups {
            let i = match gr.find(g) {
                Some(i) => i,
                None => {
                    let gid = free(&gr.ids(2), FIRST_GROUP_GID);
                    gr.rows
                        .push(vec![g.clone(), "x".into(), gid.to_string(), String::new()]);
                    gr.rows.len() - 1
                }
            };
            let row = &mut gr.rows[i];
            while row.len() < 4 {
                row.push(String::new());
            }
            let mut members: Vec<String> = row[3]
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .collect();
            if !members.contains(&u.name) {
                members.push(u.name.clone());
            }
            row[3] = members.join(",");
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
        let (a, w) = merge(PASSWD, GROUP, SHADOW, &[b, user("root", &[], true)]);
        assert_eq!(a.passwd.matches("\nballast:").count(), 1);
        assert_eq!(a.ids["ballast"], (1000, 1000));
        assert!(a.group.contains("sudo:x:27:ballast\n"));
        assert!(a.group.contains("docker:x:2000:ballast"));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(!a.sudoers.contains("root"));
        assert_eq!(a.allow, ["ballast"]);
    }
}
