//! `osctl`, the command line on a Ballast machine: asks sysd over its control
//! socket (protocol: crate ballast-control) and prints the answer for people,
//! or as JSON (`status --json` is serde of the same [`Status`] the table shows).
//!
//! It owns no state and never touches services, slots or files itself: every
//! verb is one request to sysd. Exit codes: 0 ok, 1 failure (with a message
//! naming the socket or service and what to do), 2 usage (clap).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use ballast_control::{client, ControlError, Request, Response, Status};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

pub mod agent_cmd;
pub mod config_cmd;
pub mod docs;
pub mod install_cmd;
pub mod remote;
pub mod update_cmd;

#[derive(Debug, Parser)]
#[command(
    name = "osctl",
    version,
    about = "Control a Ballast machine through sysd",
    long_about = "Control a Ballast machine through sysd.\n\n\
Each command has its own --help; `osctl man --out DIR` writes the man pages and\n\
`osctl completions bash` prints the bash completion.",
    after_long_help = "Example: what runs, and why a service is failing:\n  osctl status\n  osctl logs network -n 20"
)]
pub struct Cli {
    /// The control socket of sysd.
    #[arg(long, global = true, value_name = "PATH", default_value = ballast_control::SOCKET)]
    pub socket: PathBuf,
    /// Run the command on this machine over SSH (`[USER@]HOST[:PORT]`), with the
    /// system's ssh client; `upgrade FILE` streams the file over the connection.
    #[arg(long, global = true, value_name = "[USER@]HOST[:PORT]")]
    pub host: Option<String>,
    /// An ssh `-o` option for `--host` (repeatable), e.g. `IdentityFile=~/.ssh/fleet`.
    #[arg(long = "ssh-opt", global = true, value_name = "OPTION")]
    pub ssh_opts: Vec<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Version, slots, services and errors (with each failing service's last error).
    #[command(
        after_long_help = "Example:\n  osctl status --json | jq '.services[] | select(.last_error) | .name'"
    )]
    Status {
        /// Print the status as JSON (the control protocol's Status object).
        #[arg(long)]
        json: bool,
    },
    /// Print a service's log.
    #[command(after_long_help = "Example:\n  osctl logs network -n 20 -f")]
    Logs {
        /// The service (a directory name under /usr/lib/ballast/system).
        service: String,
        /// How many of the last lines to print.
        #[arg(short = 'n', long = "lines", default_value_t = 50)]
        lines: usize,
        /// Keep printing new lines as they are written.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Start, stop or restart a service.
    #[command(after_long_help = "Example:\n  osctl service restart network")]
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
    /// Reboot the machine in order (services stopped, state synced).
    #[command(after_long_help = "Example:\n  osctl --host ballast@10.0.0.7 reboot")]
    Reboot,
    /// Power the machine off in order.
    #[command(after_long_help = "Example:\n  osctl poweroff")]
    Poweroff,
    /// Install an update bundle into the inactive slot (verified before anything is
    /// written); the next boot tries it and keeps it only when it is healthy.
    ///
    /// Stream the bundle rather than copying it first: `osctl --host` from the
    /// workstation, or `osctl upgrade -` on stdin. To stage a file on the machine,
    /// copy it to /var/tmp (the state partition); /tmp is a small tmpfs.
    #[command(
        after_long_help = "Example, from the workstation:\n  osctl --host ballast@10.0.0.7 upgrade out/update.bundle --reboot"
    )]
    Upgrade {
        /// The bundle: a file, `-` for stdin, or an http:// URL.
        #[arg(required_unless_present = "channel")]
        source: Option<String>,
        /// Take the newest bundle for this machine from a channel (an http:// URL or a
        /// directory written by `ballast publish`; default: the configured channel).
        /// Its signed index is verified with the machine's trusted keys.
        #[arg(long, num_args = 0..=1, default_missing_value = "", conflicts_with = "source")]
        channel: Option<String>,
        /// Accept a version older than (or equal to) the running one.
        #[arg(long)]
        allow_downgrade: bool,
        /// Reboot into the new version once it is installed.
        #[arg(long)]
        reboot: bool,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Install this OS to another disk: write the install image, read it back
    /// and verify it (exit 0 only then). The disk's old partition table is
    /// cleared first and the new one written last, so a failed install leaves
    /// it unbootable, never half-written. Refuses the disk this system runs
    /// from, a mounted or held disk, one too small or read-only, and one that
    /// holds partitions unless --force.
    #[command(
        after_long_help = "Example, from a live ISO, with a first-boot config:\n  osctl install /dev/vda --user-data user-data --reboot"
    )]
    Install {
        /// The whole disk to overwrite, e.g. /dev/vda or /dev/nvme0n1.
        device: String,
        /// The image: a file or http:// URL of install.img.zst, with its signed
        /// .manifest beside it (default: the live medium's).
        #[arg(long, value_name = "FILE|URL")]
        image: Option<String>,
        /// A #cloud-config (or TOML) config for the installed disk's first boot,
        /// put on its boot partition.
        #[arg(long, value_name = "FILE")]
        user_data: Option<PathBuf>,
        /// NoCloud meta-data for the installed disk.
        #[arg(long, value_name = "FILE")]
        meta_data: Option<PathBuf>,
        /// NoCloud network-config (version 2) for the installed disk.
        #[arg(long, value_name = "FILE")]
        network_config: Option<PathBuf>,
        /// Overwrite a disk that already holds partitions.
        #[arg(long)]
        force: bool,
        /// Reboot once the disk is written and verified.
        #[arg(long)]
        reboot: bool,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Ask or steer the update agent (ballast.update.auto).
    #[command(after_long_help = "Example:\n  osctl update status")]
    Update {
        #[command(subcommand)]
        action: agent_cmd::UpdateCmd,
    },
    /// Make the other slot the default (it must be good).
    #[command(after_long_help = "Example:\n  osctl rollback --reboot")]
    Rollback {
        /// Reboot into it now.
        #[arg(long)]
        reboot: bool,
    },
    /// Check a #cloud-config (or TOML) document offline, or apply one.
    #[command(after_long_help = "Example:\n  osctl config validate user-data")]
    Config {
        #[command(subcommand)]
        action: config_cmd::ConfigAction,
    },
    /// Print the shell completion script for bash, zsh or fish (and others).
    #[command(
        after_long_help = "Example, for bash on a workstation:\n  osctl completions bash > ~/.local/share/bash-completion/completions/osctl"
    )]
    Completions {
        /// The shell.
        shell: docs::Shell,
    },
    /// Write a man page for osctl and each of its commands into a directory.
    #[command(
        after_long_help = "Example:\n  osctl man --out ~/.local/share/man/man1 && man osctl-upgrade"
    )]
    Man {
        /// Where to write `osctl.1`, `osctl-upgrade.1`, ...
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ServiceAction {
    /// Stop the service (if it runs) and start it again.
    #[command(after_long_help = "Example:\n  osctl service restart network")]
    Restart { name: String },
    /// Stop the service and keep it stopped until `start` or the next boot.
    #[command(after_long_help = "Example:\n  osctl service stop docker")]
    Stop { name: String },
    /// Start a stopped or failed service.
    #[command(after_long_help = "Example:\n  osctl service start docker")]
    Start { name: String },
}

/// osctl's whole command line, with the examples of the `config` verbs (their
/// definitions live in [`config_cmd`]) added here so every command's long help
/// ends with one.
pub fn command() -> clap::Command {
    Cli::command().mut_subcommand("config", |c| {
        c.mut_subcommand("validate", |v| {
            v.after_long_help("Example:\n  osctl config validate --json user-data")
        })
        .mut_subcommand("apply", |a| {
            a.after_long_help("Example, from the workstation:\n  osctl --host ballast@10.0.0.7 config apply user-data --dry-run")
        })
    })
}

/// osctl as a program: parse the arguments, run, say a failure on stderr.
/// Returns the exit code: 0 ok, 1 failure (the message says what and why);
/// usage errors exit 2 from the parser. The `osctl` binary (workstations,
/// tests) and the device's one binary (sysd's, run as `osctl`) both call it.
pub fn main_code() -> i32 {
    let cli = parse();
    let mut out = std::io::stdout().lock();
    match run(&cli, &mut out) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("osctl: {e}");
            1
        }
    }
}

