//! Application acknowledgements (enhanced mode, HL7 v2 chapter 2): a sender
//! that sets MSH-15/MSH-16 gets a commit ACK (CA) from the MLLP listener once
//! the message is stored, and later, when MSH-16 asks for it (AL, ER, SU), an
//! application ACK (AA, AE or AR, MSA-2 = its MSH-10) as a message of its own,
//! sent to the sender's receiving endpoint. Which endpoint: the
//! `[pipelines.hl7.ack_destinations]` entry of its sending facility (MSH-4.1),
//! a `[hl7.destinations]` name. The ACK goes out through the outbox, in the
//! transaction that applied (or dead-lettered) the message.

use std::collections::BTreeMap;

use carehub_hl7::codec::ack::{self, AckError, AckMode, Outcome};
use carehub_hl7::codec::{AckCode, Message};
use carehub_schema::Envelope;

use carehub_schema::contracts::Outbound;

/// Sending facility (MSH-4.1) → `[hl7.destinations]` name. Facility names
/// match without regard to ASCII case (environment overrides arrive lower-cased).
pub type AckRoutes = BTreeMap<String, String>;

/// Whether `msg` gets an application ACK for `outcome` (enhanced mode,
/// MSH-16 wants it, and its sending facility has a destination).
pub fn routed(msg: &Message<'_>, outcome: Outcome, routes: &AckRoutes) -> bool {
    destination(msg, outcome, routes).is_some()
}

fn destination(msg: &Message<'_>, outcome: Outcome, routes: &AckRoutes) -> Option<String> {
    let AckMode::Enhanced { application, .. } = AckMode::of(msg) else {
        return None;
    };
    if !application.wants(outcome) {
        return None;
    }
    let facility = msg.msh().field(4).component(1).text()?;
    routes
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(&facility))
        .map(|(_, d)| d.clone())
}

/// The application ACK `msg` asked for, as a `carehub.hl7v2.send.v1` record,
/// or `None`: original mode, MSH-16 does not want this outcome, or no
/// destination is configured for the sender.
pub fn application_ack(
    msg: &Message<'_>,
    outcome: Outcome,
    error: Option<&AckError>,
    routes: &AckRoutes,
) -> Option<(String, Envelope)> {
    let destination = destination(msg, outcome, routes)?;
    let code = match outcome {
        Outcome::Accept => AckCode::AA,
        Outcome::Error => AckCode::AE,
        Outcome::Reject => AckCode::AR,
    };
    let control_id = format!("AA{}", &uuid::Uuid::now_v7().simple().to_string()[14..32]);
    let text = ack::build(msg, code, error, &control_id);
    let env = Outbound::new(destination.clone(), text.as_bytes()).into_envelope(crate::SOURCE);
    Some((destination, env))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> AckRoutes {
        AckRoutes::from([("northclinic".to_owned(), "north".to_owned())])
    }

    const ADT: &str =
        "MSH|^~\\&|EHR|NORTHCLINIC|CAREHUB|ORTHOLAB|20261125120000||ADT^A08^ADT_A01|M-1|P|2.5.1|||AL|ER\rPID|1||P-1\r";

    #[test]
    fn an_error_is_acknowledged_to_the_senders_destination_with_msa2_and_err() {
        let msg = Message::parse(ADT).expect("parses");
        let err = AckError::new(101, "PID-3 is required");
        let (dest, env) = application_ack(&msg, Outcome::Error, Some(&err), &routes()).expect("wanted");
        assert_eq!(dest, "north");
        let out: Outbound = serde_json::from_value(env.data).expect("send.v1");
        let raw = String::from_utf8(out.raw().expect("base64")).expect("utf8");
        let ack = Message::parse(&raw).expect("the ACK parses");
        assert_eq!(ack.get("MSA-1").raw(), "AE");
        assert_eq!(ack.get("MSA-2").raw(), "M-1");
        assert_eq!(ack.get("MSH-5").raw(), "EHR", "sender and receiver swapped");
        assert!(ack.segment("ERR").is_some());
    }

    #[test]
    fn msh16_decides_and_original_mode_gets_none() {
        let msg = Message::parse(ADT).expect("parses");
        assert!(
            application_ack(&msg, Outcome::Accept, None, &routes()).is_none(),
            "MSH-16 ER: success is not acknowledged"
        );
        let original = ADT.replace("|||AL|ER", "");
        let msg = Message::parse(&original).expect("parses");
        assert!(application_ack(&msg, Outcome::Error, None, &routes()).is_none());
        let other = ADT.replace("NORTHCLINIC", "SOUTH");
        let msg = Message::parse(&other).expect("parses");
        assert!(
            application_ack(&msg, Outcome::Error, None, &routes()).is_none(),
            "no route"
        );
    }
}
