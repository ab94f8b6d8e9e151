//! Orders: ORC/OBR (ORM, OML), their notes, ordering practitioners and codes.
use super::*;

pub(super) fn priority(code: &str) -> &'static str {
    match code.trim() {
        "S" => "stat",
        "A" | "P" | "C" => "asap",
        "U" => "urgent",
        _ => "routine",
    }
}

/// ORC-1 and ORC-5 → the canonical status this message sets.
pub(super) fn order_status(control: &str, orc5: Option<&str>) -> Option<&'static str> {
    match control {
        "NW" | "RL" => Some("active"),
        "CA" | "OC" | "DC" | "CR" | "OD" => Some("revoked"),
        "HD" | "OH" => Some("on-hold"),
        "SC" | "SN" | "XO" | "XX" => orc5.and_then(|s| match s {
            "CM" => Some("completed"),
            "CA" | "DC" => Some("revoked"),
            "HD" => Some("on-hold"),
            "ER" => Some("entered-in-error"),
            "IP" | "SC" | "A" => Some("active"),
            _ => None,
        }),
        _ => None,
    }
}

pub(super) fn orders(ctx: &Ctx<'_, '_>) -> Result<Vec<OrderData>, MappingError> {
    let mut out: Vec<OrderData> = Vec::new();
    let mut orc_seq = 0;
    let mut obr_seq = 0;
    // Segments after an ORC belong to its order until the next ORC.
    for seg in ctx.msg.segments() {
        match seg.name() {
            "ORC" => {
                orc_seq += 1;
                let control = seg
                    .field(1)
                    .text()
                    .ok_or_else(|| MappingError::missing("ORC", orc_seq, 1, "order control"))?;
                let placer = entity_id(ctx, &seg.field(2));
                let filler = entity_id(ctx, &seg.field(3));
                let status = order_status(&control, seg.field(5).text().as_deref());
                let orderer = practitioner(ctx, &seg.field(12));
                let timing = seg.field(7);
                out.push(OrderData {
                    placer: placer.unwrap_or(Identifier {
                        system: String::new(),
                        value: String::new(),
                        type_code: None,
                    }),
                    filler,
                    control,
                    status,
                    priority: priority(timing.component(6).raw()),
                    due_date: timing.component(5).text().and_then(|t| hl7_date(&t)),
                    orderer,
                    items: Vec::new(),
                    note: None,
                    observations: Vec::new(),
                });
            }
            "OBR" => {
                obr_seq += 1;
                let Some(order) = out.last_mut() else {
                    return Err(MappingError {
                        code: 100,
                        location: Some(ErrorLocation::field("OBR", obr_seq, 0)),
                        reason: "OBR before any ORC".into(),
                        reject: false,
                    });
                };
                if order.placer.value.is_empty()
                    && let Some(p) = entity_id(ctx, &seg.field(2))
                {
                    order.placer = p;
                }
                if order.filler.is_none() {
                    order.filler = entity_id(ctx, &seg.field(3));
                }
                if order.orderer.is_none() {
                    order.orderer = practitioner(ctx, &seg.field(16));
                }
                let service = seg.field(4);
                let code = service
                    .component(1)
                    .text()
                    .ok_or_else(|| MappingError::missing("OBR", obr_seq, 4, "universal service identifier"))?;
                order.items.push(ItemData {
                    code_system: code_system(service.component(3).text().as_deref(), &ctx.facility_system),
                    code,
                    display: service.component(2).text(),
                });
                let obr_priority = seg.field(27).component(6).raw();
                if order.priority == "routine" && !obr_priority.is_empty() {
                    order.priority = priority(obr_priority);
                }
                if order.priority == "routine" && !seg.field(5).raw().is_empty() {
                    order.priority = priority(seg.field(5).raw());
                }
            }
            "TQ1" => {
                if let Some(order) = out.last_mut() {
                    if let Some(p) = seg.field(9).component(1).text() {
                        order.priority = priority(&p);
                    }
                    if let Some(end) = seg.field(8).component(1).text() {
                        order.due_date = hl7_date(&end).or(order.due_date);
                    }
                }
            }
            "NTE" => {
                if let (Some(order), Some(text)) = (out.last_mut(), nte_text(seg)) {
                    order.note = Some(match order.note.take() {
                        Some(n) => format!("{n}\n{text}"),
                        None => text,
                    });
                }
            }
            "OBX" => {
                if let Some(order) = out.last_mut() {
                    let id = seg.field(3);
                    order.observations.push(serde_json::json!({
                        "code": id.component(1).text(),
                        "display": id.component(2).text(),
                        "system": id.component(3).text(),
                        "value": seg.field(5).text(),
                        "unit": seg.field(6).component(1).text(),
                    }));
                }
            }
            _ => {}
        }
    }
    if out.is_empty() {
        return Err(MappingError::missing("ORC", 1, 1, "common order segment"));
    }
    for (i, order) in out.iter().enumerate() {
        if order.placer.value.is_empty() {
            return Err(MappingError::missing("ORC", i + 1, 2, "placer order number"));
        }
    }
    Ok(out)
}

pub(super) fn nte_text(seg: &Segment<'_>) -> Option<String> {
    let parts: Vec<String> = seg.field(3).repetitions().filter_map(|r| r.text()).collect();
    (!parts.is_empty()).then(|| parts.join("\n"))
}

/// XCN → a practitioner.
pub(super) fn practitioner(ctx: &Ctx<'_, '_>, xcn: &Value<'_>) -> Option<PractitionerData> {
    let rep = xcn.repetitions().next()?;
    let value = rep.component(1).text()?;
    let system = hd_sub_system(&rep.component(9)).unwrap_or_else(|| ctx.facility_system.clone());
    let mut given = Vec::new();
    given.extend(rep.component(3).text());
    given.extend(rep.component(4).text());
    Some(PractitionerData {
        identifier: Identifier {
            system,
            value,
            type_code: rep.component(13).text(),
        },
        name: HumanName {
            family: rep.component(2).subcomponent(1).text(),
            given,
        },
    })
}

/// Coding system (CWE.3) as a URI: the common HL7 table 0396 names, else as written.
pub(super) fn code_system(name: Option<&str>, fallback: &str) -> String {
    match name {
        Some("LN") => "http://loinc.org".into(),
        Some("SCT") | Some("SNM") => "http://snomed.info/sct".into(),
        Some("I10") | Some("ICD10") => "http://hl7.org/fhir/sid/icd-10".into(),
        Some("CPT") | Some("C4") => "http://www.ama-assn.org/go/cpt".into(),
        Some("UCUM") => "http://unitsofmeasure.org".into(),
        Some(other) => format!("urn:carehub:hl7-cs:{other}"),
        None => format!("{fallback}#local"),
    }
}
