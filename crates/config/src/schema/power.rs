//! `power_state`: reboot, power off or halt once the config is applied,
//! read as cloud-init's cc_power_state_change reads it. It never powers
//! anything off.

use super::*;

use crate::PowerState;

pub(super) fn power_state(n: &Node, path: &str, ctx: &mut Ctx) -> Option<PowerState> {
    let mut f = Fields::new(n, path, ctx)?;
    let mode = opt_str(&mut f, "mode", ctx, |s| match s {
        "reboot" | "poweroff" | "halt" => Ok(()),
        _ => Err(format!("`{s}` is not a mode (reboot, poweroff or halt)")),
    });
    if mode.is_none() && !f.given("mode") {
        ctx.err(
            n.line,
            &f.path("mode"),
            "missing: power_state needs a `mode` (reboot, poweroff or halt)",
        );
    }
    // cloud-init passes the delay to shutdown(8): `now`, or minutes
    // (an integer, or `+N` as a string).
    let delay_secs = match f.get("delay") {
        None => Some(0),
        Some(d) => {
            let minutes = match &d.v {
                V::Int(m, _) => u64::try_from(*m).ok(),
                V::Str(s) if s == "now" => Some(0),
                V::Str(s) => s.strip_prefix('+').unwrap_or(s).parse::<u64>().ok(),
                _ => None,
            };
            let secs = minutes.and_then(|m| m.checked_mul(60));
            if secs.is_none() {
                ctx.err(
                    d.line,
                    &f.path("delay"),
                    "not a delay (`now`, or minutes: `5` or `+5`)",
                );
            }
            secs
        }
    };
    let message = opt_str(&mut f, "message", ctx, |s| {
        if s.contains('\n') {
            Err("the message must be one line".into())
        } else {
            Ok(())
        }
    });
    let timeout_secs = match f.get("timeout") {
        None => Some(30),
        Some(t) => {
            let v = match &t.v {
                V::Int(s, _) => u64::try_from(*s).ok(),
                V::Float(s) if *s >= 0.0 && s.is_finite() => Some(s.ceil() as u64),
                V::Str(s) => s.trim().parse().ok(),
                _ => None,
            };
            if v.is_none() {
                ctx.err(
                    t.line,
                    &f.path("timeout"),
                    "not a number of seconds (cloud-init's default is 30)",
                );
            }
            v
        }
    };
    let (condition, never) = match f.get("condition") {
        None => (None, false),
        Some(c) => match &c.v {
            V::Bool(true) => (None, false),
            V::Bool(false) => (None, true),
            V::Str(_) | V::Seq(_) => {
                let wrapped = Node {
                    line: c.line,
                    v: V::Seq(vec![c.clone()]),
                };
                (commands(&wrapped, &f.path("condition"), ctx).pop(), false)
            }
            _ => {
                ctx.expected(
                    c,
                    &f.path("condition"),
                    "true, false, or a command (string or list)",
                );
                (None, false)
            }
        },
    };
    f.finish(ctx, &["mode", "delay", "message", "timeout", "condition"]);
    Some(PowerState {
        mode: mode?,
        delay_secs: delay_secs?,
        message,
        timeout_secs: timeout_secs?,
        condition,
        never,
    })
}
