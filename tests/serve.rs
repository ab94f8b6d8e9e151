//! The `carehub` binary as an operator runs it: configuration errors, start-up
//! with dependencies down, and a message through the running hub.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn a_malformed_config_is_a_clear_error_naming_key_and_file_with_exit_code_2() {
    let dir = std::env::temp_dir().join(format!("carehub-serve-cfg-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("broken.toml");
    std::fs::write(&file, "[outbox]\nbatch_size = \"lots\"\n").expect("write");
    let out = Command::new(BIN)
        .args(["--config", file.to_str().expect("path"), "config", "check"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("outbox.batch_size"), "{stderr}");
    assert!(stderr.contains("broken.toml"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // An environment override with a bad value is named too.
    let out = Command::new(BIN)
        .args(["config", "check"])
        .env("CAREHUB_HTTP__LISTEN", "not-an-address")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.to_lowercase().contains("http.listen") && stderr.contains("CAREHUB_"),
        "{stderr}"
    );

    // A good override is applied, and the database password is never printed.
    let out = Command::new(BIN)
        .args(["config", "check"])
        .env("CAREHUB_KAFKA__BROKERS", "broker-a:9092")
        .env("CAREHUB_DATABASE__URL", "postgres://u:s3cret@db:5432/x")
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout.contains("broker-a:9092"), "{stdout}");
    assert!(!stdout.contains("s3cret"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn with_postgres_and_broker_unreachable_serve_retries_and_is_not_ready() {
    let port = free_port();
    let dead_pg = free_port();
    let dead_kafka = free_port();
    let mut child = Command::new(BIN)
        .arg("serve")
        .env("CAREHUB_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "CAREHUB_DATABASE__URL",
            format!("postgres://postgres:postgres@127.0.0.1:{dead_pg}/carehub"),
        )
        .env("CAREHUB_KAFKA__BROKERS", format!("127.0.0.1:{dead_kafka}"))
        .env("CAREHUB_DATABASE__ACQUIRE_TIMEOUT_SECS", "1")
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let stderr = child.stderr.take().expect("stderr");
    let server = Server(child);
    assert!(
        wait_http(port, "/healthz", 200, Duration::from_secs(20)).is_some(),
        "alive"
    );
    let body = wait_http(port, "/readyz", 503, Duration::from_secs(10)).expect("not ready");
    assert!(
        body.contains("\"postgres\":false") && body.contains("\"kafka\":false"),
        "{body}"
    );
    std::thread::sleep(Duration::from_secs(3));
    drop(server);
    let mut log = String::new();
    std::io::BufReader::new(stderr).read_to_string(&mut log).expect("log");
    assert!(log.contains("PostgreSQL at 127.0.0.1"), "{log}");
    assert!(log.matches("retrying").count() >= 2, "retries with backoff: {log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test]
async fn a_message_goes_through_the_running_hub_and_trace_shows_every_step() {
    let db = fresh_db().await;
    let intake = unique_topic("intake");
    let events = unique_topic("events");
    let port = free_port();
    let envs = hub_env(&db, &intake, &events, port);
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .envs(envs.iter().cloned())
            .output()
            .expect("run carehub");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let _server = Server(
        Command::new(BIN)
            .arg("serve")
            .envs(envs.iter().cloned())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve"),
    );
    let ready = tokio::task::spawn_blocking(move || wait_http(port, "/readyz", 200, Duration::from_secs(60)))
        .await
        .expect("join");
    assert!(ready.is_some(), "ready once PostgreSQL and the broker answer");

    let root = env!("CARGO_MANIFEST_DIR");
    let org = run(&[
        "intake",
        "send",
        "--type",
        "carehub.organization.upsert.v1",
        &format!("{root}/schemas/examples/carehub.organization.upsert.v1.json"),
    ]);
    run(&["trace", org.trim()]);
    let patient = run(&[
        "intake",
        "send",
        "--type",
        "carehub.patient.upsert.v1",
        &format!("{root}/schemas/examples/carehub.patient.upsert.v1.json"),
    ]);
    let trace = run(&["trace", patient.trim()]);
    assert!(trace.contains("\"status\": \"processed\""), "{trace}");
    assert!(trace.contains("\"table\": \"patient\""), "{trace}");
    assert!(trace.contains("MRN-000042"), "{trace}");
    assert!(trace.contains("ingest") && trace.contains("create"), "{trace}");
    // Showing the patient was itself audited as a read.
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM audit_log WHERE action = 'read' AND entity_type = 'patient' AND origin = 'cli:trace'"
        )
        .await,
        1
    );
    assert!(trace.contains(&format!("topic {events} partition")), "{trace}");
    assert!(trace.contains("carehub.patient.upserted.v1"), "{trace}");

    let (_, metrics) = http_get(port, "/metrics").expect("metrics");
    assert!(metrics.contains("carehub_messages_received_total"), "{metrics}");
    assert!(metrics.contains("carehub_processing_duration_seconds"), "{metrics}");
    assert!(metrics.contains("carehub_outbox_backlog_events"), "{metrics}");
    assert_eq!(count(&db.pool, "SELECT count(*) FROM patient").await, 1);
    let audit = run(&["audit", "verify"]);
    assert!(audit.contains("intact"), "{audit}");
}

#[tokio::test]
async fn killed_with_sigkill_mid_stream_and_restarted_nothing_is_lost_or_repeated() {
    const N: usize = 1_000;
    let db = fresh_db().await;
    let intake = unique_topic("intake");
    let events = unique_topic("events");
    create_topics(&[&intake, &carehub_kafka::dlq_topic(&intake), &events]).await;
    produce_patient_events(&intake, N, "MRN-K").await;

    let port = free_port();
    let envs = hub_env(&db, &intake, &events, port);
    let log_dir = std::env::temp_dir().join(format!("carehub-kill-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&log_dir).expect("log dir");
    let spawn_n = std::cell::Cell::new(0);
    let spawn = || {
        spawn_n.set(spawn_n.get() + 1);
        serve_logged(&envs, &log_dir.join(format!("hub-{}.log", spawn_n.get())))
    };
    let logs = || {
        (1..=spawn_n.get())
            .map(|n| std::fs::read_to_string(log_dir.join(format!("hub-{n}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---- restart ----\n")
    };

    // First hub: killed with SIGKILL once part of the stream is applied.
    let mut first = spawn();
    let pool = db.pool.clone();
    let partway = eventually(Duration::from_secs(60), || async {
        (count(&pool, "SELECT count(*) FROM patient").await >= (N / 4) as i64).then_some(())
    })
    .await;
    assert!(partway.is_some(), "the first hub made progress");
    first.0.kill().expect("SIGKILL");
    first.0.wait().expect("reaped");
    let at_kill = count(&db.pool, "SELECT count(*) FROM patient").await;
    assert!(at_kill < N as i64, "killed mid-stream ({at_kill} of {N} applied)");

    // Second hub: same group, same database. It finishes the stream.
    let _second = spawn();
    let done = eventually(Duration::from_secs(120), || async {
        let applied = count(&pool, "SELECT count(*) FROM patient").await;
        let unsent = count(&pool, "SELECT count(*) FROM outbox WHERE sent_at IS NULL").await;
        (applied == N as i64 && unsent == 0).then_some(())
    })
    .await;
    assert!(
        done.is_some(),
        "every record applied and published after the restart ({} applied); logs:\n{}",
        count(&db.pool, "SELECT count(*) FROM patient").await,
        logs()
    );

    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM message").await,
        N as i64,
        "stored once each"
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM consumed_event").await, N as i64);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM outbox").await,
        N as i64,
        "one event per patient"
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM dead_letter").await, 0);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM audit_log WHERE action = 'create'").await,
        N as i64
    );
    let chain = carehub_schema::AuditLog::verify(&db.pool).await.expect("verify");
    assert_eq!(chain.first_break, None);

    // On the events topic every event is present; a repeat can only be a re-published
    // outbox row (same event id), which consumers drop.
    let records = tokio::task::spawn_blocking({
        let events = events.clone();
        move || {
            read_topic_until(&events, Duration::from_secs(60), |recs| {
                let ids: std::collections::HashSet<&[u8]> = recs.iter().map(|r| &r.payload[..]).collect();
                ids.len() >= N
            })
        }
    })
    .await
    .expect("read");
    let ids: std::collections::HashSet<String> = records
        .iter()
        .map(|r| carehub_schema::Envelope::from_slice(&r.payload).expect("envelope").id)
        .collect();
    assert_eq!(ids.len(), N);
}

/// Hardening item 19: hubs killed with SIGKILL while their consumer groups
/// join, again and again; the hub started after them consumes everything
/// (the stall seen once with Tansu: a restarted member that applied a few
/// hundred records, then nothing).
#[tokio::test]
async fn killed_repeatedly_while_joining_the_group_the_next_hub_applies_everything() {
    const N: usize = 600;
    let db = fresh_db().await;
    let intake = unique_topic("intake");
    let events = unique_topic("events");
    create_topics(&[&intake, &carehub_kafka::dlq_topic(&intake), &events]).await;
    produce_patient_events(&intake, N, "MRN-J").await;
    let port = free_port();
    let envs = hub_env(&db, &intake, &events, port);
    let log_dir = std::env::temp_dir().join(format!("carehub-join-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&log_dir).expect("log dir");
    let spawn = |n: usize| serve_logged(&envs, &log_dir.join(format!("hub-{n}.log")));
    // Killed at different moments of start-up: before, during and just after
    // the consumer groups join.
    for (n, ms) in [700u64, 1100, 1500, 1900, 2300, 2700, 3100, 900]
        .into_iter()
        .enumerate()
    {
        let mut hub = spawn(n);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        hub.0.kill().expect("SIGKILL");
        hub.0.wait().expect("reaped");
    }
    let _last = spawn(99);
    let pool = db.pool.clone();
    let done = eventually(Duration::from_secs(150), || async {
        (count(&pool, "SELECT count(*) FROM patient").await == N as i64).then_some(())
    })
    .await;
    let logs = || {
        let mut out = String::new();
        for entry in std::fs::read_dir(&log_dir).expect("logs").flatten() {
            out.push_str(&format!("---- {} ----\n", entry.path().display()));
            out.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
        out
    };
    assert!(
        done.is_some(),
        "{} of {N} applied after the kills; logs:\n{}",
        count(&db.pool, "SELECT count(*) FROM patient").await,
        logs()
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM consumed_event").await,
        N as i64,
        "each once"
    );
    let _ = std::fs::remove_dir_all(&log_dir);
}

/// `carehub serve` with `envs`, its info-level log in the file `log`.
fn serve_logged(envs: &[(&'static str, String)], log: &std::path::Path) -> Server {
    let log = std::fs::File::create(log).expect("log");
    Server(
        Command::new(BIN)
            .arg("serve")
            .envs(envs.iter().cloned())
            .env("CAREHUB_LOG__LEVEL", "info")
            .stderr(log)
            .spawn()
            .expect("serve"),
    )
}
