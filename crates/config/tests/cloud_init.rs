//! cloud-init compatibility: every key cloud-init documents is applied as
//! cloud-init reads it, warned about with the reason, or reported as not
//! supported, with its line; published user-data parses with no error.

use ballast_config::{
    check, parse, CaCerts, Checked, Cmd, DiskSetup, FsSetup, Group, MetaData, MountEntry, Plan,
    PowerState, User, DEFAULT_USER,
};

const KEY: &str = include_str!("fixtures/test_host_ed25519.pub");
const PRIVATE: &str = include_str!("fixtures/test_host_ed25519");
const CERT: &str = include_str!("fixtures/test_host_ed25519-cert.pub");
const CA: &str = include_str!("fixtures/test-ca.pem");
const CA2: &str = include_str!("fixtures/test-ca-2.pem");
const ALICE: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f alice@laptop";

fn checked(body: &str) -> Checked {
    check(&format!("#cloud-config\n{body}"), "ud")
}

/// The plan of a valid document; panics with the errors otherwise.
fn plan(body: &str) -> Plan {
    let c = checked(body);
    assert!(c.errors.is_empty(), "{:#?}", c.errors);
    c.doc.map(|d| d.plan(&MetaData::default())).unwrap()
}

/// (line, key) of every warning.
fn warned(c: &Checked) -> Vec<(Option<usize>, String)> {
    c.warnings.iter().map(|w| (w.line, w.key.clone())).collect()
}

fn warning<'a>(c: &'a Checked, key: &str) -> &'a str {
    c.warnings
        .iter()
        .find(|w| w.key == key)
        .map(|w| w.message.as_str())
        .unwrap_or_else(|| panic!("no warning for {key}: {:#?}", c.warnings))
}

fn first_error(body: &str) -> (Option<usize>, String, String) {
    let c = checked(body);
    let e = c
        .errors
        .first()
        .unwrap_or_else(|| panic!("no error for {body}"));
    (e.line, e.key.clone(), e.message.clone())
}

/// A YAML block scalar of `text`, indented for a key at `indent` spaces.
fn block(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent + 2);
    let mut s = String::from("|\n");
    for l in text.trim_end().lines() {
        s.push_str(&pad);
        s.push_str(l);
        s.push('\n');
    }
    s
}

fn user<'a>(p: &'a Plan, name: &str) -> &'a User {
    p.users
        .iter()
        .find(|u| u.name == name)
        .unwrap_or_else(|| panic!("no user {name}: {:#?}", p.users))
}

// ------------------------------------------------------------ spellings

#[test]
fn dash_spellings_are_read_like_underscores() {
    let c = checked(&format!(
        "users:\n  - name: alice\n    ssh-authorized-keys: ['{ALICE}']\n    lock-passwd: true\n    primary-group: staff\n    no-create-home: true\n    no-user-group: true\n    create-groups: true\n    no-log-init: true\nca-certs:\n  remove-defaults: true\n  trusted:\n    - {}",
        block(CA, 4)
    ));
    assert!(c.errors.is_empty(), "{:#?}", c.errors);
    assert!(c.warnings.is_empty(), "{:#?}", c.warnings);
    let p = c.doc.unwrap().plan(&MetaData::default());
    let a = user(&p, "alice");
    assert_eq!(a.ssh_authorized_keys, [ALICE]);
    assert_eq!(a.primary_group.as_deref(), Some("staff"));
    assert!(a.no_create_home && a.no_user_group);
    assert_eq!(
        p.ca_certs,
        Some(CaCerts {
            remove_defaults: true,
            trusted: vec![CA.to_string()],
        })
    );
}

#[test]
fn both_spellings_of_one_key_is_an_error_naming_both_lines() {
    let (line, key, msg) = first_error(&format!(
        "users:\n  - name: alice\n    ssh_authorized_keys: ['{ALICE}']\n    ssh-authorized-keys: ['{ALICE}']\n"
    ));
    assert_eq!(
        (line, key.as_str()),
        (Some(5), "users[0].ssh_authorized_keys")
    );
    assert!(
        msg.contains("`ssh_authorized_keys` (line 4) and as `ssh-authorized-keys` (line 5)"),
        "{msg}"
    );
    let (line, key, msg) =
        first_error("ca_certs: {remove_defaults: true}\nca-certs: {remove_defaults: true}\n");
    assert_eq!((line, key.as_str()), (Some(3), "ca_certs"));
    assert!(
        msg.contains("`ca_certs` (line 2) and as `ca-certs` (line 3)"),
        "{msg}"
    );
}

