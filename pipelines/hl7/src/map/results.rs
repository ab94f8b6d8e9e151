//! Results: OBX of ORU messages.
use super::*;

pub(super) fn result_status(code: &str) -> &'static str {
    match code {
        "F" | "U" => "final",
        "C" => "corrected",
        "X" | "D" => "cancelled",
        "W" => "entered-in-error",
        "O" | "N" => "registered",
        _ => "preliminary",
    }
}

pub(super) fn results(ctx: &Ctx<'_, '_>) -> Result<Vec<ResultData>, MappingError> {
    let mut out = Vec::new();
    let mut placer = None;
    let mut filler = None;
    let mut obr_index = 0;
    let mut obx_seq = 0;
    for seg in ctx.msg.segments() {
        match seg.name() {
            "OBR" => {
                obr_index += 1;
                placer = entity_id(ctx, &seg.field(2));
                filler = entity_id(ctx, &seg.field(3));
            }
            "OBX" => {
                obx_seq += 1;
                let id = seg.field(3);
                let code = id
                    .component(1)
                    .text()
                    .ok_or_else(|| MappingError::missing("OBX", obx_seq, 3, "observation identifier"))?;
                let value_type = seg.field(2).text().unwrap_or_default();
                let raw_value = seg.field(5);
                let value = match (value_type.as_str(), raw_value.text()) {
                    (_, None) => ResultValue::None,
                    ("NM" | "SN", Some(v)) => {
                        if v.parse::<f64>().is_err() && value_type == "NM" {
                            return Err(MappingError::invalid("OBX", obx_seq, 5, "number (OBX-2 is NM)"));
                        }
                        ResultValue::Quantity(v)
                    }
                    ("CE" | "CWE" | "CNE", Some(_)) => {
                        ResultValue::Coded(raw_value.component(1).text().unwrap_or_default())
                    }
                    (_, Some(v)) => {
                        // Text results may repeat (one line per repetition).
                        let lines: Vec<String> = raw_value.repetitions().filter_map(|r| r.text()).collect();
                        ResultValue::String(if lines.len() > 1 { lines.join("\n") } else { v })
                    }
                };
                let order_ref = filler
                    .as_ref()
                    .or(placer.as_ref())
                    .map_or_else(|| format!("obr{obr_index}"), |i| format!("{}|{}", i.system, i.value));
                let sub_id = seg.field(4).raw();
                out.push(ResultData {
                    placer: placer.clone(),
                    filler: filler.clone(),
                    result_key: format!("{order_ref}|{code}|{sub_id}"),
                    status: result_status(seg.field(11).raw()),
                    code_system: code_system(id.component(3).text().as_deref(), &ctx.facility_system),
                    code,
                    display: id.component(2).text(),
                    value,
                    unit: seg.field(6).component(1).text(),
                    reference_range: seg.field(7).text(),
                    interpretation: seg.field(8).text(),
                    effective_at: opt_ts(&seg.field(14), "OBX", 14)?,
                });
            }
            _ => {}
        }
    }
    if out.is_empty() {
        return Err(MappingError::missing("OBX", 1, 3, "observation result"));
    }
    Ok(out)
}
