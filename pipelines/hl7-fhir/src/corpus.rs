//! Scoring the conversion of a corpus laid out as the ms-fhir-converter's:
//! `input/*.hl7` and `expected/<TYPE>/<name>-expected.json` (the expected
//! Bundle of each file's first message).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use carehub_hl7::codec::batch;
use serde_json::Value;

use crate::score::{Score, misses, score};

/// What a corpus run found.
#[derive(Debug, Default)]
pub struct CorpusScore {
    pub files: usize,
    pub messages: usize,
    pub converted: usize,
    /// Fields or segments reported unmapped.
    pub unmapped: usize,
    /// Resources produced, and the first validation issue of each invalid one, counted.
    pub resources: usize,
    pub invalid: BTreeMap<String, usize>,
    /// Message type → (messages, converted, score against the expected Bundles).
    pub by_type: BTreeMap<String, (usize, usize, Score)>,
    pub total: Score,
    /// Lines worth showing: messages not converted, and with `explain`
    /// the key elements the closest resource of that type lacked.
    pub notes: Vec<String>,
}

/// Converts and scores every message under `dir`; `None` when `dir` is
/// not laid out as a corpus. `validate` gives a produced resource's first
/// validation issue, if any.
pub fn score_corpus(
    dir: &Path,
    explain: Option<&str>,
    validate: &dyn Fn(&Value) -> Option<String>,
) -> std::io::Result<Option<CorpusScore>> {
    let (inputs, expected_dir) = (dir.join("input"), dir.join("expected"));
    if !inputs.is_dir() || !expected_dir.is_dir() {
        return Ok(None);
    }
    let name_of = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    // name → expected Bundle file.
    let mut expected: BTreeMap<String, PathBuf> = BTreeMap::new();
    for t in std::fs::read_dir(&expected_dir)? {
        for f in std::fs::read_dir(t?.path())? {
            let f = f?.path();
            if let Some(stem) = name_of(&f).strip_suffix("-expected.json") {
                expected.insert(stem.to_owned(), f.clone());
            }
        }
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&inputs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let mut out = CorpusScore {
        files: files.len(),
        ..CorpusScore::default()
    };
    for f in &files {
        let stem = f
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = std::fs::read(f)?;
        let texts = batch::message_file(&bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", f.display())))?
            .messages;
        for (k, text) in texts.iter().enumerate() {
            out.messages += 1;
            let kind = carehub_hl7::codec::er7::Message::header(text)
                .map(|m| m.message_type().0.to_owned() + "_" + m.message_type().1)
                .unwrap_or_else(|_| "unreadable".into());
            let slot = out.by_type.entry(kind).or_default();
            slot.0 += 1;
            let c = match crate::to_fhir(text) {
                Ok(c) => c,
                Err(e) => {
                    out.notes
                        .push(format!("not converted: {} message {}: {e}", f.display(), k + 1));
                    continue;
                }
            };
            slot.1 += 1;
            out.converted += 1;
            out.unmapped += c.unmapped.len();
            // What carehub produces must itself be valid R4.
            for e in c.bundle["entry"].as_array().into_iter().flatten() {
                out.resources += 1;
                if let Some(issue) = validate(&e["resource"]) {
                    *out.invalid.entry(issue).or_default() += 1;
                }
            }
            if k == 0
                && let Some(path) = expected.get(&stem)
            {
                let text = std::fs::read_to_string(path)?;
                let want: Value = serde_json::from_str(text.trim_start_matches('\u{feff}'))?;
                let s = score(&want, &c.bundle);
                if let Some(t) = explain {
                    for miss in misses(&want, &c.bundle, t) {
                        out.notes.push(format!("{stem}: {t} lacks {miss:?}"));
                    }
                }
                slot.2.add(&s);
                out.total.add(&s);
            }
        }
    }
    Ok(Some(out))
}
