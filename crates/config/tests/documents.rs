//! Whole documents as users write them: what validates, what each mistake
//! says (line and key), and the plan the device would apply.

use std::io::Write;

use ballast_config::{
    check, diff, parse, parse_meta_data, Cmd, ContainerSource, MetaData, Plan, Restart,
};
use base64::Engine as _;

const ED: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f alice@laptop";

const FULL_YAML: &str = r#"#cloud-config
# A machine as the cloud-init docs would set it up, plus Ballast's section.
hostname: web1
fqdn: web1.example.org
users:
  - default
  - name: alice
    gecos: Alice Liddell
    groups: docker, adm
    sudo: ALL=(ALL) NOPASSWD:ALL
    shell: /bin/sh
    ssh_authorized_keys:
      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f alice@laptop
  - name: ci
    uid: 2001
    sudo: false
    lock_passwd: true
ssh_authorized_keys:
  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f admin@desk
write_files:
  - path: /etc/motd
    content: |
      Welcome to web1
    permissions: '0644'
  - path: /etc/app/token
    content: c2VjcmV0
    encoding: b64
    owner: alice:alice
    permissions: 0600
    defer: true
bootcmd:
  - echo booted > /run/booted
runcmd:
  - [docker, run, -d, --name, web, nginx]
  - echo done
ntp:
  enabled: true
  servers: [ntp1.example.org, 192.0.2.10]
  pools: [pool.ntp.org]
