//! The one rule for turning an HL7 assigning authority (HD: namespace,
//! universal id, universal id type — CX.4, XCN.9, EI.2-4, MSH-4) into an
//! identifier system, used by the canonical mapping (`pipelines/hl7`) and the
//! FHIR conversion (`pipelines/hl7-fhir`) alike, so one PID-3 gets one system
//! wherever it is stored.
//!
//! - an ISO universal id: `urn:oid:<oid>` (unless it is a URN already);
//! - a universal id that is a URI (`http://…`, `urn:…`): itself;
//! - any other universal id, else the namespace: `urn:carehub:hl7-aa:<it>`,
//!   percent-encoded (a system must be a URI: a bare `ABC` is not one).
//!
//! And a message's own identity: [`source_key`].

use super::{FieldValue, Message};

/// The idempotency key of a message: `hl7:<MSH-4>:<MSH-3>:<MSH-10>`
/// (sending facility, application, control id). A sender's resend of a
/// message has its key; the message store keeps one row per key. NUL,
/// which PostgreSQL text cannot hold, becomes U+FFFD (the raw bytes keep it).
pub fn source_key(msg: &Message<'_>) -> String {
    let msh = msg.msh();
    let key = format!("hl7:{}:{}:{}", msh.field(4).raw(), msh.field(3).raw(), msg.control_id());
    if key.contains('\0') {
        key.replace('\0', "\u{FFFD}")
    } else {
        key
    }
}

/// The identifier system of an assigning authority, if it names one.
pub fn assigner_system(
    namespace: Option<String>,
    universal: Option<String>,
    universal_type: Option<String>,
) -> Option<String> {
    match (universal, universal_type.as_deref()) {
        (Some(u), Some("ISO")) if !u.starts_with("urn:") => Some(format!("urn:oid:{u}")),
        (Some(u), _) if u.contains(':') && !u.chars().any(char::is_whitespace) => Some(u),
        (Some(u), _) => Some(format!("urn:carehub:hl7-aa:{}", urn_part(&u))),
        (None, _) => namespace.map(|n| format!("urn:carehub:hl7-aa:{}", urn_part(&n))),
    }
}

/// The reverse for a namespace: the HD namespace a system made by
/// [`assigner_system`] from one stands for, decoded.
pub fn namespace_of(system: &str) -> Option<String> {
    let part = system.strip_prefix("urn:carehub:hl7-aa:")?;
    Some(
        percent_encoding::percent_decode_str(part)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// The reverse, for writing: the assigning authority (HD namespace,
/// universal id, universal id type) an identifier system is written as —
/// `urn:oid:<oid>` as `<oid>` of type ISO, a system [`assigner_system`] made
/// from a namespace as that namespace, any other URI as itself of type URI.
/// CX.4 writes the three as subcomponents, EI.2-4 as components.
pub fn authority_of(system: &str) -> [FieldValue; 3] {
    if let Some(oid) = system.strip_prefix("urn:oid:") {
        [FieldValue::Empty, oid.into(), "ISO".into()]
    } else if let Some(ns) = namespace_of(system) {
        [ns.into(), FieldValue::Empty, FieldValue::Empty]
    } else {
        [FieldValue::Empty, system.into(), "URI".into()]
    }
}

/// A name as one segment of a URN: everything but RFC 3986's unreserved
/// characters percent-encoded.
pub fn urn_part(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, UNRESERVED_ONLY).to_string()
}

const UNRESERVED_ONLY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;

    fn sys(ns: Option<&str>, u: Option<&str>, t: Option<&str>) -> Option<String> {
        assigner_system(ns.map(str::to_owned), u.map(str::to_owned), t.map(str::to_owned))
    }

    #[test]
    fn every_shape_of_assigning_authority_gives_a_uri() {
        assert_eq!(
            sys(Some("N"), Some("1.2.3"), Some("ISO")).as_deref(),
            Some("urn:oid:1.2.3")
        );
        assert_eq!(
            sys(None, Some("urn:oid:1.2.3"), Some("ISO")).as_deref(),
            Some("urn:oid:1.2.3")
        );
        assert_eq!(
            sys(None, Some("http://x.example/ids"), Some("URI")).as_deref(),
            Some("http://x.example/ids")
        );
        // The case #14 found the two copies disagreeing on.
        assert_eq!(sys(None, Some("ABC"), None).as_deref(), Some("urn:carehub:hl7-aa:ABC"));
        assert_eq!(
            sys(Some("NATION"), None, None).as_deref(),
            Some("urn:carehub:hl7-aa:NATION")
        );
        assert_eq!(
            sys(Some("A B/C"), None, None).as_deref(),
            Some("urn:carehub:hl7-aa:A%20B%2FC")
        );
        assert_eq!(sys(None, None, None), None);
        assert_eq!(namespace_of("urn:carehub:hl7-aa:A%20B%2FC").as_deref(), Some("A B/C"));
        assert_eq!(namespace_of("urn:oid:1.2"), None);
        for system in ["urn:oid:1.2.3", "http://x.example/ids", "urn:carehub:hl7-aa:A%20B%2FC"] {
            let [ns, universal, kind] = authority_of(system).map(|v| match v {
                FieldValue::Text(s) => Some(s),
                _ => None,
            });
            assert_eq!(
                assigner_system(ns, universal, kind).as_deref(),
                Some(system),
                "{system}"
            );
        }
    }
}
