//! HL7 v2 figures. Prints figures; asserts nothing about speed.
//!
//!   cargo bench --bench hl7                 # parse + MLLP end to end
//!   BENCH_MLLP=0 cargo bench --bench hl7    # parse only (no services needed)
//!
//! Parse: every message of the corpus (`$CAREHUB_CORPUS/hl7v2`, else the
//! repository's fixtures), in memory, on one core: the structure alone, the
//! structure with every subcomponent visited, the same with every value
//! unescaped, and the `hl7-parser` crate on the same input for comparison.
//!
//! MLLP end to end (needs `scripts/services.sh up`): a `carehub serve` of its
//! own, A04 messages over 1 and 32 connections as fast as ACKs come back
//! (throughput, ACK latency), then 32 connections paced at BENCH_RATE msg/s
//! (ACK latency at that rate), then how long the pipeline takes to apply all.
//! Knobs: BENCH_MLLP_MESSAGES (default 20000), BENCH_RATE (2000), BENCH_PACED_SECS (10),
//! BENCH_LOAD_FHIR (1: the pipeline also loads the converted FHIR resources).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use carehub_hl7::codec::{Message, batch, decode_text};
use carehub_hl7::{MllpSender, SenderConfig};
use common::*;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("hl7 bench: run it with `cargo bench --bench hl7`");
        return;
    }
    println!(
        "carehub HL7 bench, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    parse();
    if knob("BENCH_MLLP", 1) == 1 {
        mllp().await;
    }
}

/// Every message of the corpus (or of the fixtures), as ER7 text.
fn messages() -> (Vec<String>, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (dir, what) = if let Some(corpus) = carehub_core::corpus::part(root, "hl7v2") {
        (corpus, "the HL7 v2 corpus")
    } else {
        (
            root.join("tests/fixtures/hl7"),
            "the repository's fixtures (corpus absent)",
        )
    };
    let mut files = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.to_string_lossy().ends_with(".json") && !p.ends_with("LICENSE") {
                files.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for f in files {
        let raw = std::fs::read(&f).expect("read");
        let Ok((text, _)) = decode_text(&raw) else { continue };
        let clean = batch::strip_comments(&text);
        let Ok(split) = batch::split(&clean) else { continue };
        for m in split.messages {
            if Message::parse(m).is_ok() {
                out.push(m.replace('\n', "\r"));
            }
        }
    }
    (out, what.to_owned())
}

/// Runs `f` over all messages repeatedly for about two seconds; returns (MB/s, msg/s).
fn rate(msgs: &[String], mut f: impl FnMut(&str) -> usize) -> (f64, f64) {
    let bytes: usize = msgs.iter().map(String::len).sum();
    let mut sink = 0usize;
    for m in msgs {
        sink = sink.wrapping_add(f(m));
    }
    let started = Instant::now();
    let mut rounds = 0usize;
    while started.elapsed() < Duration::from_secs(2) {
        for m in msgs {
            sink = sink.wrapping_add(f(m));
        }
        rounds += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    std::hint::black_box(sink);
    (
        (bytes * rounds) as f64 / secs / 1e6,
        (msgs.len() * rounds) as f64 / secs,
    )
}

fn parse() {
    let (msgs, what) = messages();
    let bytes: usize = msgs.iter().map(String::len).sum();
    println!("parse: {} messages, {} bytes from {what}, one core", msgs.len(), bytes);
    let (mb, n) = rate(&msgs, |m| Message::parse(m).map_or(0, |p| p.segments().len()));
    println!("  structure (delimiters, segments, MSH-9/12)  {mb:>8.1} MB/s  {n:>10.0} msg/s");
    let walk = |m: &str, decode: bool| -> usize {
        let Ok(p) = Message::parse(m) else { return 0 };
        let mut n = 0;
        for seg in p.segments() {
            for field in seg.fields() {
                for rep in field.repetitions() {
                    for comp in rep.components() {
                        for sub in comp.subcomponents() {
                            n += if decode { sub.decoded().len() } else { sub.raw().len() };
                        }
                    }
                }
            }
        }
        n
    };
    let (mb, n) = rate(&msgs, |m| walk(m, false));
    println!("  + every subcomponent visited                {mb:>8.1} MB/s  {n:>10.0} msg/s");
    let (mb, n) = rate(&msgs, |m| walk(m, true));
    println!("  + every value unescaped                     {mb:>8.1} MB/s  {n:>10.0} msg/s");
    let (mb, n) = rate(&msgs, |m| {
        hl7_parser::Message::parse_with_lenient_newlines(m, true).map_or(0, |p| p.segments.len())
    });
    println!("  hl7-parser 0.3 (structure, for comparison)  {mb:>8.1} MB/s  {n:>10.0} msg/s");
    let (mb, n) = rate(&msgs, |m| {
        let Ok(p) = Message::parse(m) else { return 0 };
        carehub_pipeline_hl7::map(&p).map_or(0, |x| x.unmapped.len() + 1)
    });
    println!("  parse + canonical mapping                   {mb:>8.1} MB/s  {n:>10.0} msg/s");
}

fn a04(i: usize) -> Vec<u8> {
    format!(
        "MSH|^~\\&|BENCH|BENCHCLINIC|CAREHUB|LAB|20261125101500||ADT^A04^ADT_A01|B{i:08}|P|2.5.1\r\
EVN|A04|20261125101500\r\
PID|1||B-{i:08}^^^BENCHCLINIC&2.999.1&ISO^MR||Benchpatient^Alex||19800102|F|||1 Test St^^Testville^^12345\r\
PV1|1|O\r"
    )
    .into_bytes()
}

/// Sends messages `range` over `conns` connections as fast as ACKs return;
/// with `pace`, each connection sends at most one message per `pace`.
async fn drive(
    addr: &str,
    range: std::ops::Range<usize>,
    conns: usize,
    pace: Option<Duration>,
) -> (Duration, Vec<Duration>, usize) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    let ids: Arc<Vec<usize>> = Arc::new(range.collect());
    for c in 0..conns {
        let (addr, ids) = (addr.to_owned(), ids.clone());
        tasks.push(tokio::spawn(async move {
            let mut cfg = SenderConfig::new(&addr);
            cfg.max_attempts = 1;
            let mut sender = MllpSender::new(cfg);
            let mut lat = Vec::new();
            let mut failed = 0;
            let mut next = Instant::now();
            for &i in ids.iter().skip(c).step_by(conns) {
                if let Some(p) = pace {
                    tokio::time::sleep_until(next.into()).await;
                    next += p;
                }
                let msg = a04(i);
                let t = Instant::now();
                match sender.send(&msg).await {
                    Ok(_) => lat.push(t.elapsed()),
                    Err(_) => failed += 1,
                }
            }
            (lat, failed)
        }));
    }
    let mut all = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (lat, f) = t.await.expect("sender");
        all.extend(lat);
        failed += f;
    }
    all.sort();
    (started.elapsed(), all, failed)
}