timezone: Europe/Paris
ssh_pwauth: false
ballast:
  system:
    - name: metrics
      image: /state/images/metrics.tar
      command: [/bin/exporter, --port, "9100"]
      env: {LEVEL: info, MODE: fast}
      mounts:
        - /state/metrics:/data
        - {source: /proc, destination: /host/proc, options: [ro]}
      host_network: true
      restart: on-failure
      required: false
  engine:
    enabled: true
    registry_mirrors: [https://mirror.example.org]
    insecure_registries: [registry.lan:5000]
  update:
    channel: https://updates.example.org/stable
    trusted_keys:
      - ballast-ed25519 0101010101010101010101010101010101010101010101010101010101010101
  network:
    interfaces:
      - name: eth0
        addresses: [192.0.2.5/24]
        gateway: 192.0.2.1
        mtu: 1500
      - name: eth1
    dns:
      nameservers: [192.0.2.53]
      search: [example.org]
    routes:
      - {to: 10.0.0.0/8, via: 192.0.2.254}
  sysctl:
    net.ipv4.ip_forward: 1
    vm.swappiness: 10
  modules: [wireguard]
"#;

const FULL_TOML: &str = r#"
hostname = "web1"
fqdn = "web1.example.org"
ssh_pwauth = false
timezone = "Europe/Paris"
ssh_authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f admin@desk"]
bootcmd = ["echo booted > /run/booted"]
runcmd = [["docker", "run", "-d", "--name", "web", "nginx"], "echo done"]
users = [
  "default",
  { name = "alice", gecos = "Alice Liddell", groups = "docker, adm", sudo = "ALL=(ALL) NOPASSWD:ALL", shell = "/bin/sh", ssh_authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f alice@laptop"] },
  { name = "ci", uid = 2001, sudo = false, lock_passwd = true },
]

[[write_files]]
path = "/etc/motd"
content = "Welcome to web1\n"
permissions = "0644"

[[write_files]]
path = "/etc/app/token"
content = "c2VjcmV0"
encoding = "b64"
owner = "alice:alice"
permissions = 0o600
defer = true

[ntp]
enabled = true
servers = ["ntp1.example.org", "192.0.2.10"]
pools = ["pool.ntp.org"]

[[ballast.system]]
name = "metrics"
image = "/state/images/metrics.tar"
command = ["/bin/exporter", "--port", "9100"]
env = { MODE = "fast", LEVEL = "info" }
mounts = ["/state/metrics:/data", { source = "/proc", destination = "/host/proc", options = ["ro"] }]
host_network = true
restart = "on-failure"
required = false

[ballast.engine]
enabled = true
registry_mirrors = ["https://mirror.example.org"]
insecure_registries = ["registry.lan:5000"]

[ballast.update]
channel = "https://updates.example.org/stable"
trusted_keys = ["ballast-ed25519 0101010101010101010101010101010101010101010101010101010101010101"]

[ballast.network]
interfaces = [
  { name = "eth0", addresses = ["192.0.2.5/24"], gateway = "192.0.2.1", mtu = 1500 },
  { name = "eth1" },
]
dns = { nameservers = ["192.0.2.53"], search = ["example.org"] }
routes = [{ to = "10.0.0.0/8", via = "192.0.2.254" }]

[ballast.sysctl]
"net.ipv4.ip_forward" = 1
"vm.swappiness" = 10

[ballast]
modules = ["wireguard"]
"#;

fn meta() -> MetaData {
    parse_meta_data(
        "instance-id: iid-0001\nlocal-hostname: node7\n",
        "meta-data",
    )
    .unwrap()
}

fn plan_of(text: &str) -> Plan {
    parse(text, "user-data").unwrap().doc.plan(&meta())
}

/// The first error of an invalid document, as `LINE KEY: MESSAGE`.
fn first_error(text: &str) -> (Option<usize>, String, String) {
    let e = parse(text, "user-data").unwrap_err();
    (e.line, e.key, e.message)
}

#[test]
fn a_full_document_gives_a_full_plan() {
    let parsed = parse(FULL_YAML, "user-data").unwrap();
    assert_eq!(
        parsed.warnings,
        vec![],
        "a clean document warns about nothing"
    );
    let p = parsed.doc.plan(&meta());
    assert_eq!(p.instance_id.as_deref(), Some("iid-0001"));
    let h = p.hostname.as_ref().unwrap();
    assert_eq!(
        (h.hostname.as_str(), h.fqdn.as_deref()),
        ("web1", Some("web1.example.org"))
    );

    let names: Vec<&str> = p.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["ballast", "alice", "ci"]);
    let ballast = &p.users[0];
    assert_eq!(ballast.groups, ["sudo", "docker"]);
    assert_eq!(ballast.sudo, ["ALL=(ALL) NOPASSWD:ALL"]);
    assert!(ballast.ssh_authorized_keys[0].ends_with("admin@desk"));
    assert_eq!(p.users[1].groups, ["docker", "adm"]);
    assert_eq!(p.users[1].ssh_authorized_keys, [ED]);
    assert_eq!(p.users[2].uid, Some(2001));
    assert!(p.users[2].sudo.is_empty());
    assert!(p.users.iter().all(|u| u.lock_passwd));

    assert_eq!(p.files[0].content, b"Welcome to web1\n");
    assert_eq!(p.files[0].mode, 0o644);
    assert_eq!(
        (p.files[0].owner.as_str(), p.files[0].group.as_deref()),
        ("root", Some("root"))
    );
    assert_eq!(p.files[1].content, b"secret");
    assert_eq!(
        p.files[1].mode, 0o600,
        "YAML 0600 is octal, as in cloud-init"
    );
    assert!(p.files[1].defer);

    assert_eq!(p.bootcmd, [Cmd::Shell("echo booted > /run/booted".into())]);
    assert_eq!(
        p.runcmd[0],
        Cmd::Argv(vec![
            "docker".into(),
            "run".into(),
            "-d".into(),
            "--name".into(),
            "web".into(),
            "nginx".into()
        ])
    );
    assert_eq!(
        p.ntp.as_ref().unwrap().servers,
        ["ntp1.example.org", "192.0.2.10"]
    );
    assert_eq!(p.timezone.as_deref(), Some("Europe/Paris"));

    let c = &p.system[0];
    assert_eq!(
        c.source,
        ContainerSource::Image("/state/images/metrics.tar".into())
    );
    assert_eq!(c.env, ["LEVEL=info", "MODE=fast"]);
    assert_eq!(c.mounts[1].options, ["ro"]);
    assert_eq!(c.restart, Restart::OnFailure);
    assert!(c.host_network);
    let net = p.network.as_ref().unwrap();
    assert!(
        !net.interfaces[0].dhcp,
        "static addresses, no DHCP unless asked"
    );
    assert!(net.interfaces[1].dhcp, "no address: DHCP");
    assert_eq!(
        p.sysctl.get("net.ipv4.ip_forward").map(String::as_str),
        Some("1")
    );
    assert_eq!(p.update.as_ref().unwrap().trusted_keys, ["01".repeat(32)]);
    assert_eq!(p.modules, ["wireguard"]);

    // The device stores the plan as JSON and reads it back unchanged.
    let json = serde_json::to_string(&p).unwrap();
    assert!(json.contains(&base64::engine::general_purpose::STANDARD.encode("secret")));
    let back: Plan = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p);
}

