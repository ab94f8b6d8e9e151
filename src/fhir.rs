//! `carehub fhir …`: tools around the FHIR endpoint.

use std::process::ExitCode;
use std::time::Instant;

use carehub_schema::{Action, ActorKind, AuditEntry, AuditLog};
use uuid::Uuid;

use crate::config::Config;

/// Identifier system of synthetic patients (the example OID arc 2.999: no real person).
pub const SYNTHETIC_SYSTEM: &str = "urn:oid:2.999.9.1";

/// `carehub fhir load-synthetic --patients N`: N synthetic patients (name,
/// sex, birth date, one identifier `S-<number>` in [`SYNTHETIC_SYSTEM`]) for
/// load tests and benchmarks, in chunks of 20,000 per transaction, each
/// patient's creation audited. Numbers continue after those already loaded.
pub async fn load_synthetic(cfg: &Config, patients: u64, actor: &str) -> anyhow::Result<ExitCode> {
    let pool = crate::commands::connect(cfg).await?;
    let (already,): (i64,) = sqlx::query_as("SELECT count(*) FROM patient_identifier WHERE system = $1")
        .bind(SYNTHETIC_SYSTEM)
        .fetch_one(&pool)
        .await?;
    let started = Instant::now();
    let mut next = already + 1;
    let end = already + patients as i64;
    while next <= end {
        let last = (next + 19_999).min(end);
        let mut tx = pool.begin().await?;
        let ids: Vec<(Uuid,)> = sqlx::query_as(
            "WITH src AS MATERIALIZED (SELECT gen_random_uuid() AS id, i FROM generate_series($1::bigint, $2::bigint) i),
                  p AS (INSERT INTO patient (id, family_name, given_names, birth_date, sex)
                        SELECT id, 'Synthetic', ARRAY['Pat' || i], date '1930-01-01' + (i % 30000)::int,
                               CASE i % 2 WHEN 0 THEN 'female' ELSE 'male' END
                          FROM src RETURNING id)
             INSERT INTO patient_identifier (patient_id, system, value, type_code)
             SELECT id, $3, 'S-' || lpad(i::text, 9, '0'), 'MR' FROM src RETURNING patient_id",
        )
        .bind(next)
        .bind(last)
        .bind(SYNTHETIC_SYSTEM)
        .fetch_all(&mut *tx)
        .await?;
        let audit: Vec<AuditEntry> = ids
            .iter()
            .map(|(id,)| {
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
    let (mut valid, mut valid_ok, mut invalid, mut invalid_ok) = (0, 0, 0, 0);
    for r in &results {
        if r.expected_error_count == 0 {
            valid += 1;
            valid_ok += usize::from(r.right());
        } else {
            invalid += 1;
            invalid_ok += usize::from(r.right());
        }
        println!(
            "{:5}  {:45} expected {:2} error(s), found {:2}{}",
            if r.right() { "right" } else { "WRONG" },
            r.name,
            r.expected_error_count,
            r.issues.len(),
            r.issues.first().map(|i| format!("  first: {i}")).unwrap_or_default()
        );
    }
    println!(
        "valid accepted: {valid_ok}/{valid}; invalid refused: {invalid_ok}/{invalid}; judged right: {}/{}",
        valid_ok + invalid_ok,
        valid + invalid
    );
    Ok(if valid_ok == valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
