//! Building ER7 messages: the one writer behind ACKs, the lab's notices and
//! FHIR → v2. A segment is set field by field (HL7 sequence numbers from 1);
//! text is escaped with the message's delimiters when the segment is written,
//! so no caller escapes by hand; trailing empty fields, components and
//! subcomponents are left out (v2.5.1 §2.5.3: a receiver treats them as not
//! present).

use super::er7::Delimiters;
use super::escape::encode;

/// A field, component or subcomponent to write.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FieldValue {
    #[default]
    Empty,
    /// Text, escaped on writing.
    Text(String),
    /// Already ER7 in the message's delimiters: a value mirrored unchanged from
    /// a received message (an ACK's sender and receiver), never text.
    Encoded(String),
    /// The components of a field, or the subcomponents of a component, by
    /// position from 1. ER7 has no separator below the subcomponent: parts
    /// nested deeper are joined as subcomponents.
    Composite(Vec<FieldValue>),
}

impl FieldValue {
    pub fn text(s: impl Into<String>) -> Self {
        FieldValue::Text(s.into())
    }

    pub fn encoded(s: impl Into<String>) -> Self {
        FieldValue::Encoded(s.into())
    }

    /// Components (or subcomponents, one level down) in order.
    pub fn composite<V: Into<FieldValue>>(parts: impl IntoIterator<Item = V>) -> Self {
        FieldValue::Composite(parts.into_iter().map(Into::into).collect())
    }

    /// True when the value writes nothing.
    pub fn is_empty(&self) -> bool {
        match self {
            FieldValue::Empty => true,
            FieldValue::Text(s) | FieldValue::Encoded(s) => s.is_empty(),
            FieldValue::Composite(parts) => parts.iter().all(FieldValue::is_empty),
        }
    }

    fn write(&self, d: &Delimiters, depth: usize, out: &mut String) {
        match self {
            FieldValue::Empty => {}
            FieldValue::Text(s) => out.push_str(&encode(s, d)),
            FieldValue::Encoded(s) => out.push_str(s),
            FieldValue::Composite(parts) => {
                let sep = if depth == 0 {
                    d.component
                } else {
                    d.subcomponent.unwrap_or(b'&')
                };
                let used = parts.iter().rposition(|p| !p.is_empty()).map_or(0, |i| i + 1);
                for (i, p) in parts[..used].iter().enumerate() {
                    if i > 0 {
                        out.push(sep as char);
                    }
                    p.write(d, depth + 1, out);
                }
            }
        }
    }
}

impl From<&str> for FieldValue {
    fn from(s: &str) -> Self {
        FieldValue::Text(s.to_owned())
    }
}

impl From<String> for FieldValue {
    fn from(s: String) -> Self {
        FieldValue::Text(s)
    }
}

impl From<&String> for FieldValue {
    fn from(s: &String) -> Self {
        FieldValue::Text(s.clone())
    }
}

impl From<Option<&str>> for FieldValue {
    fn from(s: Option<&str>) -> Self {
        s.map_or(FieldValue::Empty, FieldValue::from)
    }
}

impl From<Option<String>> for FieldValue {
    fn from(s: Option<String>) -> Self {
        s.map_or(FieldValue::Empty, FieldValue::Text)
    }
}

impl From<usize> for FieldValue {
    fn from(n: usize) -> Self {
        FieldValue::Text(n.to_string())
    }
}

/// One segment: its name and its fields, each a list of repetitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentBuilder {
    name: String,
    fields: Vec<Vec<FieldValue>>,
}

impl SegmentBuilder {
    /// A segment named `name` (three characters: `PID`, `OBX`, `ZLS`). For
    /// `MSH`, fields 1 and 2 are the delimiters and are written by the
    /// message; setting them is ignored.
    pub fn new(name: &str) -> Self {
        SegmentBuilder {
            name: name.to_owned(),
            fields: Vec::new(),
        }
    }

    /// Sets field `n` to one value (replacing what it held).
    pub fn field(self, n: usize, value: impl Into<FieldValue>) -> Self {
        self.repeated(n, [value.into()])
    }

    /// Sets field `n` to its repetitions; empty ones are left out.
    pub fn repeated<V: Into<FieldValue>>(mut self, n: usize, values: impl IntoIterator<Item = V>) -> Self {
        if n == 0 {
            return self;
        }
        if self.fields.len() < n {
            self.fields.resize(n, Vec::new());
        }
        self.fields[n - 1] = values.into_iter().map(Into::into).filter(|v| !v.is_empty()).collect();
        self
    }

