//! The FHIR validator's test cases (`$CAREHUB_CORPUS/fhir/validator-cases`,
//! default `../shared/corpus`): every valid resource must be accepted; how many
//! invalid ones are refused is printed (the figure is in the README). Skipped,
//! with a notice, where the corpus is absent.

use std::path::{Path, PathBuf};

use carehub_fhir::validate::validate;
use serde_json::Value;

fn cases_dir() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = match std::env::var("CAREHUB_CORPUS") {
        Ok(p) if Path::new(&p).is_absolute() => PathBuf::from(p),
        Ok(p) => root.join(p),
        Err(_) => root.join("../shared/corpus"),
    }
    .join("fhir/validator-cases");
    if dir.join("cases.json").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "NOTICE: FHIR validator cases not found at {} (set CAREHUB_CORPUS); test skipped",
            dir.display()
        );
        None
    }
}

#[test]
fn every_valid_case_is_accepted_and_invalid_ones_are_counted() {
    let Some(dir) = cases_dir() else { return };
    let read = |name: &str| -> Value {
        let text = std::fs::read_to_string(dir.join(name)).expect("read case");
        serde_json::from_str(text.trim_start_matches('\u{feff}')).expect("case is JSON")
    };
    let cases = read("cases.json");
    let (mut valid, mut invalid, mut refused, mut wrongly_refused) = (0, 0, 0, Vec::new());
    for case in cases.as_array().expect("cases") {
        let resource = read(case["file"].as_str().expect("file"));
        let issues = validate(&resource);
        if case["expected_error_count"] == 0 {
            valid += 1;
            if !issues.is_empty() {
                wrongly_refused.push(format!("{}: {:?}", case["name"], issues));
            }
        } else {
            invalid += 1;
            refused += usize::from(!issues.is_empty());
        }
    }
    println!("validator cases: {valid} valid, all must pass; invalid refused: {refused}/{invalid}");
    assert!(valid > 0 && invalid > 0);
    assert!(wrongly_refused.is_empty(), "{wrongly_refused:#?}");
}
