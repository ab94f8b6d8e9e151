//! FHIR endpoint figures. Prints figures; asserts nothing about speed.
//!
//!   cargo bench --bench fhir        # needs scripts/services.sh up
//!
//! BENCH_PATIENTS synthetic patients (default 1,000,000) are loaded with
//! `carehub fhir load-synthetic`; a release `carehub serve` of its own (rate
//! limit off) then answers, over keep-alive HTTP/1.1 connections:
//! read by id (each read audited) with BENCH_CONNS connections (default 16)
//! for BENCH_SECS seconds (default 10), search by identifier (each
//! returned resource audited) with 4 connections, then creates of
//! Observations (the FHIR store) and Patients (the store plus the intake
//! event that feeds the canonical record) with BENCH_CONNS connections.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

/// One request of a run.
struct Req {
    method: &'static str,
    path: String,
    body: String,
}

impl Req {
    fn get(path: String) -> Req {
        Req {
            method: "GET",
            path,
            body: String::new(),
        }
    }
}

/// A keep-alive HTTP/1.1 connection: one request at a time.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: &str) -> Conn {
        Conn {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::with_capacity(16 * 1024),
        }
    }

    /// One request; the status.
    async fn send(&mut self, req: &Req, token: &str) -> u16 {
        let head = format!(
            "{} {} HTTP/1.1\r\nHost: bench\r\nAccept: application/fhir+json\r\nContent-Type: application/fhir+json\r\nContent-Length: {}\r\nAuthorization: Bearer {token}\r\n\r\n",
            req.method,
            req.path,
            req.body.len()
        );
        // One write: a body sent apart from its head waits out Nagle's
        // algorithm against the server's delayed ACK (40 ms a request).
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(req.body.as_bytes());
        self.stream.write_all(&bytes).await.expect("write");
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while self.buf.len() < end + 4 + len {
                    self.read_more().await;
                }
                self.buf.drain(..end + 4 + len);
                return status;
            }
            self.read_more().await;
        }
    }

    async fn read_more(&mut self) {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed");
        self.buf.extend_from_slice(&chunk[..n]);
    }
}