/// Parse the process's arguments with [`command`] (exits with clap's usage error, 2).
pub fn parse() -> Cli {
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Why a command failed; printed after `osctl: `.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("cannot reach sysd at {}: {hint} ({errno})", socket.display())]
    Unreachable {
        socket: PathBuf,
        hint: &'static str,
        errno: String,
    },
    #[error(transparent)]
    Control(ControlError),
    /// sysd refused or failed the request; its message names the cause.
    #[error("{0}")]
    Refused(String),
    #[error("sysd answered {got} to {asked}: osctl and sysd are from different versions?")]
    Unexpected { asked: &'static str, got: String },
    #[error("cannot write to stdout: {0}")]
    Stdout(io::Error),
}

/// Errno name for the connect errors people meet.
fn errno_name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(2) => "ENOENT".into(),
        Some(13) => "EACCES".into(),
        Some(111) => "ECONNREFUSED".into(),
        Some(20) => "ENOTDIR".into(),
        Some(88) => "ENOTSOCK".into(),
        _ => e.to_string(),
    }
}

fn failure(socket: &Path, e: ControlError) -> Failure {
    match e {
        ControlError::Connect { source, .. } => {
            let hint = match source.kind() {
                io::ErrorKind::NotFound => {
                    "no socket there: is this a Ballast machine, and has sysd started?"
                }
                io::ErrorKind::ConnectionRefused => {
                    "is this a Ballast machine? (nothing listens on the socket: sysd is not running or restarting)"
                }
                io::ErrorKind::PermissionDenied => "permission denied: run osctl as root",
                _ => "is this a Ballast machine?",
            };
            Failure::Unreachable {
                socket: socket.to_path_buf(),
                hint,
                errno: errno_name(&source),
            }
        }
        other => Failure::Control(other),
    }
}

