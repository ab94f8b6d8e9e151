//! ER7 ("pipe and hat") structure of an HL7 v2 message, zero-copy.
//!
//! [`Message::parse`] only finds the delimiters (MSH-1, MSH-2) and the
//! segment boundaries; fields, repetitions, components and subcomponents are
//! sliced out of the text on demand. Nothing is decoded until asked for: raw
//! values are `&str` into the message, [`decoded`](Value::decoded) applies
//! the escape sequences.
//!
//! Lenient where senders are known to differ, strict where ambiguity would
//! lose data: segment terminators CR, LF or CRLF (a line feed cannot occur
//! unescaped inside a field, so it can only end a segment), a leading UTF-8 BOM,
//! blank lines between segments; but every segment must have a three
//! character name and the message must start with MSH.

use std::borrow::Cow;

use memchr::memchr2;

// Escapes are part of ER7's encoding rules: they depend on the delimiters.
pub mod escape;

/// Message codes of HL7 table 0076 (v2.5.1–v2.9) that label metrics.
const MESSAGE_CODES: &[&str] = &[
    "ACK", "ADR", "ADT", "BAR", "BPS", "BRP", "BRT", "BTS", "CRM", "CSU", "DFT", "DOC", "EAC", "EAN", "EAR", "EHC",
    "ESR", "ESU", "INR", "INU", "LSR", "LSU", "MDM", "MFA", "MFK", "MFN", "MFQ", "MFR", "NMD", "NMQ", "NMR", "OMB",
    "OMD", "OMG", "OMI", "OML", "OMN", "OMP", "OMS", "OPL", "OPR", "OPU", "ORA", "ORB", "ORD", "ORF", "ORG", "ORI",
    "ORL", "ORM", "ORN", "ORP", "ORR", "ORS", "ORU", "OSM", "OSQ", "OSR", "OUL", "PEX", "PGL", "PIN", "PMU", "PPG",
    "PPP", "PPR", "PPT", "PPV", "PRR", "PTR", "QBP", "QCK", "QCN", "QRY", "QSB", "QSX", "QVR", "RAR", "RAS", "RCI",
    "RCL", "RDE", "RDR", "RDS", "RDY", "REF", "RER", "RGR", "RGV", "ROR", "RPA", "RPI", "RPL", "RPR", "RQA", "RQI",
    "RQP", "RRA", "RRD", "RRE", "RRG", "RRI", "RSP", "RTB", "SCN", "SDN", "SDR", "SIU", "SLN", "SLR", "SMD", "SQM",
    "SQR", "SRM", "SRR", "SSR", "SSU", "STC", "STI", "SUR", "TBR", "TCR", "TCU", "UDM", "VXQ", "VXR", "VXU", "VXX",
];

/// Metric: ER7 messages parsed by this process (whole messages, not
/// headers), so a test and an operator can see that nothing decodes a
/// message twice.
pub const MESSAGES_PARSED: &str = "carehub_hl7_messages_parsed_total";

/// The delimiters a message declares in MSH-1 and MSH-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    pub field: u8,
    pub component: u8,
    pub repetition: u8,
    /// `None` when MSH-2 declares fewer than three encoding characters.
    pub escape: Option<u8>,
    pub subcomponent: Option<u8>,
    /// The truncation character of HL7 v2.7+ (`#` in `^~\&#`).
    pub truncation: Option<u8>,
}

impl Default for Delimiters {
    fn default() -> Self {
        Delimiters {
            field: b'|',
            component: b'^',
            repetition: b'~',
            escape: Some(b'\\'),
            subcomponent: Some(b'&'),
            truncation: None,
        }
    }
}

