//! The patient and the visit: PID (identifiers, names, demographics), PV1
//! (the encounter), and merges (MRG).
use super::*;

/// Every CX repetition of a field as identifiers.
pub(super) fn identifiers(ctx: &Ctx<'_, '_>, field: &Value<'_>) -> Vec<Identifier> {
    field
        .repetitions()
        .filter_map(|rep| {
            let value = rep.component(1).text()?;
            let system = hd_sub_system(&rep.component(4)).unwrap_or_else(|| ctx.facility_system.clone());
            Some(Identifier {
                system,
                value,
                type_code: rep.component(5).text(),
            })
        })
        .collect()
}

/// EI (entity identifier): EI.1 with EI.2 namespace / EI.3 universal id.
pub(super) fn entity_id(ctx: &Ctx<'_, '_>, v: &Value<'_>) -> Option<Identifier> {
    let value = v.component(1).text()?;
    let system = authority_system(v.component(2).text(), v.component(3).text(), v.component(4).text())
        .unwrap_or_else(|| ctx.facility_system.clone());
    Some(Identifier {
        system,
        value,
        type_code: None,
    })
}

pub(super) fn patient(ctx: &Ctx<'_, '_>) -> Result<PatientData, MappingError> {
    let pid = ctx
        .seg("PID")
        .ok_or_else(|| MappingError::missing("PID", 1, 0, "patient identification segment"))?;
    let mut ids = identifiers(ctx, &pid.field(3));
    if ids.is_empty() {
        // v2.1–2.3 senders put the external id in PID-2.
        ids = identifiers(ctx, &pid.field(2));
    }
    if ids.is_empty() {
        return Err(MappingError::missing("PID", 1, 3, "patient identifier"));
    }
    let name_field = pid.field(5);
    let name = name_field.repetitions().next().and_then(|n| {
        let family = n.component(1).subcomponent(1).text();
        let mut given: Vec<String> = Vec::new();
        given.extend(n.component(2).text());
        given.extend(n.component(3).text());
        (family.is_some() || !given.is_empty()).then_some(HumanName { family, given })
    });
    let birth_date = match pid.field(7).component(1).text() {
        None => None,
        Some(ts) => Some(hl7_date(&ts).ok_or_else(|| MappingError::invalid("PID", 1, 7, "date of birth"))?),
    };
    let sex = pid.field(8).text().map(|s| match s.as_str() {
        "M" => Sex::Male,
        "F" => Sex::Female,
        "O" | "A" | "X" => Sex::Other,
        _ => Sex::Unknown,
    });
    let address = pid.field(11).repetitions().next().and_then(|a| {
        // XAD.1 is SAD: street address, else street name (SAD.2).
        let street = a
            .component(1)
            .subcomponent(1)
            .text()
            .or_else(|| a.component(1).subcomponent(2).text());
        let line2 = a.component(2).text();
        let city = a.component(3).text();
        let state = a.component(4).text();
        let postal = a.component(5).text();
        let country = a.component(6).text();
        let lines: Vec<String> = street.into_iter().chain(line2).collect();
        if lines.is_empty() && city.is_none() && postal.is_none() {
            return None;
        }
        Some(serde_json::json!({
            "line": lines, "city": city, "state": state, "postal_code": postal, "country": country,
        }))
    });
    let mut phone = None;
    let mut email = None;
    for rep in pid.field(13).repetitions() {
        let is_email = rep.component(2).raw() == "NET" || rep.component(3).raw() == "Internet";
        if is_email {
            email = email.or_else(|| rep.component(4).text());
        } else {
            let formatted = rep
                .component(1)
                .text()
                .or_else(|| rep.component(12).text())
                .or_else(|| {
                    let area = rep.component(6).text().unwrap_or_default();
                    let local = rep.component(7).text()?;
                    Some(format!("{area}{local}"))
                });
            phone = phone.or(formatted);
        }
    }
    Ok(PatientData {
        identifiers: ids,
        name,
        birth_date,
        sex,
        phone,
        email,
        address,
        managing_organization: None,
    })
}

pub(super) fn encounter(ctx: &Ctx<'_, '_>, trigger: &str) -> Result<Option<EncounterData>, MappingError> {
    let Some(pv1) = ctx.seg("PV1") else {
        return Ok(None);
    };
    let Some(visit) = identifiers(ctx, &pv1.field(19)).into_iter().next() else {
        return Ok(None);
    };
    let admitted_at = opt_ts(&pv1.field(44), "PV1", 44)?;
    let discharged_at = opt_ts(&pv1.field(45), "PV1", 45)?;
    let status = match trigger {
        "A03" => "finished",
        "A05" => "planned",
        _ if discharged_at.is_some() => "finished",
        _ => "in-progress",
    };
    let location = pv1.field(3);
    let location = [1, 2, 3]
        .iter()
        .filter_map(|&c| location.component(c).text())
        .collect::<Vec<_>>()
        .join("/");
    Ok(Some(EncounterData {
        visit,
        class: pv1.field(2).text(),
        status,
        location: (!location.is_empty()).then_some(location),
        admitted_at,
        discharged_at,
    }))
}

pub(super) fn merge(ctx: &Ctx<'_, '_>) -> Result<Command, MappingError> {
    let survivor = patient(ctx)?;
    let mrg = ctx
        .seg("MRG")
        .ok_or_else(|| MappingError::missing("MRG", 1, 1, "merge segment"))?;
    let prior = identifiers(ctx, &mrg.field(1));
    if prior.is_empty() {
        return Err(MappingError::missing("MRG", 1, 1, "prior patient identifier"));
    }
    Ok(Command::MergePatients { survivor, prior })
}
