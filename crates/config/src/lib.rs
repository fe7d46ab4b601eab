//! First-boot configuration (see the crate description).
