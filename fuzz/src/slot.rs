//! Slot state as the bootloaders leave it on the boot partition: the U-Boot
//! state file (`ballast/state.{0,1}.env`) and BLS entries (their text and the
//! tries counter in their file names).

use ballast_slot::{bls, uboot};

/// A state file that parses renders back to text that parses to the same state.
pub fn uboot_state(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    if let Ok(state) = uboot::parse(text) {
        let again = uboot::parse(&uboot::render(&state));
        assert_eq!(again.ok(), Some(state), "render/parse round trip");
        let _ = state.boot_choice();
        let _ = state.after_boot();
    }
}

/// A boot entry's text, and the input as an entry's file name.
pub fn bls_entry(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    if let Ok(entry) = bls::parse(text) {
        let again = bls::parse(&bls::render(&entry));
        assert_eq!(again.ok(), Some(entry), "render/parse round trip");
    }
    if let Some((slot, counter)) = bls::parse_file_name(text.trim_end()) {
        let name = bls::file_name(slot, counter);
        assert_eq!(
            bls::parse_file_name(&name),
            Some((slot, counter)),
            "file name round trip via {name:?}"
        );
    }
}
