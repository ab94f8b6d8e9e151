//! Helpers for tests against the real PostgreSQL and Kafka-protocol broker
//! that `scripts/services.sh up` starts on 127.0.0.1. A missing service fails
//! the test with that instruction; nothing is mocked.
#![allow(dead_code)]

pub mod fhir_write;
pub mod lab;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use carehub_hl7::codec::ReceivedAck;
use carehub_hl7::{MllpSender, SenderConfig};
use carehub_kafka::KafkaConfig;
use carehub_schema::Envelope;
use carehub_schema::contracts::{ORGANIZATION_UPSERT, PATIENT_UPSERT};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

pub fn admin_url() -> String {
    std::env::var("CAREHUB_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn brokers() -> String {
    std::env::var("CAREHUB_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// A fresh, migrated database of its own for one test.
pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
    pub name: String,
}

pub async fn fresh_db() -> TestDb {
    let db = empty_db().await;
    carehub_schema::migrate(&db.pool).await.expect("migrations apply");
    db
}

/// A fresh database with no tables.
pub async fn empty_db() -> TestDb {
    let admin = admin_url();
    let mut conn = PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin} unreachable ({e}); run scripts/services.sh up"));
    let name = format!("carehub_t_{}", Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create database");
    let url = match admin.rfind('/') {
        Some(i) => format!("{}/{name}", &admin[..i]),
        None => panic!("admin URL {admin} has no database part"),
    };
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await
        .expect("connect test database");
    TestDb { pool, url, name }
}

pub fn kafka() -> KafkaConfig {
    KafkaConfig {
        brokers: brokers(),
        topic_partitions: 3,
        ..KafkaConfig::default()
    }
}

/// A topic name no other test uses.
pub fn unique_topic(prefix: &str) -> String {
    format!("test.{prefix}.{}", Uuid::new_v4().simple())
}

pub async fn create_topics(names: &[&str]) {
    let specs: Vec<_> = names.iter().map(|n| carehub_kafka::TopicSpec::new(*n)).collect();
    carehub_kafka::ensure_topics(&kafka(), &specs)
        .await
        .unwrap_or_else(|e| panic!("broker at {} unusable ({e}); run scripts/services.sh up", brokers()));
}

pub fn producer() -> FutureProducer {
    carehub_kafka::idempotent_producer(&kafka()).expect("producer")
}

pub async fn produce(producer: &FutureProducer, topic: &str, key: &str, payload: &[u8]) {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("produce");
}

/// A record read back from the broker.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: HashMap<String, String>,
}

/// Reads every partition of `topic` from the beginning until `want` records
/// were read or `timeout` passed.
pub fn read_topic(topic: &str, want: usize, timeout: Duration) -> Vec<ReadRecord> {
    read_topic_until(topic, timeout, |recs| recs.len() >= want)
}

/// Reads every partition of `topic` from the beginning until `done` says so
/// or `timeout` passed.
pub fn read_topic_until(topic: &str, timeout: Duration, done: impl Fn(&[ReadRecord]) -> bool) -> Vec<ReadRecord> {
    let consumer: BaseConsumer = kafka()
        .client_config()
        .set("group.id", format!("reader-{}", Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning).expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while !done(&out) && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let mut headers = HashMap::new();
            if let Some(h) = m.headers() {
                for hdr in h.iter() {
                    headers.insert(
                        hdr.key.to_owned(),
                        String::from_utf8_lossy(hdr.value.unwrap_or_default()).into_owned(),
                    );
                }
            }
            out.push(ReadRecord {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers,
            });
        }
    }
    out
}

/// Polls `f` until it returns Some or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .expect(sql);
    n
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A synthetic patient command (no real person: example OID arc 2.999).
pub fn patient_event(mrn: &str, org: Option<&str>) -> Envelope {
    let mut data = json!({
        "identifiers": [{ "system": "urn:oid:2.999.1.1.2", "value": mrn, "type": "MR" }],
        "name": { "family": "Testpatient", "given": ["Alex"] },
        "birth_date": "1970-01-01",
        "sex": "unknown"
    });
    if let Some(org) = org {
        data["managing_organization"] = json!({ "system": "urn:oid:2.999.1.1", "value": org });
    }
    Envelope::new(PATIENT_UPSERT, "/test", data)
}

/// `n` patient commands on `topic`, MRNs `<prefix>00000`, `<prefix>00001`, …
pub async fn produce_patient_events(topic: &str, n: usize, prefix: &str) {
    let p = producer();
    let sends: Vec<_> = (0..n)
        .map(|i| {
            let payload = bytes(&patient_event(&format!("{prefix}{i:05}"), None));
            let (p, topic) = (p.clone(), topic.to_owned());
            async move { produce(&p, &topic, &format!("k{i}"), &payload).await }
        })
        .collect();
    futures::future::join_all(sends).await;
}