impl Delimiters {
    /// Reads MSH-1 and MSH-2 from the start of an MSH (or FHS/BHS) segment.
    pub fn from_header(segment: &str) -> Result<Self, ParseError> {
        let b = segment.as_bytes();
        if b.len() < 4 {
            return Err(ParseError::BadHeader("header segment shorter than 4 characters"));
        }
        let field = b[3];
        let rest = &b[4..];
        let end = rest.iter().position(|&c| c == field).unwrap_or(rest.len());
        let enc = &rest[..end];
        if enc.is_empty() || enc.len() > 5 {
            return Err(ParseError::BadHeader("MSH-2 must hold 1 to 5 encoding characters"));
        }
        let all = std::iter::once(field).chain(enc.iter().copied());
        let mut seen = [false; 128];
        for c in all {
            if !c.is_ascii_graphic() || c.is_ascii_alphanumeric() {
                return Err(ParseError::BadHeader("delimiters must be printable ASCII punctuation"));
            }
            if std::mem::replace(&mut seen[c as usize], true) {
                return Err(ParseError::BadHeader("delimiters must be distinct"));
            }
        }
        Ok(Delimiters {
            field,
            component: enc[0],
            repetition: enc.get(1).copied().unwrap_or(b'~'),
            escape: enc.get(2).copied(),
            subcomponent: enc.get(3).copied(),
            truncation: enc.get(4).copied(),
        })
    }

    /// MSH-2 as it is written for these delimiters.
    pub fn encoding_characters(&self) -> String {
        let mut s = String::with_capacity(5);
        s.push(self.component as char);
        s.push(self.repetition as char);
        if let Some(e) = self.escape {
            s.push(e as char);
            if let Some(sc) = self.subcomponent {
                s.push(sc as char);
                if let Some(t) = self.truncation {
                    s.push(t as char);
                }
            }
        }
        s
    }
}

/// Why a text is not an HL7 v2 message (or batch).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("empty message")]
    Empty,
    #[error("a message starts with MSH, this one starts with {0:?}")]
    NoMsh(String),
    #[error("bad MSH: {0}")]
    BadHeader(&'static str),
    #[error("segment {index} has no valid three-character name")]
    BadSegmentName { index: usize },
    #[error("MSH-{field} is required")]
    MissingHeaderField { field: usize },
    #[error("bad batch: {0}")]
    BadBatch(String),
    #[error("character set: {0}")]
    Charset(String),
    /// MSH-18 names a set carehub does not decode (HL7 table 0211).
    #[error("character set: MSH-18 names a set that is not supported")]
    UnsupportedCharset,
    #[error("v2.xml: {0}")]
    Xml(String),
}

impl ParseError {
    /// The HL7 error code (table 0357) and, where known, the location.
    pub fn hl7_error(&self) -> (u16, Option<ErrorLocation>) {
        match self {
            ParseError::BadSegmentName { index } => (
                100,
                Some(ErrorLocation {
                    segment: String::new(),
                    sequence: index + 1,
                    field: None,
                }),
            ),
            ParseError::MissingHeaderField { field } => (101, Some(ErrorLocation::field("MSH", 1, *field))),
            ParseError::BadHeader(_) => (102, Some(ErrorLocation::field("MSH", 1, 2))),
            // A table 0211 value not supported: 103; bytes that are not the
            // declared set: a data type error, 102; malformed v2.xml: 102.
            // Not 100 (segment sequence), which they are not (item 17).
            ParseError::UnsupportedCharset => (103, Some(ErrorLocation::field("MSH", 1, 18))),
            ParseError::Charset(_) => (102, Some(ErrorLocation::field("MSH", 1, 18))),
            ParseError::Xml(_) => (102, None),
            _ => (100, None),
        }
    }
}

/// Where in a message an error is (HL7 ERR-2, type ERL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorLocation {
    pub segment: String,
    /// 1-based occurrence of the segment in the message.
    pub sequence: usize,
    pub field: Option<usize>,
}

impl ErrorLocation {
    pub fn field(segment: &str, sequence: usize, field: usize) -> Self {
        ErrorLocation {
            segment: segment.to_owned(),
            sequence,
            field: Some(field),
        }
    }
}

/// One HL7 v2 message in ER7 encoding, borrowed from its text.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    delimiters: Delimiters,
    segments: Vec<Segment<'a>>,
}

