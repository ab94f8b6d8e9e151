use super::*;

#[test]
fn the_metric_label_is_bounded_whatever_msh_9_says() {
    let label = |msh9: &str| {
        let text = format!("MSH|^~\\&|A|B|C|D|20240101||{msh9}|1|P|2.5\r");
        Message::parse(&text).expect("parses").metric_label()
    };
    assert_eq!(label("ADT^A01"), "ADT^A01");
    assert_eq!(label("ORU^R01^ORU_R01"), "ORU^R01");
    assert_eq!(label("ACK"), "ACK");
    assert_eq!(label("ZZZ^A01"), "other");
    assert_eq!(label("ADT^patient-1234"), "other");
    assert_eq!(label("ADT^A0001"), "other");
}

const ADT: &str = "MSH|^~\\&|EHR|CLINIC|CAREHUB|LAB|20261125101500||ADT^A01^ADT_A01|MSG0001|P|2.5.1|||AL|NE\r\
EVN|A01|20261125101500\r\
PID|1||MRN123^^^CLINIC&1.2.3&ISO^MR~98765^^^NATION^SS||Doe^Jane^Q||19800102|F|||1 Main St^^Town^^12345||555-0100\r\
ZXT|custom|stuff\r";

#[test]
fn reads_header_fields_and_paths() {
    let m = Message::parse(ADT).expect("parses");
    assert_eq!(m.segments().len(), 4);
    assert_eq!(m.msh().field(1).raw(), "|");
    assert_eq!(m.msh().field(2).raw(), "^~\\&");
    assert_eq!(m.msh().field(3).raw(), "EHR");
    assert_eq!(m.message_type(), ("ADT", "A01"));
    assert_eq!(m.control_id(), "MSG0001");
    assert_eq!(m.version(), "2.5.1");
    assert_eq!(m.get("PID-3.1").raw(), "MRN123");
    assert_eq!(m.get("PID-3.4.2").raw(), "1.2.3");
    assert_eq!(m.get("PID-3[2].1").raw(), "98765");
    assert_eq!(m.get("PID-3[2].5").raw(), "SS");
    assert_eq!(m.get("PID-3[3].1").raw(), "");
    assert_eq!(m.get("PID.5.2").raw(), "Jane");
    assert_eq!(m.get("PID-8").raw(), "F");
    assert_eq!(m.get("ZXT-2").raw(), "stuff", "Z-segments are kept");
    assert_eq!(m.get("PV1-2").raw(), "");
    let reps: Vec<_> = m.get("PID-3").repetitions().map(|r| r.component(1).raw()).collect();
    assert_eq!(reps, ["MRN123", "98765"]);
}

#[test]
fn every_terminator_and_a_bom_give_the_same_message() {
    let lf = ADT.replace('\r', "\n");
    let crlf = ADT.replace('\r', "\r\n");
    let bom = format!("\u{feff}{ADT}");
    let blank = ADT.replace('\r', "\r\n\n");
    for text in [ADT, &lf, &crlf, &bom, &blank] {
        let m = Message::parse(text).expect("parses");
        assert_eq!(m.segments().len(), 4, "{text:?}");
        assert_eq!(m.get("ZXT-1").raw(), "custom");
    }
}

#[test]
fn unusual_delimiters_are_taken_from_the_header() {
    let text = "MSH$*#!@$A$B$C$D$20260101$$ORU*R01$1$P$2.4\rPID$1$$ID1*X*Y@Z#ID2$$Doe*J\r";
    let m = Message::parse(text).expect("parses");
    let d = m.delimiters();
    assert_eq!(
        (d.field, d.component, d.repetition, d.escape, d.subcomponent),
        (b'$', b'*', b'#', Some(b'!'), Some(b'@'))
    );
    assert_eq!(m.message_type(), ("ORU", "R01"));
    assert_eq!(m.get("PID-3.3.2").raw(), "Z");
    assert_eq!(m.get("PID-3[2]").raw(), "ID2");
    assert_eq!(m.get("PID-5.2").raw(), "J");
}

#[test]
fn the_truncation_character_of_v2_7_is_an_encoding_character_not_a_field() {
    let text = "MSH|^~\\&#|A|B|C|D|20260101||ADT^A04^ADT_A01|X1|P|2.7\rPID|1||ID\\P\\1\r";
    let m = Message::parse(text).expect("parses");
    assert_eq!(m.delimiters().truncation, Some(b'#'));
    assert_eq!(m.msh().field(2).raw(), "^~\\&#");
    assert_eq!(m.msh().field(3).raw(), "A");
    assert_eq!(m.get("PID-3").decoded(), "ID#1");
}

#[test]
fn rejects_what_is_not_a_message() {
    assert_eq!(Message::parse("").expect_err("must fail"), ParseError::Empty);
    assert!(matches!(
        Message::parse("PID|1").expect_err("must fail"),
        ParseError::NoMsh(_)
    ));
    assert!(matches!(
        Message::parse("MSH|^^\\&|").expect_err("must fail"),
        ParseError::BadHeader(_)
    ));
    assert!(matches!(
        Message::parse("MSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5\rpid|1").expect_err("must fail"),
        ParseError::BadSegmentName { index: 1 }
    ));
    assert_eq!(
        Message::parse("MSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|").expect_err("must fail"),
        ParseError::MissingHeaderField { field: 12 }
    );
    assert_eq!(
        Message::parse("MSH|^~\\&|A|B|C|D|2026|||1|P|2.5").expect_err("must fail"),
        ParseError::MissingHeaderField { field: 9 }
    );
}

#[test]
fn walks_components_and_subcomponents() {
    let m = Message::parse(ADT).expect("parses");
    let comps: Vec<_> = m.get("PID-3").components().map(|c| c.raw()).collect();
    assert_eq!(comps, ["MRN123", "", "", "CLINIC&1.2.3&ISO", "MR"]);
    let subs: Vec<_> = m.get("PID-3.4").subcomponents().map(|c| c.raw()).collect();
    assert_eq!(subs, ["CLINIC", "1.2.3", "ISO"]);
    assert_eq!(m.msh().field_count(), 16);
    for seg in m.segments() {
        let one_pass: Vec<&str> = seg.fields().map(|f| f.raw()).collect();
        let by_index: Vec<&str> = (1..=seg.field_count()).map(|n| seg.field(n).raw()).collect();
        assert_eq!(one_pass, by_index, "{}", seg.name());
    }
    let bare = Message::parse("MSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5\rSFT\rPID|").expect("parses");
    assert_eq!(bare.segments()[1].fields().count(), 0);
    assert_eq!(bare.segments()[2].fields().count(), 1);
}
