//! Bytes to text, by the character set a message declares in MSH-18
//! (HL7 table 0211). MSH itself is ASCII in every supported set, so MSH-18 is
//! read from the raw bytes before anything is decoded.
//!
//! | MSH-18                        | decoded as                                            |
//! |-------------------------------|-------------------------------------------------------|
//! | empty, `ASCII`                | UTF-8 when the bytes are valid UTF-8, else ISO 8859-1 |
//! | `8859/1`                      | ISO 8859-1 (each byte is the code point)              |
//! | `8859/2` … `8859/9`, `8859/15`| that ISO 8859 part (encoding_rs)                      |
//! | `UNICODE UTF-8`, `UNICODE`    | UTF-8, strictly                                       |
//! | `GB 18030-2000`, `BIG-5`, `KS X 1001` | through encoding_rs                           |
//!
//! Empty and `ASCII` are lenient on purpose: many senders write UTF-8 (or
//! Latin-1) without declaring it, and refusing them helps nobody; a declared
//! set is applied strictly. UTF-16 and UTF-32 cannot carry an ASCII MSH and
//! are refused with a clear error.

use std::borrow::Cow;

use encoding_rs::Encoding;

use super::er7::ParseError;

/// Which set was applied, for the message store and `hl7 parse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Charset {
    Utf8,
    Latin1,
    Other(&'static str),
}

/// Decodes a message's bytes to text (a leading UTF-8 BOM is removed).
pub fn decode(bytes: &[u8]) -> Result<(Cow<'_, str>, Charset), ParseError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let declared = declared_charset(bytes);
    let name = declared.as_deref().map(str::trim).unwrap_or("");
    match name.to_ascii_uppercase().as_str() {
        "" | "ASCII" => Ok(match std::str::from_utf8(bytes) {
            Ok(s) => (Cow::Borrowed(s), Charset::Utf8),
            Err(_) => (Cow::Owned(latin1(bytes)), Charset::Latin1),
        }),
        "UNICODE UTF-8" | "UNICODE" | "UTF-8" => std::str::from_utf8(bytes)
            .map(|s| (Cow::Borrowed(s), Charset::Utf8))
            .map_err(|e| ParseError::Charset(format!("MSH-18 says UTF-8 but byte {} is not", e.valid_up_to()))),
        "8859/1" => Ok((Cow::Owned(latin1(bytes)), Charset::Latin1)),
        other => {
            let label = match other {
                "8859/2" => "iso-8859-2",
                "8859/3" => "iso-8859-3",
                "8859/4" => "iso-8859-4",
                "8859/5" => "iso-8859-5",
                "8859/6" => "iso-8859-6",
                "8859/7" => "iso-8859-7",
                "8859/8" => "iso-8859-8",
                "8859/9" => "windows-1254",
                "8859/15" => "iso-8859-15",
                "GB 18030-2000" => "gb18030",
                "BIG-5" => "big5",
                "KS X 1001" => "euc-kr",
                "ISO IR87" | "ISO IR159" => "euc-jp",
                _ => return Err(ParseError::UnsupportedCharset),
            };
            let enc = Encoding::for_label(label.as_bytes())
                .ok_or_else(|| ParseError::Charset(format!("no decoder for {label}")))?;
            let (text, had_errors) = enc.decode_without_bom_handling(bytes);
            if had_errors {
                return Err(ParseError::Charset(format!("bytes are not valid {other}")));
            }
            Ok((text, Charset::Other(enc.name())))
        }
    }
}

/// Encodes text for sending in the set a message declares (outbound).
pub fn encode<'a>(text: &'a str, msh18: &str) -> Cow<'a, [u8]> {
    match msh18.trim().to_ascii_uppercase().as_str() {
        "8859/1" => Cow::Owned(
            text.chars()
                .map(|c| if (c as u32) < 256 { c as u8 } else { b'?' })
                .collect(),
        ),
        _ => Cow::Borrowed(text.as_bytes()),
    }
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

