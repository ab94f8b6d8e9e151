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
//! own, a mix of messages (per ten: six ADT^A04 for new patients, two ORM^O01
//! and two ORU^R01 for patients of the six — 40 % for a patient already in
//! the batch or the database) over 1 and 32 connections as fast as ACKs come
//! back (throughput, ACK latency), then 32 connections paced at BENCH_RATE
//! msg/s (ACK latency at that rate), all with the pipeline off; then the
//! pipeline applies the backlog (its rate), read against the ceiling
//! measured in the same run (`support/ceiling.rs`: PostgreSQL alone writing the same
//! rows in the same transactions; the broker alone producing the same
//! events); then a sustained feed at BENCH_RATE over 32 connections for
//! BENCH_SUSTAINED_SECS with the pipeline and the outbox relay on: ACK
//! latency, and the lag sampled each second from PostgreSQL (now −
//! `received_at` of the oldest acknowledged message not yet applied); last,
//! statements per pipeline transaction, counted from sqlx's statement log
//! inside the engine's `pipeline_batch` span, for small and large batches.
//! Knobs: BENCH_MLLP_MESSAGES (default 20000), BENCH_RATE (2000), BENCH_PACED_SECS (10),
//! BENCH_SUSTAINED_SECS (60; 0 skips), BENCH_STATEMENTS (1; 0 skips),
//! BENCH_LOAD_FHIR (1: the pipeline also loads the converted FHIR resources),
//! BENCH_MIX (0: only ADT^A04 for new patients, the load of earlier trees' bench),
//! BENCH_ORDER_BY (`patient`, the default here, or `sender`: `[hl7] order_by`).

#[path = "support/ceiling.rs"]
mod ceiling;
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