async fn mllp() {
    let total = knob("BENCH_MLLP_MESSAGES", 20_000);
    let rate_per_s = knob("BENCH_RATE", 2_000);
    let paced_secs = knob("BENCH_PACED_SECS", 10);
    let db = fresh_db().await;
    let intake = unique_topic("intake");
    let events = unique_topic("events");
    let port = free_port();
    let envs = hub_env(&db, &intake, &events, port);
    let addr = env_value(&envs, "CAREHUB_HL7__LISTENER__LISTEN");
    // The pipeline is off while the listener is measured (on 2 cores it
    // would compete for the CPU); it is switched on afterwards to measure
    // how fast it applies what was received.
    let spawn = |pipeline: bool| {
        let mut envs = envs.clone();
        envs.push(("CAREHUB_DATABASE__MAX_CONNECTIONS", "40".into()));
        envs.push(("CAREHUB_PIPELINES__HL7__ENABLED", pipeline.to_string()));
        // BENCH_LOAD_FHIR=1: the pipeline also loads each message, converted
        // to FHIR, into the FHIR store ([pipelines.hl7] load_fhir).
        envs.push((
            "CAREHUB_PIPELINES__HL7__LOAD_FHIR",
            (knob("BENCH_LOAD_FHIR", 0) == 1).to_string(),
        ));
        spawn_serve(&envs, "BENCH_HUB_LOG")
    };
    let hub = spawn(false);
    let ready = tokio::task::spawn_blocking(move || wait_http(port, "/readyz", 200, Duration::from_secs(60)))
        .await
        .expect("join");
    assert!(ready.is_some(), "hub ready (scripts/services.sh up?)");
    while std::net::TcpStream::connect(&addr).is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("MLLP end to end (carehub serve, release build; ACK after message store + pipeline topic):");
    let one = total / 10;
    let mut next = 0;
    for conns in [1usize, 32] {
        let n = if conns == 1 { one } else { total };
        let (elapsed, lat, failed) = drive(&addr, next..next + n, conns, None).await;
        next += n;
        println!(
            "  {conns:>2} connection(s), {n} messages: {:>7.0} msg/s  ACK p50 {:>6.2} ms  p99 {:>6.2} ms  ({failed} not accepted)",
            lat.len() as f64 / elapsed.as_secs_f64(),
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99)),
        );
    }
    let n = rate_per_s * paced_secs;
    let pace = Duration::from_secs_f64(32.0 / rate_per_s as f64);
    let (elapsed, lat, failed) = drive(&addr, next..next + n, 32, Some(pace)).await;
    next += n;
    println!(
        "  32 connections paced at {rate_per_s} msg/s for {paced_secs} s: {:>7.0} msg/s  ACK p50 {:>6.2} ms  p99 {:>6.2} ms  ({failed} not accepted)",
        lat.len() as f64 / elapsed.as_secs_f64(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
    );
    drop(hub);
    let _hub = spawn(true);
    let started = Instant::now();
    let pool = db.pool.clone();
    let done = eventually(Duration::from_secs(1800), || async {
        (count(&pool, "SELECT count(*) FROM message WHERE status = 'processed'").await >= next as i64).then_some(())
    })
    .await;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "  pipeline (switched on afterwards; includes start-up and group join): {next} messages applied in {secs:.1} s = {:.0} msg/s{}",
        next as f64 / secs,
        if done.is_some() {
            ""
        } else {
            " (not all applied: timed out)"
        }
    );
}
