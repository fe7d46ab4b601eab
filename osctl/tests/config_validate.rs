//! `osctl config validate` as a user runs it: the real binary on files.

use std::path::Path;
use std::process::{Command, Output};

const GOOD: &str = "#cloud-config
hostname: web1
users:
  - default
  - name: alice
    ssh_authorized_keys:
      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f alice@laptop
write_files:
  - path: /etc/motd
    content: aGVsbG8K
    encoding: b64
runcmd:
  - echo hi
packages: [vim]
";

fn osctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_osctl"))
        .args(args)
        .output()
        .expect("osctl runs")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn a_good_file_is_valid_with_its_warnings_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "user-data", GOOD);
    let out = osctl(&["config", "validate", &f]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("valid"), "{stdout}");
    assert!(stdout.contains("web1"), "{stdout}");
    assert!(
        stdout.contains("ballast (0 keys), alice (1 keys)"),
        "{stdout}"
    );
    assert!(stdout.contains("/etc/motd (0644, 6 bytes)"), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "warning: {f}:14: packages: Ballast is an immutable OS"
        )),
        "{stderr}"
    );
}

#[test]
fn a_bad_file_names_file_line_and_key_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = GOOD
        .replace("name: alice", "name: Alice")
        .replace("hostname: web1", "hostname: -web1");
    let f = write(dir.path(), "user-data", &bad);
    let out = osctl(&["config", "validate", &f]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: {f}:2: hostname: `-web1` is not a valid host name"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "error: {f}:5: users[1].name: `Alice` is not a valid user name"
        )),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn json_output_carries_errors_warnings_and_plan() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "user-data", GOOD);
    let md = write(
        dir.path(),
        "meta-data",
        "instance-id: iid-7\nlocal-hostname: web1.lan\n",
    );
    let out = osctl(&["config", "validate", &good, "--meta-data", &md, "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["errors"].as_array().unwrap().len(), 0);
    assert_eq!(v["warnings"][0]["key"], "packages");
    assert_eq!(v["warnings"][0]["line"], 14);
    assert_eq!(v["plan"]["instance_id"], "iid-7");
    assert_eq!(v["plan"]["hostname"]["fqdn"], "web1.lan");
    assert_eq!(v["plan"]["users"][1]["name"], "alice");

    let bad = write(dir.path(), "bad", "#cloud-config\ntimezone: Mars\n");
    let out = osctl(&["config", "validate", &bad, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"][0]["source"], bad.as_str());
    assert_eq!(v["errors"][0]["line"], 2);
    assert_eq!(v["errors"][0]["key"], "timezone");
    assert!(v["plan"].is_null());
}

#[test]
fn yaml_without_header_says_to_add_it() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "user-data", "hostname: web1\n");
    let out = osctl(&["config", "validate", &f]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{f}:1: ")), "{stderr}");
    assert!(
        stderr.contains("add `#cloud-config` as the first line"),
        "{stderr}"
    );
}

#[test]
fn unreadable_files_and_usage_errors_exit_2() {
    let out = osctl(&["config", "validate", "/nonexistent/user-data"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/user-data"));
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "user-data", GOOD);
    let out = osctl(&[
        "config",
        "validate",
        &good,
        "--meta-data",
        "/nonexistent/meta-data",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = osctl(&["config", "validate"]);
    assert_eq!(out.status.code(), Some(2));
}

const NETWORK_V2: &str = "\
network:
  version: 2
  ethernets:
    lan:
      match:
        macaddress: '52:54:00:12:34:56'
      set-name: lan0
      addresses: [10.0.0.5/24]
";

#[test]
fn a_network_config_alone_is_checked_by_its_own_rules() {
    let dir = tempfile::tempdir().unwrap();
    let nc = write(dir.path(), "network-config", NETWORK_V2);
    let out = osctl(&["config", "validate", "--network-config", &nc]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(!stderr.contains("#cloud-config"), "{stderr}");
    assert!(
        stdout.contains("lan (mac 52:54:00:12:34:56, renamed lan0): 10.0.0.5/24"),
        "{stdout}"
    );

    let bad = write(
        dir.path(),
        "bad-network-config",
        "version: 2\nethernets:\n  eth0:\n    mtu: 10\n    wakeonlan: true\n",
    );
    let out = osctl(&["config", "validate", "--network-config", &bad]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("error: {bad}:4: ethernets.eth0.mtu: not an MTU")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "warning: {bad}:5: ethernets.eth0.wakeonlan: unknown key"
        )),
        "{stderr}"
    );
}

#[test]
fn all_three_files_together_and_errors_name_their_own_file() {
    let dir = tempfile::tempdir().unwrap();
    let ud = write(dir.path(), "user-data", GOOD);
    let nc = write(dir.path(), "network-config", NETWORK_V2);
    let md = write(
        dir.path(),
        "meta-data",
        "instance-id: iid-1\nlocal-hostname: -x\n",
    );
    let out = osctl(&[
        "config",
        "validate",
        &ud,
        "--network-config",
        &nc,
        "--meta-data",
        &md,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: {md}:2: local-hostname: `-x` is not a valid host name"
        )),
        "{stderr}"
    );
    let md = write(dir.path(), "meta-data", "instance-id: iid-1\n");
    let out = osctl(&[
        "config",
        "validate",
        &ud,
        "--network-config",
        &nc,
        "--meta-data",
        &md,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["plan"]["network"]["interfaces"][0]["set_name"], "lan0");
    assert_eq!(v["plan"]["instance_id"], "iid-1");
}

#[test]
fn a_network_config_or_meta_data_given_as_user_data_names_the_right_flag() {
    let dir = tempfile::tempdir().unwrap();
    let nc = write(dir.path(), "network-config", NETWORK_V2);
    let out = osctl(&["config", "validate", &nc]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("this is a NoCloud network-config"),
        "{stderr}"
    );
    assert!(stderr.contains("--network-config FILE"), "{stderr}");
    let md = write(
        dir.path(),
        "meta-data",
        "instance-id: iid-1\nlocal-hostname: web1\n",
    );
    let out = osctl(&["config", "validate", &md]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("this is a NoCloud meta-data"), "{stderr}");
    assert!(stderr.contains("--meta-data FILE"), "{stderr}");
}
