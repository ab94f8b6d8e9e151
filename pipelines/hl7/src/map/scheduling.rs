//! Scheduling: SIU appointments.
use super::*;

pub(super) fn appointment(ctx: &Ctx<'_, '_>, trigger: &str) -> Result<AppointmentData, MappingError> {
    let sch = ctx
        .seg("SCH")
        .ok_or_else(|| MappingError::missing("SCH", 1, 1, "schedule activity segment"))?;
    let placer = entity_id(ctx, &sch.field(1))
        .or_else(|| entity_id(ctx, &sch.field(2)))
        .ok_or_else(|| MappingError::missing("SCH", 1, 1, "appointment id"))?;
    let status = match trigger {
        "S15" => "cancelled",
        _ => match sch.field(25).component(1).raw() {
            "Pending" | "Waitlist" => "pending",
            "Cancelled" | "Deleted" => "cancelled",
            "Complete" => "fulfilled",
            "Noshow" => "noshow",
            _ => "booked",
        },
    };
    let timing = sch.field(11);
    let ais = ctx.seg("AIS");
    let start = match ais.map(|a| a.field(4)).filter(|f| !f.is_empty()) {
        Some(f) => opt_ts(&f, "AIS", 4)?,
        None => opt_ts(&timing.component(4), "SCH", 11)?,
    };
    let duration = sch
        .field(9)
        .text()
        .or_else(|| ais.and_then(|a| a.field(7).text()))
        .and_then(|d| d.parse::<i32>().ok());
    let reason = sch.field(7);
    let location = ctx.seg("AIL").and_then(|a| a.field(3).component(1).text());
    Ok(AppointmentData {
        placer,
        filler_id: sch.field(2).component(1).text(),
        status,
        reason_code: reason.component(1).text(),
        reason_display: reason.component(2).text(),
        start_at: start,
        duration_minutes: duration,
        location,
        placer_order: entity_id(ctx, &sch.field(26)),
    })
}
