//! `bootcmd:` and `runcmd:`: shell strings or argv lists. It never runs
//! anything.

use super::*;

pub(super) fn commands(n: &Node, path: &str, ctx: &mut Ctx) -> Vec<Cmd> {
    let V::Seq(items) = &n.v else {
        ctx.expected(n, path, "a list of commands");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = idx(path, i);
        match &item.v {
            V::Str(s) if s.trim().is_empty() => {
                ctx.err(item.line, &p, "empty command (remove the item)");
            }
            V::Str(s) => out.push(Cmd::Shell(s.clone())),
            V::Seq(args) => {
                let mut argv = Vec::new();
                for (j, a) in args.iter().enumerate() {
                    let ap = idx(&p, j);
                    match &a.v {
                        V::Str(s) => argv.push(s.clone()),
                        V::Int(x, _) => argv.push(x.to_string()),
                        V::Float(x) => argv.push(x.to_string()),
                        V::Bool(b) => argv.push(b.to_string()),
                        _ => ctx.expected(a, &ap, "a string argument"),
                    }
                }
                if argv.is_empty() {
                    ctx.err(
                        item.line,
                        &p,
                        "empty argument list (give the program and its arguments)",
                    );
                } else if argv.len() == args.len() {
                    out.push(Cmd::Argv(argv));
                }
            }
            _ => ctx.expected(
                item,
                &p,
                "a command string (run by `sh -c`) or a list (program and arguments)",
            ),
        }
    }
    out
}
