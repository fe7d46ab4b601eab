//! `ntp:`: servers and pools for Ballast's own time service.

use super::*;

pub(super) fn ntp(n: &Node, path: &str, ctx: &mut Ctx) -> Option<Ntp> {
    let mut f = Fields::new(n, path, ctx)?;
    let enabled = opt_bool(&mut f, "enabled", true, ctx);
    let servers = opt_list(&mut f, "servers", ctx, checks::host_or_ip);
    let pools = opt_list(&mut f, "pools", ctx, checks::host_or_ip);
    for k in ["ntp_client", "config"] {
        if let Some(line) = f.key_line(k) {
            f.get(k);
            ctx.warn(
                Some(line),
                &f.path(k),
                "Ballast runs its own time service, ignored (give `servers` or `pools`)",
            );
        }
    }
    f.finish(ctx, &["enabled", "servers", "pools"]);
    Some(Ntp {
        enabled,
        servers,
        pools,
    })
}