#[test]
fn toml_gives_the_same_plan_as_yaml() {
    let toml = parse(FULL_TOML, "config.toml").unwrap();
    assert_eq!(toml.warnings, vec![]);
    assert_eq!(toml.doc.plan(&meta()), plan_of(FULL_YAML));
}

#[test]
fn toml_errors_have_lines() {
    let e = parse(
        "hostname = \"ok\"\n\n[ntp]\nservers = [\"bad host!\"]\n",
        "c.toml",
    )
    .unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(4), "ntp.servers[0]"));
    let e = parse("hostname = \"a\"\nthis is not toml\n", "c.toml").unwrap_err();
    assert_eq!(e.line, Some(2));
    assert!(e.message.contains("TOML syntax error"), "{e}");
}

#[test]
fn each_mistake_names_line_and_key() {
    let cases: &[(&str, usize, &str, &str)] = &[
        ("hostname: -web\n", 2, "hostname", "not a valid host name"),
        ("fqdn: web1\n", 2, "fqdn", "not a fully qualified name"),
        ("preserve_hostname: maybe\n", 2, "preserve_hostname", "not a boolean"),
        ("users:\n  - name: Alice\n", 3, "users[0].name", "not a valid user name"),
        ("users:\n  - name: a\n    ssh_authorized_keys:\n      - ssh-rsa AAAA\n", 5, "users[0].ssh_authorized_keys[0]", "does not hold a `ssh-rsa` key"),
        ("users:\n  - name: a\n    sudo: 3\n", 4, "users[0].sudo", "sudoers rule"),
        ("users:\n  - name: a\n    uid: -1\n", 4, "users[0].uid", "not a user id"),
        ("ssh_authorized_keys:\n  - hello\n", 3, "ssh_authorized_keys[0]", "no OpenSSH key type"),
        ("write_files:\n  - content: x\n", 3, "write_files[0].path", "missing"),
        ("write_files:\n  - path: etc/x\n", 3, "write_files[0].path", "absolute"),
        ("write_files:\n  - path: /x\n    content: '%%%'\n    encoding: b64\n", 4, "write_files[0].content", "base64"),
        ("write_files:\n  - path: /x\n    encoding: rot13\n    content: a\n", 5, "write_files[0].content", "unknown encoding"),
        ("write_files:\n  - path: /x\n    permissions: 'rw-r--r--'\n", 4, "write_files[0].permissions", "file mode"),
        ("write_files:\n  - path: /x\n    owner: 'a:b:c'\n", 4, "write_files[0].owner", "user:group"),
        ("runcmd:\n  - ls\n  - {a: b}\n", 4, "runcmd[1]", "command string"),
        ("runcmd:\n  - []\n", 3, "runcmd[0]", "empty argument list"),
        ("bootcmd: ls\n", 2, "bootcmd", "list of commands"),
        ("ntp:\n  servers: [ok.example.org, 'bad host']\n", 3, "ntp.servers[1]", "neither a host name"),
        ("timezone: Paris\n", 2, "timezone", "not a time zone name"),
        ("ballast:\n  system:\n    - name: Web\n      image: /a.tar\n", 4, "ballast.system[0].name", "container name"),
        ("ballast:\n  system:\n    - name: web\n", 4, "ballast.system[0]", "neither `image`"),
        ("ballast:\n  system:\n    - name: web\n      image: /a.tar\n      bundle: /b\n", 4, "ballast.system[0]", "both `image` and `bundle`"),
        ("ballast:\n  system:\n    - name: web\n      image: /a\n      restart: sometimes\n", 6, "ballast.system[0].restart", "always, on-failure, never"),
        ("ballast:\n  system:\n    - name: web\n      image: /a\n      env: [NOEQUALS]\n", 6, "ballast.system[0].env[0]", "NAME=value"),
        ("ballast:\n  system:\n    - name: web\n      image: /a\n      mounts: ['/a']\n", 6, "ballast.system[0].mounts[0]", "SOURCE:DESTINATION"),
        ("ballast:\n  update:\n    trusted_keys: ['ssh-ed25519 abc']\n", 4, "ballast.update.trusted_keys[0]", "ballast-ed25519"),
        ("ballast:\n  update:\n    channel: ftp://x\n", 4, "ballast.update.channel", "http"),
        ("ballast:\n  network:\n    interfaces:\n      - name: eth0\n        addresses: [10.0.0.1]\n", 6, "ballast.network.interfaces[0].addresses[0]", "prefix length"),
        ("ballast:\n  network:\n    interfaces:\n      - name: eth0\n        mtu: 10\n", 6, "ballast.network.interfaces[0].mtu", "MTU"),
        ("ballast:\n  network:\n    routes:\n      - to: default\n", 5, "ballast.network.routes[0]", "needs `to`"),
        ("ballast:\n  sysctl:\n    swappiness: 1\n", 4, "ballast.sysctl.\"swappiness\"", "sysctl name"),
        ("ballast:\n  modules: ['bad/mod']\n", 3, "ballast.modules[0]", "module name"),
        ("hostname: [a]\n", 2, "hostname", "expected a string, found a list"),
        ("hostname: yes\n", 2, "hostname", "quote the value"),
        ("users: [\n", 3, "", "YAML syntax error"),
        ("a: 1\na: 2\n", 3, "", "duplicated key"),
    ];
    for (body, line, key, msg) in cases {
        let text = format!("#cloud-config\n{body}");
        let (l, k, m) = first_error(&text);
        assert_eq!((l, k.as_str()), (Some(*line), *key), "for {body:?}: {m}");
        assert!(m.contains(msg), "for {body:?}: {m:?} lacks {msg:?}");
    }
}

