//! Several messages in one text: HL7 batches (FHS/BHS … BTS/FTS, v2.5.1
//! §2.10.3) and plain files of messages one after another.
//!
//! Each message of a batch is handled on its own. The envelope is read as
//! leniently as the standard's grammar allows (v2.5 §2.10.3:
//! `[FHS] {[BHS] {MSH …} [BTS]} [FTS]`): the file and batch headers and
//! trailers are each optional, so an FHS file whose messages are not wrapped
//! in BHS/BTS, or a batch whose BTS is missing at the end of the input, is
//! read as written. Counts are checked only where a trailer gives them
//! (BTS-1, FTS-1); a mismatch, a segment outside any message, anything after
//! FTS or an FHS that is not first refuses the whole text with the reason,
//! so a half-read batch is never taken for a complete one. Error texts name
//! segments, never their content.

use std::borrow::Cow;

use super::er7::ParseError;

/// The messages of a text, each as a slice from its MSH to its last segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split<'a> {
    pub messages: Vec<&'a str>,
    /// True when the text had batch envelope segments.
    pub batch: bool,
}

/// Lines with their byte offsets, blank ones skipped.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut start = 0;
    std::iter::from_fn(move || {
        let b = text.as_bytes();
        while start < b.len() {
            let end = memchr::memchr2(b'\r', b'\n', &b[start..]).map_or(b.len(), |i| start + i);
            let line = (start, &text[start..end]);
            start = end + 1;
            if !line.1.trim().is_empty() {
                return Some(line);
            }
        }
        None
    })
}

/// A line's segment name, or `"?"` when it does not start with one: never
/// the line itself, which may hold patient data (hardening item 9).
fn name(line: &str) -> &str {
    match line.as_bytes().get(..3) {
        Some(b) if b.iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()) => &line[..3],
        _ => "?",
    }
}

/// Field `n` (1-based) of a non-header batch segment (BTS, FTS).
fn field(line: &str, n: usize) -> &str {
    let sep = line.as_bytes().get(3).copied().unwrap_or(b'|') as char;
    line.split(sep).nth(n).unwrap_or("")
}

/// Splits a text into its messages; see the module docs for the batch rules.
pub fn split(text: &str) -> Result<Split<'_>, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut messages: Vec<&str> = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    let mut batch = false;
    let mut file_done = false;
    // Messages of the batch being read, and batches ended so far (for FTS-1).
    let mut batch_messages = 0usize;
    let mut batch_open = false;
    let mut batches = 0usize;

    fn close<'t>(text: &'t str, current: &mut Option<(usize, usize)>, messages: &mut Vec<&'t str>) {
        if let Some((s, e)) = current.take() {
            messages.push(&text[s..e]);
        }
    }

    for (at, line) in lines(text) {
        let end = at + line.len();
        if file_done {
            return Err(ParseError::BadBatch(format!("{:?} after FTS", name(line))));
        }
        match name(line) {
            "FHS" => {
                if batch || !messages.is_empty() || current.is_some() {
                    return Err(ParseError::BadBatch("FHS must come first".into()));
                }
                batch = true;
            }
            "BHS" => {
                close(text, &mut current, &mut messages);
                // A BHS ends the batch before it, whose BTS is optional.
                if batch_open || batch_messages > 0 {
                    batches += 1;
                }
                batch = true;
                batch_open = true;
                batch_messages = 0;
            }
            "BTS" => {
                close(text, &mut current, &mut messages);
                let declared = field(line, 1);
                if !declared.is_empty() && declared.trim().parse::<usize>().ok() != Some(batch_messages) {
                    return Err(ParseError::BadBatch(format!(
                        "BTS-1 says {declared} messages, the batch holds {batch_messages}"
                    )));
                }
                batch = true;
                batch_open = false;
                batch_messages = 0;
                batches += 1;
            }
            "FTS" => {
                close(text, &mut current, &mut messages);
                if batch_open || batch_messages > 0 {
                    batches += 1;
                }
                let declared = field(line, 1);
                if !declared.is_empty() && declared.trim().parse::<usize>().ok() != Some(batches) {
                    return Err(ParseError::BadBatch(format!(
                        "FTS-1 says {declared} batches, the file holds {batches}"
                    )));
                }
                batch = true;
                file_done = true;
            }
            "MSH" => {
                close(text, &mut current, &mut messages);
                current = Some((at, end));
                batch_messages += 1;
            }
            other => match current.as_mut() {
                Some(c) => c.1 = end,
                None if batch => {
                    return Err(ParseError::BadBatch(format!("segment {other:?} outside a message")));
                }
                None => return Err(ParseError::NoMsh(other.to_owned())),
            },
        }
    }
    close(text, &mut current, &mut messages);
    if messages.is_empty() && !batch {
        return Err(ParseError::Empty);
    }
    Ok(Split { messages, batch })
}

/// Removes comment lines that files of sample messages carry between
/// messages (`/* … */` blocks, lines starting with `//` or `#`). Only for
/// reading files: on the wire every line is a segment.
pub fn strip_comments(text: &str) -> Cow<'_, str> {
    let is_comment_start = |l: &str| {
        let t = l.trim_start();
        t.starts_with("/*") || t.starts_with("//") || t.starts_with('#')
    };
    if !text.split(['\r', '\n']).any(is_comment_start) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut in_block = false;
    for line in text.split_inclusive(['\r', '\n']) {
        let t = line.trim_start();
        if in_block {
            if t.contains("*/") {
                in_block = false;
            }
            continue;
        }
        if t.starts_with("/*") {
            in_block = !t.contains("*/");
            continue;
        }
        if t.starts_with("//") || t.starts_with('#') {
            continue;
        }
        out.push_str(line);
    }
    Cow::Owned(out)
}

