//! `carehub hl7 to-fhir FILE` and `carehub hl7 score-conversion DIR`: the
//! HL7 v2 → FHIR conversion (`pipelines/hl7-fhir`) from the command line.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

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
    let started = Instant::now();
    let validate = |r: &serde_json::Value| carehub_fhir::validate::validate(r).first().map(ToString::to_string);
    let Some(run) = carehub_hl7_fhir::corpus::score_corpus(dir, explain, &validate)? else {
        eprintln!(
            "NOTICE: {} has no input/ and expected/ (the ms-fhir-converter corpus; set CAREHUB_CORPUS): nothing scored",
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    };
    let secs = started.elapsed().as_secs_f64();
    for note in &run.notes {
        println!("  {note}");
    }
    println!("HL7 v2 → FHIR on {} ({} files)", dir.display(), run.files);
    println!(
        "{:<10} {:>9} {:>10} {:>22}",
        "type", "messages", "converted", "expected resources"
    );
    for (kind, (n, ok, s)) in &run.by_type {
        let matched = if s.expected > 0 {
            format!("{}/{} ({:.1}%)", s.matched, s.expected, s.share() * 100.0)
        } else {
            "-".into()
        };
        println!("{kind:<10} {n:>9} {ok:>10} {matched:>22}");
    }
    println!(
        "overall: {}/{} converted ({:.1}%); expected resources matched {}/{} ({:.1}%); {} fields or segments reported unmapped",
        run.converted,
        run.messages,
        run.converted as f64 * 100.0 / run.messages.max(1) as f64,
        run.total.matched,
        run.total.expected,
        run.total.share() * 100.0,
        run.unmapped
    );
    println!(
        "resources produced: {}, not valid R4: {}",
        run.resources,
        run.invalid.values().sum::<usize>()
    );
    for (issue, n) in &run.invalid {
        println!("  {n:>4} × {issue}");
    }
    println!("by resource type (matched/expected):");
    for (t, (e, m)) in &run.total.by_type {
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