#[test]
fn errors_display_as_source_line_key_message_and_all_are_listed() {
    let c = check(
        "#cloud-config\nhostname: -x\ntimezone: Nowhere\n",
        "/boot/user-data",
    );
    assert!(c.doc.is_none());
    let lines: Vec<String> = c.errors.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0].starts_with("/boot/user-data:2: hostname: `-x` is not a valid host name ("),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("/boot/user-data:3: timezone: "),
        "{}",
        lines[1]
    );
}

#[test]
fn unknown_and_ignored_keys_are_warnings_with_lines() {
    let text = "#cloud-config\nhostnme: a\npackages: [vim]\nssh_pwauth: true\nusers:\n  - name: a\n    lock_passwd: false\n    colour: red\nballast:\n  sytem: []\n";
    let p = parse(text, "ud").unwrap();
    let w: Vec<(Option<usize>, &str)> = p
        .warnings
        .iter()
        .map(|w| (w.line, w.key.as_str()))
        .collect();
    assert_eq!(
        w,
        [
            (Some(2), "hostnme"),
            (Some(3), "packages"),
            (Some(4), "ssh_pwauth"),
            (Some(7), "users[0].lock_passwd"),
            (Some(8), "users[0].colour"),
            (Some(10), "ballast.sytem"),
        ]
    );
    assert!(p.warnings[0].message.contains("did you mean `hostname`?"));
    assert!(p.warnings[1].message.contains("immutable"));
    assert!(p.warnings[2]
        .message
        .contains("password login is never enabled"));
    assert!(p.warnings[5].message.contains("did you mean `system`?"));
}