fn kind(r: &Response) -> String {
    match r {
        Response::Status(_) => "a status".into(),
        Response::LogLine(_) => "a log line".into(),
        Response::Ok { message } => format!("ok ({message})"),
        Response::Error { message } => format!("an error ({message})"),
        Response::Progress { phase, .. } => format!("progress ({phase})"),
        Response::Installed { version, .. } => format!("installed ({version})"),
        Response::ConfigApplied { .. } => "a config apply result".into(),
        Response::SendFd => "a request for the bundle's descriptor".into(),
        Response::DiskInstalled { device, .. } => format!("installed to {device}"),
        Response::Agent(_) => "the update agent's state".into(),
    }
}

/// Sends one request that is answered by `Ok` or `Error`, prints the message.
fn simple(
    cli: &Cli,
    req: Request,
    asked: &'static str,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    match client::call(&cli.socket, &req).map_err(|e| failure(&cli.socket, e))? {
        Response::Ok { message } => writeln!(out, "{message}").map_err(Failure::Stdout),
        Response::Error { message } => Err(Failure::Refused(message)),
        other => Err(Failure::Unexpected {
            asked,
            got: kind(&other),
        }),
    }
}

/// The arguments the same command takes on the remote machine, and the local file
/// to stream as its stdin (`upgrade FILE` becomes `upgrade -`). `None`: the
/// command runs locally even with `--host` (`config validate` reads a local file).
pub fn remote_args(cmd: &Command) -> Option<(Vec<String>, Option<PathBuf>)> {
    let flag = |on: bool, name: &str| on.then(|| name.to_string());
    let v = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    Some(match cmd {
        Command::Status { json } => (
            v(&["status"])
                .into_iter()
                .chain(flag(*json, "--json"))
                .collect(),
            None,
        ),
        Command::Logs {
            service,
            lines,
            follow,
        } => (
            v(&["logs", service, "-n", &lines.to_string()])
                .into_iter()
                .chain(flag(*follow, "-f"))
                .collect(),
            None,
        ),
        Command::Service { action } => {
            let (verb, name) = match action {
                ServiceAction::Restart { name } => ("restart", name),
                ServiceAction::Stop { name } => ("stop", name),
                ServiceAction::Start { name } => ("start", name),
            };
            (v(&["service", verb, name]), None)
        }
        Command::Reboot => (v(&["reboot"]), None),
        Command::Poweroff => (v(&["poweroff"]), None),
        Command::Update { action } => {
            let (_, json, verb) = action.parts();
            (
                v(&["update", verb])
                    .into_iter()
                    .chain(flag(json, "--json"))
                    .collect(),
                None,
            )
        }
        Command::Upgrade {
            source,
            channel,
            allow_downgrade,
            reboot,
            json,
        } => {
            let (first, file) = match (source, channel) {
                (Some(source), _) => match update_cmd::Source::parse(source) {
                    update_cmd::Source::File(p) => (vec!["-".to_string()], Some(p)),
                    _ => (vec![source.clone()], None),
                },
                // The machine reads the channel itself.
                (None, Some(c)) if c.is_empty() => (vec!["--channel".to_string()], None),
                (None, Some(c)) => (vec![format!("--channel={c}")], None),
                (None, None) => (vec![], None),
            };
            (
                v(&["upgrade"])
                    .into_iter()
                    .chain(first)
                    .chain(flag(*allow_downgrade, "--allow-downgrade"))
                    .chain(flag(*reboot, "--reboot"))
                    .chain(flag(*json, "--json"))
                    .collect(),
                file,
            )
        }
        Command::Install {
            device,
            image,
            user_data,
            meta_data,
            network_config,
            force,
            reboot,
            json,
        } => {
            // The files are the remote machine's: its osctl reads them.
            let mut args = v(&["install", device]);
            for (name, val) in [
                ("--image", image.clone()),
                (
                    "--user-data",
                    user_data.as_ref().map(|p| p.display().to_string()),
                ),
                (
                    "--meta-data",
                    meta_data.as_ref().map(|p| p.display().to_string()),
                ),
                (
                    "--network-config",
                    network_config.as_ref().map(|p| p.display().to_string()),
                ),
            ] {
                if let Some(val) = val {
                    args.push(name.to_string());
                    args.push(val);
                }
            }
            (
                args.into_iter()
                    .chain(flag(*force, "--force"))
                    .chain(flag(*reboot, "--reboot"))
                    .chain(flag(*json, "--json"))
                    .collect(),
                None,
            )
        }
        Command::Rollback { reboot } => (
            v(&["rollback"])
                .into_iter()
                .chain(flag(*reboot, "--reboot"))
                .collect(),
            None,
        ),
        Command::Config {
            action:
                config_cmd::ConfigAction::Apply {
                    file,
                    dry_run,
                    json,
                    source,
                },
        } => {
            // The document is streamed as the remote osctl's stdin.
            let name = source.clone().unwrap_or_else(|| file.display().to_string());
            let local = (file != Path::new("-")).then(|| file.clone());
            (
                v(&["config", "apply", "-", "--source", &name])
                    .into_iter()
                    .chain(flag(*dry_run, "--dry-run"))
                    .chain(flag(*json, "--json"))
                    .collect(),
                local,
            )
        }
        Command::Config { .. } | Command::Completions { .. } | Command::Man { .. } => return None,
    })
}

