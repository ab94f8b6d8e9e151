//! Every file of the external HL7 v2 corpus (`$CAREHUB_CORPUS/hl7v2`, default
//! `../shared/corpus`) parses: ER7 and XML messages, batches and files of
//! several messages, with every subcomponent decoded. Skipped, with a notice,
//! where the corpus is absent.

use std::path::{Path, PathBuf};

use carehub_hl7::codec::{Message, batch, decode_text, escape};

fn corpus() -> Option<PathBuf> {
    carehub_core::corpus::part(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."), "hl7v2")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read corpus dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Visits every subcomponent; checks decode/encode round trips. Returns the count.
fn walk(msg: &Message<'_>) -> usize {
    let d = msg.delimiters();
    let mut n = 0;
    for seg in msg.segments() {
        for (i, field) in seg.fields().enumerate() {
            if seg.name() == "MSH" && i < 2 {
                continue;
            }
            for rep in field.repetitions() {
                for comp in rep.components() {
                    for sub in comp.subcomponents() {
                        let text = sub.decoded();
                        let again = escape::encode(&text, &d);
                        assert_eq!(escape::decode(&again, &d), text, "round trip of {:?}", sub.raw());
                        n += 1;
                    }
                }
            }
        }
    }
    n
}

#[test]
fn every_corpus_file_parses() {
    let Some(dir) = corpus() else { return };
    let mut all = Vec::new();
    files(&dir, &mut all);
    all.sort();
    let (mut parsed_files, mut messages, mut values, mut bytes) = (0, 0, 0, 0);
    for path in &all {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let raw = std::fs::read(path).expect("read");
        // Expected FHIR bundles and the licence are not HL7 v2 messages.
        if name.ends_with(".json") || name == "LICENSE" {
            continue;
        }
        if name == "uuencoded_escaped.txt" {
            // Not a message: one escaped field value (a uuencoded file with \X0D\\X0A\ line breaks).
            let text = std::str::from_utf8(&raw).expect("ascii");
            let decoded = escape::decode(text.trim_end(), &Default::default());
            assert!(decoded.starts_with("begin 644 WAV.DAT\r\n"), "{}", &decoded[..40]);
            assert!(decoded.trim_end().ends_with("end"), "decoded to the end");
            parsed_files += 1;
            continue;
        }
        let decoded = decode_text(&raw);
        if name == "xml-with-xxe.xml" {
            // The XXE sample must be refused, and nothing outside it read.
            let err = decoded.expect_err("external entity refused").to_string();
            assert!(err.contains("&xxe;"), "{err}");
            parsed_files += 1;
            continue;
        }
        let (text, _) = decoded.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let clean = batch::strip_comments(&text);
        let split = batch::split(&clean).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!split.messages.is_empty(), "{}: no message", path.display());
        for m in &split.messages {
            let msg = Message::parse(m).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            values += walk(&msg);
            messages += 1;
        }
        bytes += raw.len();
        parsed_files += 1;
    }
    eprintln!("corpus: {parsed_files} files, {messages} messages, {values} values, {bytes} bytes parsed");
    assert!(
        parsed_files >= 140,
        "the corpus holds at least 140 HL7 files, saw {parsed_files}"
    );
}
