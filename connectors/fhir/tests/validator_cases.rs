//! The FHIR validator's test cases (`$CAREHUB_CORPUS/fhir/validator-cases`,
//! default `../shared/corpus`): every valid resource must be accepted; how many
//! invalid ones are refused is printed (the figure is in the README). Skipped,
//! with a notice, where the corpus is absent.

use std::path::{Path, PathBuf};

fn cases_dir() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    carehub_core::corpus::part(&root, "fhir/validator-cases/cases.json").and_then(|f| f.parent().map(Path::to_path_buf))
}

#[test]
fn every_valid_case_is_accepted_and_invalid_ones_are_counted() {
    let Some(dir) = cases_dir() else { return };
    let results = carehub_fhir::validate::judge_cases(&dir).expect("cases readable");
    let (valid, invalid): (Vec<_>, Vec<_>) = results.iter().partition(|r| r.expected_error_count == 0);
    let refused = invalid.iter().filter(|r| r.right()).count();
    let wrongly_refused: Vec<String> = valid
        .iter()
        .filter(|r| !r.right())
        .map(|r| format!("{}: {:?}", r.name, r.issues))
        .collect();
    println!(
        "validator cases: {} valid, all must pass; invalid refused: {refused}/{}",
        valid.len(),
        invalid.len()
    );
    assert!(!valid.is_empty() && !invalid.is_empty());
    assert!(wrongly_refused.is_empty(), "{wrongly_refused:#?}");
}
