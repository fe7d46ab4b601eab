//! What to tell someone whose document was refused: where the document
//! they must fix lives, how to check it before flashing, and how they still
//! get in. One text, so that sysd's console line and osctl say the same.
//! It never decides whether a document is refused.

use crate::{Checked, DEFAULT_USER};

/// Where a document came from, by the source name sysd and osctl give it.
fn place(source: &str) -> String {
    let file = source.rsplit('/').next().unwrap_or(source);
    if source.starts_with("http://") || source.starts_with("https://") {
        format!("correct the document the server gives at {source}")
    } else if let Some(rest) = source.strip_prefix("CIDATA:") {
        format!(
            "correct `{file}` on the CIDATA volume ({rest}; rebuild the seed with `ballast seed`)"
        )
    } else if source.starts_with("/boot/") || source == "/boot" {
        format!("correct `{file}` on the boot partition (the FAT partition of the disk or SD card: mount it on another computer and edit {source})")
    } else {
        format!("correct {source}")
    }
}

/// The lines to print after the errors of a refused document from
/// `source` (`CIDATA:/dev/vdb/user-data`, `/boot/user-data`, a URL, a file).
pub fn refused_hint(source: &str) -> String {
    format!(
        "The document was refused as a whole: nothing in it was applied, and the machine keeps its previous config (at first boot: the image's defaults, so log in over SSH as `{DEFAULT_USER}` with a key baked into the image by `ballast build --ssh-key`).\n\
         To fix it: {}; check it with `osctl config validate user-data --meta-data meta-data --network-config network-config` before writing it to the machine; then reboot, or send it with `osctl config apply FILE`.",
        place(source)
    )
}

impl Checked {
    /// [`refused_hint`] for the document's source when it was refused
    /// (`None` when it is valid).
    pub fn refused_hint(&self) -> Option<String> {
        let first = self.errors.first()?;
        Some(refused_hint(&first.source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_names_the_place_to_fix_and_the_way_in() {
        let boot = refused_hint("/boot/user-data");
        assert!(boot.contains("`user-data` on the boot partition"), "{boot}");
        assert!(boot.contains("osctl config validate"), "{boot}");
        assert!(boot.contains("SSH as `ballast`"), "{boot}");
        let seed = refused_hint("CIDATA:/dev/vdb/user-data");
        assert!(
            seed.contains("on the CIDATA volume (/dev/vdb/user-data"),
            "{seed}"
        );
        let url = refused_hint("http://10.0.2.2:8000/user-data");
        assert!(
            url.contains("the server gives at http://10.0.2.2:8000/user-data"),
            "{url}"
        );
    }
}
