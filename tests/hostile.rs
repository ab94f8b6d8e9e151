//! Hostile input at the MLLP edge of the running hub, on real sockets
//! (issue 13, the hardening items; the store, pipelines, configuration and
//! FHIR ones are in hostile_store.rs). Each test names the item it covers; each failed on
//! 305005c, the commit before the fixes.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use carehub_hl7::codec::mllp;
use common::*;

fn frame(payload: &[u8]) -> Vec<u8> {
    mllp::frame(payload)
}

fn alive(hub: &Hub) -> bool {
    let port: u16 = env_value(&hub.envs, "CAREHUB_HTTP__LISTEN")
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    http_get(port, "/healthz").is_some_and(|(s, _)| s == 200)
}

/// Items 1 and 8: a frame of VT and thousands of FS without CR (a stack
/// overflow that aborted the process on 305005c), and `MSH\r` / `MSH\n`
/// frames (a panic per connection, and a connection gauge that never came
/// back down). The hub stays up, answers, and the gauge returns to 0.
#[tokio::test]
async fn hostile_frames_neither_crash_the_hub_nor_leave_connections_counted() {
    let hub = start_hub().await;
    let mut bomb = vec![mllp::START];
    bomb.extend(std::iter::repeat_n(mllp::END, 64 * 1024));
    for _ in 0..4 {
        let mut s = TcpStream::connect(&hub.mllp).expect("connect");
        s.write_all(&bomb).expect("write");
        drop(s);
    }
    for short in [&b"MSH\r"[..], b"MSH\n", b"MSH", b"MSH|"] {
        let reply = exchange(&hub.mllp, &frame(short)).expect("an answer, not a dropped connection");
        let (ack, _) = ack_of(&reply);
        assert_eq!(ack.code.as_str(), "AR", "{short:?}");
    }
    assert!(alive(&hub), "the hub survived");
    let ack = sender(&hub.mllp)
        .send(&wire(&fixture("adt_a01.hl7")))
        .await
        .expect("accepted");
    assert_eq!(ack.code.as_str(), "AA");
    assert!(processed(&hub.db.pool, "ADT0001").await);
    let closed = eventually(Duration::from_secs(10), || async {
        (metric(&hub, "carehub_hl7_connections_open") == Some(0.0)).then_some(())
    })
    .await;
    assert!(closed.is_some(), "connections gauge back at 0");
}

/// Item 4: a blank MSH-10 is AR with ERR 101 at MSH-10, every time; two
/// such messages are two stored messages, never one taken for the other's
/// duplicate. Item 2: an MSH-10 longer than the index allows (3,000
/// characters) is refused AR, kept, and never reaches the pipeline, while
/// another sender's message is applied at once.
#[tokio::test]
async fn unidentifiable_messages_are_refused_and_never_stall_other_senders() {
    let hub = start_hub().await;
    let adt = fixture("adt_a01.hl7");
    for (i, control_id) in ["", "   "].iter().enumerate() {
        let text = adt
            .replace("ADT0001", control_id)
            .replace("P-1001", &format!("P-BLANK{i}"));
        let (ack, raw) = ack_of(&exchange(&hub.mllp, &frame(&wire(&text))).expect("answer"));
        assert_eq!(ack.code.as_str(), "AR", "{raw}");
        assert_eq!(ack.error_code, Some(101), "{raw}");
        assert!(raw.contains("MSH^1^10"), "ERR-2 names MSH-10: {raw}");
    }
    let long = adt.replace("ADT0001", &"7".repeat(3000));
    let (ack, raw) = ack_of(&exchange(&hub.mllp, &frame(&wire(&long))).expect("answer"));
    assert_eq!(ack.code.as_str(), "AR", "{raw}");
    let started = Instant::now();
    let other = fixture("adt_a08.hl7");
    let ack = sender(&hub.mllp).send(&wire(&other)).await.expect("accepted");
    assert_eq!(ack.code.as_str(), "AA");
    assert!(
        processed(&hub.db.pool, "ADT0002").await,
        "another sender's message applied"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "not held behind the poison message"
    );
    let failed = count(
        &hub.db.pool,
        "SELECT count(*) FROM message WHERE status = 'failed' AND source_key LIKE 'hl7:unparsed:%'",
    )
    .await;
    assert_eq!(failed, 3, "each refused message is stored on its own");
    let dead = count(&hub.db.pool, "SELECT count(*) FROM dead_letter WHERE consumer = 'hl7'").await;
    assert_eq!(dead, 3, "and dead-lettered with its reason");
    assert_eq!(
        count(
            &hub.db.pool,
            "SELECT count(*) FROM patient_identifier WHERE value LIKE 'P-BLANK%'"
        )
        .await,
        0,
        "nothing refused was applied"
    );
}

