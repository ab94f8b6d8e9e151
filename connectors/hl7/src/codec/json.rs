//! A JSON view of a parsed message, for tools (`carehub hl7 parse`): each
//! segment's fields, a field a string when simple, else repetitions →
//! components → subcomponents, each value unescaped.

use super::{Message, Value};

/// The segments of `msg`: `[{"segment": "PID", "fields": [...]}, ...]`.
/// MSH-1 and MSH-2 (the delimiters) are shown as written.
pub fn segments(msg: &Message<'_>) -> serde_json::Value {
    msg.segments()
        .iter()
        .map(|s| {
            let fields: Vec<serde_json::Value> = s
                .fields()
                .enumerate()
                .map(|(i, f)| field(&f, s.name() == "MSH" && i < 2))
                .collect();
            serde_json::json!({ "segment": s.name(), "fields": fields })
        })
        .collect()
}

/// A field as JSON: a string when simple, else repetitions → components → subcomponents.
pub fn field(v: &Value<'_>, opaque: bool) -> serde_json::Value {
    if opaque {
        return v.raw().into();
    }
    let reps: Vec<serde_json::Value> = v
        .repetitions()
        .map(|r| {
            let comps: Vec<serde_json::Value> = r
                .components()
                .map(|c| {
                    let subs: Vec<serde_json::Value> = c.subcomponents().map(|s| s.decoded().into()).collect();
                    if subs.len() == 1 {
                        subs.into_iter().next().unwrap_or_default()
                    } else {
                        subs.into()
                    }
                })
                .collect();
            if comps.len() == 1 {
                comps.into_iter().next().unwrap_or_default()
            } else {
                comps.into()
            }
        })
        .collect();
    if reps.len() == 1 {
        reps.into_iter().next().unwrap_or_default()
    } else {
        reps.into()
    }
}
