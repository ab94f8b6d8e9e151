//! `carehub hl7 to-fhir FILE` and `carehub hl7 score-conversion DIR`: the
//! HL7 v2 → FHIR conversion (`pipelines/hl7-fhir`) from the command line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use carehub_hl7_fhir::score::{Score, score};

/// Prints the Bundle of each message of FILE and, on stderr, what was not mapped.
pub fn to_fhir(file: &Path) -> anyhow::Result<ExitCode> {
    let messages = crate::hl7::message_texts(file)?;
    let mut failed = false;
    for text in &messages {
        match carehub_hl7_fhir::to_fhir(text) {
            Ok(c) => {
                println!("{}", serde_json::to_string_pretty(&c.bundle)?);
                for u in &c.unmapped {
                    eprintln!("not mapped: {u}");
                }
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                failed = true;
            }
        }
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Scores the conversion of the corpus DIR (`input/*.hl7`, `expected/<TYPE>/<name>-expected.json`).
/// `explain`: a resource type whose misses are printed (the key elements
/// the closest resource lacked), to see what the mapping still lacks.
pub fn score_conversion(dir: &Path, explain: Option<&str>) -> anyhow::Result<ExitCode> {
    let inputs = dir.join("input");
    let expected_dir = dir.join("expected");
    if !inputs.is_dir() || !expected_dir.is_dir() {
        eprintln!(
            "NOTICE: {} has no input/ and expected/ (the ms-fhir-converter corpus; set CAREHUB_CORPUS): nothing scored",
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    // name → (message type, expected Bundle file).
    let mut expected: BTreeMap<String, (String, PathBuf)> = BTreeMap::new();
    for t in std::fs::read_dir(&expected_dir)? {
        let t = t?.path();
        let kind = t
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for f in std::fs::read_dir(&t)? {
            let f = f?.path();
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Some(stem) = name.strip_suffix("-expected.json") {
                expected.insert(stem.to_owned(), (kind.clone(), f));
            }
        }
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&inputs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let (mut messages, mut converted, mut unmapped) = (0usize, 0usize, 0usize);
    let (mut resources, mut invalid) = (0usize, BTreeMap::<String, usize>::new());
    let mut by_type: BTreeMap<String, (usize, usize, Score)> = BTreeMap::new();
    let mut total = Score::default();
    let started = Instant::now();
    for f in &files {
        let stem = f
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let texts = crate::hl7::message_texts(f)?;
        for (k, text) in texts.iter().enumerate() {
            messages += 1;
            let result = carehub_hl7_fhir::to_fhir(text);
            let kind = carehub_hl7::codec::er7::Message::header(text)
                .map(|m| m.message_type().0.to_owned() + "_" + m.message_type().1)
                .unwrap_or_else(|_| "unreadable".into());
            let slot = by_type.entry(kind).or_default();
            slot.0 += 1;
            let Ok(c) = result else {
                if let Err(e) = result {
                    println!("  not converted: {} message {}: {e}", f.display(), k + 1);
                }
                continue;
            };
            slot.1 += 1;
            converted += 1;
            unmapped += c.unmapped.len();
            // What carehub produces must itself be valid R4.
            for e in c.bundle["entry"].as_array().into_iter().flatten() {
                resources += 1;
                let issues = carehub_fhir::validate::validate(&e["resource"]);
                if let Some(first) = issues.first() {
                    *invalid.entry(first.to_string()).or_default() += 1;
                }
            }
            // The expected Bundle is the first message's.
            if k == 0
                && let Some((_, path)) = expected.get(&stem)
            {
                let text = std::fs::read_to_string(path)?;
                let want: serde_json::Value = serde_json::from_str(text.trim_start_matches('\u{feff}'))?;
                let s = score(&want, &c.bundle);
                if let Some(t) = explain {
                    for miss in carehub_hl7_fhir::score::misses(&want, &c.bundle, t) {
                        println!("  {stem}: {t} lacks {miss:?}");
                    }
                }
                slot.2.add(&s);
                total.add(&s);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!("HL7 v2 → FHIR on {} ({} files)", dir.display(), files.len());
    println!(
        "{:<10} {:>9} {:>10} {:>22}",
        "type", "messages", "converted", "expected resources"
    );
    for (kind, (n, ok, s)) in &by_type {
        let matched = if s.expected > 0 {
            format!("{}/{} ({:.1}%)", s.matched, s.expected, s.share() * 100.0)
        } else {
            "-".into()
        };
        println!("{kind:<10} {n:>9} {ok:>10} {matched:>22}");
    }
    println!(
        "overall: {converted}/{messages} converted ({:.1}%); expected resources matched {}/{} ({:.1}%); {unmapped} fields or segments reported unmapped",
        converted as f64 * 100.0 / messages.max(1) as f64,
        total.matched,
        total.expected,
        total.share() * 100.0
    );
    println!(
        "resources produced: {resources}, not valid R4: {}",
        invalid.values().sum::<usize>()
    );
    for (issue, n) in &invalid {
        println!("  {n:>4} × {issue}");
    }
    println!("by resource type (matched/expected):");
    for (t, (e, m)) in &total.by_type {
        println!("  {t:<22} {m:>4}/{e:<4}");
    }
    println!("({secs:.2} s, conversion and scoring together)");
    Ok(ExitCode::SUCCESS)
}

/// `carehub fhir to-hl7 FILE --message ORU_R01`: the v2 message built from
/// the resources of the Bundle in FILE (segments on lines of their own).
pub fn to_hl7(file: &Path, message: &str, to_application: &str, to_facility: &str) -> anyhow::Result<ExitCode> {
    let Some(kind) = carehub_hl7_fhir::to_v2::V2Message::parse(message) else {
        anyhow::bail!("--message {message:?}: one of ADT_A08, ORU_R01, ORM_O01, OML_O21");
    };
    let text = std::fs::read_to_string(file)?;
    let bundle: serde_json::Value = serde_json::from_str(text.trim_start_matches('\u{feff}'))?;
    let now = chrono::Utc::now();
    let header = carehub_hl7_fhir::to_v2::Header {
        sending_application: "CAREHUB".into(),
        sending_facility: "CAREHUB".into(),
        receiving_application: to_application.into(),
        receiving_facility: to_facility.into(),
        control_id: format!("CH{}", now.format("%Y%m%d%H%M%S%3f")),
        timestamp: now.format("%Y%m%d%H%M%S+0000").to_string(),
    };
    match carehub_hl7_fhir::to_v2::from_fhir(&bundle, kind, &header) {
        Ok(v2) => {
            println!("{}", v2.trim_end_matches('\r').replace('\r', "\n"));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            Ok(ExitCode::from(1))
        }
    }
}