impl<'a> Message<'a> {
    /// Finds the delimiters and the segments. A leading BOM and blank lines
    /// are skipped; the first segment must be MSH. Counted in
    /// [`MESSAGES_PARSED`]: an inbound message is parsed once by the listener
    /// and once by the pipeline across the Kafka hop, never a third time.
    pub fn parse(text: &'a str) -> Result<Self, ParseError> {
        metrics::counter!(MESSAGES_PARSED).increment(1);
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let segments = split_segments(text);
        let Some(first) = segments.first() else {
            return Err(ParseError::Empty);
        };
        if !first.starts_with("MSH") {
            return Err(ParseError::NoMsh(segment_name_of(first)));
        }
        let delimiters = Delimiters::from_header(first)?;
        Self::from_segments(delimiters, &segments)
    }

    /// Only the MSH of a text whose other segments may be unreadable, to
    /// answer it with a proper ACK.
    pub fn header(text: &'a str) -> Result<Self, ParseError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let segments = split_segments(text);
        match segments.first() {
            Some(first) if first.starts_with("MSH") => {
                Self::from_segments(Delimiters::from_header(first)?, &segments[..1])
            }
            Some(first) => Err(ParseError::NoMsh(segment_name_of(first))),
            None => Err(ParseError::Empty),
        }
    }

    pub(crate) fn from_segments(delimiters: Delimiters, lines: &[&'a str]) -> Result<Self, ParseError> {
        let mut segments = Vec::with_capacity(lines.len());
        for (index, line) in lines.iter().enumerate() {
            let b = line.as_bytes();
            let named = b.len() >= 3
                && b[..3].iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
                && (b.len() == 3 || b[3] == delimiters.field);
            if !named {
                return Err(ParseError::BadSegmentName { index });
            }
            segments.push(Segment { text: line, delimiters });
        }
        let msg = Message { delimiters, segments };
        // MSH-9 (type) and MSH-12 (version) are needed to answer at all.
        for field in [9, 12] {
            if msg.segments[0].field(field).is_empty() {
                return Err(ParseError::MissingHeaderField { field });
            }
        }
        Ok(msg)
    }

    pub fn delimiters(&self) -> Delimiters {
        self.delimiters
    }

    pub fn segments(&self) -> &[Segment<'a>] {
        &self.segments
    }

    pub fn msh(&self) -> &Segment<'a> {
        &self.segments[0]
    }

    /// The first segment named `name`.
    pub fn segment(&self, name: &str) -> Option<&Segment<'a>> {
        self.segments.iter().find(|s| s.name() == name)
    }

    /// Every segment named `name`, in order.
    pub fn segments_named<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s Segment<'a>> + 's {
        self.segments.iter().filter(move |s| s.name() == name)
    }

    /// MSH-9.1 and MSH-9.2, e.g. `("ADT", "A01")`.
    pub fn message_type(&self) -> (&'a str, &'a str) {
        let f = self.msh().field(9);
        (f.component(1).raw(), f.component(2).raw())
    }

    /// `ADT^A01` as written in logs and metrics (the structure, MSH-9.3, is left out).
    pub fn type_label(&self) -> String {
        let (code, trigger) = self.message_type();
        if trigger.is_empty() {
            code.to_owned()
        } else {
            format!("{code}^{trigger}")
        }
    }

    /// MSH-9 as a metric label, bounded whatever the sender writes: a
    /// message code of HL7 table 0076 with a trigger event shaped as table
    /// 0003's (`A01`, `O21`), else `other`.
    pub fn metric_label(&self) -> String {
        let (code, trigger) = self.message_type();
        let trigger_ok = trigger.is_empty()
            || (trigger.len() == 3
                && trigger.as_bytes()[0].is_ascii_uppercase()
                && trigger[1..].bytes().all(|b| b.is_ascii_digit()));
        if MESSAGE_CODES.contains(&code) && trigger_ok {
            self.type_label()
        } else {
            "other".to_owned()
        }
    }

    /// MSH-10, the message control id.
    pub fn control_id(&self) -> &'a str {
        self.msh().field(10).raw()
    }

    /// MSH-12.1, the version (`2.5.1`).
    pub fn version(&self) -> &'a str {
        self.msh().field(12).component(1).raw()
    }

    /// Reads a value by path: `PID-3`, `PID-5.1`, `PID-3[2].4.1`, `OBX[3]-5`
    /// (segment occurrence and field repetition are 1-based). Missing parts
    /// read as empty.
    pub fn get(&self, path: &str) -> Value<'a> {
        let Some(p) = Path::parse(path) else {
            return Value::empty(self.delimiters);
        };
        let Some(seg) = self.segments_named(p.segment).nth(p.occurrence - 1) else {
            return Value::empty(self.delimiters);
        };
        let field = seg.field(p.field);
        if p.repetition.is_none() && p.component.is_none() {
            return field;
        }
        let Some(rep) = field.repetitions().nth(p.repetition.unwrap_or(1) - 1) else {
            return Value::empty(self.delimiters);
        };
        match (p.component, p.subcomponent) {
            (None, _) => rep,
            (Some(c), None) => rep.component(c),
            (Some(c), Some(s)) => rep.component(c).subcomponent(s),
        }
    }
}

