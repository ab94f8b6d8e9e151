//! Charges: DFT FT1 segments as an invoice.
use super::*;

pub(super) fn charges(ctx: &Ctx<'_, '_>) -> Result<InvoiceData, MappingError> {
    let number = ctx
        .seg("PV1")
        .and_then(|pv1| pv1.field(19).component(1).text())
        .or_else(|| ctx.seg("PID").and_then(|pid| pid.field(18).component(1).text()))
        .ok_or_else(|| MappingError::missing("PV1", 1, 19, "visit number (or PID-18 account number)"))?;
    let mut lines = Vec::new();
    let mut currency: Option<String> = None;
    for (i, ft1) in ctx.msg.segments_named("FT1").enumerate() {
        let seq = i + 1;
        let code = ft1.field(7);
        let quantity = ft1.field(10).text().unwrap_or_else(|| "1".into());
        let qty: f64 = quantity
            .parse()
            .map_err(|_| MappingError::invalid("FT1", seq, 10, "quantity"))?;
        let extended = ft1.field(11);
        let unit = ft1.field(12);
        let amount_minor = match extended.component(1).text() {
            Some(a) => Some(minor_units(&a).ok_or_else(|| MappingError::invalid("FT1", seq, 11, "amount"))?),
            None => None,
        };
        let unit_minor = match unit.component(1).text() {
            Some(a) => Some(minor_units(&a).ok_or_else(|| MappingError::invalid("FT1", seq, 12, "amount"))?),
            None => None,
        };
        let (unit_price_minor, amount_minor) = match (unit_minor, amount_minor) {
            (Some(u), Some(a)) => (u, a),
            (Some(u), None) => (u, (u as f64 * qty).round() as i64),
            (None, Some(a)) => (if qty != 0.0 { (a as f64 / qty).round() as i64 } else { a }, a),
            (None, None) => return Err(MappingError::missing("FT1", seq, 11, "transaction amount")),
        };
        // Credits and payments reduce the balance.
        let sign = if matches!(ft1.field(6).raw(), "CD" | "PY" | "AJ") {
            -1
        } else {
            1
        };
        currency = currency
            .or_else(|| extended.component(2).text())
            .or_else(|| unit.component(2).text());
        lines.push(ChargeLine {
            code: code.component(1).text(),
            description: code
                .component(2)
                .text()
                .or_else(|| ft1.field(8).text())
                .or_else(|| code.component(1).text())
                .unwrap_or_else(|| "charge".into()),
            quantity,
            unit_price_minor,
            amount_minor: sign * amount_minor,
        });
    }
    if lines.is_empty() {
        return Err(MappingError::missing("FT1", 1, 0, "financial transaction"));
    }
    Ok(InvoiceData {
        number,
        // ISO 4217 "XXX": no currency given.
        currency: currency.unwrap_or_else(|| "XXX".into()),
        lines,
    })
}

/// "12.5" → 1250 (two decimal places, as MO amounts are written).
pub(super) fn minor_units(s: &str) -> Option<i64> {
    let s = s.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() && frac.is_empty() || !whole.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    if !frac.chars().all(|c| c.is_ascii_digit()) || frac.len() > 4 {
        return None;
    }
    let whole: i64 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let mut cents = format!("{frac:0<2}");
    let round_up = cents.len() > 2 && cents.as_bytes()[2] >= b'5';
    cents.truncate(2);
    let v = whole * 100 + cents.parse::<i64>().ok()? + i64::from(round_up);
    Some(if neg { -v } else { v })
}
