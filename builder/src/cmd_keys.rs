//! `ballast keygen [--out PREFIX] [--comment C] [--json]`: make an ed25519
//! signing key pair for bundles and channels. Never overwrites a key.

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Write PREFIX.key (secret, mode 0600) and PREFIX.pub (install on devices).
    #[arg(long, value_name = "PREFIX", default_value = "keys/ballast")]
    pub out: PathBuf,
    /// Text after the key in PREFIX.pub, e.g. who owns it.
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub comment: String,
    /// Print {"secret": PATH, "public": PATH, "key_id": ID}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Generated {
    secret: PathBuf,
    public: PathBuf,
    key_id: String,
}

pub fn run(args: &KeygenArgs) -> Result<()> {
    let (secret, public) = ballast_bundle::keys::generate(&args.out, &args.comment)?;
    let key_id = ballast_bundle::keys::read_public(&public)?.id;
    let out = Generated {
        secret,
        public,
        key_id,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("key id:     {}", out.key_id);
        println!(
            "secret key: {} (keep it private: it signs updates)",
            out.secret.display()
        );
        println!(
            "public key: {} (trusted by devices that carry it)",
            out.public.display()
        );
    }
    Ok(())
}