#[test]
fn a_dash_spelling_cloud_init_ignores_is_warned_not_taken() {
    // cloud-init reads only `ssh_authorized_keys` at the top level.
    let c = checked(&format!("ssh-authorized-keys: ['{ALICE}']\n"));
    assert!(c.errors.is_empty());
    assert!(warning(&c, "ssh-authorized-keys").contains("did you mean `ssh_authorized_keys`?"));
    assert!(c.doc.unwrap().ssh_authorized_keys.is_empty());
}

// ------------------------------------------------------------ users

#[test]
fn naming_the_default_user_again_merges_into_it() {
    let p = plan(&format!(
        "ssh_authorized_keys: ['{ALICE}']\nusers:\n  - default\n  - name: ballast\n    ssh_authorized_keys: ['{}']\n    groups: [adm]\n    shell: /bin/bash\n",
        KEY.trim()
    ));
    assert_eq!(p.users.len(), 1, "{:#?}", p.users);
    let b = user(&p, DEFAULT_USER);
    assert_eq!(b.groups, ["adm", "sudo", "docker"]);
    assert_eq!(b.sudo, ["ALL=(ALL) NOPASSWD:ALL"]);
    assert_eq!(b.shell.as_deref(), Some("/bin/bash"));
    assert_eq!(b.ssh_authorized_keys, [KEY.trim(), ALICE]);
    assert!(b.lock_passwd);
}

#[test]
fn an_entry_without_a_name_is_the_default_user() {
    let p = plan(&format!(
        "users:\n  - ssh_authorized_keys: ['{ALICE}']\n    sudo: null\n"
    ));
    let b = user(&p, DEFAULT_USER);
    assert_eq!(b.ssh_authorized_keys, [ALICE]);
    assert!(b.sudo.is_empty(), "sudo: null removes the rule");
    assert_eq!(b.groups, ["sudo", "docker"]);
}

#[test]
fn a_user_listed_twice_is_merged_first_value_wins_with_a_warning() {
    let c = checked(
        "users:\n  - name: alice\n    shell: /bin/bash\n  - alice\n  - name: alice\n    shell: /bin/zsh\n    groups: [adm]\n",
    );
    assert!(c.errors.is_empty(), "{:#?}", c.errors);
    let m = warning(&c, "users[0]");
    assert!(m.contains("lines 3, 6"), "{m}");
    assert!(m.contains("merged"), "{m}");
    let p = c.doc.unwrap().plan(&MetaData::default());
    assert_eq!(p.users.len(), 1, "no `default`: alice alone");
    let a = user(&p, "alice");
    assert_eq!(a.shell.as_deref(), Some("/bin/bash"));
    assert_eq!(a.groups, ["adm"]);
}

#[test]
fn every_user_field_is_read() {
    let p = plan(
        "users:\n  - name: svc\n    uid: '1500'\n    primary_group: services\n    homedir: /var/lib/svc\n    system: true\n    no_create_home: true\n    no_user_group: true\n    expiredate: '2031-01-31'\n    inactive: '5'\n    groups: 'adm, docker'\n    sudo: ['ALL=(ALL) NOPASSWD:/usr/bin/docker', null]\n  - name: bob\n    uid: 1600\n    inactive: 7\n    groups: {adm: null, video: null}\n    sudo: false\n",
    );
    let s = user(&p, "svc");
    assert_eq!(s.uid, Some(1500));
    assert_eq!(s.primary_group.as_deref(), Some("services"));
    assert_eq!(s.homedir.as_deref(), Some("/var/lib/svc"));
    assert!(s.system && s.no_create_home && s.no_user_group);
    assert_eq!(s.expiredate.as_deref(), Some("2031-01-31"));
    assert_eq!(s.inactive, Some(5));
    assert_eq!(s.groups, ["adm", "docker"]);
    assert_eq!(s.sudo, ["ALL=(ALL) NOPASSWD:/usr/bin/docker"]);
    let b = user(&p, "bob");
    assert_eq!((b.uid, b.inactive), (Some(1600), Some(7)));
    assert_eq!(b.groups, ["adm", "video"]);
    assert!(b.sudo.is_empty());
}

#[test]
fn user_field_mistakes_name_line_and_key() {
    let cases = [
        (
            "users:\n  - name: a\n    expiredate: 31.12.2030\n",
            4,
            "users[0].expiredate",
            "not a date",
        ),
        (
            "users:\n  - name: a\n    inactive: soon\n",
            4,
            "users[0].inactive",
            "number of days",
        ),
        (
            "users:\n  - name: a\n    homedir: home/a\n",
            4,
            "users[0].homedir",
            "absolute",
        ),
        (
            "users:\n  - name: a\n    primary_group: Staff\n",
            4,
            "users[0].primary_group",
            "group name",
        ),
        (
            "users:\n  - name: a\n    groups: [Adm]\n",
            4,
            "users[0].groups",
            "group name",
        ),
        (
            "users:\n  - name: a\n    uid: lots\n",
            4,
            "users[0].uid",
            "not a user id",
        ),
        (
            "users:\n  - name: a\n    system: perhaps\n",
            4,
            "users[0].system",
            "not a boolean",
        ),
        ("users: [Alice]\n", 2, "users[0]", "not a valid user name"),
    ];
    for (body, line, key, msg) in cases {
        let (l, k, m) = first_error(body);
        assert_eq!((l, k.as_str()), (Some(line), key), "{body}: {m}");
        assert!(m.contains(msg), "{body}: {m}");
    }
}