/// The messages of a file (one, several, or a batch; comment lines
/// skipped), each with CR between segments as on the wire, and the
/// character set applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFile {
    pub messages: Vec<String>,
    pub charset: super::Charset,
    /// The file is an FHS/BHS batch.
    pub batch: bool,
}

/// Reads a file's bytes as [`MessageFile`].
pub fn message_file(bytes: &[u8]) -> Result<MessageFile, ParseError> {
    let (text, charset) = super::decode_text(bytes)?;
    let clean = strip_comments(&text);
    let split = split(&clean)?;
    let messages = split
        .messages
        .iter()
        .map(|m| {
            let mut out = m
                .split(['\r', '\n'])
                .filter(|l| !l.trim().is_empty())
                .collect::<Vec<_>>()
                .join("\r");
            out.push('\r');
            out
        })
        .collect();
    Ok(MessageFile {
        messages,
        charset,
        batch: split.batch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const M1: &str = "MSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5\rPID|1||X1";
    const M2: &str = "MSH|^~\\&|A|B|C|D|2026||ADT^A08|2|P|2.5\rPID|1||X2\rZZZ|z";

    #[test]
    fn plain_files_split_at_each_msh() {
        let text = format!("{M1}\r\n\r\n{M2}\r\n");
        let s = split(&text).expect("splits");
        assert_eq!(s.messages, [M1, M2]);
        assert!(!s.batch);
    }

    #[test]
    fn a_well_formed_batch_yields_its_messages() {
        let text = format!("FHS|^~\\&|A\rBHS|^~\\&|A\r{M1}\r{M2}\rBTS|2\rFTS|1\r");
        let s = split(&text).expect("splits");
        assert_eq!(s.messages, [M1, M2]);
        assert!(s.batch);
        let bhs_only = format!("BHS|^~\\&|A\r{M1}\rBTS|1\r");
        assert_eq!(split(&bhs_only).expect("bhs only").messages, [M1]);
        let empty = "BHS|^~\\&|A\rBTS|0\r";
        assert!(split(empty).expect("empty batch").messages.is_empty());
    }

    #[test]
    fn malformed_batches_are_refused_with_the_reason() {
        for (text, why) in [
            (format!("BHS|^~\\&|A\r{M1}\r{M2}\rBTS|3\r"), "BTS-1 says 3"),
            (format!("FHS|^~\\&|A\rBHS|^~\\&\r{M1}\rBTS|1\rFTS|2\r"), "FTS-1 says 2"),
            (format!("BHS|^~\\&|A\rPID|1\r{M1}\rBTS|1\r"), "outside a message"),
            (format!("{M1}\rFHS|^~\\&|A\r"), "FHS must come first"),
            ("FHS|^~\\&\rBHS|^~\\&\rBTS|0\rFTS|1\rMSH|x".to_string(), "after FTS"),
        ] {
            let err = split(&text).expect_err(why).to_string();
            assert!(err.contains(why), "{err} should say {why}");
        }
    }

    /// Hardening item 18 (each was refused as "bad batch" on 305005c): the
    /// headers and trailers the grammar makes optional may be left out.
    #[test]
    fn optional_envelope_segments_may_be_left_out() {
        for (text, n) in [
            (format!("FHS|^~\\&|A\r{M1}\r{M2}\rFTS|1\r"), 2),
            (format!("FHS|^~\\&|A\r{M1}\r"), 1),
            (format!("BHS|^~\\&|A\r{M1}\r{M2}\r"), 2),
            (format!("FHS|^~\\&|A\rBHS|^~\\&\r{M1}\rBTS|1\r"), 1),
            (format!("{M1}\r{M2}\rBTS|2\r"), 2),
            (
                format!("FHS|^~\\&\rBHS|^~\\&\r{M1}\rBHS|^~\\&\r{M2}\rBTS|1\rFTS|2\r"),
                2,
            ),
        ] {
            let s = split(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(s.messages.len(), n, "{text:?}");
            assert!(s.batch);
        }
    }

    /// Hardening item 9: an error names a segment, never a line's content.
    #[test]
    fn errors_never_quote_a_line() {
        let text = "FHS|^~\\&|A\rSmith^Jane^19700101|x\r";
        let err = split(text).expect_err("outside a message").to_string();
        assert!(!err.contains("Smith") && !err.contains("1970"), "{err}");
        let text = "BHS|^~\\&\r\u{e9}ric|x\r";
        let err = split(text).expect_err("refused").to_string();
        assert!(!err.contains("ric"), "{err}");
    }

    #[test]
    fn comments_in_sample_files_are_skipped() {
        let text = format!("/*\n * samples\n */\n{M1}\n// next\n# also\n{M2}\n");
        let clean = strip_comments(&text);
        assert_eq!(split(&clean).expect("splits").messages.len(), 2);
        assert!(matches!(strip_comments(M1), Cow::Borrowed(_)));
    }
}
