//! The HL7 v2 XML encoding ("v2.xml", namespace `urn:hl7-org:v2xml`),
//! turned into ER7 text so that one parser and one mapping serve both.
//!
//! Segments are elements with a three-character name (`PID`); fields are
//! `PID.5`; components and subcomponents are `<type>.<n>` inside them
//! (`XPN.1`, `FN.1`). Group elements (`ORU_R01.PATIENT_RESULT`) and the root
//! are structure only. A repeated field element is a repetition.
//!
//! Safe against XML entity attacks: a DOCTYPE is never read for entity
//! definitions and only the five predefined entities and character
//! references are accepted; any other reference (`&xxe;`) is refused with an
//! error, so nothing outside the document is ever read.

use std::collections::BTreeMap;

use quick_xml::Reader;
use quick_xml::events::Event;

use super::er7::{Delimiters, ParseError};
use super::escape;

/// Is this text an XML-encoded HL7 message (rather than ER7)?
pub fn looks_like_xml(text: &str) -> bool {
    text.trim_start_matches('\u{feff}').trim_start().starts_with('<')
}

#[derive(Default)]
struct Field {
    /// repetitions → components (1-based) → subcomponents (1-based)
    reps: Vec<BTreeMap<usize, BTreeMap<usize, String>>>,
}

struct Segment {
    name: String,
    fields: BTreeMap<usize, Field>,
}

/// Converts a v2.xml message to ER7 (segments separated by CR).
pub fn to_er7(xml: &str) -> Result<String, ParseError> {
    let err = |m: String| ParseError::Xml(m);
    let mut reader = Reader::from_str(xml);
    let mut segments: Vec<Segment> = Vec::new();
    // Where text goes: (segment index, field, component, subcomponent), by depth.
    let mut in_segment = false;
    let mut field: Option<usize> = None;
    let mut component: Option<usize> = None;
    let mut sub: Option<usize> = None;
    let mut depth_of_field = 0usize;
    let mut depth = 0usize;
    loop {
        let event = reader.read_event().map_err(|e| err(e.to_string()))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                let qname = e.name();
                let name = qname.local_name().into_inner().to_owned();
                if !empty {
                    depth += 1;
                }
                if is_segment_name(&name) && field.is_none() {
                    segments.push(Segment {
                        name,
                        fields: BTreeMap::new(),
                    });
                    in_segment = !empty;
                    continue;
                }
                let Some(seg) = segments.last_mut().filter(|_| in_segment) else {
                    continue; // root or group element
                };
                let Some(n) = position(&name) else { continue };
                // The ER7 written repeats a separator up to the highest
                // position named: `<XPN.999999999>` in 500 bytes of XML
                // would be a gigabyte of `^` (found by the v2xml fuzz target).
                if n == 0 || n > MAX_POSITION {
                    return Err(err(format!("an element's position is outside 1 to {MAX_POSITION}")));
                }
                match (field, component) {
                    (None, _) if name.starts_with(&format!("{}.", seg.name)) => {
                        let f = seg.fields.entry(n).or_default();
                        f.reps.push(BTreeMap::new());
                        if !empty {
                            field = Some(n);
                            depth_of_field = depth;
                        }
                    }
                    (Some(_), None) if !empty => component = Some(n),
                    (Some(_), Some(_)) if !empty && sub.is_none() => sub = Some(n),
                    _ => {}
                }
            }
            Event::End(_) => {
                if sub.is_some() {
                    sub = None;
                } else if component.is_some() {
                    component = None;
                } else if field.is_some() && depth == depth_of_field {
                    field = None;
                } else if field.is_none() && in_segment {
                    // The segment's own end tag (fields are closed above).
                    in_segment = false;
                }
                depth = depth.saturating_sub(1);
            }
            Event::Text(t) => {
                let text = t.xml10_content();
                // Indentation between elements is not data.
                if !text.trim().is_empty() {
                    push_text(&mut segments, field, component, sub, &text);
                }
            }
            Event::CData(c) => {
                let text = c.to_string();
                push_text(&mut segments, field, component, sub, &text);
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref().map_err(|e| err(e.to_string()))? {
                    Some(c) => c.to_string(),
                    None => match &*r {
                        "amp" => "&".into(),
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "quot" => "\"".into(),
                        "apos" => "'".into(),
                        other => {
                            return Err(err(format!(
                                "entity &{other}; is not allowed (only XML's predefined entities are)"
                            )));
                        }
                    },
                };
                push_text(&mut segments, field, component, sub, &resolved);
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }
    let Some(msh) = segments.first().filter(|s| s.name == "MSH") else {
        return Err(ParseError::NoMsh(
            segments.first().map(|s| s.name.clone()).unwrap_or_default(),
        ));
    };
    let value = |n: usize| {
        msh.fields
            .get(&n)
            .and_then(|f| f.reps.first())
            .and_then(|r| r.get(&1))
            .and_then(|c| c.get(&1))
            .cloned()
            .unwrap_or_default()
    };
    let sep = value(1);
    let enc = value(2);
    let header = format!("MSH{sep}{enc}");
    let d = Delimiters::from_header(&header)?;
    let mut out = String::with_capacity(xml.len() / 2);
    for seg in &segments {
        out.push_str(&seg.name);
        let first = if seg.name == "MSH" {
            out.push_str(&sep);
            out.push_str(&enc);
            3
        } else {
            1
        };
        let last = seg.fields.keys().copied().max().unwrap_or(0);
        for n in first..=last {
            out.push(d.field as char);
            if let Some(f) = seg.fields.get(&n) {
                write_field(&mut out, f, &d);
            }
        }
        out.push('\r');
    }
    Ok(out)
}