#[test]
fn user_fields_ballast_cannot_honour_are_warned_with_the_reason() {
    let c = checked(
        "users:\n  - name: a\n    ssh_redirect_user: true\n    selinux_user: staff_u\n    snapuser: a@example.org\n    doas: ['permit a']\n    ssh_import_id: [gh:a]\n    create_groups: false\n    passwd: $6$x\n",
    );
    assert!(c.errors.is_empty(), "{:#?}", c.errors);
    assert_eq!(
        warned(&c),
        [
            (Some(4), "users[0].ssh_redirect_user".to_string()),
            (Some(5), "users[0].selinux_user".to_string()),
            (Some(6), "users[0].snapuser".to_string()),
            (Some(7), "users[0].doas".to_string()),
            (Some(8), "users[0].ssh_import_id".to_string()),
            (Some(9), "users[0].create_groups".to_string()),
            (Some(10), "users[0].passwd".to_string()),
        ]
    );
    assert!(warning(&c, "users[0].selinux_user").contains("no SELinux"));
    assert!(warning(&c, "users[0].ssh_import_id").contains("ssh_authorized_keys"));
    assert!(warning(&c, "users[0].passwd").contains("password login is never enabled"));
}

#[test]
fn users_as_a_string_or_a_mapping_as_cloud_init_reads_them() {
    let p = plan("users: 'default, alice'\n");
    let names: Vec<&str> = p.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, [DEFAULT_USER, "alice"]);
    let c = checked("users:\n  alice: {shell: /bin/bash}\n  bob: true\n  carol: false\n");
    assert!(c.errors.is_empty(), "{:#?}", c.errors);
    assert!(warning(&c, "users").contains("deprecated"));
    let p = c.doc.unwrap().plan(&MetaData::default());
    let names: Vec<&str> = p.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert_eq!(user(&p, "alice").shell.as_deref(), Some("/bin/bash"));
}

// ------------------------------------------------------------ groups

#[test]
fn top_level_groups_in_every_form() {
    let g = |name: &str, members: &[&str]| Group {
        name: name.into(),
        members: members.iter().map(|m| m.to_string()).collect(),
    };
    let p = plan("groups:\n  - admingroup: [root, sys]\n  - cloud-users\n  - ops: alice\n  - admingroup: [sys, bob]\n");
    assert_eq!(
        p.groups,
        [
            g("admingroup", &["root", "sys", "bob"]),
            g("cloud-users", &[]),
            g("ops", &["alice"]),
        ]
    );
    let p = plan("groups:\n  web: [alice]\n  db:\n");
    assert_eq!(p.groups, [g("web", &["alice"]), g("db", &[])]);
    let p = plan("groups: 'a, b'\n");
    assert_eq!(p.groups, [g("a", &[]), g("b", &[])]);
    let (l, k, m) = first_error("groups:\n  - Bad Group\n");
    assert_eq!((l, k.as_str()), (Some(3), "groups[0]"));
    assert!(m.contains("group name"), "{m}");
    let (_, k, m) = first_error("groups:\n  - web: [Alice]\n");
    assert_eq!(k, "groups[0].web[0]");
    assert!(m.contains("user name"), "{m}");
}

// ------------------------------------------------------------ ssh