/// Item 6: a frame of exactly `max_frame_bytes` is accepted, stored and
/// applied (on 305005c frames above ~749 KB got AR 207 forever: the broker
/// refused the record that carried the bytes).
#[tokio::test]
async fn a_frame_of_exactly_max_frame_bytes_is_stored_and_applied() {
    let hub = start_hub().await;
    let max = 1024 * 1024;
    let mut text = wire(&fixture("adt_a01.hl7").replace("ADT0001", "BIG0001"));
    let head = b"ZPD|".len() + 1;
    let pad = max - text.len() - head;
    text.extend_from_slice(b"ZPD|");
    text.extend(std::iter::repeat_n(b'x', pad));
    text.push(b'\r');
    assert_eq!(text.len(), max);
    let ack = sender(&hub.mllp).send(&text).await.expect("accepted");
    assert_eq!(ack.code.as_str(), "AA", "{:?}", ack.text);
    assert!(processed(&hub.db.pool, "BIG0001").await);
    let status: (String, i32) =
        sqlx::query_as("SELECT status, octet_length(raw) FROM message WHERE control_id = 'BIG0001'")
            .fetch_one(&hub.db.pool)
            .await
            .expect("stored");
    assert_eq!(status, ("processed".to_owned(), max as i32));
}

/// Item 5: sockets that connect and say nothing hold their slot only for
/// `first_frame_timeout_secs`, and one address cannot take every slot;
/// a real sender from another address is served meanwhile.
#[tokio::test]
async fn idle_sockets_cannot_exhaust_the_listener() {
    let db = fresh_db().await;
    let hub = start_hub_with(
        db,
        vec![
            ("CAREHUB_HL7__LISTENER__MAX_CONNECTIONS", "16".to_owned()),
            ("CAREHUB_HL7__LISTENER__MAX_CONNECTIONS_PER_ADDRESS", "4".to_owned()),
            ("CAREHUB_HL7__LISTENER__FIRST_FRAME_TIMEOUT_SECS", "2".to_owned()),
        ],
    )
    .await;
    let port: u16 = hub.mllp.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(connect_from("127.0.0.2", port).await);
    }
    // The fifth from the same address is closed at once.
    let mut fifth = connect_from("127.0.0.2", port).await;
    let started = Instant::now();
    assert!(
        closed_within(&mut fifth, Duration::from_secs(2)).await,
        "closed at once"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // Another address is served meanwhile.
    let ack = sender(&hub.mllp)
        .send(&wire(&fixture("adt_a01.hl7")))
        .await
        .expect("accepted");
    assert_eq!(ack.code.as_str(), "AA");
    // The idle ones are closed after the first-frame deadline, not after idle_timeout_secs.
    for s in &mut idle {
        assert!(closed_within(s, Duration::from_secs(5)).await, "closed by the hub");
    }
}

/// A connection from `ip` (a loopback address other than 127.0.0.1) to 127.0.0.1:port.
async fn connect_from(ip: &str, port: u16) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::new(ip.parse().expect("ip"), 0))
        .expect("bind source");
    socket
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .expect("connect")
}

