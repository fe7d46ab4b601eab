//! `osctl update status|check|now|pause|resume [--json]`: ask and steer sysd's
//! update agent, and the agent's lines of `osctl status`.

use std::io::Write;
use std::path::Path;

use ballast_control::{client, AgentStatus, Request, Response, UpdateAction};
use clap::Subcommand;

use crate::{failure, kind, Failure};

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum UpdateCmd {
    /// What the agent is doing: channel, available and staged versions, window, lock.
    #[command(after_long_help = "Example:\n  osctl update status --json")]
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Check the channel now (the wave and the window still apply).
    #[command(after_long_help = "Example:\n  osctl update check")]
    Check {
        #[arg(long)]
        json: bool,
    },
    /// Check now, skip the wave's wait and install; the reboot still waits for the
    /// window and the lock.
    #[command(after_long_help = "Example:\n  osctl update now")]
    Now {
        #[arg(long)]
        json: bool,
    },
    /// Stop checking and installing until `osctl update resume` (kept across reboots).
    #[command(after_long_help = "Example:\n  osctl update pause")]
    Pause {
        #[arg(long)]
        json: bool,
    },
    /// Check and install again.
    #[command(after_long_help = "Example:\n  osctl update resume")]
    Resume {
        #[arg(long)]
        json: bool,
    },
}

impl UpdateCmd {
    /// The action and `--json`.
    pub fn parts(self) -> (UpdateAction, bool, &'static str) {
        match self {
            UpdateCmd::Status { json } => (UpdateAction::Status, json, "status"),
            UpdateCmd::Check { json } => (UpdateAction::Check, json, "check"),
            UpdateCmd::Now { json } => (UpdateAction::Now, json, "now"),
            UpdateCmd::Pause { json } => (UpdateAction::Pause, json, "pause"),
            UpdateCmd::Resume { json } => (UpdateAction::Resume, json, "resume"),
        }
    }
}

pub fn run(socket: &Path, cmd: UpdateCmd, out: &mut dyn Write) -> Result<(), Failure> {
    let (action, json, _) = cmd.parts();
    let st =
        match client::call(socket, &Request::Update { action }).map_err(|e| failure(socket, e))? {
            Response::Agent(st) => st,
            Response::Error { message } => return Err(Failure::Refused(message)),
            other => {
                return Err(Failure::Unexpected {
                    asked: "update",
                    got: kind(&other),
                })
            }
        };
    let text = if json {
        let mut s = serde_json::to_string_pretty(&st).unwrap_or_default();
        s.push('\n');
        s
    } else {
        let mut s = match action {
            UpdateAction::Check => "check asked for\n".to_string(),
            UpdateAction::Now => {
                "update asked for now (the reboot waits for the window and the lock)\n".into()
            }
            UpdateAction::Pause => "paused\n".into(),
            UpdateAction::Resume => "resumed\n".into(),
            UpdateAction::Status => String::new(),
        };
        s.push_str(&describe(&st));
        s
    };
    out.write_all(text.as_bytes()).map_err(Failure::Stdout)
}

fn ago(now: u64, t: u64) -> String {
    if t >= now {
        format!("in {} s", t - now)
    } else {
        format!("{} s ago", now - t)
    }
}

/// The agent in a few lines (also the `update agent` part of `osctl status`).
pub fn describe(a: &AgentStatus) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut rows: Vec<(&str, String)> = vec![
        ("state", a.state.clone()),
        (
            "mode",
            match (a.auto, a.paused) {
                (_, true) => "paused (osctl update resume)".into(),
                (true, false) => "automatic".into(),
                (false, false) => "check only (ballast.update.auto: false)".into(),
            },
        ),
        ("channel", a.channel.clone().unwrap_or_else(|| "-".into())),
        ("machine id", a.machine_id.clone()),
    ];
    if let Some(v) = &a.available {
        rows.push(("available", v.clone()));
    }
    if let Some(v) = &a.staged {
        rows.push(("staged", format!("{v} (boots at the next reboot)")));
    }
    if let Some(t) = a.wave_at {
        rows.push(("wave", format!("this machine's turn {}", ago(now, t))));
    }
    if let Some(o) = a.window_open {
        rows.push(("window", if o { "open" } else { "closed" }.into()));
    }
    if let Some(l) = &a.lock {
        rows.push((
            "reboot lock",
            format!("{l}, {}", if a.lock_held { "held" } else { "not held" }),
        ));
    }
    if let Some(t) = a.last_check {
        rows.push(("last check", ago(now, t)));
    }
    if let Some(t) = a.next_check {
        rows.push(("next check", ago(now, t)));
    }
    if !a.rolled_back.is_empty() {
        rows.push((
            "never again",
            format!("{} (rolled back here)", a.rolled_back.join(", ")),
        ));
    }
    if let Some(e) = &a.last_error {
        rows.push(("last error", e.clone()));
    }
    rows.iter()
        .map(|(k, v)| format!("  {k:<12} {v}\n"))
        .collect()
}