/// Message `i` of the mix: per ten, six ADT^A04 for new patients, then two
/// ORM^O01 and two ORU^R01 for patients of those six.
/// BENCH_MIX=0: only the ADT^A04 of the earlier bench (new patients, no
/// visit number), to compare with trees that predate the mix.
fn message(i: usize) -> Vec<u8> {
    if knob("BENCH_MIX", 1) == 0 {
        return format!(
            "MSH|^~\\&|BENCH|BENCHCLINIC|CAREHUB|LAB|20261125101500||ADT^A04^ADT_A01|B{i:08}|P|2.5.1\r\
EVN|A04|20261125101500\r\
PID|1||B-{i:08}^^^BENCHCLINIC&2.999.1&ISO^MR||Benchpatient^Alex||19800102|F|||1 Test St^^Testville^^12345\r\
PV1|1|O\r"
        )
        .into_bytes();
    }
    let k = i % 10;
    let patient = match k {
        0..6 => i,
        // The patient of the order (ORM at k = 6 and 7) and of its result (ORU two later).
        6 | 7 => i - 6,
        _ => i - 8,
    };
    let msh = |kind: &str| format!("MSH|^~\\&|BENCH|BENCHCLINIC|CAREHUB|LAB|20261125101500||{kind}|B{i:08}|P|2.5.1\r");
    let pid = format!(
        "PID|1||B-{patient:08}^^^BENCHCLINIC&2.999.1&ISO^MR||Benchpatient^Alex||19800102|F|||1 Test St^^Testville^^12345\r"
    );
    let text = match k {
        0..6 => format!(
            "{}EVN|A04|20261125101500\r{pid}PV1|1|O|||||||||||||||||V-{i:08}^^^BENCHCLINIC\r",
            msh("ADT^A04^ADT_A01")
        ),
        6 | 7 => format!(
            "{}{pid}ORC|NW|PO-{i:08}^BENCHCLINIC|||||^^^^20261220^R||20261125101500\r\
OBR|1|PO-{i:08}^BENCHCLINIC||L3000^Foot orthosis, custom^HCPCS|||20261125101500\r\
OBX|1|NM|FOOT-LEN^Foot length^L||26.5|cm\r",
            msh("ORM^O01^ORM_O01")
        ),
        _ => format!(
            "{}{pid}OBR|1|PO-{:08}^BENCHCLINIC|LAB-{i:08}^BENCHLAB|L3000^Foot orthosis, custom^HCPCS|||20261128140000\r\
OBX|1|NM|FIT-LEN^Fitted length^L||26.4|cm|26.0-27.0|N|||F|||20261128140000\r\
OBX|2|ST|QC-NOTE^QC note^L||Shell within tolerance||||||F\r",
            msh("ORU^R01^ORU_R01"),
            i - 2
        ),
    };
    text.into_bytes()
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
                let msg = message(i);
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

fn report(what: &str, elapsed: Duration, lat: &[Duration], failed: usize) {
    println!(
        "  {what}: {:>7.0} msg/s  ACK p50 {:>6.2} ms  p99 {:>6.2} ms  ({failed} not accepted)",
        lat.len() as f64 / elapsed.as_secs_f64(),
        ms(percentile(lat, 0.5)),
        ms(percentile(lat, 0.99)),
    );
}

/// HL7 messages the pipeline applied (not the events other pipelines filed
/// as processed beside them: those are not the figure).
async fn applied(pool: &sqlx::PgPool) -> i64 {
    count(
        pool,
        "SELECT count(*) FROM message WHERE connector = 'hl7_mllp' AND status = 'processed'",
    )
    .await
}

async fn mllp() {
    let total = knob("BENCH_MLLP_MESSAGES", 20_000);
    let rate_per_s = knob("BENCH_RATE", 2_000);
    let paced_secs = knob("BENCH_PACED_SECS", 10);
    let sustained_secs = knob("BENCH_SUSTAINED_SECS", 60);
    let db = fresh_db().await;
    let intake = unique_topic("intake");
    let events = unique_topic("events");
    let port = free_port();
    let envs = hub_env(&db, &intake, &events, port);
    let addr = env_value(&envs, "CAREHUB_HL7__LISTENER__LISTEN");
    let consumer = "hl7";
    // One sender (BENCHCLINIC) sends everything: ordered per patient, its
    // messages use all the topic's partitions ([hl7] order_by).
    let order_by = std::env::var("BENCH_ORDER_BY").unwrap_or_else(|_| "patient".to_owned());
    // The pipeline is off while the listener is measured (on 2 cores it
    // would compete for the CPU); it is switched on afterwards to measure
    // how fast it applies what was received, then both run together.
    let spawn = |pipeline: bool, log: Option<&str>| {
        let mut envs = envs.clone();
        envs.push(("CAREHUB_DATABASE__MAX_CONNECTIONS", "40".into()));
        envs.push(("CAREHUB_PIPELINES__HL7__ENABLED", pipeline.to_string()));
        envs.push(("CAREHUB_HL7__ORDER_BY", order_by.clone()));
        // BENCH_LOAD_FHIR=1: the pipeline also loads each message, converted
        // to FHIR, into the FHIR store ([pipelines.hl7] load_fhir).
        envs.push((
            "CAREHUB_PIPELINES__HL7__LOAD_FHIR",
            (knob("BENCH_LOAD_FHIR", 0) == 1).to_string(),
        ));
        match log {
            None => spawn_serve(&envs, "BENCH_HUB_LOG"),
            Some(path) => {
                let file = std::fs::File::create(path).expect("statement log");
                let child = std::process::Command::new(BIN)
                    .arg("serve")
                    .envs(envs.iter().cloned())
                    .env("RUST_LOG", "warn,sqlx::query=debug,carehub_pipeline=debug")
                    .env("CAREHUB_LOG__FORMAT", "text")
                    .env("NO_COLOR", "1")
                    .stderr(std::process::Stdio::from(file))
                    .spawn()
                    .expect("serve");
                Server(child)
            }
        }
    };
    let started_hub = |hub: Server| async move {
        let ready = tokio::task::spawn_blocking(move || wait_http(port, "/readyz", 200, Duration::from_secs(60)))
            .await
            .expect("join");
        assert!(ready.is_some(), "hub ready (scripts/services.sh up?)");
        hub
    };
    let hub = started_hub(spawn(false, None)).await;
    while std::net::TcpStream::connect(&addr).is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "MLLP end to end (carehub serve, release build; ACK after message store + outbox; [hl7] order_by = {order_by}), pipeline off:"
    );
    let one = total / 10;
    let mut next = 0;
    for conns in [1usize, 32] {
        let n = if conns == 1 { one } else { total };
        let (elapsed, lat, failed) = drive(&addr, next..next + n, conns, None).await;
        next += n;
        report(
            &format!("{conns:>2} connection(s), {n} messages"),
            elapsed,
            &lat,
            failed,
        );
    }
    let n = rate_per_s * paced_secs;
    let pace = Duration::from_secs_f64(32.0 / rate_per_s as f64);
    let (elapsed, lat, failed) = drive(&addr, next..next + n, 32, Some(pace)).await;
    next += n;
    report(
        &format!("32 connections paced at {rate_per_s} msg/s for {paced_secs} s, pipeline off"),
        elapsed,
        &lat,
        failed,
    );
    drop(hub);

    let hub = spawn(true, None);
    let started = Instant::now();
    let pool = db.pool.clone();
    let done = eventually(Duration::from_secs(1800), || async {
        (applied(&pool).await >= next as i64).then_some(())
    })
    .await;
    let secs = started.elapsed().as_secs_f64();
    let rate = next as f64 / secs;
    println!(
        "  pipeline (switched on afterwards; includes start-up and group join): {next} messages applied in {secs:.1} s = {rate:.0} msg/s{}",
        if done.is_some() {
            ""
        } else {
            " (not all applied: timed out)"
        }
    );
    drop(hub);

    let created = |table: &str, join: &str, time: &str| ceiling::created(table, join, time, consumer);
    let ceiling = ceiling::Ceiling {
        seed: &["message"],
        reset: &["UPDATE message SET status = 'received', processed_at = NULL, patient_id = NULL"],
        rows: vec![
            // Rows a later message may change again: placed by the transaction that created them.
            ceiling::Rows::insert("organization", created("organization", "", "t.created_at"), "c.x"),
            ceiling::Rows::insert("practitioner", created("practitioner", "", "t.created_at"), "c.x"),
            ceiling::Rows::insert("patient", created("patient", "", "t.created_at"), "c.x"),
            ceiling::Rows::insert("patient_identifier", "patient_identifier t", "t.xmin"),
            ceiling::Rows::insert("encounter", created("encounter", "", "t.created_at"), "c.x"),
            ceiling::Rows::insert("service_order", created("service_order", "", "t.created_at"), "c.x"),
            ceiling::Rows::insert(
                "order_item",
                created(
                    "order_item",
                    "JOIN service_order o ON o.id = t.order_id",
                    "o.created_at",
                ),
                "c.x",
            ),
            ceiling::Rows::insert("observation", created("observation", "", "t.created_at"), "c.x"),
            ceiling::Rows::insert("order_status_history", "order_status_history t", "t.xmin"),
            ceiling::Rows::update(
                "message",
                "message t",
                "t.xmin",
                "x.id = u.id AND x.received_at = u.received_at",
                "status = u.status, processed_at = u.processed_at, patient_id = u.patient_id",
            ),
            ceiling::Rows::insert("consumed_event", "consumed_event t", "t.xmin"),
            ceiling::Rows::insert("outbox", created("outbox", "", "t.created_at"), "c.x"),
            ceiling::Rows::insert("audit_log", ceiling::audit_by_message(), "g.x"),
        ],
        per_batch: &["UPDATE audit_chain_head SET seq = seq + 1 WHERE id = 1"],
        records: next,
        consumer,
    };
    let pg = ceiling.postgres(&db).await;
    let events_per_record = count(&db.pool, "SELECT count(*) FROM outbox").await as f64 / next.max(1) as f64;
    let broker = ceiling::broker_ceiling(&db, "true").await;
    println!(
        "  pipeline {rate:.0} msg/s = {:.0} % of PostgreSQL alone ({:.0} records/s, best of 1-4 connections: {}, {} transactions); \
         broker alone {:.0} records/s ({events_per_record:.2} events per record)",
        100.0 * rate / pg.best.max(1.0),
        pg.best,
        pg.best_connections,
        pg.transactions,
        broker / events_per_record.max(0.001),
    );

    if sustained_secs > 0 {
        sustained(&db, &addr, &mut next, rate_per_s, sustained_secs, || {
            started_hub(spawn(true, None))
        })
        .await;
    }
    if knob("BENCH_STATEMENTS", 1) == 1 {
        let log = std::env::temp_dir().join(format!("carehub-bench-statements-{}.log", std::process::id()));
        let hub = started_hub(spawn(true, Some(&log.to_string_lossy()))).await;
        // Small batches (a slow trickle), then large ones (a burst).
        let (_, _, _) = drive(&addr, next..next + 200, 4, Some(Duration::from_millis(20))).await;
        next += 200;
        let (_, _, _) = drive(&addr, next..next + 5000, 32, None).await;
        next += 5000;
        let pool = db.pool.clone();
        eventually(Duration::from_secs(600), || async {
            (applied(&pool).await >= next as i64).then_some(())
        })
        .await;
        drop(hub);
        statements(&log);
        let _ = std::fs::remove_file(&log);
    }
}

