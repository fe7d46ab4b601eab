//! NoCloud `meta-data`: instance id and local host name.

use super::*;

pub(crate) fn meta_data(text: &str, source: &str) -> Result<MetaData, ConfigError> {
    let mut ctx = Ctx::new(source);
    let fail = |ctx: &mut Ctx| ctx.first_error("meta-data");
    let Some(root) = side_file(
        text,
        &mut ctx,
        "meta-data",
        "not YAML or `key: value` lines",
    )?
    else {
        return Ok(MetaData::default());
    };
    let Some(mut f) = Fields::new(&root, "", &mut ctx) else {
        return Err(fail(&mut ctx));
    };
    let md = MetaData {
        instance_id: opt_str(&mut f, "instance-id", &mut ctx, |s| {
            if s.trim().is_empty() || s.contains(['/', '\n']) {
                Err("not an instance id (a word like iid-local01)".into())
            } else {
                Ok(())
            }
        }),
        local_hostname: opt_str(&mut f, "local-hostname", &mut ctx, checks::hostname),
    };
    if ctx.errors.is_empty() {
        Ok(md)
    } else {
        Err(fail(&mut ctx))
    }
}
