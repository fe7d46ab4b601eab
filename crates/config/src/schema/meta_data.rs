//! NoCloud `meta-data`: instance id and local host name. Other keys
//! (cloud-specific ones such as `public-keys`) are left alone, as NoCloud
//! meta-data carries many.

use super::*;

pub(crate) fn meta_data(text: &str, source: &str) -> SideChecked<MetaData> {
    let mut ctx = Ctx::new(source);
    let md = meta_document(text, &mut ctx);
    ctx.side_checked(md)
}

fn meta_document(text: &str, ctx: &mut Ctx) -> Option<MetaData> {
    let Some(root) = side_file(text, ctx, "meta-data", "not YAML or `key: value` lines")? else {
        return Some(MetaData::default());
    };
    let mut f = Fields::new(&root, "", ctx)?;
    Some(MetaData {
        instance_id: opt_str(&mut f, "instance-id", ctx, |s| {
            if s.trim().is_empty() || s.contains(['/', '\n']) {
                Err("not an instance id (a word like iid-local01)".into())
            } else {
                Ok(())
            }
        }),
        local_hostname: opt_str(&mut f, "local-hostname", ctx, checks::hostname),
    })
}
