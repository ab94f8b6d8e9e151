//! A resource kept as received: its top-level elements in order, each value
//! the exact JSON text the client sent. Only `id` and `meta` are the server's
//! to set; everything else (decimals such as `61.50`, elements carehub does
//! not map) is stored and served byte for byte. serde_json's `Value` would
//! turn decimals into f64, which is why it is only used to read, never to store.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

#[derive(Debug, Clone)]
pub struct RawResource {
    fields: Vec<(String, Box<RawValue>)>,
}

impl RawResource {
    /// Parses a JSON object; anything else is an error.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        let fields = de.deserialize_map(FieldsVisitor)?;
        de.end()?;
        Ok(RawResource { fields })
    }

    pub fn get(&self, name: &str) -> Option<&RawValue> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_ref())
    }

    /// A string element (`resourceType`, `id`).
    pub fn str(&self, name: &str) -> Option<String> {
        self.get(name)
            .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
    }

    /// Sets an element: in its place when present, else after `resourceType`
    /// (and after `id`, for `meta`), where FHIR examples put them.
    pub fn set(&mut self, name: &str, value: &serde_json::Value) {
        let Ok(raw) = serde_json::value::to_raw_value(value) else {
            return; // a Value always serializes
        };
        if let Some(slot) = self.fields.iter_mut().find(|(k, _)| k == name) {
            slot.1 = raw;
            return;
        }
        let after = self
            .fields
            .iter()
            .rposition(|(k, _)| k == "resourceType" || (name == "meta" && k == "id"))
            .map_or(0, |i| i + 1);
        self.fields.insert(after, (name.to_owned(), raw));
    }

    /// The JSON text: the received elements, verbatim, in their order.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(self.fields.iter().map(|(k, v)| k.len() + v.get().len() + 4).sum());
        out.push('{');
        for (i, (k, v)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // A key came from JSON text, so it re-serializes as a valid string.
            out.push_str(&serde_json::to_string(k).unwrap_or_default());
            out.push(':');
            out.push_str(v.get());
        }
        out.push('}');
        out
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Vec<(String, Box<RawValue>)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields: Vec<(String, Box<RawValue>)> = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
            if fields.iter().any(|(seen, _)| *seen == k) {
                return Err(de::Error::custom(format!("element {k:?} appears twice")));
            }
            fields.push((k, v));
        }
        Ok(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_decimals_and_order_and_sets_server_elements() {
        let text = r#"{"resourceType":"Observation","status":"final","valueQuantity":{"value":61.50,"unit":"kg"},"x-unknown":[1.0]}"#;
        let mut r = RawResource::parse(text).expect("parses");
        r.set("id", &serde_json::json!("abc"));
        r.set("meta", &serde_json::json!({"versionId": "1"}));
        assert_eq!(
            r.to_json(),
            r#"{"resourceType":"Observation","id":"abc","meta":{"versionId":"1"},"status":"final","valueQuantity":{"value":61.50,"unit":"kg"},"x-unknown":[1.0]}"#
        );
        assert_eq!(r.str("resourceType").as_deref(), Some("Observation"));
    }

    #[test]
    fn refuses_what_is_not_one_object() {
        assert!(RawResource::parse("[1]").is_err());
        assert!(RawResource::parse(r#"{"a":1}{"b":2}"#).is_err());
        assert!(RawResource::parse(r#"{"a":1,"a":2}"#).is_err());
    }
}