#[test]
fn encodings_decode_now() {
    let gz = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let payload = b"line one\nline two\n";
    for (enc, content) in [
        ("b64", b64(payload)),
        ("base64", b64(payload)),
        ("gz+b64", b64(&gz(payload))),
        ("gzip+base64", b64(&gz(payload))),
        ("GZ+B64", b64(&gz(payload))),
        (
            "text/plain",
            String::from_utf8(payload.to_vec())
                .unwrap()
                .replace('\n', "\\n"),
        ),
    ] {
        let text = format!("#cloud-config\nwrite_files:\n  - path: /etc/f\n    encoding: {enc}\n    content: \"{content}\"\n");
        let p = plan_of(&text);
        assert_eq!(p.files[0].content, payload, "encoding {enc}");
    }
    // !!binary gzip, as cloud-init documents it.
    let text = format!(
        "#cloud-config\nwrite_files:\n  - path: /etc/f\n    encoding: gzip\n    content: !!binary |\n      {}\n",
        b64(&gz(payload))
    );
    assert_eq!(plan_of(&text).files[0].content, payload);
    // Corrupt gzip names the key.
    let text = format!(
        "#cloud-config\nwrite_files:\n  - path: /etc/f\n    encoding: gz+b64\n    content: {}\n",
        b64(b"not gzip")
    );
    let (line, key, msg) = first_error(&text);
    assert_eq!((line, key.as_str()), (Some(5), "write_files[0].content"));
    assert!(msg.contains("gzip"), "{msg}");
}

#[test]
fn limits_hold() {
    let big = format!(
        "#cloud-config\nruncmd:\n{}",
        "  - echo aaaaaaaaaaaaaaaaaaaaaaaaaa\n".repeat(40_000)
    );
    let e = parse(&big, "ud").unwrap_err();
    assert!(e.message.contains("1024 KiB"), "{e}");
    // 17 MiB of zeros gzip down to ~17 KiB: refused when decoded.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&vec![0u8; 17 << 20]).unwrap();
    let bomb = base64::engine::general_purpose::STANDARD.encode(enc.finish().unwrap());
    let text = format!(
        "#cloud-config\nwrite_files:\n  - path: /f\n    encoding: gz+b64\n    content: {bomb}\n"
    );
    let (_, key, msg) = first_error(&text);
    assert_eq!(key, "write_files[0].content");
    assert!(msg.contains("16 MiB"), "{msg}");
    // Deep nesting is refused, not a stack overflow.
    let deep = format!(
        "#cloud-config\nruncmd: {}{}\n",
        "[".repeat(200),
        "]".repeat(200)
    );
    assert!(parse(&deep, "ud").is_err());
    let deep = format!("#cloud-config\nruncmd:\n{}x\n", "- ".repeat(5000));
    assert!(parse(&deep, "ud").is_err());
}

#[test]
fn format_detection() {
    let e = parse("hostname: web1\nusers: [default]\n", "ud").unwrap_err();
    assert_eq!(e.line, Some(1));
    assert!(
        e.message.contains("add `#cloud-config` as the first line"),
        "{e}"
    );
    for empty in [
        "",
        "#cloud-config\n",
        "#cloud-config",
        "  \n",
        "\u{feff}#cloud-config\n",
    ] {
        let p = parse(empty, "ud").unwrap();
        assert_eq!(
            p.doc.plan(&MetaData::default()).users[0].name,
            "ballast",
            "{empty:?}"
        );
    }
    let e = parse("#!/bin/sh\necho hi\n", "ud").unwrap_err();
    assert!(e.message.contains("runcmd"), "{e}");
    let e = parse("#cloud-config\n- a\n- b\n", "ud").unwrap_err();
    assert!(e.message.contains("expected a mapping"), "{e}");
}

