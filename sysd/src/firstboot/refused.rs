//! The words said when a document is refused: how to get in and what to fix.
//! A refused document is never applied in part; the person who wrote it is
//! at the console and must learn which file to correct and that the machine
//! is still reachable. Text only, no decisions.

/// The console line after a refused document from `source` (a file on the
/// boot partition, a CIDATA volume's file, or a URL).
pub fn how_to_get_in(source: &str) -> String {
    let fix = if source.starts_with("http://") || source.starts_with("https://") {
        format!("correct the document served at {source}")
    } else if source.starts_with("/boot/") {
        format!(
            "correct {} on the boot partition (FAT: any computer can edit it)",
            source.trim_start_matches("/boot/")
        )
    } else {
        format!("correct {source} on the seed volume (CIDATA) and attach it again")
    };
    format!(
        "the document was refused whole and nothing of it was applied: {fix}; check it first with `osctl config validate FILE` (also before flashing); meanwhile the machine keeps the config applied before, or on a fresh machine the image's defaults: log in over SSH as `ballast` with the image's keys"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_names_the_file_the_check_and_the_way_in() {
        let b = how_to_get_in("/boot/user-data");
        assert!(b.contains("correct user-data on the boot partition"), "{b}");
        assert!(b.contains("osctl config validate"), "{b}");
        assert!(b.contains("SSH as `ballast`"), "{b}");
        let u = how_to_get_in("https://cfg.example/ud");
        assert!(u.contains("served at https://cfg.example/ud"), "{u}");
        let c = how_to_get_in("/dev/vdb/user-data");
        assert!(c.contains("seed volume"), "{c}");
    }
}
