//! HL7 v2 over MLLP when things fail: the database away, the broker down,
//! the hub killed with SIGKILL in the middle of a stream.

mod common;

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use carehub_hl7::{MllpSender, SendError, SenderConfig};
use common::*;

#[tokio::test]
async fn with_the_database_away_nothing_is_accepted_and_nothing_is_lost() {
    let gate = PgGate::start().await;
    let db = fresh_db().await;
    let gated_url = db.url.replace("127.0.0.1:5432", &format!("127.0.0.1:{}", gate.port));
    assert_ne!(gated_url, db.url, "test database URL goes through the gate");
    let hub = start_hub_with(
        db,
        vec![
            ("CAREHUB_DATABASE__URL", gated_url),
            ("CAREHUB_DATABASE__ACQUIRE_TIMEOUT_SECS", "1".into()),
            ("CAREHUB_HL7__STORE_TIMEOUT_MS", "2000".into()),
        ],
    )
    .await;
    let pool = &hub.db.pool;
    let ack = sender(&hub.mllp)
        .send(&wire(&fixture("adt_a01.hl7")))
        .await
        .expect("AA");
    assert_eq!(ack.code.as_str(), "AA");

    gate.open.send_replace(false);
    let during = wire(&fixture("adt_a08.hl7"));
    match sender(&hub.mllp).send(&during).await {
        Err(SendError::Rejected { code, text, .. }) => {
            assert_eq!(code.as_str(), "AR");
            assert!(text.contains("storage unavailable"), "{text}");
        }
        other => panic!("never AA while the database is away: {other:?}"),
    }

    gate.open.send_replace(true);
    // The sender resends what was not accepted; now it is.
    let ack = send_until_accepted(&hub.mllp, &during, Duration::from_secs(30))
        .await
        .expect("accepted after recovery");
    assert_eq!(ack.code.as_str(), "AA");
    assert!(processed(pool, "ADT0002").await);
    assert_eq!(count(pool, "SELECT count(*) FROM message").await, 2, "each stored once");
    let family: String = scalar(pool, "SELECT family_name FROM patient").await;
    assert_eq!(family, "Testpatient-Renamed", "the update was applied");
}

#[tokio::test]
async fn with_the_broker_down_a_message_is_accepted_once_stored_and_applied_once_the_broker_is_back() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("carehub-broker-{}", uuid::Uuid::new_v4().simple()));
    let mut broker = PrivateBroker::start(port, &dir);
    let db = fresh_db().await;
    let hub = start_hub_with(
        db,
        vec![
            ("CAREHUB_KAFKA__BROKERS", format!("127.0.0.1:{port}")),
            ("CAREHUB_HL7__STORE_TIMEOUT_MS", "2000".into()),
        ],
    )
    .await;
    let pool = &hub.db.pool;
    let ack = sender(&hub.mllp)
        .send(&wire(&fixture("adt_a01.hl7")))
        .await
        .expect("AA");
    assert_eq!(ack.code.as_str(), "AA");
    assert!(processed(pool, "ADT0001").await);

    // The broker is out of the acknowledgement path: PostgreSQL stores the
    // message and its onward record (outbox) together, and that is enough.
    broker.stop();
    let during = wire(&fixture("adt_a08.hl7"));
    let ack = sender(&hub.mllp).send(&during).await.expect("AA once stored");
    assert_eq!(ack.code.as_str(), "AA");
    let status: String = scalar(pool, "SELECT status FROM message WHERE control_id = 'ADT0002'").await;
    assert_eq!(status, "received", "stored, waiting for the broker");
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM outbox WHERE sent_at IS NULL AND payload->>'type' = 'carehub.hl7v2.received.v1'"
        )
        .await,
        1,
        "its record waits in the outbox"
    );

    let _broker = PrivateBroker::start(broker.port, &broker.dir.clone());
    assert!(processed(pool, "ADT0002").await, "applied once the broker is back");
    // The sender resends (it may not have seen the AA): no second effect.
    let ack = sender(&hub.mllp).send(&during).await.expect("AA again");
    assert_eq!(ack.code.as_str(), "AA");
    assert_eq!(count(pool, "SELECT count(*) FROM message").await, 2);
    let version: i32 = scalar(pool, "SELECT version FROM patient").await;
    assert_eq!(version, 2, "A01 then A08, each once");
}

/// An A04 for patient `i`, with its own control id.
fn numbered_a04(i: usize) -> Vec<u8> {
    wire(
        &fixture("adt_a08.hl7")
            .replace("ADT^A08^ADT_A01", "ADT^A04^ADT_A01")
            .replace("ADT0002", &format!("K{i:06}"))
            .replace("P-1001", &format!("K-{i:06}")),
    )
}

