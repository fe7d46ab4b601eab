//! `ballast.update`'s agent settings and `ballast.health`: what validates, the
//! typed settings it gives, and each mistake with its line and key.

use ballast_config::{check, parse, HealthCheck, RebootLock, Window};

const GOOD: &str = r#"#cloud-config
ballast:
  update:
    channel: https://updates.example/stable
    auto: true
    check_interval: 1h
    jitter: 5m
    window: { days: [mon, wed], start: "02:00", length: 2h, timezone: Europe/Berlin }
    reboot_lock: { etcd: { endpoints: ["http://10.0.0.5:2379"], slots: 2 } }
  health:
    - { http: "http://127.0.0.1:8080/healthz" }
    - { tcp: "127.0.0.1:5432" }
    - { container: web }
"#;

#[test]
fn the_issue_example_gives_typed_settings() {
    let doc = parse(GOOD, "user-data").unwrap().doc;
    let u = doc.ballast.update.unwrap();
    assert!(u.auto);
    assert_eq!((u.check_interval, u.jitter), (3600, 300));
    assert_eq!(
        u.window,
        Some(Window {
            days: vec![0, 2],
            start_minute: 120,
            length: 7200,
            timezone: "Europe/Berlin".into()
        })
    );
    assert_eq!(
        u.reboot_lock,
        Some(RebootLock::Etcd {
            endpoints: vec!["http://10.0.0.5:2379".into()],
            slots: 2,
            prefix: "/ballast/reboot-lock/".into()
        })
    );
    assert_eq!(
        doc.ballast.health,
        vec![
            HealthCheck::Http {
                url: "http://127.0.0.1:8080/healthz".into()
            },
            HealthCheck::Tcp {
                address: "127.0.0.1:5432".into()
            },
            HealthCheck::Container { name: "web".into() },
        ]
    );
}

#[test]
fn fleetlock_as_a_url_or_a_mapping() {
    let text = "#cloud-config\nballast:\n  update:\n    channel: http://c/x\n    reboot_lock: { fleetlock: \"http://lock:8080\" }\n";
    let u = parse(text, "u").unwrap().doc.ballast.update.unwrap();
    assert_eq!(
        u.reboot_lock,
        Some(RebootLock::Fleetlock {
            url: "http://lock:8080".into(),
            group: "default".into()
        })
    );
    assert!(!u.auto);
    let text = "#cloud-config\nballast:\n  update:\n    reboot_lock:\n      fleetlock: { url: \"http://lock:8080\", group: workers }\n";
    let u = parse(text, "u").unwrap().doc.ballast.update.unwrap();
    assert_eq!(
        u.reboot_lock,
        Some(RebootLock::Fleetlock {
            url: "http://lock:8080".into(),
            group: "workers".into()
        })
    );
}

/// Each mistake: the line, the key and the words of the message.
#[test]
fn mistakes_name_their_line_and_key() {
    let cases: &[(&str, usize, &str, &str)] = &[
        (
            "    window: { start: \"25:00\", length: 2h }\n",
            5,
            "ballast.update.window.start",
            "hour `25`",
        ),
        (
            "    window: { start: \"02:00\", length: 2x }\n",
            5,
            "ballast.update.window.length",
            "unknown unit `x`",
        ),
        (
            "    window:\n      days: [mon, funday]\n      start: \"02:00\"\n      length: 1h\n",
            6,
            "ballast.update.window.days[1]",
            "`funday` is not a day",
        ),
        (
            "    window: { start: \"02:00\" }\n",
            5,
            "ballast.update.window.length",
            "missing",
        ),
        (
            "    window: { start: \"02:00\", length: 1h, timezone: ../etc/passwd }\n",
            5,
            "ballast.update.window.timezone",
            "is a path",
        ),
        (
            "    check_interval: 0\n",
            5,
            "ballast.update.check_interval",
            "at least 1s",
        ),
        (
            "    reboot_lock: { etcd: { endpoints: [\"http://e:2379\"], slots: 0 } }\n",
            5,
            "ballast.update.reboot_lock.etcd.slots",
            "1-1000",
        ),
        (
            "    reboot_lock: { etcd: { endpoints: [\"e:2379\"] } }\n",
            5,
            "ballast.update.reboot_lock.etcd.endpoints[0]",
            "not an http",
        ),
        (
            "    reboot_lock: { zookeeper: x }\n",
            5,
            "ballast.update.reboot_lock",
            "give `etcd",
        ),
    ];
    for (tail, line, key, words) in cases {
        let text = format!("#cloud-config\nballast:\n  update:\n    channel: http://c/x\n{tail}");
        let c = check(&text, "user-data");
        let e = c
            .errors
            .iter()
            .find(|e| e.key == *key)
            .unwrap_or_else(|| panic!("{tail}: no error at {key}: {:?}", c.errors));
        assert_eq!(e.line, Some(*line), "{tail}: {e}");
        assert!(e.message.contains(words), "{tail}: {e}");
        assert!(c.doc.is_none(), "{tail}");
    }
}

#[test]
fn health_check_mistakes() {
    let text = "#cloud-config\nballast:\n  health:\n    - { http: \"ftp://x\" }\n    - { tcp: \"nohost\" }\n    - { http: \"http://a\", tcp: \"a:1\" }\n";
    let c = check(text, "u");
    let keys: Vec<(Option<usize>, &str)> =
        c.errors.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert!(
        keys.contains(&(Some(4), "ballast.health[0].http")),
        "{keys:?}"
    );
    assert!(
        keys.contains(&(Some(5), "ballast.health[1].tcp")),
        "{keys:?}"
    );
    assert!(keys.contains(&(Some(6), "ballast.health[2]")), "{keys:?}");
}

#[test]
fn auto_without_a_channel_is_an_error() {
    let c = check("#cloud-config\nballast:\n  update:\n    auto: true\n", "u");
    assert!(
        c.errors
            .iter()
            .any(|e| e.key == "ballast.update.auto" && e.message.contains("needs a `channel`")),
        "{:?}",
        c.errors
    );
}

#[test]
fn old_applied_plans_still_read() {
    // applied.json written before the agent settings existed.
    let u: ballast_config::Update =
        serde_json::from_str(r#"{"channel":"http://c/x","trusted_keys":[]}"#).unwrap();
    assert_eq!(u.check_interval, 3600);
    assert!(u.window.is_none() && !u.auto);
}
