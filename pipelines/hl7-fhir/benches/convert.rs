//! HL7 v2 → FHIR conversion speed, one thread. Prints figures; asserts nothing.
//!
//!   cargo bench -p carehub-hl7-fhir --bench convert
//!
//! Messages: the ms-fhir-converter corpus inputs (`$CAREHUB_CORPUS/hl7v2`,
//! default `../shared/corpus`), else the repository's fixtures. Each message
//! is converted to its Bundle (serde_json values, not serialized) with its
//! unmapped report, round robin for BENCH_SECS seconds (default 5).

// The allocator the carehub binary runs with (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::Path;
use std::time::{Duration, Instant};

fn messages() -> (Vec<String>, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (dir, what) = if let Some(corpus) = carehub_core::corpus::part(&root, "hl7v2/ms-fhir-converter/input") {
        (corpus, "the ms-fhir-converter corpus")
    } else {
        (
            root.join("tests/fixtures/hl7"),
            "the repository's fixtures (corpus absent)",
        )
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("message dir") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
        let Ok((text, _)) = carehub_hl7::codec::decode_text(&bytes) else {
            continue;
        };
        let clean = carehub_hl7::codec::batch::strip_comments(&text);
        let Ok(split) = carehub_hl7::codec::batch::split(&clean) else {
            continue;
        };
        out.extend(split.messages.iter().map(|m| m.to_string()));
    }
    (out, format!("{what} ({})", dir.display()))
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("convert bench: run it with `cargo bench -p carehub-hl7-fhir --bench convert`");
        return;
    }
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let (msgs, what) = messages();
    let bytes: usize = msgs.iter().map(String::len).sum();
    println!(
        "HL7 v2 → FHIR, one thread, {} messages ({bytes} bytes) from {what}",
        msgs.len()
    );
    // Warm up.
    for m in &msgs {
        let _ = carehub_hl7_fhir::to_fhir(m);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let (mut n, mut size, mut resources) = (0usize, 0usize, 0usize);
    while Instant::now() < deadline {
        for m in &msgs {
            if let Ok(c) = carehub_hl7_fhir::to_fhir(m) {
                resources += c.bundle["entry"].as_array().map_or(0, Vec::len);
            }
            n += 1;
            size += m.len();
        }
    }
    let t = started.elapsed().as_secs_f64();
    println!(
        "  {:.0} msg/s per core ({:.1} MB/s, {:.0} resources/s), {n} conversions in {t:.1} s",
        n as f64 / t,
        size as f64 / t / 1e6,
        resources as f64 / t
    );
}
