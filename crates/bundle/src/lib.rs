//! Signed update bundles (see the crate description).