/// The sustained feed with the pipeline and relay on: ACK latency and the lag.
async fn sustained<F, Fut>(db: &TestDb, addr: &str, next: &mut usize, rate_per_s: usize, secs: usize, start: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Server>,
{
    let _hub = start().await;
    let pool = db.pool.clone();
    let from = *next;
    let n = rate_per_s * secs;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(async move {
        let mut lags = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop_rx.changed() => break,
            }
            let (lag,): (f64,) = sqlx::query_as(
                "SELECT coalesce(extract(epoch FROM now() - min(received_at))::float8, 0)
                   FROM message WHERE connector = 'hl7_mllp' AND status = 'received'",
            )
            .fetch_one(&pool)
            .await
            .expect("lag");
            lags.push(lag);
        }
        lags
    });
    let pace = Duration::from_secs_f64(32.0 / rate_per_s as f64);
    let (elapsed, lat, failed) = drive(addr, from..from + n, 32, Some(pace)).await;
    *next += n;
    let fed = Instant::now();
    let pool = db.pool.clone();
    let target = *next as i64;
    eventually(Duration::from_secs(1800), || async {
        (applied(&pool).await >= target).then_some(())
    })
    .await;
    let drained = fed.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let lags = sampler.await.expect("sampler");
    let worst = lags.iter().copied().fold(0.0, f64::max);
    let during: Vec<String> = lags.iter().step_by(5).map(|l| format!("{l:.1}")).collect();
    report(
        &format!("sustained, 32 connections paced at {rate_per_s} msg/s for {secs} s, pipeline and relay on"),
        elapsed,
        &lat,
        failed,
    );
    println!(
        "    lag (now - received_at of the oldest message not yet applied, 1 s samples): max {worst:.1} s; \
         every 5th sample: [{}] s; backlog applied {drained:.1} s after the feed ended",
        during.join(", ")
    );
    let unsent = count(&db.pool, "SELECT count(*) FROM outbox WHERE sent_at IS NULL").await;
    let sent = count(&db.pool, "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL").await;
    println!("    outbox relay: {sent} events sent, {unsent} not yet sent when the backlog was applied");
}

