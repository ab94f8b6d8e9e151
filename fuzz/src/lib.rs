//! The fuzz targets' bodies (hardening, issue 13): every parser that reads
//! what a sender controls. `fuzz/libfuzzer/fuzz_targets/*.rs` feed them libFuzzer's
//! inputs; `tests/replay.rs` feeds them the corpus kept in `fuzz/corpus/`
//! on every `cargo test`. Each runs on a thread with tokio's 2 MiB stack
//! ([`on_task_stack`]), so input that recurses too deep crashes here as it
//! would crash a connection task in the hub.
//!
//! A target's only assertion is that the code under test returns: no panic,
//! no stack overflow, no hang. Where the code has an invariant of its own,
//! the target checks it too (a decoded frame is never larger than the limit).

use bytes::BytesMut;
use tokio_util::codec::Decoder;

/// Largest frame the MLLP target's codec accepts (the listener's default).
pub const MAX_FRAME: usize = 1024 * 1024;

/// A target's body.
pub type Target = fn(&[u8]);

/// The fuzz targets, by name (the `fuzz/corpus/<name>` directories).
pub const TARGETS: &[(&str, Target)] = &[
    ("mllp", mllp),
    ("er7", er7),
    ("batch", batch),
    ("charset", charset),
    ("v2xml", v2xml),
    ("fhir_validate", fhir_validate),
    ("fhir_search", fhir_search),
];

/// Runs `f` on a thread with tokio's default worker stack (2 MiB).
pub fn on_task_stack(data: &[u8], f: Target) {
    let data = data.to_vec();
    let handle = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || f(&data))
        .unwrap_or_else(|e| panic!("spawning the fuzz thread: {e}"));
    if let Err(panic) = handle.join() {
        std::panic::resume_unwind(panic);
    }
}

/// MLLP framing, fed in the pieces a slow sender would send, then EOF.
pub fn mllp(data: &[u8]) {
    let mut codec = carehub_hl7::codec::mllp::MllpCodec::new(MAX_FRAME);
    let mut buf = BytesMut::new();
    // How the bytes arrive, chosen without constraining what they are: an
    // even length in one read (a socket read can fill a large buffer at
    // once), an odd one in reads of 61 bytes (a slow sender).
    let step = if data.len().is_multiple_of(2) {
        data.len().max(1)
    } else {
        61
    };
    for chunk in data.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => assert!(frame.len() <= MAX_FRAME, "a frame past the limit"),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = codec.decode_eof(&mut buf);
}

/// Character set, XML detection, ER7 structure and every value read, as
/// the listener and the mapping read a frame.
pub fn er7(data: &[u8]) {
    let Ok((text, _)) = carehub_hl7::codec::decode_text(data) else {
        return;
    };
    let _ = carehub_hl7::codec::Message::header(&text);
    let Ok(msg) = carehub_hl7::codec::Message::parse(&text) else {
        return;
    };
    let _ = (msg.type_label(), msg.control_id(), msg.version());
    for seg in msg.segments() {
        for field in seg.fields() {
            for rep in field.repetitions() {
                for comp in rep.components() {
                    for sub in comp.subcomponents() {
                        let _ = sub.decoded();
                    }
                }
            }
        }
    }
    let _ = carehub_hl7::codec::ack::build(&msg, carehub_hl7::codec::AckCode::AE, None, "FUZZ");
}

/// Batch and file envelopes, then each message's header.
pub fn batch(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(split) = carehub_hl7::codec::batch::split(&text) {
        for m in split.messages {
            let _ = carehub_hl7::codec::Message::header(m);
        }
    }
    let _ = carehub_hl7::codec::batch::strip_comments(&text);
}

/// MSH-18 and the decoders it selects, and the encoder back.
pub fn charset(data: &[u8]) {
    if let Ok((text, _)) = carehub_hl7::codec::charset::decode(data) {
        let _ = carehub_hl7::codec::charset::encode(&text, "8859/1");
    }
}

/// The v2.xml encoding to ER7.
pub fn v2xml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(er7) = carehub_hl7::codec::xml::to_er7(&text) {
        let _ = carehub_hl7::codec::Message::parse(&er7);
    }
}

/// The FHIR R4 validator on any JSON.
pub fn fhir_validate(data: &[u8]) {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = carehub_fhir::validate::validate(&value);
    }
}

/// Search parameters as a query string: `Type?name=value&…`.
pub fn fhir_search(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (ty, query) = text.split_once('?').unwrap_or(("Patient", &text));
    let params: Vec<(String, String)> = query
        .split('&')
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let _ = carehub_fhir::search::Search::parse(ty, &params);
}
