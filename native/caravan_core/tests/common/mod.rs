//! What the property-test files share.

use proptest::prelude::ProptestConfig;

/// 10 000 cases per property, or `PROPTEST_CASES` when set (the long run
/// of `script/fuzz --proptest` sets it high). Failures are shrunk and
/// printed; no regression files are written into the tree.
pub fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}