/// Runs one command, writing what it prints to `out`.
pub fn run(cli: &Cli, out: &mut dyn Write) -> Result<(), Failure> {
    if let Some(host) = &cli.host {
        if let Some((args, file)) = remote_args(&cli.command) {
            out.flush().map_err(Failure::Stdout)?;
            let code = remote::run(host, &cli.ssh_opts, &args, file.as_deref())
                .map_err(Failure::Refused)?;
            std::process::exit(code);
        }
    }
    match &cli.command {
        Command::Status { json } => {
            let status = match client::call(&cli.socket, &Request::Status)
                .map_err(|e| failure(&cli.socket, e))?
            {
                Response::Status(s) => s,
                Response::Error { message } => return Err(Failure::Refused(message)),
                other => {
                    return Err(Failure::Unexpected {
                        asked: "status",
                        got: kind(&other),
                    })
                }
            };
            let text = if *json {
                let mut t = serde_json::to_string_pretty(&status)
                    .map_err(|e| Failure::Control(ControlError::Encode(e)))?;
                t.push('\n');
                t
            } else {
                render_status(&status)
            };
            out.write_all(text.as_bytes()).map_err(Failure::Stdout)
        }
        Command::Logs {
            service,
            lines,
            follow,
        } => logs(cli, service, *lines, *follow, out),
        Command::Service { action } => {
            let (req, asked) = match action {
                ServiceAction::Restart { name } => (
                    Request::Restart {
                        service: name.clone(),
                    },
                    "restart",
                ),
                ServiceAction::Stop { name } => (
                    Request::Stop {
                        service: name.clone(),
                    },
                    "stop",
                ),
                ServiceAction::Start { name } => (
                    Request::Start {
                        service: name.clone(),
                    },
                    "start",
                ),
            };
            simple(cli, req, asked, out)
        }
        Command::Reboot => simple(cli, Request::Reboot, "reboot", out),
        Command::Poweroff => simple(cli, Request::Poweroff, "poweroff", out),
        Command::Upgrade {
            source,
            channel,
            allow_downgrade,
            reboot,
            json,
        } => {
            let src = match (source, channel) {
                (Some(s), _) => update_cmd::Source::parse(s),
                (None, ch) => {
                    let base = ch.as_deref().filter(|c| !c.is_empty());
                    match update_cmd::from_channel(base)? {
                        Some(offer) => {
                            let version = &offer.version;
                            let Some(delta) = &offer.delta else {
                                eprintln!("osctl: channel offers {version}");
                                return update_cmd::upgrade(
                                    &cli.socket,
                                    &offer.bundle,
                                    *allow_downgrade,
                                    *reboot,
                                    *json,
                                    out,
                                );
                            };
                            eprintln!(
                                "osctl: channel offers {version}, as a delta from this version"
                            );
                            // A refused delta (another base, damaged, a result
                            // that does not match) leaves the slot as it was:
                            // the full bundle is the fallback.
                            match update_cmd::upgrade(
                                &cli.socket,
                                delta,
                                *allow_downgrade,
                                *reboot,
                                *json,
                                out,
                            ) {
                                Err(Failure::Refused(why)) => {
                                    eprintln!(
                                        "osctl: the delta was refused ({why}); installing the full bundle"
                                    );
                                    offer.bundle
                                }
                                other => return other,
                            }
                        }
                        None => {
                            return writeln!(
                                out,
                                "already up to date: the channel has nothing newer"
                            )
                            .map_err(Failure::Stdout)
                        }
                    }
                }
            };
            update_cmd::upgrade(&cli.socket, &src, *allow_downgrade, *reboot, *json, out)
        }
        Command::Install {
            device,
            image,
            user_data,
            meta_data,
            network_config,
            force,
            reboot,
            json,
        } => install_cmd::install(
            &cli.socket,
            &install_cmd::Args {
                device,
                image: image.as_deref(),
                user_data: user_data.as_deref(),
                meta_data: meta_data.as_deref(),
                network_config: network_config.as_deref(),
                force: *force,
                reboot: *reboot,
                json: *json,
            },
            out,
        ),
        Command::Rollback { reboot } => update_cmd::rollback(&cli.socket, *reboot, out),
        Command::Update { action } => agent_cmd::run(&cli.socket, *action, out),
        Command::Completions { shell } => out
            .write_all(&docs::completion(&command(), *shell))
            .map_err(Failure::Stdout),
        Command::Man { out: dir } => {
            let written = docs::write_man_pages(&command(), dir)
                .map_err(|e| Failure::Refused(e.to_string()))?;
            writeln!(
                out,
                "wrote {} man pages to {}",
                written.len(),
                dir.display()
            )
            .map_err(Failure::Stdout)
        }
        Command::Config { action } => {
            // Exit codes of its own (0 valid, 1 invalid, 2 unreadable file).
            let code = config_cmd::run(action, &cli.socket, out, &mut io::stderr());
            if code != 0 {
                out.flush().map_err(Failure::Stdout)?;
                std::process::exit(code);
            }
            Ok(())
        }
    }
}