#[tokio::test]
async fn killed_with_sigkill_during_a_stream_of_10000_every_message_is_stored_and_applied_once() {
    const N: usize = 10_000;
    const SENDERS: usize = 8;
    let db = fresh_db().await;
    let intake = unique_topic("intake");
    let events = unique_topic("events");
    let port = free_port();
    let envs = hub_env(&db, &intake, &events, port);
    let mllp = env_value(&envs, "CAREHUB_HL7__LISTENER__LISTEN");
    let hub = std::sync::Arc::new(std::sync::Mutex::new(Some(serve(&envs))));
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));

    // Senders that resend whatever was not acknowledged, until it is.
    let mut tasks = Vec::new();
    for s in 0..SENDERS {
        let (mllp, acked) = (mllp.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let mut cfg = SenderConfig::new(&mllp);
            cfg.ack_timeout_ms = 5_000;
            cfg.max_attempts = 1;
            let mut sender = MllpSender::new(cfg);
            let mut resends = 0usize;
            for i in (s..N).step_by(SENDERS) {
                let msg = numbered_a04(i);
                loop {
                    match sender.send(&msg).await {
                        Ok(ack) if ack.code.is_accept() => break,
                        _ => {
                            resends += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            resends
        }));
    }

    // Kill the hub with SIGKILL a quarter of the way (once its pipeline is
    // consuming: see the README on Tansu and a hub killed while it joins its
    // consumer group), restart it a moment later.
    let pool = db.pool.clone();
    let progress = eventually(Duration::from_secs(300), || {
        let (acked, pool) = (acked.clone(), pool.clone());
        async move {
            let applied = count(&pool, "SELECT count(*) FROM message WHERE status = 'processed'").await;
            (acked.load(std::sync::atomic::Ordering::Relaxed) >= N / 4 && applied >= 200).then_some(())
        }
    })
    .await;
    assert!(
        progress.is_some(),
        "the first hub acknowledged a quarter of the stream and applies it"
    );
    if let Some(mut server) = hub.lock().expect("lock").take() {
        server.0.kill().expect("SIGKILL");
        let _ = server.0.wait();
    }
    let at_kill = acked.load(std::sync::atomic::Ordering::Relaxed);
    assert!(at_kill < N, "killed mid-stream");
    tokio::time::sleep(Duration::from_secs(1)).await;
    *hub.lock().expect("lock") = Some(serve(&envs));

    let mut resends = 0;
    for t in tasks {
        resends += t.await.expect("sender");
    }
    assert!(resends > 0, "the kill interrupted the stream");
    let done = eventually(Duration::from_secs(600), || async {
        let applied = count(&pool, "SELECT count(*) FROM message WHERE status = 'processed'").await;
        (applied >= N as i64).then_some(())
    })
    .await;
    assert!(
        done.is_some(),
        "all applied; {} of {N} processed",
        count(&db.pool, "SELECT count(*) FROM message WHERE status = 'processed'").await
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM message").await,
        N as i64,
        "stored once each"
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM patient").await, N as i64);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM patient WHERE version <> 1").await,
        0,
        "no patient written twice"
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM outbox WHERE payload->>'type' <> 'carehub.hl7v2.received.v1'"
        )
        .await,
        N as i64,
        "one event per message"
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM outbox WHERE payload->>'type' = 'carehub.hl7v2.received.v1'"
        )
        .await,
        N as i64,
        "one inbound record per stored message"
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM audit_log WHERE action = 'create' AND entity_type = 'patient'"
        )
        .await,
        N as i64
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM dead_letter").await, 0);
    eprintln!(
        "10,000 over MLLP with a SIGKILL at {at_kill} acknowledged: {resends} resends, each stored and applied once"
    );
    drop(hub);
}

/// A TCP forwarder in front of the real PostgreSQL, so one test can take the
/// database away from its hub (and give it back) without touching the server.
struct PgGate {
    port: u16,
    open: tokio::sync::watch::Sender<bool>,
}

impl PgGate {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (open, rx) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let mut rx = rx.clone();
                if !*rx.borrow() {
                    continue; // closed: drop the connection at once
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect("127.0.0.1:5432").await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = rx.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        PgGate { port, open }
    }
}

/// A broker of this test's own (Tansu, as scripts/services.sh runs it), so it
/// can be stopped and started without disturbing other tests.
struct PrivateBroker {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl PrivateBroker {
    fn start(port: u16, dir: &std::path::Path) -> Self {
        let tansu = std::env::var("CAREHUB_TEST_TANSU").unwrap_or_else(|_| {
            let home = std::env::var("HOME").unwrap_or_default();
            let cargo_bin = format!("{home}/.cargo/bin/tansu");
            if std::path::Path::new(&cargo_bin).exists() {
                cargo_bin
            } else {
                "tansu".into()
            }
        });
        std::fs::create_dir_all(dir).expect("broker dir");
        let child = Command::new(tansu)
            .current_dir(dir)
            .args([
                "broker",
                "--cluster-id",
                "carehub-test",
                "--listener-url",
                &format!("tcp://127.0.0.1:{port}"),
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{port}"),
                "--storage-engine",
                "sqlite://tansu.db",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu (installed by scripts/services.sh)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        PrivateBroker {
            port,
            dir: dir.to_owned(),
            child: Some(child),
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