#[test]
fn ssh_keys_give_host_keys_and_dsa_is_warned() {
    let c = checked(&format!(
        "ssh_keys:\n  ed25519_private: {}  ed25519_public: {}\n  ed25519_certificate: {}\n  rsa_public: {}\n  dsa_private: x\n  foo: bar\nssh_deletekeys: false\nssh_genkeytypes: [ed25519, dsa]\n",
        block(PRIVATE, 2),
        KEY.trim(),
        CERT.trim(),
        ALICE.replace("ssh-ed25519", "ssh-rsa"),
    ));
    // rsa_public holds an ed25519 blob: an error, whatever it is named.
    assert_eq!(c.errors.len(), 1, "{:#?}", c.errors);
    assert_eq!(c.errors[0].key, "ssh_keys.rsa_public");
    let c = checked(&format!(
        "ssh_keys:\n  ed25519_private: {}  ed25519_public: {}\n  ed25519_certificate: {}\n  ecdsa_public: {}\n  dsa_private: x\n  foo: bar\nssh_deletekeys: false\nssh_genkeytypes: [ed25519, dsa]\n",
        block(PRIVATE, 2),
        KEY.trim(),
        CERT.trim(),
        "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBA== x",
    ));
    assert!(c.errors.is_empty(), "{:#?}", c.errors);
    assert!(warning(&c, "ssh_keys.dsa_private").contains("DSA"));
    assert!(warning(&c, "ssh_keys.foo").contains("<type>_private"));
    assert!(warning(&c, "ssh_keys.ecdsa_public").contains("no `ecdsa_private`"));
    assert!(warning(&c, "ssh_genkeytypes").contains("`dsa`"));
    let p = c.doc.unwrap().plan(&MetaData::default());
    assert!(!p.ssh_deletekeys);
    assert_eq!(p.ssh_host_keys.len(), 1);
    let k = &p.ssh_host_keys[0];
    assert_eq!(k.kind, "ed25519");
    assert_eq!(k.private, PRIVATE);
    assert_eq!(k.public.as_deref(), Some(KEY.trim()));
    assert_eq!(k.certificate.as_deref(), Some(CERT.trim()));
}

#[test]
fn ssh_key_mistakes_are_errors() {
    let (l, k, m) = first_error("ssh_keys:\n  ed25519_private: not a key\n");
    assert_eq!((l, k.as_str()), (Some(3), "ssh_keys.ed25519_private"));
    assert!(m.contains("not a private key"), "{m}");
    let (_, k, m) = first_error(&format!("ssh_keys:\n  rsa_public: {}\n", KEY.trim()));
    assert_eq!(k, "ssh_keys.rsa_public");
    assert!(m.contains("not rsa"), "{m}");
    let (_, k, m) = first_error(&format!(
        "ssh_keys:\n  ed25519_certificate: {}\n",
        KEY.trim()
    ));
    assert_eq!(k, "ssh_keys.ed25519_certificate");
    assert!(m.contains("host certificate"), "{m}");
}

#[test]
fn ssh_defaults_and_disable_root() {
    let p = plan("hostname: a\n");
    assert!(p.ssh_deletekeys, "cloud-init's default is true");
    let c = checked("disable_root: false\ndisable_root_opts: x\n");
    assert!(warning(&c, "disable_root").contains("root never logs in"));
    assert!(warning(&c, "disable_root_opts").contains("root never logs in"));
}

// ------------------------------------------------------------ ca_certs

#[test]
fn ca_certs_takes_pem_certificates_and_refuses_anything_else() {
    let p = plan(&format!(
        "ca_certs:\n  trusted:\n    - {}    - {}",
        block(&format!("{CA}{CA2}"), 4),
        block(CA2, 4)
    ));
    let ca = p.ca_certs.unwrap();
    assert!(!ca.remove_defaults);
    assert_eq!(ca.trusted, [format!("{CA}{CA2}"), CA2.to_string()]);
    let (l, k, m) = first_error(&format!(
        "ca_certs:\n  trusted:\n    - {}",
        block(PRIVATE, 4)
    ));
    // A block scalar's line is its first line of text.
    assert_eq!((l, k.as_str()), (Some(5), "ca_certs.trusted[0]"));
    assert!(m.contains("this is a private key"), "{m}");
    let (_, _, m) = first_error("ca_certs:\n  trusted: [hello]\n");
    assert!(m.contains("not a PEM certificate"), "{m}");
    let (_, _, m) = first_error("ca_certs:\n  trusted:\n    - |\n      -----BEGIN CERTIFICATE-----\n      !!!\n      -----END CERTIFICATE-----\n");
    assert!(m.contains("base64"), "{m}");
    let c = checked("ca_certs:\n  remove_defaults: true\n");
    assert!(warning(&c, "ca_certs.remove_defaults").contains("trusts no CA"));
}

// ------------------------------------------------------------ timezone

#[test]
fn timezone_takes_zone_names_and_refuses_paths() {
    for tz in [
        "Europe/Berlin",
        "UTC",
        "America/Argentina/Buenos_Aires",
        "Etc/GMT+5",
        "Japan",
    ] {
        assert_eq!(
            plan(&format!("timezone: {tz}\n")).timezone.as_deref(),
            Some(tz)
        );
    }
    for tz in [
        "../../etc/shadow",
        "/usr/share/zoneinfo/UTC",
        "Europe/../../x",
    ] {
        let (l, k, m) = first_error(&format!("timezone: '{tz}'\n"));
        assert_eq!((l, k.as_str()), (Some(2), "timezone"));
        assert!(m.contains("is a path"), "{tz}: {m}");
    }
}