/// MSH-18's first repetition, read from the raw bytes of the first segment.
fn declared_charset(bytes: &[u8]) -> Option<String> {
    let end = memchr::memchr2(b'\r', b'\n', bytes).unwrap_or(bytes.len());
    let msh = &bytes[..end];
    // The lengths of the first segment, not of the whole input: `MSH\r…`
    // has no field separator to read (hardening item 8).
    if !msh.starts_with(b"MSH") || msh.len() < 5 {
        return None;
    }
    let field = msh[3];
    let enc_end = msh[4..].iter().position(|&c| c == field).map_or(msh.len(), |p| p + 4);
    let repetition = msh.get(5).copied().filter(|_| enc_end > 5);
    // Fields after "MSH|": index 0 is MSH-2, so MSH-18 is index 16.
    let value = msh[4..].split(|&c| c == field).nth(16)?;
    let first = match repetition {
        Some(r) => value.split(|&c| c == r).next().unwrap_or(value),
        None => value,
    };
    Some(String::from_utf8_lossy(first).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msh(charset: &str) -> Vec<u8> {
        format!("MSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5||||||{charset}\rPID|1||X||").into_bytes()
    }

    #[test]
    fn reads_msh_18() {
        assert_eq!(declared_charset(&msh("8859/1")).as_deref(), Some("8859/1"));
        assert_eq!(
            declared_charset(&msh("UNICODE UTF-8~8859/1")).as_deref(),
            Some("UNICODE UTF-8")
        );
        assert_eq!(declared_charset(b"MSH|^~\\&|A|B\r").as_deref(), None);
    }

    #[test]
    fn latin1_and_utf8_give_the_same_text() {
        let mut latin = msh("8859/1");
        latin.extend_from_slice(b"M\xfcller");
        let mut utf8 = msh("UNICODE UTF-8");
        utf8.extend_from_slice("Müller".as_bytes());
        let (a, ca) = decode(&latin).expect("latin1");
        let (b, cb) = decode(&utf8).expect("utf8");
        assert!(a.ends_with("Müller") && b.ends_with("Müller"));
        assert_eq!((ca, cb), (Charset::Latin1, Charset::Utf8));
    }

    #[test]
    fn undeclared_bytes_are_utf8_when_valid_else_latin1() {
        let mut bytes = msh("");
        bytes.extend_from_slice("Jörg".as_bytes());
        assert_eq!(decode(&bytes).expect("utf8").1, Charset::Utf8);
        let mut bytes = msh("ASCII");
        bytes.extend_from_slice(b"J\xf6rg");
        let (text, cs) = decode(&bytes).expect("latin1");
        assert!(text.ends_with("Jörg"));
        assert_eq!(cs, Charset::Latin1);
    }

    #[test]
    fn a_declared_set_is_strict_and_unknown_sets_are_refused() {
        let mut bytes = msh("UNICODE UTF-8");
        bytes.push(0xff);
        assert!(matches!(decode(&bytes), Err(ParseError::Charset(_))));
        assert!(matches!(decode(&msh("KLINGON")), Err(ParseError::UnsupportedCharset)));
        // Hardening item 17: not 100 (segment sequence error), as on 305005c.
        let klingon = msh("KLINGON");
        assert_eq!(decode(&klingon).map(|_| ()).map_err(|e| e.hl7_error().0), Err(103));
        assert_eq!(decode(&bytes).map(|_| ()).map_err(|e| e.hl7_error().0), Err(102));
        assert_eq!(
            super::super::xml::to_er7("<ADT_A01><MSH>").map_err(|e| e.hl7_error().0),
            Err(102)
        );
        let mut greek = msh("8859/7");
        greek.push(0xe1);
        assert!(decode(&greek).expect("greek").0.ends_with('α'));
    }

    /// Hardening item 8 (failed on 305005c: a panic, range 4 out of a slice of 3).
    #[test]
    fn a_short_first_segment_is_no_panic() {
        for input in [
            &b"MSH\r"[..],
            b"MSH\n",
            b"MSH",
            b"MSH|",
            b"MSH\rPID|1|2|3|4|5|6|7|8|9",
            b"MSH|\r",
        ] {
            assert_eq!(declared_charset(input), None, "{input:?}");
            assert!(decode(input).is_ok(), "{input:?}");
        }
    }

    #[test]
    fn a_bom_is_removed() {
        let mut bytes = b"\xEF\xBB\xBF".to_vec();
        bytes.extend_from_slice(&msh(""));
        assert!(decode(&bytes).expect("bom").0.starts_with("MSH"));
    }

    #[test]
    fn encodes_latin1_for_the_wire() {
        assert_eq!(encode("Müller", "8859/1").as_ref(), b"M\xfcller");
        assert_eq!(encode("Müller", "").as_ref(), "Müller".as_bytes());
    }
}