/// A synthetic clinic command.
pub fn organization_event(value: &str) -> Envelope {
    Envelope::new(
        ORGANIZATION_UPSERT,
        "/test",
        json!({ "kind": "clinic", "name": "Example Clinic", "identifier": { "system": "urn:oid:2.999.1.1", "value": value } }),
    )
}

pub fn bytes(e: &Envelope) -> Vec<u8> {
    serde_json::to_vec(e).expect("serialize")
}

pub const BIN: &str = env!("CARGO_BIN_EXE_carehub");

/// Kills the server when the test ends, however it ends.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

pub fn wait_http(port: u16, path: &str, want: u16, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some((status, body)) = http_get(port, path)
            && status == want
        {
            return Some(body);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// The environment of a hub on its own database, topics, group and port.
pub fn hub_env(db: &TestDb, intake: &str, events: &str, port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("CAREHUB_HTTP__LISTEN", format!("127.0.0.1:{port}")),
        ("CAREHUB_DATABASE__URL", db.url.clone()),
        ("CAREHUB_KAFKA__BROKERS", brokers()),
        ("CAREHUB_PIPELINES__INTAKE__TOPIC", intake.to_owned()),
        ("CAREHUB_PIPELINES__INTAKE__EVENTS_TOPIC", events.to_owned()),
        ("CAREHUB_PIPELINES__INTAKE__GROUP", format!("g-{intake}")),
        ("CAREHUB_PIPELINES__HL7__TOPIC", format!("{intake}.hl7")),
        ("CAREHUB_PIPELINES__HL7__EVENTS_TOPIC", events.to_owned()),
        ("CAREHUB_PIPELINES__HL7__GROUP", format!("g-{intake}-hl7")),
        ("CAREHUB_PIPELINES__HL7__OUTBOUND_TOPIC", format!("{intake}.hl7out")),
        ("CAREHUB_PIPELINES__HL7__OUTBOUND_GROUP", format!("g-{intake}-hl7out")),
        ("CAREHUB_HL7__LISTENER__LISTEN", format!("127.0.0.1:{}", free_port())),
        ("CAREHUB_FHIR__LISTEN", format!("127.0.0.1:{}", free_port())),
        ("CAREHUB_PIPELINES__LAB__EVENTS_TOPIC", events.to_owned()),
        ("CAREHUB_PIPELINES__LAB__DISPATCH_GROUP", format!("g-{intake}-labd")),
        ("CAREHUB_PIPELINES__LAB__ORDERS_TOPIC", format!("{intake}.laborders")),
        ("CAREHUB_PIPELINES__LAB__STATUS_TOPIC", format!("{intake}.labstatus")),
        ("CAREHUB_PIPELINES__LAB__STATUS_GROUP", format!("g-{intake}-labs")),
        ("CAREHUB_PIPELINES__LAB__RESULTS_TOPIC", format!("{intake}.labresults")),
        ("CAREHUB_PIPELINES__LAB__RESULTS_GROUP", format!("g-{intake}-labr")),
        ("CAREHUB_PIPELINES__LAB__EHR_EVENTS_TOPIC", format!("{intake}.ehr")),
        // One static group member id per hub (a restart of the same hub reuses
        // it): hubs of concurrent tests must not share one.
        ("CAREHUB_KAFKA__INSTANCE_ID", format!("hub-{intake}")),
        ("CAREHUB_LOG__LEVEL", "warn".to_owned()),
    ]
}

/// The value `envs` gives `key` (the last one wins, as with `Command::envs`).
pub fn env_value(envs: &[(&'static str, String)], key: &str) -> String {
    envs.iter()
        .rev()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("{key} is not set"))
}

/// Starts `carehub serve` with `envs`. Its log (info level) is appended to the
/// file named by the environment variable `log_var` when that is set, else dropped.
pub fn spawn_serve(envs: &[(&'static str, String)], log_var: &str) -> Server {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve").envs(envs.iter().cloned());
    match std::env::var(log_var) {
        Ok(path) => {
            let log = std::fs::File::options()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("hub log {path}: {e}"));
            cmd.env("CAREHUB_LOG__LEVEL", "info").stderr(Stdio::from(log));
        }
        Err(_) => {
            cmd.stderr(Stdio::null());
        }
    }
    Server(cmd.spawn().expect("serve"))
}

/// Messages an [`mllp_peer`] received, full text, in arrival order.
pub type Received = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// A clinic's EHR as an MLLP receiver (a stand-in: the real one is a third
/// party). It keeps every message it receives and answers AA, or AR the
/// first time it sees a control id (MSH-10) that starts with "REJ".
pub async fn mllp_peer() -> (String, Received) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let seen: Received = Default::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = conn.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(2).position(|w| w == [0x1c, 0x0d]) {
                        let frame: Vec<u8> = buf.drain(..end + 2).collect();
                        let text = String::from_utf8_lossy(&frame[1..frame.len() - 2]).into_owned();
                        let control_id = control_id(&text);
                        let code = {
                            let mut seen = log.lock().expect("log");
                            let first = !seen.iter().any(|m| control_id_of(m) == control_id);
                            seen.push(text.clone());
                            if control_id.starts_with("REJ") && first {
                                "AR"
                            } else {
                                "AA"
                            }
                        };
                        let ack = format!(
                            "MSH|^~\\&|EHR|NORTHCLINIC|CAREHUB|CAREHUB|20261125120000||ACK^O01^ACK|A-{control_id}|P|2.5.1\rMSA|{code}|{control_id}\r"
                        );
                        let framed = carehub_hl7::codec::mllp::frame(ack.as_bytes());
                        if conn.write_all(&framed).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn control_id_of(text: &str) -> &str {
    text.split('\r')
        .next()
        .and_then(|msh| msh.split('|').nth(9))
        .unwrap_or("")
}

fn control_id(text: &str) -> String {
    control_id_of(text).to_owned()
}

/// What an [`mllp_peer`] received so far.
pub fn received(seen: &Received) -> Vec<String> {
    seen.lock().expect("peer log").clone()
}

/// The MSH-10 of each message an [`mllp_peer`] received, in arrival order.
pub fn control_ids(seen: &Received) -> Vec<String> {
    received(seen).iter().map(|m| control_id(m)).collect()
}

pub fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hl7")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A fixture as it goes on the wire: CR between segments.
pub fn wire(text: &str) -> Vec<u8> {
    let mut s = text.lines().filter(|l| !l.is_empty()).collect::<Vec<_>>().join("\r");
    s.push('\r');
    s.into_bytes()
}

/// A hub of its own: database, topics, HTTP and MLLP ports.
pub struct Hub {
    pub server: Server,
    pub db: TestDb,
    pub mllp: String,
    pub envs: Vec<(&'static str, String)>,
}

pub async fn start_hub() -> Hub {
    let db = fresh_db().await;
    start_hub_with(db, vec![]).await
}

pub async fn start_hub_with(db: TestDb, extra: Vec<(&'static str, String)>) -> Hub {
    let intake = unique_topic("intake");
    let events = unique_topic("events");
    let port = free_port();
    let mut envs = hub_env(&db, &intake, &events, port);
    envs.extend(extra);
    let mllp = env_value(&envs, "CAREHUB_HL7__LISTENER__LISTEN");
    let server = serve(&envs);
    let addr = mllp.clone();
    let up = tokio::task::spawn_blocking(move || {
        wait_http(port, "/readyz", 200, Duration::from_secs(60))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if TcpStream::connect(&addr).is_ok() {
                return Some(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    })
    .await
    .expect("join");
    assert!(up.is_some(), "hub ready and MLLP listener accepting");
    Hub { server, db, mllp, envs }
}

/// `carehub serve`; its log goes to the file CAREHUB_TEST_HUB_LOG names, when set.
pub fn serve(envs: &[(&'static str, String)]) -> Server {
    spawn_serve(envs, "CAREHUB_TEST_HUB_LOG")
}

/// Sends `msg` on fresh connections until it is accepted (a sender that
/// resends what was not acknowledged), for at most `timeout`.
pub async fn send_until_accepted(addr: &str, msg: &[u8], timeout: Duration) -> Option<ReceivedAck> {
    eventually(timeout, || {
        let (addr, msg) = (addr.to_owned(), msg.to_vec());
        async move { sender(&addr).send(&msg).await.ok() }
    })
    .await
}

pub fn sender(addr: &str) -> MllpSender {
    let mut cfg = SenderConfig::new(addr);
    cfg.ack_timeout_ms = 15_000;
    cfg.max_attempts = 1;
    MllpSender::new(cfg)
}

/// An HTTP/1.0 response: status, headers (lower-case names), body.
pub type HttpResponse = (u16, HashMap<String, String>, String);

/// One HTTP/1.0 request on a fresh connection (no client library needed).
pub fn http_request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> HttpResponse {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("write");
    let mut buf = String::new();
    s.read_to_string(&mut buf).expect("read");
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

/// Waits until something accepts TCP connections at `addr`.
pub async fn wait_listening(addr: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A bench's setting from the environment variable `name`, else `default`.
pub fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A hub whose FHIR endpoint takes HS256 tokens signed with `secret`; its address.
pub async fn fhir_hub(secret: &str) -> (Hub, String) {
    let db = fresh_db().await;
    let hub = start_hub_with(db, vec![("CAREHUB_FHIR__AUTH__HS256_SECRET", secret.to_owned())]).await;
    let fhir = env_value(&hub.envs, "CAREHUB_FHIR__LISTEN");
    assert!(wait_listening(&fhir, Duration::from_secs(30)).await, "FHIR endpoint up");
    (hub, fhir)
}

/// `carehub token issue ARGS` with the hub's configuration.
pub fn fhir_token(hub: &Hub, args: &[&str]) -> String {
    let out = std::process::Command::new(BIN)
        .args(["token", "issue"])
        .args(args)
        .envs(hub.envs.iter().cloned())
        .output()
        .expect("token issue");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf8").trim().to_owned()
}

/// What the MLLP listener does before the HL7 pipeline sees a message: its
/// bytes into the message store, and the `carehub.hl7v2.received.v1` record
/// that refers to them.
pub async fn stored_hl7(pool: &PgPool, raw: &[u8]) -> Envelope {
    let (text, _) = carehub_hl7::codec::decode_text(raw).expect("decodes");
    let msg = carehub_hl7::codec::Message::parse(&text).expect("parses");
    let key = carehub_pipeline_hl7::source_key(&msg);
    let mut conn = pool.acquire().await.expect("connection");
    let stored = carehub_schema::MessageStore::ingest(
        &mut conn,
        &carehub_schema::NewMessage {
            connector: "hl7_mllp",
            protocol: "hl7v2",
            message_type: Some(&msg.type_label()),
            control_id: Some(msg.control_id()),
            source_key: &key,
            origin: Some("mllp:127.0.0.1:1"),
            raw,
            on_changed: carehub_schema::ChangedContent::HoldForReview,
        },
    )
    .await
    .expect("stored");
    carehub_schema::contracts::Received::new(stored.id(), "127.0.0.1:1", "127.0.0.1:2575").into_envelope(Some(&key))
}

/// One frame out, one frame back, on a fresh connection.
pub fn exchange(addr: &str, frame: &[u8]) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    s.write_all(frame).expect("write");
    read_frame(&mut s)
}

pub fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match s.read(&mut byte) {
            Ok(0) | Err(_) => return None,
            Ok(_) => buf.push(byte[0]),
        }
        if buf.ends_with(&[carehub_hl7::codec::mllp::END, carehub_hl7::codec::mllp::CR]) {
            let start = buf.iter().position(|&b| b == carehub_hl7::codec::mllp::START)?;
            return Some(buf[start + 1..buf.len() - 2].to_vec());
        }
    }
}

pub fn ack_of(frame: &[u8]) -> (ReceivedAck, String) {
    let text = String::from_utf8(frame.to_vec()).expect("utf8 ack");
    let msg = carehub_hl7::codec::Message::parse(&text).expect("the ACK parses");
    (ReceivedAck::read(&msg).expect("an MSA"), text)
}

pub async fn processed(pool: &sqlx::PgPool, control_id: &str) -> bool {
    eventually(Duration::from_secs(90), || async {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM message WHERE control_id = $1 AND status <> 'received'")
                .bind(control_id)
                .fetch_one(pool)
                .await
                .ok()?;
        (n > 0).then_some(())
    })
    .await
    .is_some()
}

/// The hub's `/metrics` text.
pub fn metrics_text(hub: &Hub) -> String {
    let port: u16 = env_value(&hub.envs, "CAREHUB_HTTP__LISTEN")
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("CAREHUB_HTTP__LISTEN has a port");
    http_get(port, "/metrics").map(|(_, body)| body).unwrap_or_default()
}

/// The compliance check of internal events (vector's shape): each metric of
/// `events` has a series labelled `label="value"` with a count above zero.
/// Returns the metrics that do not, so a failing assertion names them.
pub fn missing_component_events(metrics: &str, label: &str, value: &str, events: &[&str]) -> Vec<String> {
    let wanted = format!("{label}=\"{value}\"");
    events
        .iter()
        .filter(|name| {
            !metrics.lines().any(|l| {
                !l.starts_with('#')
                    && l.starts_with(&format!("{name}{{"))
                    && l.contains(&wanted)
                    && l.rsplit(' ')
                        .next()
                        .and_then(|v| v.parse::<f64>().ok())
                        .is_some_and(|v| v > 0.0)
            })
        })
        .map(|name| name.to_string())
        .collect()
}

pub async fn scalar<T>(pool: &sqlx::PgPool, sql: &str) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    let (v,): (T,) = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .expect(sql);
    v
}

/// The value of metric `name` (first sample) on the hub's /metrics.
pub fn metric(hub: &Hub, name: &str) -> Option<f64> {
    let port: u16 = env_value(&hub.envs, "CAREHUB_HTTP__LISTEN")
        .rsplit(':')
        .next()?
        .parse()
        .ok()?;
    let (_, body) = http_get(port, "/metrics")?;
    body.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