// ------------------------------------------------------------ disks

fn mount(spec: &str, dir: &str, fstype: &str, options: &str, dump: &str, pass: &str) -> MountEntry {
    MountEntry {
        spec: spec.into(),
        dir: dir.into(),
        fstype: fstype.into(),
        options: options.into(),
        dump: dump.into(),
        pass: pass.into(),
    }
}

#[test]
fn mounts_fill_cloud_init_defaults_and_expand_short_names() {
    let c = checked(
        "device_aliases: {data: /dev/vdc}\nmounts:\n  - [ vdb, /var/lib/docker ]\n  - [ data.1, /srv/data, ext4 ]\n  - [ /dev/vdd1, /backup, xfs, 'defaults,noatime', 0, 0 ]\n  - [ LABEL=logs, /var/log/app, null, null, '1' ]\n  - [ ephemeral0, /mnt ]\n  - [ 'nfs:/export', /srv/nfs, nfs ]\n",
    );
    assert!(c.errors.is_empty(), "{:#?}", c.errors);
    assert!(warning(&c, "mounts[4]").contains("metadata service"));
    let p = c.doc.unwrap().plan(&MetaData::default());
    assert_eq!(
        p.mounts,
        [
            mount(
                "/dev/vdb",
                "/var/lib/docker",
                "auto",
                "defaults,nofail",
                "0",
                "2"
            ),
            mount(
                "/dev/vdc1",
                "/srv/data",
                "ext4",
                "defaults,nofail",
                "0",
                "2"
            ),
            mount("/dev/vdd1", "/backup", "xfs", "defaults,noatime", "0", "0"),
            mount(
                "LABEL=logs",
                "/var/log/app",
                "auto",
                "defaults,nofail",
                "1",
                "2"
            ),
            mount(
                "nfs:/export",
                "/srv/nfs",
                "nfs",
                "defaults,nofail",
                "0",
                "2"
            ),
        ]
    );
}

#[test]
fn mount_default_fields_and_an_entry_without_mount_point() {
    let c = checked(
        "mount_default_fields: [None, None, ext4, 'defaults', '0', '0']\nmounts:\n  - [ sdb, /data ]\n  - [ sdc, /other ]\n  - [ sdb ]\n",
    );
    assert!(c.errors.is_empty(), "{:#?}", c.errors);
    let m = warning(&c, "mounts[2]");
    assert!(m.contains("earlier entries for it are dropped"), "{m}");
    assert!(m.contains("no default mounts"), "{m}");
    let p = c.doc.unwrap().plan(&MetaData::default());
    assert_eq!(
        p.mounts,
        [mount("/dev/sdc", "/other", "ext4", "defaults", "0", "0")]
    );
}

#[test]
fn mount_mistakes() {
    let cases = [
        (
            "mounts:\n  - [a, /b, c, d, '0', '0', extra]\n",
            3,
            "mounts[0]",
            "1 to 6 fields",
        ),
        (
            "mounts:\n  - [/dev/vdb, data]\n",
            3,
            "mounts[0][1]",
            "absolute",
        ),
        (
            "mounts:\n  - [/dev/vdb, /data, ext4, 'a b']\n",
            3,
            "mounts[0]",
            "blanks",
        ),
        (
            "mounts:\n  - [/dev/vdb, /data, ext4, defaults, x]\n",
            3,
            "mounts[0][4]",
            "not a number",
        ),
        (
            "mount_default_fields: [a, b]\n",
            2,
            "mount_default_fields",
            "6 needed",
        ),
    ];
    for (body, line, key, msg) in cases {
        let (l, k, m) = first_error(body);
        assert_eq!((l, k.as_str()), (Some(line), key), "{body}: {m}");
        assert!(m.contains(msg), "{body}: {m}");
    }
    let c = checked("mounts:\n  - /dev/vdb /data\n");
    assert!(c.errors.is_empty());
    assert!(warning(&c, "mounts[0]").contains("not a list"));
}

