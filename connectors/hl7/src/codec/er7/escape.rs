//! HL7 v2 escape sequences (v2.5.1 §2.7).
//!
//! Decoded: `\F\ \S\ \T\ \R\ \E\ \P\` (the delimiters), `\Xhh…\` (bytes,
//! read as UTF-8, else ISO 8859-1) and `\.br\` (a line break, `\n`). Other
//! sequences (`\H\ \N\` highlighting, `\.sp\`-style formatting, `\C…\ \M…\`
//! character-set switches, `\Z…\` local ones) are kept as written, escape
//! characters included, so nothing a sender meant is lost.
//!
//! The two directions are inverse on text: `decode(encode(s)) == s` for any
//! string, and `encode(decode(raw))` is `raw` written with canonical escapes.
//!
//! The escape character is ASCII, so scanning bytes for it never splits a
//! UTF-8 sequence (the bug seen in hl7-parser 0.3, which mixed byte and char
//! offsets after a non-ASCII character).

use std::borrow::Cow;

use super::Delimiters;

/// Decodes escape sequences in one raw value.
pub fn decode<'a>(raw: &'a str, d: &Delimiters) -> Cow<'a, str> {
    let Some(esc) = d.escape else {
        return Cow::Borrowed(raw);
    };
    if memchr::memchr(esc, raw.as_bytes()).is_none() {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = memchr::memchr(esc, rest.as_bytes()) {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let Some(j) = memchr::memchr(esc, after.as_bytes()) else {
            // An unterminated escape is text.
            out.push_str(&rest[i..]);
            return Cow::Owned(out);
        };
        let seq = &after[..j];
        if !push_decoded(&mut out, seq, d) {
            out.push(esc as char);
            out.push_str(seq);
            out.push(esc as char);
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Appends the meaning of one sequence; false when it is not one we decode.
fn push_decoded(out: &mut String, seq: &str, d: &Delimiters) -> bool {
    let mut delim = |c: Option<u8>| -> bool {
        match c {
            Some(c) => {
                out.push(c as char);
                true
            }
            None => false,
        }
    };
    match seq {
        "F" => delim(Some(d.field)),
        "S" => delim(Some(d.component)),
        "R" => delim(Some(d.repetition)),
        "E" => delim(d.escape),
        "T" => delim(d.subcomponent),
        "P" => delim(d.truncation),
        ".br" => {
            out.push('\n');
            true
        }
        _ => match seq.strip_prefix('X') {
            Some(hex) if !hex.is_empty() && hex.len() % 2 == 0 => match decode_hex(hex) {
                Some(bytes) => {
                    match std::str::from_utf8(&bytes) {
                        Ok(s) => out.push_str(s),
                        Err(_) => out.extend(bytes.iter().map(|&b| b as char)),
                    }
                    true
                }
                None => false,
            },
            _ => false,
        },
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    let b = hex.as_bytes();
    let digit = |c: u8| (c as char).to_digit(16).map(|v| v as u8);
    b.chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

/// Escapes a text value for one field, component or subcomponent.
pub fn encode<'a>(text: &'a str, d: &Delimiters) -> Cow<'a, str> {
    let special = |c: char| {
        c == '\r'
            || c == '\n'
            || (c.is_ascii()
                && [
                    Some(d.field),
                    Some(d.component),
                    Some(d.repetition),
                    d.escape,
                    d.subcomponent,
                    d.truncation,
                ]
                .contains(&Some(c as u8)))
    };
    if !text.chars().any(special) {
        return Cow::Borrowed(text);
    }
    let Some(esc) = d.escape.map(char::from) else {
        // Without an escape character a delimiter cannot be written: drop it
        // rather than let it split the value.
        return Cow::Owned(text.chars().filter(|c| !special(*c)).collect());
    };
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !special(c) {
            out.push(c);
            continue;
        }
        let code = match c {
            '\r' => "X0D",
            '\n' => ".br",
            c if c as u32 == d.field as u32 => "F",
            c if c as u32 == d.component as u32 => "S",
            c if c as u32 == d.repetition as u32 => "R",
            c if Some(c as u32) == d.escape.map(u32::from) => "E",
            c if Some(c as u32) == d.subcomponent.map(u32::from) => "T",
            _ => "P",
        };
        out.push(esc);
        out.push_str(code);
        out.push(esc);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> Delimiters {
        Delimiters::default()
    }

    #[test]
    fn decodes_every_standard_sequence() {
        let d = Delimiters {
            truncation: Some(b'#'),
            ..d()
        };
        assert_eq!(decode(r"a\F\b\S\c\T\d\R\e\E\f\P\g", &d), "a|b^c&d~e\\f#g");
        assert_eq!(decode(r"line1\.br\line2", &d), "line1\nline2");
        assert_eq!(decode(r"x\X0D0A\y", &d), "x\r\ny");
        assert_eq!(decode(r"\XC3A9\", &d), "é", "hex bytes as UTF-8");
        assert_eq!(decode(r"\XE9\", &d), "é", "else as ISO 8859-1");
        assert_eq!(decode(r"plain", &d), "plain");
        assert!(matches!(decode("plain", &d), Cow::Borrowed(_)));
    }

    #[test]
    fn non_ascii_text_around_escapes_survives() {
        // hl7-parser 0.3 turns this into `Müller\Jörg`.
        assert_eq!(decode(r"Müller\S\Jörg", &d()), "Müller^Jörg");
        assert_eq!(decode(r"日本\F\語\E\", &d()), "日本|語\\");
    }

    #[test]
    fn unknown_and_unterminated_sequences_are_kept() {
        assert_eq!(decode(r"\H\bold\N\", &d()), r"\H\bold\N\");
        assert_eq!(decode(r"\.sp2\x", &d()), r"\.sp2\x");
        assert_eq!(decode(r"\Zfoo\", &d()), r"\Zfoo\");
        assert_eq!(decode(r"tail\F", &d()), r"tail\F");
        assert_eq!(decode(r"\XZZ\", &d()), r"\XZZ\");
    }

    #[test]
    fn encode_then_decode_gives_the_text_back() {
        let d = Delimiters {
            truncation: Some(b'#'),
            ..d()
        };
        for s in [
            "",
            "plain",
            "a|b^c&d~e\\f#g",
            "Müller^Jörg",
            "multi\nline\r\ntext",
            "\\F\\ literally",
            "emoji 🦴 | ok",
        ] {
            let e = encode(s, &d);
            assert!(!e.contains(['|', '^', '~', '&', '#', '\r', '\n']), "{e}");
            assert_eq!(decode(&e, &d), s, "{e}");
        }
    }

    #[test]
    fn decode_then_encode_is_canonical_and_stable() {
        for raw in [r"a\F\b", r"\E\\S\", r"one\.br\two", r"x\X0D\y"] {
            let text = decode(raw, &d());
            assert_eq!(encode(&text, &d()), raw);
        }
    }

    #[test]
    fn unusual_escape_characters() {
        let d = Delimiters {
            field: b'$',
            component: b'*',
            repetition: b'#',
            escape: Some(b'!'),
            subcomponent: Some(b'@'),
            truncation: None,
        };
        assert_eq!(decode("a!F!b!S!c!E!", &d), "a$b*c!");
        assert_eq!(encode("a$b*c!", &d), "a!F!b!S!c!E!");
    }
}
