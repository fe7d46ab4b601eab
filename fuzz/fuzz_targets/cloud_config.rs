//! Any UTF-8 as user-data (and as meta-data): parse, plan and diff never
//! panic.
#![no_main]

use ballast_config::{check, diff, parse_meta_data, Plan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let meta = parse_meta_data(text, "meta-data").unwrap_or_default();
    let checked = check(text, "user-data");
    if let Some(doc) = checked.doc {
        let plan = doc.plan(&meta);
        let _ = diff(&Plan::default(), &plan);
        let _ = diff(&plan, &Plan::default());
    }
});
