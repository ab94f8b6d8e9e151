//! `carehub fhir …`: tools around the FHIR endpoint.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use std::time::Instant;

use carehub_schema::{Action, ActorKind, AuditEntry, AuditLog};

use crate::config::Config;

/// Identifier system of synthetic patients (the example OID arc 2.999: no real person).
pub const SYNTHETIC_SYSTEM: &str = "urn:oid:2.999.9.1";

/// `carehub fhir load-synthetic --patients N`: N synthetic patients (name,
/// sex, birth date, one identifier `S-<number>` in [`SYNTHETIC_SYSTEM`]) for
/// load tests and benchmarks, in chunks of 20,000 per transaction, each
/// patient's creation audited. Numbers continue after those already loaded.
pub async fn load_synthetic(cfg: &Config, patients: u64, actor: &str) -> anyhow::Result<ExitCode> {
    let pool = crate::commands::connect(cfg).await?;
    let already = carehub_schema::views::patients_in_system(&pool, SYNTHETIC_SYSTEM).await?;
    let started = Instant::now();
    let mut next = already + 1;
    let end = already + patients as i64;
    while next <= end {
        let last = (next + 19_999).min(end);
        let mut tx = pool.begin().await?;
        let ids = carehub_schema::views::insert_synthetic_patients(&mut tx, next, last, SYNTHETIC_SYSTEM).await?;
        let audit: Vec<AuditEntry> = ids
            .iter()
            .map(|id| {
                AuditEntry::new(ActorKind::User, actor, Action::Create, "patient")
                    .entity(id)
                    .origin("cli:fhir load-synthetic")
            })
            .collect();
        AuditLog::append(&mut tx, &audit).await?;
        tx.commit().await?;
        next = last + 1;
    }
    println!(
        "{patients} synthetic patients loaded in {:.1} s (now {} in all)",
        started.elapsed().as_secs_f64(),
        end
    );
    Ok(ExitCode::SUCCESS)
}

/// `carehub fhir validate PATH`: see the command's help.
pub fn validate(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    if path.is_dir() {
        return score_cases(path);
    }
    let text = std::fs::read_to_string(path)?;
    let value: serde_json::Value = serde_json::from_str(text.trim_start_matches('\u{feff}'))?;
    let issues = carehub_fhir::validate::validate(&value);
    for i in &issues {
        println!("error  {i}");
    }
    println!("{}: {} issue(s)", path.display(), issues.len());
    Ok(if issues.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Prints how this validation judges each case of the FHIR validator test
/// cases; exit 1 unless every valid case is accepted.
fn score_cases(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let results = carehub_fhir::validate::judge_cases(dir)?;
    for r in &results {
        println!(
            "{:5}  {:45} expected {:2} error(s), found {:2}{}",
            if r.right() { "right" } else { "WRONG" },
            r.name,
            r.expected_error_count,
            r.issues.len(),
            r.issues.first().map(|i| format!("  first: {i}")).unwrap_or_default()
        );
    }
    let t = carehub_fhir::validate::CaseTally::of(&results);
    println!(
        "valid accepted: {}/{}; invalid refused: {}/{}; judged right: {}/{}",
        t.valid_accepted,
        t.valid,
        t.invalid_refused,
        t.invalid,
        t.valid_accepted + t.invalid_refused,
        t.valid + t.invalid
    );
    Ok(if t.valid_accepted == t.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `carehub token issue`: an HS256 access token for the FHIR endpoint.
pub fn token_issue(
    cfg: &Config,
    sub: &str,
    role: Option<&str>,
    scope: Option<&str>,
    patient: Option<uuid::Uuid>,
    minutes: Option<i64>,
) -> anyhow::Result<ExitCode> {
    let scope = match (role, scope) {
        (Some(r), _) => carehub_fhir::Role::parse(r)
            .with_context(|| format!("unknown role {r:?} (clinician, admin, lab_technician, system)"))?
            .scopes()
            .to_owned(),
        (None, Some(s)) => s.to_owned(),
        (None, None) => bail!("give --role or --scope"),
    };
    let token = carehub_fhir::auth::issue(&cfg.fhir.auth, sub, &scope, patient, minutes)?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}