    fn write(&self, d: &Delimiters, out: &mut String) {
        let f = d.field as char;
        out.push_str(&self.name);
        let is_header = self.name == "MSH";
        let first = if is_header {
            out.push(f);
            out.push_str(&d.encoding_characters());
            3
        } else {
            1
        };
        let used = self.fields.iter().rposition(|r| !r.is_empty()).map_or(0, |i| i + 1);
        for reps in self.fields.iter().take(used).skip(first - 1) {
            out.push(f);
            for (i, v) in reps.iter().enumerate() {
                if i > 0 {
                    out.push(d.repetition as char);
                }
                v.write(d, 0, out);
            }
        }
        out.push('\r');
    }
}

/// A message under construction: segments written in order, each ended by CR.
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    delimiters: Delimiters,
    text: String,
}

impl MessageBuilder {
    /// A message in these delimiters (an answer uses the received ones).
    pub fn new(delimiters: Delimiters) -> Self {
        MessageBuilder {
            delimiters,
            text: String::with_capacity(512),
        }
    }

    pub fn delimiters(&self) -> &Delimiters {
        &self.delimiters
    }

    /// Appends a segment.
    pub fn push(&mut self, segment: SegmentBuilder) -> &mut Self {
        segment.write(&self.delimiters, &mut self.text);
        self
    }

    /// The message as ER7 text.
    pub fn finish(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::super::er7::Message;
    use super::*;

    #[test]
    fn writes_fields_components_repetitions_and_escapes() {
        let mut m = MessageBuilder::new(Delimiters::default());
        m.push(
            SegmentBuilder::new("MSH")
                .field(1, "ignored")
                .field(3, "APP")
                .field(9, FieldValue::composite(["ORU", "R01", "ORU_R01"]))
                .field(10, "C|1")
                .field(12, "2.5.1"),
        )
        .push(
            SegmentBuilder::new("PID")
                .field(1, 1)
                .repeated(
                    3,
                    [
                        FieldValue::composite([
                            FieldValue::text("A^1"),
                            FieldValue::Empty,
                            FieldValue::Empty,
                            FieldValue::composite(["", "1.2.3", "ISO"]),
                        ]),
                        FieldValue::Empty,
                        FieldValue::composite(["B", "", ""]),
                    ],
                )
                .field(5, FieldValue::composite(["Doe", "", ""]))
                .field(8, ""),
        );
        let text = m.finish();
        assert_eq!(
            text,
            "MSH|^~\\&|APP||||||ORU^R01^ORU_R01|C\\F\\1||2.5.1\rPID|1||A\\S\\1^^^&1.2.3&ISO~B||Doe\r"
        );
        let parsed = Message::parse(&text).expect("what the builder writes parses");
        assert_eq!(parsed.control_id(), "C\\F\\1");
        assert_eq!(parsed.get("MSH-10").decoded(), "C|1");
        assert_eq!(parsed.get("PID-3.1").decoded(), "A^1");
        assert_eq!(parsed.get("PID-3.4").subcomponent(2).raw(), "1.2.3");
        assert_eq!(parsed.get("PID-3").repetitions().count(), 2);
    }

    #[test]
    fn writes_in_the_delimiters_it_was_given_and_mirrors_encoded_values() {
        let d = Delimiters::from_header("MSH$*#!@$").expect("valid header");
        let mut m = MessageBuilder::new(d);
        m.push(
            SegmentBuilder::new("MSH")
                .field(3, FieldValue::encoded("A*B"))
                .field(10, "X$Y"),
        )
        .push(SegmentBuilder::new("NTE").field(3, FieldValue::composite(["a", "b*c"])));
        assert_eq!(m.finish(), "MSH$*#!@$A*B$$$$$$$X!F!Y\rNTE$$$a*b!S!c\r");
    }

    #[test]
    fn an_empty_segment_is_its_name() {
        let mut m = MessageBuilder::new(Delimiters::default());
        m.push(SegmentBuilder::new("ZZZ").field(4, FieldValue::Empty).field(0, "x"));
        assert_eq!(m.finish(), "ZZZ\r");
    }
}
