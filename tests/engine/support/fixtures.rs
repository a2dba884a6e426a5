//! Where the test data is.
use std::path::PathBuf;

/// `tests/fixtures/<rel>` (the golden data is copied there so a fresh clone has it).
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(rel)
}