/// What an error may say a line starts with: its segment name, or `?` when
/// it has none (the line may be patient data; hardening item 9).
fn segment_name_of(line: &str) -> String {
    match line.as_bytes().get(..3) {
        Some(b) if b.iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()) => line[..3].to_owned(),
        _ => "?".to_owned(),
    }
}

/// Splits on CR, LF and CRLF; blank lines are dropped.
pub(crate) fn split_segments(text: &str) -> Vec<&str> {
    let mut out = Vec::with_capacity(text.len() / 64 + 1);
    let b = text.as_bytes();
    let mut start = 0;
    while start < b.len() {
        let end = memchr2(b'\r', b'\n', &b[start..]).map_or(b.len(), |i| start + i);
        // Both ends are ASCII bytes, so these are char boundaries.
        let line = &text[start..end];
        if !line.trim().is_empty() {
            out.push(line);
        }
        start = end + 1;
    }
    out
}

/// One segment.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    text: &'a str,
    delimiters: Delimiters,
}

impl<'a> Segment<'a> {
    pub fn name(&self) -> &'a str {
        &self.text[..3]
    }

    /// The segment as written.
    pub fn raw(&self) -> &'a str {
        self.text
    }

    /// Field `n` (1-based, as in the standard). For MSH, field 1 is the field
    /// separator and field 2 the encoding characters.
    pub fn field(&self, n: usize) -> Value<'a> {
        let d = self.delimiters;
        let is_header = matches!(self.name(), "MSH" | "FHS" | "BHS");
        if n == 0 {
            return Value::new(&self.text[..3], d, Level::Field);
        }
        if is_header {
            match n {
                1 => return Value::new(&self.text[3..4], d, Level::Opaque),
                2 => {
                    let rest = &self.text[4..];
                    let end = rest.bytes().position(|c| c == d.field).unwrap_or(rest.len());
                    return Value::new(&rest[..end], d, Level::Opaque);
                }
                _ => {}
            }
        }
        // Index into the list of fields after the name: for MSH the first item
        // after "MSH|" is MSH-2, for other segments it is field 1.
        let index = if is_header { n - 1 } else { n };
        match nth_split(self.text, d.field, index) {
            Some(s) => Value::new(s, d, Level::Field),
            None => Value::empty(d),
        }
    }

    /// Every field in order, from field 1 (for MSH: MSH-1, MSH-2, MSH-3, …),
    /// in one pass over the segment.
    pub fn fields(&self) -> impl Iterator<Item = Value<'a>> + 'a {
        let d = self.delimiters;
        let text = self.text;
        let mut lead = Vec::new();
        let rest: Option<&'a str> = if matches!(&text[..3], "MSH" | "FHS" | "BHS") {
            lead.push(self.field(1));
            lead.push(self.field(2));
            let after = &text[4..];
            memchr::memchr(d.field, after.as_bytes()).map(|i| &after[i + 1..])
        } else {
            // text[3] is the field separator; nothing after a bare name.
            text.get(4..).filter(|_| text.len() > 3)
        };
        let mut parts = SplitIter {
            rest,
            sep: Some(d.field),
        };
        lead.into_iter().chain(std::iter::from_fn(move || {
            parts.next().map(|s| Value::new(s, d, Level::Field))
        }))
    }

    /// Number of fields present (trailing empty ones included).
    pub fn field_count(&self) -> usize {
        let seps = memchr::memchr_iter(self.delimiters.field, self.text.as_bytes()).count();
        if matches!(self.name(), "MSH" | "FHS" | "BHS") {
            seps + 1
        } else {
            seps
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// MSH-1 and MSH-2: never split or unescaped.
    Opaque,
    Field,
    Repetition,
    Component,
    Subcomponent,
}

/// A field, repetition, component or subcomponent: a slice of the message.
#[derive(Debug, Clone, Copy)]
pub struct Value<'a> {
    raw: &'a str,
    delimiters: Delimiters,
    level: Level,
}