fn logs(
    cli: &Cli,
    service: &str,
    lines: usize,
    follow: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let req = Request::Logs {
        service: service.to_string(),
        lines,
        follow,
    };
    let mut outcome: Result<(), Failure> = Ok(());
    client::stream(&cli.socket, &req, |resp| match resp {
        Response::LogLine(line) => {
            // A closed stdout (`osctl logs x | head`) ends the stream quietly.
            match writeln!(out, "{line}").and_then(|()| if follow { out.flush() } else { Ok(()) }) {
                Ok(()) => true,
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => false,
                Err(e) => {
                    outcome = Err(Failure::Stdout(e));
                    false
                }
            }
        }
        Response::Error { message } => {
            outcome = Err(Failure::Refused(message));
            false
        }
        other => {
            outcome = Err(Failure::Unexpected {
                asked: "logs",
                got: kind(&other),
            });
            false
        }
    })
    .map_err(|e| failure(&cli.socket, e))?;
    outcome?;
    out.flush().map_err(Failure::Stdout)
}

/// `1.5 s`, `3 min`, `2 h 5 min`: how long a service has been in its state.
pub fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    if s < 60 {
        format!("{}.{} s", s, (ms % 1000) / 100)
    } else if s < 3600 {
        format!("{} min", s / 60)
    } else if s < 86_400 {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    } else {
        format!("{} d {} h", s / 86_400, (s % 86_400) / 3600)
    }
}

