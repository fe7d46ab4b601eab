//! `ca_certs` (also spelled `ca-certs`): CA certificates to trust, checked
//! to be PEM certificate blocks. It never touches the trust store.

use super::*;

use crate::CaCerts;

const ALIASES: &[(&str, &str)] = &[("remove-defaults", "remove_defaults")];

pub(super) fn ca_certs(n: &Node, path: &str, ctx: &mut Ctx) -> Option<CaCerts> {
    let mut f = Fields::spelled(n, path, Spelling::Aliases(ALIASES), ctx)?;
    let remove_line = f.key_line("remove_defaults");
    let remove_defaults = opt_bool(&mut f, "remove_defaults", false, ctx);
    let trusted = opt_list(&mut f, "trusted", ctx, checks::pem_certificates);
    if remove_defaults && trusted.is_empty() {
        ctx.warn(
            remove_line,
            &f.path("remove_defaults"),
            "with no `trusted` certificate the machine trusts no CA at all: HTTPS downloads and registries will fail (add your CA under `trusted`)",
        );
    }
    f.finish(ctx, &["remove_defaults", "trusted"]);
    Some(CaCerts {
        remove_defaults,
        trusted: trusted
            .into_iter()
            .map(|t| format!("{}\n", t.trim()))
            .collect(),
    })
}