impl<'a> Value<'a> {
    fn new(raw: &'a str, delimiters: Delimiters, level: Level) -> Self {
        Value { raw, delimiters, level }
    }

    fn empty(delimiters: Delimiters) -> Self {
        Value::new("", delimiters, Level::Subcomponent)
    }

    /// The value as written, escapes and delimiters included.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// HL7's explicit null `""` (as opposed to an empty, i.e. unknown, value).
    pub fn is_null(&self) -> bool {
        self.raw == "\"\""
    }

    /// The text with escape sequences decoded.
    pub fn decoded(&self) -> Cow<'a, str> {
        if self.level == Level::Opaque {
            return Cow::Borrowed(self.raw);
        }
        escape::decode(self.raw, &self.delimiters)
    }

    /// Decoded, trimmed, `None` when empty or the explicit null.
    pub fn text(&self) -> Option<String> {
        if self.is_null() {
            return None;
        }
        let d = self.decoded();
        let t = d.trim();
        (!t.is_empty()).then(|| t.to_owned())
    }

    /// The repetitions of a field (a field without repetitions has one).
    pub fn repetitions(&self) -> impl Iterator<Item = Value<'a>> + 'a {
        let d = self.delimiters;
        let splittable = self.level == Level::Field;
        let raw = self.raw;
        let mut parts = if splittable {
            SplitIter::new(raw, d.repetition)
        } else {
            SplitIter::whole(raw)
        };
        std::iter::from_fn(move || parts.next().map(|s| Value::new(s, d, Level::Repetition)))
    }

    /// Component `n` (1-based) of the first repetition.
    pub fn component(&self, n: usize) -> Value<'a> {
        let d = self.delimiters;
        let first = match self.level {
            Level::Field => nth_split(self.raw, d.repetition, 0).unwrap_or(""),
            Level::Repetition => self.raw,
            Level::Opaque | Level::Component | Level::Subcomponent => {
                return if n == 1 { *self } else { Value::empty(d) };
            }
        };
        match nth_split(first, d.component, n.saturating_sub(1)) {
            Some(s) if n >= 1 => Value::new(s, d, Level::Component),
            _ => Value::empty(d),
        }
    }

    /// Subcomponent `n` (1-based) of a component.
    pub fn subcomponent(&self, n: usize) -> Value<'a> {
        let d = self.delimiters;
        let component = match self.level {
            Level::Component => *self,
            Level::Field | Level::Repetition => self.component(1),
            Level::Opaque | Level::Subcomponent => {
                return if n == 1 { *self } else { Value::empty(d) };
            }
        };
        let Some(sub) = d.subcomponent else {
            return if n == 1 {
                Value::new(component.raw, d, Level::Subcomponent)
            } else {
                Value::empty(d)
            };
        };
        match nth_split(component.raw, sub, n.saturating_sub(1)) {
            Some(s) if n >= 1 => Value::new(s, d, Level::Subcomponent),
            _ => Value::empty(d),
        }
    }

    /// Components of this value (of the first repetition, for a field).
    pub fn components(&self) -> impl Iterator<Item = Value<'a>> + 'a {
        let d = self.delimiters;
        let base = match self.level {
            Level::Field => nth_split(self.raw, d.repetition, 0).unwrap_or(""),
            _ => self.raw,
        };
        let mut parts = match self.level {
            Level::Field | Level::Repetition => SplitIter::new(base, d.component),
            _ => SplitIter::whole(base),
        };
        std::iter::from_fn(move || parts.next().map(|s| Value::new(s, d, Level::Component)))
    }

    /// Subcomponents of a component.
    pub fn subcomponents(&self) -> impl Iterator<Item = Value<'a>> + 'a {
        let d = self.delimiters;
        let mut parts = match (self.level, d.subcomponent) {
            (Level::Component, Some(sub)) => SplitIter::new(self.raw, sub),
            _ => SplitIter::whole(self.raw),
        };
        std::iter::from_fn(move || parts.next().map(|s| Value::new(s, d, Level::Subcomponent)))
    }
}