/// `conns` connections request `paths` round robin for `secs` seconds.
async fn drive(addr: &str, token: &str, paths: Arc<Vec<Req>>, conns: usize, secs: u64) -> (f64, Vec<Duration>, usize) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (addr, token, paths) = (addr.to_owned(), token.to_owned(), paths.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&addr).await;
            let (mut lat, mut bad) = (Vec::new(), 0);
            let mut i = c;
            while Instant::now() < deadline {
                let t = Instant::now();
                if matches!(conn.send(&paths[i % paths.len()], &token).await, 200 | 201) {
                    lat.push(t.elapsed());
                } else {
                    bad += 1;
                }
                i += conns;
            }
            (lat, bad)
        }));
    }
    let (mut all, mut bad) = (Vec::new(), 0);
    for t in tasks {
        let (l, b) = t.await.expect("join");
        all.extend(l);
        bad += b;
    }
    all.sort();
    (all.len() as f64 / started.elapsed().as_secs_f64(), all, bad)
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("fhir bench: run it with `cargo bench --bench fhir`");
        return;
    }
    let patients = knob("BENCH_PATIENTS", 1_000_000);
    let conns = knob("BENCH_CONNS", 16);
    let secs = knob("BENCH_SECS", 10) as u64;
    println!(
        "carehub FHIR bench, {} cores, {patients} patients",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let db = fresh_db().await;
    let intake = unique_topic("intake");
    let events = unique_topic("events");
    let port = free_port();
    let mut envs = hub_env(&db, &intake, &events, port);
    let secret = "bench-secret-bench-secret-bench-secret";
    envs.extend([
        ("CAREHUB_FHIR__AUTH__HS256_SECRET", secret.to_owned()),
        ("CAREHUB_FHIR__RATE_LIMIT_PER_SECOND", "0".to_owned()),
        ("CAREHUB_DATABASE__MAX_CONNECTIONS", "32".to_owned()),
    ]);
    let started = Instant::now();
    let out = std::process::Command::new(BIN)
        .args([
            "fhir",
            "load-synthetic",
            "--patients",
            &patients.to_string(),
            "--actor",
            "bench",
        ])
        .envs(envs.iter().cloned())
        .output()
        .expect("load");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    println!(
        "  load: {} ({:.1} s)",
        String::from_utf8_lossy(&out.stdout).trim(),
        started.elapsed().as_secs_f64()
    );
    let _hub = spawn_serve(&envs, "BENCH_HUB_LOG");
    let ready = tokio::task::spawn_blocking(move || wait_http(port, "/readyz", 200, Duration::from_secs(60)))
        .await
        .expect("join");
    assert!(ready.is_some(), "hub ready");
    let fhir = env_value(&envs, "CAREHUB_FHIR__LISTEN");
    assert!(wait_listening(&fhir, Duration::from_secs(60)).await, "FHIR endpoint up");
    let auth = carehub_fhir::AuthConfig {
        hs256_secret: Some(secret.into()),
        ..Default::default()
    };
    let token = carehub_fhir::auth::issue(&auth, "bench-client", "system/*.*", None, None).expect("token");
    let ids: Vec<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT patient_id, value FROM patient_identifier TABLESAMPLE SYSTEM (1) LIMIT 20000")
            .fetch_all(&db.pool)
            .await
            .expect("sample");
    let reads: Arc<Vec<Req>> = Arc::new(ids.iter().map(|(id, _)| Req::get(format!("/Patient/{id}"))).collect());
    let searches: Arc<Vec<Req>> = Arc::new(
        ids.iter()
            .map(|(_, v)| Req::get(format!("/Patient?identifier=urn%3Aoid%3A2.999.9.1%7C{v}")))
            .collect(),
    );
    // Warm up (connections, caches).
    drive(&fhir, &token, reads.clone(), conns, 2).await;
    let audit_before = count(&db.pool, "SELECT count(*) FROM audit_log WHERE action = 'read'").await;
    let (rate, lat, bad) = drive(&fhir, &token, reads.clone(), conns, secs).await;
    println!(
        "  read by id, {conns} connections, {secs} s: {rate:>7.0} req/s  p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  ({bad} not 200)",
        pct(&lat, 0.5),
        pct(&lat, 0.95),
        pct(&lat, 0.99)
    );
    let (rate, lat, bad) = drive(&fhir, &token, searches, 4, secs).await;
    println!(
        "  search by identifier, 4 connections, {secs} s: {rate:>7.0} req/s  p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  ({bad} not 200)",
        pct(&lat, 0.5),
        pct(&lat, 0.95),
        pct(&lat, 0.99)
    );
    let audited = count(&db.pool, "SELECT count(*) FROM audit_log WHERE action = 'read'").await - audit_before;
    println!("  audit entries written for those reads: {audited}");
    // Creates: each validated, stored verbatim, audited, in its own
    // transaction; a Patient also queues its intake event (outbox), which the
    // running hub applies to the canonical record meanwhile.
    let observations: Arc<Vec<Req>> = Arc::new(
        ids.iter()
            .enumerate()
            .map(|(i, (id, _))| Req {
                method: "POST",
                path: "/Observation".to_owned(),
                body: format!(
                    r#"{{"resourceType":"Observation","status":"final","code":{{"coding":[{{"system":"http://loinc.org","code":"8302-2"}}]}},"subject":{{"reference":"Patient/{id}"}},"effectiveDateTime":"2026-11-25T10:00:00Z","valueQuantity":{{"value":{}.50,"unit":"cm","system":"http://unitsofmeasure.org","code":"cm"}}}}"#,
                    150 + i % 50
                ),
            })
            .collect(),
    );
    let writes_before = count(&db.pool, "SELECT count(*) FROM fhir_resource_version").await;
    let (rate, lat, bad) = drive(&fhir, &token, observations, conns, secs).await;
    println!(
        "  create Observation, {conns} connections, {secs} s: {rate:>7.0} req/s  p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  ({bad} not 201)",
        pct(&lat, 0.5),
        pct(&lat, 0.95),
        pct(&lat, 0.99)
    );
    let patients_new: Arc<Vec<Req>> = Arc::new(
        (0..200_000)
            .map(|i| Req {
                method: "POST",
                path: "/Patient".to_owned(),
                body: format!(
                    r#"{{"resourceType":"Patient","identifier":[{{"system":"urn:oid:2.999.9.2","value":"B-{i}"}}],"name":[{{"family":"Bench","given":["P{i}"]}}],"gender":"other","birthDate":"1990-01-01"}}"#
                ),
            })
            .collect(),
    );
    let (rate, lat, bad) = drive(&fhir, &token, patients_new, conns, secs).await;
    println!(
        "  create Patient (feeds the hub), {conns} connections, {secs} s: {rate:>7.0} req/s  p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  ({bad} not 201)",
        pct(&lat, 0.5),
        pct(&lat, 0.95),
        pct(&lat, 0.99)
    );
    let written = count(&db.pool, "SELECT count(*) FROM fhir_resource_version").await - writes_before;
    println!("  versions stored by those creates: {written}");
}