#[test]
fn disk_setup_and_fs_setup() {
    let c = checked(
        "device_aliases: {my_alias: /dev/sdb, swap_disk: /dev/sdc}\ndisk_setup:\n  /dev/vdb: {layout: true}\n  my_alias:\n    table_type: gpt\n    layout: [25, [75, 83]]\n    overwrite: true\n  swap_disk:\n    layout: [[100, 82]]\n  /dev/vdd: {layout: false}\n  ephemeral0: {layout: true}\n  /dev/vde: {layout: remove}\nfs_setup:\n  - {label: data, filesystem: ext4, device: my_alias.1, extra_opts: '-E lazy_itable_init=1'}\n  - {filesystem: swap, device: swap_disk, partition: 1, cmd: 'mkswap %(device)s'}\n  - {filesystem: ext4, device: /dev/vdb, partition: auto, replace_fs: ntfs, overwrite: false}\n  - {label: x, device: /dev/vdb}\n",
    );
    assert!(c.errors.is_empty(), "{:#?}", c.errors);
    assert!(warning(&c, "disk_setup.swap_disk.layout[0][1]").contains("partition type `82`"));
    assert!(warning(&c, "disk_setup.ephemeral0").contains("metadata service"));
    assert!(warning(&c, "disk_setup./dev/vde.layout").contains("not supported"));
    assert!(warning(&c, "fs_setup[1].cmd").contains("mkfs"));
    assert!(warning(&c, "fs_setup[2].replace_fs").contains("never replaces"));
    assert!(warning(&c, "fs_setup[3]").contains("no `filesystem`"));
    let p = c.doc.unwrap().plan(&MetaData::default());
    let d = |device: &str, table: &str, layout: &[u8], overwrite| DiskSetup {
        device: device.into(),
        table_type: table.into(),
        layout: layout.to_vec(),
        overwrite,
    };
    assert_eq!(
        p.disk_setup,
        [
            d("/dev/vdb", "mbr", &[100], false),
            d("/dev/sdb", "gpt", &[25, 75], true),
            d("/dev/sdc", "mbr", &[100], false),
            d("/dev/vdd", "mbr", &[], false),
        ]
    );
    assert_eq!(
        p.fs_setup,
        [
            FsSetup {
                label: Some("data".into()),
                filesystem: "ext4".into(),
                device: "/dev/sdb".into(),
                partition: Some("1".into()),
                overwrite: false,
                extra_opts: vec!["-E".into(), "lazy_itable_init=1".into()],
            },
            FsSetup {
                label: None,
                filesystem: "swap".into(),
                device: "/dev/sdc".into(),
                partition: Some("1".into()),
                overwrite: false,
                extra_opts: vec![],
            },
            FsSetup {
                label: None,
                filesystem: "ext4".into(),
                device: "/dev/vdb".into(),
                partition: Some("auto".into()),
                overwrite: false,
                extra_opts: vec![],
            },
        ]
    );
}

#[test]
fn disk_mistakes() {
    let cases = [
        (
            "disk_setup:\n  /dev/vdb: {layout: [60, 50]}\n",
            3,
            "disk_setup./dev/vdb.layout",
            "110%",
        ),
        (
            "disk_setup:\n  /dev/vdb: {layout: [0]}\n",
            3,
            "disk_setup./dev/vdb.layout[0]",
            "1 to 100",
        ),
        (
            "disk_setup:\n  /dev/vdb: {table_type: dos}\n",
            3,
            "disk_setup./dev/vdb.table_type",
            "gpt or mbr",
        ),
        (
            "disk_setup:\n  vdb: {layout: true}\n",
            3,
            "disk_setup.vdb",
            "device path",
        ),
        (
            "fs_setup:\n  - {filesystem: ext4, device: /dev/vdb, partition: first}\n",
            3,
            "fs_setup[0].partition",
            "auto, any, none",
        ),
        (
            "fs_setup:\n  - {filesystem: 'ext 4', device: /dev/vdb}\n",
            3,
            "fs_setup[0].filesystem",
            "filesystem type",
        ),
        (
            "device_aliases: {a: sdb}\n",
            2,
            "device_aliases.a",
            "device path",
        ),
    ];
    for (body, line, key, msg) in cases {
        let (l, k, m) = first_error(body);
        assert_eq!((l, k.as_str()), (Some(line), key), "{body}: {m}");
        assert!(m.contains(msg), "{body}: {m}");
    }
}

// ------------------------------------------------------------ power_state, final_message

