//! Story: a user on a Ballast machine runs `osctl` (the real binary) against
//! sysd's control socket. Here sysd is a fake server thread in a temp dir that
//! speaks the real protocol (crate ballast-control), so the tests see exactly
//! what the user sees: stdout, stderr and the exit code.

use std::io::BufReader;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread::JoinHandle;

use ballast_control::{
    read_message, write_message, Request, Response, Service, ServiceState, Status,
};
use ballast_slot::{Health, SlotId, SlotStatus};

/// A fake sysd: answers each connection with the next list of responses and
/// returns the requests it got.
struct FakeSysd {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    thread: JoinHandle<Vec<Request>>,
}

impl FakeSysd {
    fn start(answers: Vec<Vec<Response>>) -> FakeSysd {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("sysd.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let path = socket.clone();
        let thread = std::thread::spawn(move || {
            let mut got = Vec::new();
            for responses in answers {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let req: Request = read_message(&mut reader, &path).unwrap().unwrap();
                got.push(req);
                let mut w = stream;
                for r in responses {
                    if write_message(&mut w, &r, &path).is_err() {
                        break; // the client hung up (e.g. `| head`)
                    }
                }
            }
            got
        });
        FakeSysd {
            _dir: dir,
            socket,
            thread,
        }
    }

    fn requests(self) -> Vec<Request> {
        self.thread.join().unwrap()
    }
}

fn osctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_osctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn status() -> Status {
    Status {
        version: "1.4.0".into(),
        slot: Some(SlotId::B),
        live: false,
        ready: true,
        slots: vec![
            SlotStatus {
                slot: SlotId::A,
                version: Some("1.3.2".into()),
                health: Health::Good,
                is_default: false,
            },
            SlotStatus {
                slot: SlotId::B,
                version: Some("1.4.0".into()),
                health: Health::Trying {
                    tries_left: 2,
                    tries_done: 1,
                },
                is_default: true,
            },
        ],
        services: vec![
            Service {
                name: "network".into(),
                state: ServiceState::Healthy,
                pid: Some(231),
                restarts: 0,
                required: true,
                since_ms: 125_000,
                last_exit: None,
                last_error: None,
            },
            Service {
                name: "ssh".into(),
                state: ServiceState::Backoff,
                pid: None,
                restarts: 3,
                required: false,
                since_ms: 1_500,
                last_exit: Some("exited with status 255".into()),
                last_error: Some("sshd: no hostkeys available -- exiting.".into()),
            },
        ],
        errors: vec![
            "/usr/lib/ballast/system/ntp/manifest.toml:3: after: unknown service \"netwrok\" (known: network, ssh)".into(),
        ],
        last_rollback: Some(ballast_control::Rollback {
            from: "1.3.0".into(),
            to: "1.2.0".into(),
            reason: "health check did not pass within 300 s: required ssh backoff".into(),
            automatic: true,
            at: 0,
        }),
        pending_update: None,
        agent: None,
    }
}

#[test]
fn status_prints_version_slots_services_and_errors_as_a_table() {
    let sysd = FakeSysd::start(vec![vec![Response::Status(status())]]);
    let out = osctl(&sysd.socket, &["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "\
version  1.4.0
slot     b (ready)

slots
  SLOT        VERSION  HEALTH                   DEFAULT
  a           1.3.2    good                     no
  b (booted)  1.4.0    trying (2 left, 1 done)  yes

services
  NAME     STATE    PID  RESTARTS  REQUIRED  FOR    LAST EXIT
  network  healthy  231  0         yes       2 min  -
  ssh      backoff  -    3         no        1.5 s  exited with status 255

last errors (osctl logs NAME for more)
  ssh: sshd: no hostkeys available -- exiting.

last rollback  from 1.3.0 to 1.2.0 (automatic): health check did not pass within 300 s: required ssh backoff

errors
  /usr/lib/ballast/system/ntp/manifest.toml:3: after: unknown service \"netwrok\" (known: network, ssh)
"
    );
    assert_eq!(sysd.requests(), [Request::Status]);
}

#[test]
fn status_json_is_the_status_object() {
    let sysd = FakeSysd::start(vec![vec![Response::Status(status())]]);
    let out = osctl(&sysd.socket, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let parsed: Status = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(parsed, status());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["slot"], "b");
    assert_eq!(v["services"][1]["state"], "backoff");
    assert_eq!(
        v["services"][1]["last_error"],
        "sshd: no hostkeys available -- exiting."
    );
    assert_eq!(v["slots"][1]["health"]["tries_left"], 2);
}

#[test]
fn logs_print_the_lines_sysd_streams() {
    let lines: Vec<Response> = (1..=3)
        .map(|i| Response::LogLine(format!("sshd[12]: line {i}")))
        .collect();
    let sysd = FakeSysd::start(vec![lines]);
    let out = osctl(&sysd.socket, &["logs", "ssh", "-n", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "sshd[12]: line 1\nsshd[12]: line 2\nsshd[12]: line 3\n"
    );
    assert_eq!(
        sysd.requests(),
        [Request::Logs {
            service: "ssh".into(),
            lines: 3,
            follow: false
        }]
    );
}

#[test]
fn logs_follow_asks_to_follow_and_default_to_fifty_lines() {
    let sysd = FakeSysd::start(vec![vec![Response::LogLine("a".into())]]);
    let out = osctl(&sysd.socket, &["logs", "-f", "network"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        sysd.requests(),
        [Request::Logs {
            service: "network".into(),
            lines: 50,
            follow: true
        }]
    );
}

#[test]
fn logs_of_an_unknown_service_fail_with_sysds_reason() {
    let sysd = FakeSysd::start(vec![vec![Response::Error {
        message: "no service \"sshd\" (known: network, ssh)".into(),
    }]]);
    let out = osctl(&sysd.socket, &["logs", "sshd"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "osctl: no service \"sshd\" (known: network, ssh)\n"
    );
    assert_eq!(stdout(&out), "");
}

#[test]
fn service_verbs_send_their_request_and_print_sysds_answer() {
    let ok = |m: &str| {
        vec![Response::Ok {
            message: m.to_string(),
        }]
    };
    let sysd = FakeSysd::start(vec![
        ok("ssh restarted"),
        ok("ssh stopped"),
        ok("ssh started"),
        vec![Response::Error {
            message: "no service \"nope\" (known: network, ssh)".into(),
        }],
    ]);
    for (verb, want) in [
        ("restart", "ssh restarted\n"),
        ("stop", "ssh stopped\n"),
        ("start", "ssh started\n"),
    ] {
        let out = osctl(&sysd.socket, &["service", verb, "ssh"]);
        assert_eq!(out.status.code(), Some(0), "{verb}: {}", stderr(&out));
        assert_eq!(stdout(&out), want);
    }
    let out = osctl(&sysd.socket, &["service", "start", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no service \"nope\""),
        "{}",
        stderr(&out)
    );
    let ssh = || "ssh".to_string();
    assert_eq!(
        sysd.requests(),
        [
            Request::Restart { service: ssh() },
            Request::Stop { service: ssh() },
            Request::Start { service: ssh() },
            Request::Start {
                service: "nope".into()
            },
        ]
    );
}

#[test]
fn reboot_and_poweroff_ask_sysd() {
    let sysd = FakeSysd::start(vec![
        vec![Response::Ok {
            message: "rebooting".into(),
        }],
        vec![Response::Ok {
            message: "powering off".into(),
        }],
    ]);
    let out = osctl(&sysd.socket, &["reboot"]);
    assert_eq!(
        (out.status.code(), stdout(&out)),
        (Some(0), "rebooting\n".into())
    );
    let out = osctl(&sysd.socket, &["poweroff"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(sysd.requests(), [Request::Reboot, Request::Poweroff]);
}

#[test]
fn no_socket_says_this_may_not_be_a_ballast_machine() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sysd.sock");
    let out = osctl(&socket, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "osctl: cannot reach sysd at {}: no socket there: is this a Ballast machine, and has sysd started? (ENOENT)\n",
            socket.display()
        )
    );
}

#[test]
fn a_socket_nobody_listens_on_is_connection_refused() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sysd.sock");
    drop(UnixListener::bind(&socket).unwrap());
    let out = osctl(&socket, &["reboot"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "osctl: cannot reach sysd at {}: is this a Ballast machine?",
            socket.display()
        )) && err.ends_with("(ECONNREFUSED)\n"),
        "{err}"
    );
}

#[test]
fn a_sysd_that_hangs_up_or_answers_nonsense_is_a_failure() {
    let sysd = FakeSysd::start(vec![vec![], vec![Response::LogLine("?".into())]]);
    let out = osctl(&sysd.socket, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("closed the connection before answering"),
        "{}",
        stderr(&out)
    );
    let out = osctl(&sysd.socket, &["service", "stop", "ssh"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "osctl: sysd answered a log line to stop: osctl and sysd are from different versions?\n"
    );
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sysd.sock");
    for args in [
        &["frobnicate"][..],
        &["logs"],
        &["service", "restart"],
        &["logs", "x", "-n", "many"],
    ] {
        let out = osctl(&socket, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).starts_with("error: "),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

/// Every command path of osctl, from its own clap definition.
fn command_paths() -> Vec<Vec<String>> {
    let paths = ballast_osctl::docs::command_paths(&ballast_osctl::command());
    // The list is the real tree, not an empty walk.
    assert!(paths.contains(&vec!["service".to_string(), "restart".to_string()]));
    assert!(paths.contains(&vec!["config".to_string(), "validate".to_string()]));
    paths
}

#[test]
fn completions_for_bash_zsh_and_fish_know_every_command() {
    let nowhere = Path::new("/nonexistent/sysd.sock");
    for shell in ["bash", "zsh", "fish"] {
        let out = osctl(nowhere, &["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        for path in command_paths() {
            let word = path.last().unwrap();
            assert!(
                script.contains(word.as_str()),
                "{shell} completion lacks `{}`",
                path.join(" ")
            );
        }
        // Options of a subcommand are completed too.
        assert!(script.contains("allow-downgrade"), "{shell}");
    }
    let out = osctl(nowhere, &["completions", "tcsh"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn man_writes_a_page_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = osctl(
        Path::new("/nonexistent/sysd.sock"),
        &["man", "--out", dir.path().to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let top = std::fs::read_to_string(dir.path().join("osctl.1")).unwrap();
    assert!(top.starts_with(".ie"), "not roff: {top}");
    assert!(
        top.contains("osctl\\-upgrade(1)") || top.contains("upgrade"),
        "{top}"
    );
    for path in command_paths() {
        let page = dir.path().join(format!("osctl-{}.1", path.join("-")));
        let text = std::fs::read_to_string(&page)
            .unwrap_or_else(|e| panic!("no man page {}: {e}", page.display()));
        // Each page ends with the command's example.
        assert!(text.contains("Example"), "{}: {text}", page.display());
    }
    assert!(stdout(&out).contains(&format!("{} man pages", command_paths().len() + 1)));
}

#[test]
fn every_command_long_help_ends_with_an_example() {
    let missing = ballast_osctl::docs::commands_without_example(&ballast_osctl::command());
    assert!(
        missing.is_empty(),
        "no example in the long help of: {missing:?}"
    );
    let out = osctl(Path::new("/nonexistent/sysd.sock"), &["upgrade", "--help"]);
    let help = stdout(&out);
    assert!(
        help.trim_end()
            .lines()
            .last()
            .unwrap()
            .contains("osctl --host"),
        "{help}"
    );
    assert!(help.contains("/var/tmp"), "{help}");
}