/// Rows as columns padded to the widest cell (the last column unpadded).
fn table(rows: &[Vec<String>], indent: &str) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for row in rows {
        let mut line = indent.to_string();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// The human form of `osctl status`.
pub fn render_status(s: &Status) -> String {
    let mut text = String::new();
    let slot = match s.slot {
        Some(id) => id.as_str(),
        None if s.live => "live",
        None => "unknown",
    };
    text.push_str(&format!("version  {}\n", s.version));
    text.push_str(&format!(
        "slot     {slot} ({})\n",
        if s.ready { "ready" } else { "not ready yet" }
    ));
    text.push_str("\nslots\n");
    if s.live {
        text.push_str(
            "  (none: running live from its medium, state in RAM; nothing is on a disk)\n",
        );
    } else if s.slots.is_empty() {
        text.push_str("  (unknown: the boot partition could not be read; see errors)\n");
    } else {
        let mut rows = vec![vec![
            "SLOT".to_string(),
            "VERSION".into(),
            "HEALTH".into(),
            "DEFAULT".into(),
        ]];
        for st in &s.slots {
            let health = match st.health {
                ballast_slot::Health::Trying {
                    tries_left,
                    tries_done,
                } => format!("trying ({tries_left} left, {tries_done} done)"),
                other => other.as_str().to_string(),
            };
            let booted = if Some(st.slot) == s.slot {
                " (booted)"
            } else {
                ""
            };
            rows.push(vec![
                format!("{}{booted}", st.slot.as_str()),
                st.version.clone().unwrap_or_else(|| "-".into()),
                health,
                if st.is_default { "yes" } else { "no" }.into(),
            ]);
        }
        text.push_str(&table(&rows, "  "));
    }
    text.push_str("\nservices\n");
    if s.services.is_empty() {
        text.push_str("  (none)\n");
    } else {
        let mut rows = vec![vec![
            "NAME".to_string(),
            "STATE".into(),
            "PID".into(),
            "RESTARTS".into(),
            "REQUIRED".into(),
            "FOR".into(),
            "LAST EXIT".into(),
        ]];
        for svc in &s.services {
            rows.push(vec![
                svc.name.clone(),
                svc.state.as_str().into(),
                svc.pid.map_or("-".into(), |p| p.to_string()),
                svc.restarts.to_string(),
                if svc.required { "yes" } else { "no" }.into(),
                human_duration(svc.since_ms),
                svc.last_exit.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        text.push_str(&table(&rows, "  "));
        // The service's own words: what a user needs when it keeps failing.
        let failing: Vec<_> = s
            .services
            .iter()
            .filter_map(|svc| svc.last_error.as_ref().map(|e| (&svc.name, e)))
            .collect();
        if !failing.is_empty() {
            text.push_str("\nlast errors (osctl logs NAME for more)\n");
            for (name, e) in failing {
                text.push_str(&format!("  {name}: {e}\n"));
            }
        }
    }
    if let Some(p) = &s.pending_update {
        text.push_str(&format!(
            "\nupdate   {} installed in slot {} (from {} in slot {}); kept once it passes the health check\n",
            p.to_version, p.to_slot, p.from_version, p.from_slot
        ));
    }
    if let Some(a) = &s.agent {
        text.push_str("\nupdate agent\n");
        text.push_str(&agent_cmd::describe(a));
    }
    if let Some(r) = &s.last_rollback {
        text.push_str(&format!(
            "\nlast rollback  from {} to {} ({}): {}\n",
            r.from,
            r.to,
            if r.automatic {
                "automatic"
            } else {
                "requested"
            },
            r.reason
        ));
    }
    if !s.errors.is_empty() {
        text.push_str("\nerrors\n");
        for e in &s.errors {
            text.push_str(&format!("  {e}\n"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(1500), "1.5 s");
        assert_eq!(human_duration(59_999), "59.9 s");
        assert_eq!(human_duration(61_000), "1 min");
        assert_eq!(human_duration(3_600_000 + 5 * 60_000), "1 h 5 min");
        assert_eq!(human_duration(2 * 86_400_000 + 3_600_000), "2 d 1 h");
    }
}