#[test]
fn power_state_as_cloud_init_reads_it() {
    let p = plan("power_state:\n  delay: 30\n  mode: reboot\n  message: Rebooting machine\n  condition: test -f /var/tmp/reboot_me\n");
    assert_eq!(
        p.power_state,
        Some(PowerState {
            mode: "reboot".into(),
            delay_secs: 30 * 60,
            message: Some("Rebooting machine".into()),
            timeout_secs: 30,
            condition: Some(Cmd::Shell("test -f /var/tmp/reboot_me".into())),
            never: false,
        })
    );
    let ps =
        plan("power_state: {mode: poweroff, delay: '+5', timeout: 2, condition: [test, -e, /x]}\n")
            .power_state
            .unwrap();
    assert_eq!((ps.delay_secs, ps.timeout_secs), (300, 2));
    assert_eq!(
        ps.condition,
        Some(Cmd::Argv(vec!["test".into(), "-e".into(), "/x".into()]))
    );
    let ps = plan("power_state: {mode: halt, delay: now, condition: false}\n")
        .power_state
        .unwrap();
    assert!(ps.never);
    assert_eq!(ps.delay_secs, 0);
    let cases = [
        (
            "power_state: {mode: sleep}\n",
            "power_state.mode",
            "reboot, poweroff or halt",
        ),
        ("power_state: {delay: now}\n", "power_state.mode", "missing"),
        (
            "power_state: {mode: reboot, delay: soon}\n",
            "power_state.delay",
            "not a delay",
        ),
        (
            "power_state: {mode: reboot, timeout: x}\n",
            "power_state.timeout",
            "seconds",
        ),
        (
            "power_state: {mode: reboot, condition: 3}\n",
            "power_state.condition",
            "true, false",
        ),
    ];
    for (body, key, msg) in cases {
        let (l, k, m) = first_error(body);
        assert_eq!((l, k.as_str()), (Some(2), key), "{body}: {m}");
        assert!(m.contains(msg), "{body}: {m}");
    }
}

#[test]
fn final_message_is_kept_for_the_device_to_print() {
    let p = plan("final_message: 'up after $UPTIME s'\n");
    assert_eq!(p.final_message.as_deref(), Some("up after $UPTIME s"));
}

// ------------------------------------------------------------ the other keys

#[test]
fn every_other_cloud_init_key_is_warned_with_a_reason_and_its_line() {
    let c = checked(
        "packages: [vim]\napt: {}\npackage_upgrade: true\nsnap: {}\nphone_home: {}\nansible: {}\nuser: bob\ngrowpart: {}\nmanage_etc_hosts: true\nlocale: de_DE\nssh_import_id: [gh:x]\nswap: {}\nwireguard: {}\ngrub-dpkg: {}\nfrobnicate: 1\n",
    );
    assert!(c.errors.is_empty(), "{:#?}", c.errors);
    let lines: Vec<Option<usize>> = c.warnings.iter().map(|w| w.line).collect();
    assert_eq!(lines, (2..=16).map(Some).collect::<Vec<_>>());
    for k in ["packages", "apt", "package_upgrade", "snap", "grub-dpkg"] {
        assert!(warning(&c, k).contains("immutable OS"), "{k}");
    }
    assert!(warning(&c, "ansible").contains("ballast.system"));
    assert!(warning(&c, "phone_home").contains("does not support"));
    assert!(warning(&c, "wireguard").contains("does not support"));
    assert!(warning(&c, "user").contains("users: [default"));
    assert!(warning(&c, "manage_etc_hosts").contains("/etc/hosts"));
    assert!(warning(&c, "frobnicate").contains("unknown key"));
    assert_eq!(c.warnings[3].to_string(), "ud:5: snap: Ballast is an immutable OS: packages cannot be installed (run software in containers: `docker run`, or `ballast.system`)");
}

#[test]
fn write_files_outside_the_writable_directories_are_warned() {
    for path in [
        "/bin/x",
        "/sbin/x",
        "/lib/x",
        "/usr/bin/x",
        "/home/a/x",
        "/opt/x",
        "/root/x",
        "/tmp/x",
        "/etc",
        "/./usr/x",
    ] {
        let c = checked(&format!("write_files:\n  - path: {path}\n"));
        assert!(c.errors.is_empty(), "{path}");
        let m = warning(&c, "write_files[0]");
        assert!(m.contains("read-only system image"), "{path}: {m}");
        assert!(m.contains("/etc/ (an overlay on the image's /etc"), "{m}");
    }
    for path in [
        "/etc/motd",
        "/var/lib/x",
        "/state/x",
        "/run/x",
        "/etc/./ssh//x",
    ] {
        let c = checked(&format!("write_files:\n  - path: {path}\n"));
        assert!(c.warnings.is_empty(), "{path}: {:#?}", c.warnings);
    }
    let (_, k, m) = first_error("write_files:\n  - path: /etc/../usr/x\n");
    assert_eq!(k, "write_files[0].path");
    assert!(m.contains("`..`"), "{m}");
}

#[test]
fn a_refused_document_carries_the_way_in() {
    let c = check("#cloud-config\nhostname: -x\n", "/boot/user-data");
    let hint = c.refused_hint().unwrap();
    assert!(hint.contains("`user-data` on the boot partition"), "{hint}");
    assert!(hint.contains("osctl config validate"), "{hint}");
    assert!(checked("hostname: x\n").refused_hint().is_none());
}

// ------------------------------------------------------------ published examples