#[test]
fn hostname_precedence_follows_cloud_init() {
    let host = |doc: &str, md: &str| {
        let meta = parse_meta_data(md, "md").unwrap();
        parse(&format!("#cloud-config\n{doc}"), "ud")
            .unwrap()
            .doc
            .plan(&meta)
            .hostname
            .map(|h| (h.hostname, h.fqdn))
    };
    let s = |a: &str, b: Option<&str>| Some((a.to_string(), b.map(String::from)));
    assert_eq!(
        host("fqdn: a.example.org\n", ""),
        s("a", Some("a.example.org"))
    );
    assert_eq!(
        host("fqdn: a.example.org\nhostname: b\n", ""),
        s("b", Some("a.example.org"))
    );
    assert_eq!(
        host("hostname: c.example.org\n", ""),
        s("c", Some("c.example.org"))
    );
    assert_eq!(
        host("hostname: d\n", "local-hostname: d.lan\n"),
        s("d", Some("d.lan"))
    );
    assert_eq!(host("", "local-hostname: e.lan\n"), s("e", Some("e.lan")));
    assert_eq!(host("", "local-hostname: f\n"), s("f", None));
    assert_eq!(host("", ""), None);
    assert_eq!(host("hostname: g\npreserve_hostname: true\n", ""), None);
}

#[test]
fn meta_data_forms() {
    let m = parse_meta_data("instance-id: iid-abc\nlocal-hostname: box\n", "md").unwrap();
    assert_eq!(m.instance_id.as_deref(), Some("iid-abc"));
    let e = parse_meta_data("local-hostname: -bad\n", "md").unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (Some(1), "local-hostname"));
    assert!(parse_meta_data("{{{", "md").is_err());
}

#[test]
fn users_without_default_get_no_top_level_keys_and_are_warned() {
    let text = format!("#cloud-config\nusers:\n  - name: a\nssh_authorized_keys:\n  - {ED}\n");
    let p = parse(&text, "ud").unwrap();
    assert_eq!(p.warnings.len(), 1);
    assert_eq!(p.warnings[0].line, Some(4));
    assert!(p.warnings[0].message.contains("add `- default`"));
    let plan = p.doc.plan(&MetaData::default());
    assert_eq!(plan.users.len(), 1);
    assert!(plan.users[0].ssh_authorized_keys.is_empty());
}

#[test]
fn decimal_permissions_are_warned() {
    let p = parse(
        "#cloud-config\nwrite_files:\n  - path: /etc/x\n    permissions: 644\n",
        "ud",
    )
    .unwrap();
    assert_eq!(p.warnings[0].line, Some(4));
    assert!(p.warnings[0].message.contains("'0644'"));
}

#[test]
fn diff_says_what_changes() {
    let old = plan_of("#cloud-config\nhostname: a\nusers: [default]\nwrite_files:\n  - {path: /etc/x, content: old}\nballast:\n  system:\n    - {name: foo, image: /f.tar}\n  sysctl: {vm.swappiness: 10}\n");
    let new = plan_of("#cloud-config\nhostname: b\nusers:\n  - default\n  - name: alice\nwrite_files:\n  - {path: /etc/x, content: '0123456789ab', permissions: '0600'}\nruncmd: [echo hi]\ntimezone: UTC\nballast:\n  sysctl: {vm.swappiness: 1}\n");
    assert_eq!(
        diff(&old, &new),
        [
            "~ hostname: a -> b",
            "+ user alice",
            "~ file /etc/x (0600, 12 bytes): content, mode",
            "+ runcmd: sh -c \"echo hi\"",
            "~ timezone: (none) -> UTC",
            "- system container foo",
            "~ sysctl vm.swappiness: 10 -> 1",
        ]
    );
    assert_eq!(diff(&new, &new), Vec::<String>::new());
    let added = diff(
        &Plan::default(),
        &plan_of("#cloud-config\nwrite_files:\n  - {path: /etc/x, content: '0123456789ab'}\n"),
    );
    assert!(
        added.contains(&"+ file /etc/x (0644, 12 bytes)".to_string()),
        "{added:?}"
    );
}