/// The `n`-th (0-based) piece of `s` split on `sep`.
fn nth_split(s: &str, sep: u8, n: usize) -> Option<&str> {
    let b = s.as_bytes();
    let mut start = 0;
    let mut it = memchr::memchr_iter(sep, b);
    for _ in 0..n {
        start = it.next()? + 1;
    }
    let end = it.next().unwrap_or(b.len());
    Some(&s[start..end])
}

/// Splits on an ASCII byte; always yields at least one (possibly empty) piece.
struct SplitIter<'a> {
    rest: Option<&'a str>,
    sep: Option<u8>,
}

impl<'a> SplitIter<'a> {
    fn new(s: &'a str, sep: u8) -> Self {
        SplitIter {
            rest: Some(s),
            sep: Some(sep),
        }
    }

    fn whole(s: &'a str) -> Self {
        SplitIter {
            rest: Some(s),
            sep: None,
        }
    }
}

impl<'a> Iterator for SplitIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        let Some(sep) = self.sep else {
            self.rest = None;
            return Some(rest);
        };
        match memchr::memchr(sep, rest.as_bytes()) {
            Some(i) => {
                self.rest = Some(&rest[i + 1..]);
                Some(&rest[..i])
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// A parsed `SEG[occurrence]-field[repetition].component.subcomponent` path.
struct Path<'p> {
    segment: &'p str,
    occurrence: usize,
    field: usize,
    repetition: Option<usize>,
    component: Option<usize>,
    subcomponent: Option<usize>,
}

impl<'p> Path<'p> {
    fn parse(path: &'p str) -> Option<Self> {
        let (seg, rest) = path.split_once(['-', '.'])?;
        let (segment, occurrence) = indexed(seg)?;
        let mut parts = rest.split('.');
        let field_part = parts.next()?;
        let (field, repetition) = indexed(field_part)?;
        let field = field.parse().ok()?;
        let repetition = field_part.contains('[').then_some(repetition);
        let component = parts.next().map(str::parse).transpose().ok()?;
        let subcomponent = parts.next().map(str::parse).transpose().ok()?;
        (occurrence >= 1 && repetition != Some(0)).then_some(Path {
            segment,
            occurrence,
            field,
            repetition,
            component,
            subcomponent,
        })
    }
}

/// `OBX[3]` → ("OBX", 3); `OBX` → ("OBX", 1).
fn indexed(s: &str) -> Option<(&str, usize)> {
    match s.split_once('[') {
        Some((name, idx)) => Some((name, idx.strip_suffix(']')?.parse().ok()?)),
        None => Some((s, 1)),
    }
}

#[cfg(test)]
mod tests;
