//! Where the external test corpus is (`../shared/corpus`: HL7 v2, FHIR,
//! Stripe, shipping), for tests and benches that use it when it is there.

use std::path::{Path, PathBuf};

/// `$CAREHUB_CORPUS` (relative to the repository root when relative), else
/// `../shared/corpus` beside the repository.
pub fn dir(repo_root: &Path) -> PathBuf {
    match std::env::var("CAREHUB_CORPUS") {
        Ok(p) => repo_root.join(p), // an absolute path replaces the root
        Err(_) => repo_root.join("../shared/corpus"),
    }
}

/// The corpus's `part` (`hl7v2`, `fhir/validator-cases`, …) when it exists;
/// otherwise `None`, with a notice saying what is skipped.
pub fn part(repo_root: &Path, part: &str) -> Option<PathBuf> {
    let path = dir(repo_root).join(part);
    if path.exists() {
        Some(path)
    } else {
        eprintln!("NOTICE: {} not found (set CAREHUB_CORPUS): skipped", path.display());
        None
    }
}