/// True when the peer closes `s` (end of stream or reset) within `limit`.
async fn closed_within(s: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 16];
    matches!(tokio::time::timeout(limit, s.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
}

/// Item 12: a NUL byte in a field is answered AE with ERR 102 before
/// anything is acknowledged (on 305005c: AA, then the pipeline failed).
#[tokio::test]
async fn a_nul_byte_is_refused_with_ae_102_and_the_field_named() {
    let hub = start_hub().await;
    let text = fixture("adt_a01.hl7").replace("Testpatient", "Test\u{0}patient");
    let (ack, raw) = ack_of(&exchange(&hub.mllp, &frame(&wire(&text))).expect("answer"));
    assert_eq!(ack.code.as_str(), "AE", "{raw}");
    assert_eq!(ack.error_code, Some(102), "{raw}");
    assert!(raw.contains("PID^1^5"), "{raw}");
    assert!(
        !raw.contains("Testpatient") && !raw.contains("Test\u{0}"),
        "no content echoed: {raw}"
    );
    let stored: Vec<u8> = sqlx::query_as::<_, (Vec<u8>,)>("SELECT raw FROM message WHERE control_id = 'ADT0001'")
        .fetch_one(&hub.db.pool)
        .await
        .expect("kept verbatim")
        .0;
    assert_eq!(stored, wire(&text));
}

/// Item 17: a changed message resent under the same MSH-10 is not
/// discarded silently: the first copy stands and the changed one is kept
/// for review in message_conflict, counted by a metric.
#[tokio::test]
async fn a_changed_resend_is_kept_for_review() {
    let hub = start_hub().await;
    let first = wire(&fixture("adt_a01.hl7"));
    let changed = wire(&fixture("adt_a01.hl7").replace("12 Test Street", "99 Other Road"));
    for m in [&first, &first, &changed] {
        let ack = sender(&hub.mllp).send(m).await.expect("answered");
        assert_eq!(ack.code.as_str(), "AA");
    }
    assert_eq!(count(&hub.db.pool, "SELECT count(*) FROM message").await, 1);
    let kept: (Vec<u8>, String) = sqlx::query_as("SELECT raw, status FROM message_conflict")
        .fetch_one(&hub.db.pool)
        .await
        .expect("one conflict, not two: the identical resend is a plain duplicate");
    assert_eq!(kept, (changed.clone(), "open".to_owned()));
    assert_eq!(metric(&hub, "carehub_messages_changed_duplicate_total"), Some(1.0));
}

/// Item 5: a sender that starts a frame and trickles it is closed after
/// `frame_timeout_secs`, although it is never silent for long (its log line
/// says "slow sender", no longer "idle": item 17).
#[tokio::test]
async fn a_slow_sender_is_closed_after_the_frame_timeout() {
    let db = fresh_db().await;
    let hub = start_hub_with(
        db,
        vec![
            ("CAREHUB_HL7__LISTENER__FRAME_TIMEOUT_SECS", "2".to_owned()),
            ("CAREHUB_HL7__LISTENER__IDLE_TIMEOUT_SECS", "60".to_owned()),
        ],
    )
    .await;
    let mut s = TcpStream::connect(&hub.mllp).expect("connect");
    s.write_all(&frame(&wire(&fixture("adt_a01.hl7"))))
        .expect("first frame");
    let (ack, _) = ack_of(&read_frame(&mut s).expect("ACK"));
    assert_eq!(ack.code.as_str(), "AA");
    let started = Instant::now();
    let trickle = wire(&fixture("adt_a08.hl7"));
    let mut closed = false;
    s.write_all(&[mllp::START]).expect("start a frame");
    for b in trickle.iter().take(40) {
        std::thread::sleep(Duration::from_millis(250));
        if s.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
    }
    if !closed {
        s.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        let mut buf = [0u8; 8];
        closed = matches!(std::io::Read::read(&mut s, &mut buf), Ok(0) | Err(_));
    }
    assert!(closed, "closed mid-frame");
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "after the frame timeout: {:?}",
        started.elapsed()
    );
}
