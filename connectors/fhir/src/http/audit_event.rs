//! `GET /AuditEvent[/{id}]`: the audit trail as FHIR AuditEvents, for
//! administrators; reading it is audited too.

use super::*;

/// `GET /AuditEvent/<seq>`: one audit entry; the look is audited too.
pub(super) async fn audit_event(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Authenticated(principal): Authenticated,
) -> Result<Response, Outcome> {
    audit_grant(&principal)?;
    let not_found = || {
        Outcome::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("AuditEvent/{id} is not known"),
        )
    };
    let seq: i64 = id.parse().map_err(|_| not_found())?;
    let row: Option<carehub_schema::audit::AuditRow> = sqlx::query_as("SELECT * FROM audit_log WHERE seq = $1")
        .bind(seq)
        .fetch_optional(&state.pool)
        .await?;
    let row = row.ok_or_else(not_found)?;
    state
        .audit
        .append(vec![
            AuditEntry::new(principal.actor_kind(), principal.actor(), Action::Read, "audit_log")
                .entity(seq)
                .origin(format!("fhir:GET AuditEvent/{seq}")),
        ])
        .await?;
    Ok(fhir_json(&resources::audit_event(&row)).into_response())
}

/// `GET /AuditEvent?entity=<Type>/<id>&agent=<actor>&_count=n`: newest first.
pub(super) async fn audit_events(
    State(state): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
    Authenticated(principal): Authenticated,
) -> Result<Response, Outcome> {
    audit_grant(&principal)?;
    let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new("SELECT * FROM audit_log WHERE true");
    let mut count = crate::search::DEFAULT_COUNT;
    for (name, value) in &params {
        match name.as_str() {
            "entity" => {
                let (ty, id) = value
                    .split_once('/')
                    .filter(|(t, _)| store::is_served(t))
                    .map(|(t, i)| (store::audit_entity(t), i))
                    .ok_or_else(|| {
                        Outcome::new(
                            StatusCode::BAD_REQUEST,
                            "invalid",
                            format!("entity {value:?} is not a reference to a served type"),
                        )
                    })?;
                q.push(" AND entity_type = ")
                    .push_bind(ty)
                    .push(" AND entity_id = ")
                    .push_bind(id.to_owned());
            }
            "agent" => {
                q.push(" AND actor_id = ").push_bind(value.clone());
            }
            "_count" => {
                count = value
                    .parse::<i64>()
                    .map_err(|_| {
                        Outcome::new(
                            StatusCode::BAD_REQUEST,
                            "invalid",
                            format!("_count {value:?} is not a number"),
                        )
                    })?
                    .clamp(0, crate::search::MAX_COUNT);
            }
            other => {
                return Err(Outcome::new(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    format!("search parameter {other:?} is not supported on AuditEvent (entity, agent, _count)"),
                ));
            }
        }
    }
    q.push(" ORDER BY seq DESC LIMIT ").push_bind(count);
    let rows: Vec<carehub_schema::audit::AuditRow> = q.build_query_as().fetch_all(&state.pool).await?;
    state
        .audit
        .append(
            rows.iter()
                .map(|r| {
                    AuditEntry::new(principal.actor_kind(), principal.actor(), Action::Read, "audit_log")
                        .entity(r.seq)
                        .origin("fhir:GET AuditEvent?")
                })
                .collect(),
        )
        .await?;
    let mut bundle = json!({ "resourceType": "Bundle", "type": "searchset" });
    if !rows.is_empty() {
        bundle["entry"] = rows
            .iter()
            .map(|r| json!({ "resource": resources::audit_event(r), "search": { "mode": "match" } }))
            .collect();
    }
    Ok(fhir_json(&bundle).into_response())
}

/// Reading the trail needs AuditEvent read access for all patients.
pub(super) fn audit_grant(principal: &Principal) -> Result<(), Outcome> {
    match principal.grant("AuditEvent", Access::Read) {
        Grant::All => Ok(()),
        _ => Err(Outcome::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the token's scopes do not allow reading AuditEvent",
        )),
    }
}