#[test]
fn published_user_data_parses_with_no_error() {
    let examples = [
        (
            "cloud-init-user-groups.yaml",
            include_str!("fixtures/examples/cloud-init-user-groups.yaml"),
        ),
        (
            "cloud-init-disk-setup.yaml",
            include_str!("fixtures/examples/cloud-init-disk-setup.yaml"),
        ),
        (
            "cloud-init-mounts.yaml",
            include_str!("fixtures/examples/cloud-init-mounts.yaml"),
        ),
        (
            "cloud-init-power-state.yaml",
            include_str!("fixtures/examples/cloud-init-power-state.yaml"),
        ),
        (
            "cloud-init-boot-cmds.yaml",
            include_str!("fixtures/examples/cloud-init-boot-cmds.yaml"),
        ),
        (
            "cloud-init-run-cmds.yaml",
            include_str!("fixtures/examples/cloud-init-run-cmds.yaml"),
        ),
        (
            "dash-keys.yaml",
            include_str!("fixtures/examples/dash-keys.yaml"),
        ),
    ];
    for (name, text) in examples {
        let c = check(text, name);
        assert!(c.errors.is_empty(), "{name}: {:#?}", c.errors);
        assert!(c.doc.is_some(), "{name}");
    }
}

#[test]
fn the_dash_key_example_gives_the_plan_its_author_meant() {
    let c = check(include_str!("fixtures/examples/dash-keys.yaml"), "ud");
    assert!(c.warnings.is_empty(), "{:#?}", c.warnings);
    let p = c.doc.unwrap().plan(&MetaData::default());
    let names: Vec<&str> = p.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, [DEFAULT_USER, "alice", "backup"]);
    assert_eq!(user(&p, DEFAULT_USER).ssh_authorized_keys.len(), 1);
    assert_eq!(user(&p, DEFAULT_USER).groups, ["sudo", "docker"]);
    let a = user(&p, "alice");
    assert_eq!(a.primary_group.as_deref(), Some("alice"));
    assert_eq!(a.ssh_authorized_keys.len(), 1);
    let b = user(&p, "backup");
    assert!(b.system && b.no_create_home && b.no_user_group);
    assert_eq!(
        (b.expiredate.as_deref(), b.inactive),
        (Some("2035-12-31"), Some(30))
    );
    assert_eq!(p.groups.len(), 2);
    assert_eq!(p.timezone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(p.mounts[0].dir, "/var/lib/docker");
    assert_eq!(p.fs_setup[0].label.as_deref(), Some("docker"));
    assert_eq!(p.disk_setup[0].layout, [100]);
    assert_eq!(
        p.power_state.as_ref().map(|s| s.mode.as_str()),
        Some("reboot")
    );
    assert!(p.final_message.is_some());
    assert_eq!(p.ca_certs, Some(CaCerts::default()));
}

#[test]
fn the_user_groups_example_merges_the_nameless_entry_into_the_default_user() {
    let c = check(
        include_str!("fixtures/examples/cloud-init-user-groups.yaml"),
        "ud",
    );
    let p = c.doc.clone().unwrap().plan(&MetaData::default());
    let names: Vec<&str> = p.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(
        names,
        [
            DEFAULT_USER,
            "foobar",
            "barfoo",
            "testuser",
            "cloudy",
            "fizzbuzz",
            "nosshlogins"
        ]
    );
    assert!(warning(&c, "users[6].snapuser").contains("snap"));
    assert_eq!(user(&p, "cloudy").inactive, Some(5));
    assert_eq!(user(&p, "barfoo").groups, ["users", "admin"]);
}

// ------------------------------------------------------------ stored plans

#[test]
fn a_plan_stored_by_an_older_version_still_loads() {
    let p = plan("hostname: a\n");
    let mut v: serde_json::Value = serde_json::to_value(&p).unwrap();
    let obj = v.as_object_mut().unwrap();
    for k in [
        "groups",
        "ssh_host_keys",
        "ssh_deletekeys",
        "ca_certs",
        "disk_setup",
        "fs_setup",
        "mounts",
        "power_state",
        "final_message",
    ] {
        assert!(obj.remove(k).is_some(), "{k}");
    }
    for u in obj["users"].as_array_mut().unwrap() {
        let u = u.as_object_mut().unwrap();
        for k in [
            "primary_group",
            "homedir",
            "system",
            "no_create_home",
            "no_user_group",
            "expiredate",
            "inactive",
        ] {
            u.remove(k);
        }
    }
    let old: Plan = serde_json::from_value(v).unwrap();
    assert_eq!(old.users[0].name, DEFAULT_USER);
    assert!(old.mounts.is_empty() && old.groups.is_empty());
    // And a valid plan round-trips.
    let again: Plan = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    assert_eq!(again, p);
    let _ = parse("#cloud-config\n", "ud").unwrap();
}