/// Statements per pipeline transaction, from the statement log.
fn statements(log: &std::path::Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    // group → statements since its last committed batch
    let mut open: std::collections::HashMap<String, usize> = Default::default();
    // records-per-batch bucket → (batches, statements)
    let mut buckets: std::collections::BTreeMap<usize, (usize, usize)> = Default::default();
    for line in text.lines() {
        // Colour codes, should the log have them, are not part of the text.
        let line = strip_ansi(line);
        let line = line.as_str();
        let Some(at) = line.find("pipeline_batch{group=") else {
            continue;
        };
        let rest = &line[at + "pipeline_batch{group=".len()..];
        let Some(end) = rest.find('}') else { continue };
        let group = &rest[..end];
        if !group.ends_with("-hl7") {
            continue;
        }
        if line.contains("sqlx::query") {
            *open.entry(group.to_owned()).or_default() += 1;
        } else if line.contains("batch committed") {
            let records = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("records="))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            let n = open.remove(group).unwrap_or(0);
            let bucket = match records {
                0..=9 => 1,
                10..=99 => 10,
                _ => 100,
            };
            let b = buckets.entry(bucket).or_default();
            b.0 += 1;
            b.1 += n;
        }
    }
    println!("  statements per HL7 pipeline transaction (sqlx's statement log, BEGIN and COMMIT included):");
    for (bucket, (batches, n)) in buckets {
        println!(
            "    batches of {bucket}-{} records: {batches} batches, {:.1} statements each",
            bucket * 10 - 1,
            n as f64 / batches.max(1) as f64
        );
    }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