fn push_text(segments: &mut [Segment], field: Option<usize>, component: Option<usize>, sub: Option<usize>, text: &str) {
    let (Some(seg), Some(f)) = (segments.last_mut(), field) else {
        return;
    };
    let Some(rep) = seg.fields.get_mut(&f).and_then(|f| f.reps.last_mut()) else {
        return;
    };
    let c = component.unwrap_or(1);
    let s = sub.unwrap_or(1);
    rep.entry(c).or_default().entry(s).or_default().push_str(text);
}

fn write_field(out: &mut String, f: &Field, d: &Delimiters) {
    for (i, rep) in f.reps.iter().enumerate() {
        if i > 0 {
            out.push(d.repetition as char);
        }
        let last_c = rep.keys().copied().max().unwrap_or(0);
        for c in 1..=last_c {
            if c > 1 {
                out.push(d.component as char);
            }
            let Some(subs) = rep.get(&c) else { continue };
            let last_s = subs.keys().copied().max().unwrap_or(0);
            for s in 1..=last_s {
                if s > 1 {
                    out.push(d.subcomponent.unwrap_or(b'&') as char);
                }
                if let Some(v) = subs.get(&s) {
                    out.push_str(&escape::encode(v, d));
                }
            }
        }
    }
}

fn is_segment_name(name: &str) -> bool {
    name.len() == 3 && name.bytes().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// Highest field, component or subcomponent number accepted (HL7 v2
/// segments define fewer than 100 fields; Z-segments get room to spare).
const MAX_POSITION: usize = 999;

/// `PID.5` → 5, `XPN.1` → 1; `ORU_R01.PATIENT` → None.
fn position(name: &str) -> Option<usize> {
    name.rsplit_once('.')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::er7::Message;

    const XML: &str = r#"<?xml version="1.0"?>
<ADT_A01 xmlns="urn:hl7-org:v2xml">
  <MSH><MSH.1>|</MSH.1><MSH.2>^~\&amp;</MSH.2>
    <MSH.3><HD.1>EHR</HD.1></MSH.3>
    <MSH.9><MSG.1>ADT</MSG.1><MSG.2>A01</MSG.2></MSH.9>
    <MSH.10>X1</MSH.10><MSH.11><PT.1>P</PT.1></MSH.11><MSH.12><VID.1>2.5</VID.1></MSH.12>
  </MSH>
  <PID>
    <PID.3><CX.1>ID1</CX.1><CX.4><HD.1>CLINIC</HD.1><HD.2>1.2.3</HD.2></CX.4></PID.3>
    <PID.3><CX.1>ID2</CX.1></PID.3>
    <PID.5><XPN.1><FN.1>O'Test &amp; Sons|Ltd</FN.1></XPN.1><XPN.2>Al</XPN.2></PID.5>
  </PID>
  <ADT_A01.INSURANCE><IN1/></ADT_A01.INSURANCE>
</ADT_A01>"#;

    #[test]
    fn converts_to_er7_with_repetitions_components_and_escapes() {
        let er7 = to_er7(XML).expect("converts");
        let m = Message::parse(&er7).expect("parses");
        assert_eq!(m.message_type(), ("ADT", "A01"));
        assert_eq!(m.control_id(), "X1");
        assert_eq!(m.get("MSH-3").raw(), "EHR");
        assert_eq!(m.get("PID-3[1].4.2").raw(), "1.2.3");
        assert_eq!(m.get("PID-3[2].1").raw(), "ID2");
        assert_eq!(m.get("PID-5.1").decoded(), "O'Test & Sons|Ltd");
        assert_eq!(m.get("PID-5.2").raw(), "Al");
        assert!(m.segment("IN1").is_some());
    }

    #[test]
    fn external_entities_are_refused_not_resolved() {
        let xxe = r#"<?xml version="1.0"?><!DOCTYPE foo [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
<ADT_A01><MSH><MSH.1>|</MSH.1><MSH.2>^~\&amp;</MSH.2><MSH.10>&xxe;</MSH.10></MSH></ADT_A01>"#;
        let e = to_er7(xxe).expect_err("refused").to_string();
        assert!(e.contains("&xxe;"), "{e}");
    }

    /// Found by the v2xml fuzz target: a huge position number made the ER7
    /// writer allocate gigabytes of separators.
    #[test]
    fn a_position_beyond_999_is_refused_not_expanded() {
        let xml = XML.replace("<CX.1>ID1</CX.1>", "<CX.999999999>ID1</CX.999999999>");
        let err = to_er7(&xml).expect_err("refused");
        assert!(err.to_string().contains("position"), "{err}");
        let fits = XML.replace("<CX.1>ID1</CX.1>", "<CX.999>ID1</CX.999>");
        assert!(to_er7(&fits).is_ok());
    }
}
