//! HL7 v2 over MLLP through the running hub, on real sockets, PostgreSQL and
//! broker: every mapped message type end to end, ACK semantics, resends,
//! protocol abuse, and outages of the broker and the database.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use carehub_hl7::codec::{Message, mllp};
use common::*;

/// `carehub dlq replay ID` against the hub's configuration; it must succeed.
fn dlq_replay(hub: &Hub, id: i64) {
    let out = Command::new(BIN)
        .args(["dlq", "replay", &id.to_string(), "--actor", "test"])
        .envs(hub.envs.iter().cloned())
        .output()
        .expect("replay");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn every_mapped_message_type_reaches_the_canonical_record() {
    let hub = start_hub().await;
    let pool = &hub.db.pool;
    let mut s = sender(&hub.mllp);
    // The patient that A40 will merge away, first as a patient of its own.
    let prior = fixture("adt_a01.hl7")
        .replace("P-1001", "P-2002")
        .replace("SSN-555", "SSN-556")
        .replace("ADT0001", "ADT0000")
        .replace("V-9001", "V-9000");
    let steps = [
        ("ADT0000", prior),
        ("ADT0001", fixture("adt_a01.hl7")),
        ("ADT0002", fixture("adt_a08.hl7")),
        ("ORM0001", fixture("orm_o01.hl7")),
        ("OML0001", fixture("oml_o21.hl7")),
        ("ORU0001", fixture("oru_r01.hl7")),
        ("SIU0001", fixture("siu_s12.hl7")),
        ("DFT0001", fixture("dft_p03.hl7")),
        ("ADT0003", fixture("adt_a03.hl7")),
        ("ADT0004", fixture("adt_a40.hl7")),
    ];
    for (control_id, text) in &steps {
        let ack = s
            .send(&wire(text))
            .await
            .unwrap_or_else(|e| panic!("{control_id}: {e}"));
        assert_eq!(ack.code.as_str(), "AA", "{control_id}");
        assert_eq!(ack.acked_control_id, *control_id);
        assert!(processed(pool, control_id).await, "{control_id} applied");
    }
    // Every message stored verbatim and applied.
    for (control_id, text) in &steps {
        let (raw, status): (Vec<u8>, String) = sqlx::query_as("SELECT raw, status FROM message WHERE control_id = $1")
            .bind(control_id)
            .fetch_one(pool)
            .await
            .expect("stored");
        assert_eq!(raw, wire(text), "{control_id} raw bytes kept");
        assert_eq!(status, "processed", "{control_id}");
    }
    assert_eq!(count(pool, "SELECT count(*) FROM dead_letter").await, 0);

    // ADT: the patient, renamed by A08, with both identifiers; the visit closed by A03.
    let family: String = scalar(
        pool,
        "SELECT p.family_name FROM patient p JOIN patient_identifier i ON i.patient_id = p.id WHERE i.value = 'P-1001'",
    )
    .await;
    assert_eq!(family, "Testpatient");
    let (status, discharged): (String, bool) =
        sqlx::query_as("SELECT status, discharged_at IS NOT NULL FROM encounter WHERE visit_number = 'V-9001'")
            .fetch_one(pool)
            .await
            .expect("visit");
    assert_eq!((status.as_str(), discharged), ("finished", true));
    // A40: P-2002 now points at P-1001 and is inactive.
    let merged: i64 = count(
        pool,
        "SELECT count(*) FROM patient p JOIN patient_identifier i ON i.patient_id = p.id
          WHERE i.value = 'P-2002' AND NOT p.active
            AND p.merged_into_id = (SELECT patient_id FROM patient_identifier WHERE value = 'P-1001')",
    )
    .await;
    assert_eq!(merged, 1);
    // Orders with items, orderer, device specification and status history.
    assert_eq!(
        count(pool, "SELECT count(*) FROM service_order WHERE status = 'active'").await,
        2
    );
    assert_eq!(count(pool, "SELECT count(*) FROM order_item").await, 2);
    assert_eq!(count(pool, "SELECT count(*) FROM practitioner").await, 2);
    let spec: serde_json::Value = scalar(
        pool,
        "SELECT device_spec FROM service_order WHERE placer_number = 'PO-5001'",
    )
    .await;
    assert_eq!(spec["observations"][0]["value"], "26.5");
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM service_order WHERE placer_number = 'PO-6001' AND priority = 'stat'"
        )
        .await,
        1
    );
    assert_eq!(count(pool, "SELECT count(*) FROM order_status_history").await, 2);
    // ORU: three observations, linked to the order by its placer number.
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM observation o JOIN service_order s ON s.id = o.order_id WHERE s.placer_number = 'PO-5001'"
        )
        .await,
        3
    );
    let qty: String = scalar(
        pool,
        "SELECT value_quantity::text FROM observation WHERE code = 'FIT-LEN'",
    )
    .await;
    assert_eq!(qty, "26.4");
    // SIU: the appointment. DFT: the invoice with both lines.
    assert_eq!(
        count(pool, "SELECT count(*) FROM appointment WHERE status = 'booked'").await,
        1
    );
    let total: i64 = scalar(pool, "SELECT total_minor FROM invoice WHERE number = 'V-9001'").await;
    assert_eq!(total, 33_000);
    // Everything audited, every change announced, the chain intact.
    assert!(count(pool, "SELECT count(*) FROM audit_log WHERE action = 'ingest'").await >= steps.len() as i64);
    assert!(
        count(
            pool,
            "SELECT count(*) FROM outbox WHERE payload->>'type' = 'carehub.order.upserted.v1'"
        )
        .await
            >= 2
    );
    let chain = carehub_schema::AuditLog::verify(pool).await.expect("verify");
    assert_eq!(chain.first_break, None);
    // Decoded once on each side of the Kafka hop: by the listener, to judge
    // and answer, and by the pipeline, to map (the FHIR resources come from
    // the same parse); never a third time.
    assert_eq!(
        metric(&hub, carehub_hl7::codec::er7::MESSAGES_PARSED),
        Some(2.0 * steps.len() as f64)
    );
}

#[tokio::test]
async fn acks_follow_the_standard_and_refused_messages_are_dead_lettered() {
    let hub = start_hub().await;
    let pool = &hub.db.pool;
    let addr = hub.mllp.as_str();

    // AA with MSA-2 = MSH-10 and the header mirrored.
    let reply = exchange(addr, &mllp::frame(&wire(&fixture("adt_a08.hl7")))).expect("ACK");
    let (ack, text) = ack_of(&reply);
    assert_eq!((ack.code.as_str(), ack.acked_control_id.as_str()), ("AA", "ADT0002"));
    let m = Message::parse(&text).expect("ack");
    assert_eq!(m.get("MSH-3").raw(), "CAREHUB");
    assert_eq!(m.get("MSH-5").raw(), "EHR");
    assert_eq!(m.get("MSH-9").raw(), "ACK^A08^ACK");
    assert_eq!(m.get("MSH-12").raw(), "2.5.1");

    // AE: a required field missing, with ERR naming it.
    let no_id = fixture("adt_a08.hl7")
        .replace("P-1001^^^NORTHCLINIC&1.2.826.0.1.9999.1&ISO^MR", "")
        .replace("ADT0002", "ADT-AE");
    let (ack, text) = ack_of(&exchange(addr, &mllp::frame(&wire(&no_id))).expect("ACK"));
    assert_eq!((ack.code.as_str(), ack.acked_control_id.as_str()), ("AE", "ADT-AE"));
    assert_eq!(ack.error_code, Some(101));
    let m = Message::parse(&text).expect("ack");
    assert_eq!(m.get("ERR-2").raw(), "PID^1^3");
    assert_eq!(m.get("ERR-4").raw(), "E");

    // AR: an unsupported message type.
    let mfn = fixture("adt_a08.hl7")
        .replace("ADT^A08^ADT_A01", "MFN^M02^MFN_M02")
        .replace("ADT0002", "MFN-AR");
    let (ack, _) = ack_of(&exchange(addr, &mllp::frame(&wire(&mfn))).expect("ACK"));
    assert_eq!((ack.code.as_str(), ack.error_code), ("AR", Some(200)));

    // Enhanced mode: MSH-15 AL gets a commit accept (CA).
    let enhanced = fixture("adt_a08.hl7")
        .replace("|P|2.5.1", "|P|2.5.1|||AL|NE")
        .replace("ADT0002", "ADT-CA");
    let (ack, _) = ack_of(&exchange(addr, &mllp::frame(&wire(&enhanced))).expect("ACK"));
    assert_eq!((ack.code.as_str(), ack.acked_control_id.as_str()), ("CA", "ADT-CA"));
    // MSH-15 ER: no accept acknowledgement on success; the next message's ACK is the next frame.
    let quiet = fixture("adt_a08.hl7")
        .replace("|P|2.5.1", "|P|2.5.1|||ER|NE")
        .replace("ADT0002", "ADT-ER");
    let after = fixture("adt_a08.hl7").replace("ADT0002", "ADT-NEXT");
    let mut conn = TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    conn.write_all(&mllp::frame(&wire(&quiet))).expect("write");
    conn.write_all(&mllp::frame(&wire(&after))).expect("write");
    let (ack, _) = ack_of(&read_frame(&mut conn).expect("ACK"));
    assert_eq!(ack.acked_control_id, "ADT-NEXT", "no ACK was sent for ADT-ER");

    // Garbage inside a frame: AR with an ERR, MSA-2 empty (there was no MSH-10).
    let (ack, _) = ack_of(&exchange(addr, &mllp::frame(b"\x00\x01 not hl7 at all")).expect("ACK"));
    assert_eq!((ack.code.as_str(), ack.acked_control_id.as_str()), ("AR", ""));

    // A batch in one frame: each message acknowledged on its own.
    let batch = format!(
        "BHS|^~\\&|EHR|NORTHCLINIC\r{}{}BTS|2\r",
        String::from_utf8(wire(&fixture("adt_a08.hl7").replace("ADT0002", "B-1"))).expect("utf8"),
        String::from_utf8(wire(&fixture("adt_a08.hl7").replace("ADT0002", "B-2"))).expect("utf8"),
    );
    let reply = String::from_utf8(exchange(addr, &mllp::frame(batch.as_bytes())).expect("batch ACK")).expect("utf8");
    assert!(reply.starts_with("BHS|"), "{reply}");
    assert!(
        reply.contains("MSA|AA|B-1") && reply.contains("MSA|AA|B-2") && reply.contains("BTS|2"),
        "{reply}"
    );

    // Bytes outside a frame and an oversized frame close the connection, without an ACK.
    assert!(exchange(addr, b"GET / HTTP/1.1\r\n\r\n").is_none());
    let mut huge = vec![mllp::START];
    huge.extend(std::iter::repeat_n(b'A', 2 * 1024 * 1024));
    let mut conn = TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    let _ = conn.write_all(&huge);
    assert!(read_frame(&mut conn).is_none(), "closed without a reply");
    // The listener still serves others.
    let (ack, _) = ack_of(
        &exchange(
            addr,
            &mllp::frame(&wire(&fixture("adt_a08.hl7").replace("ADT0002", "ADT-AFTER"))),
        )
        .expect("ACK"),
    );
    assert_eq!(ack.code.as_str(), "AA");

    // The refused ones are stored as failed, with dead letters and their reasons.
    let (code, reason): (String, String) = sqlx::query_as(
        "SELECT d.error_code, d.reason FROM dead_letter d JOIN message m ON m.id = d.message_id WHERE m.control_id = 'ADT-AE'",
    )
    .fetch_one(pool)
    .await
    .expect("AE dead letter");
    assert_eq!(code, "invalid_data");
    assert!(reason.contains("PID-3"), "{reason}");
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM dead_letter d JOIN message m ON m.id = d.message_id WHERE m.control_id = 'MFN-AR'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM message WHERE control_id IS NULL AND status = 'failed'"
        )
        .await,
        1,
        "the garbage frame is kept too"
    );
}

#[tokio::test]
async fn a_dead_lettered_message_replays_once_its_cause_is_fixed() {
    let hub = start_hub().await;
    let pool = &hub.db.pool;
    // A cancel for an order nobody placed yet: acknowledged, then dead-lettered by the pipeline.
    let cancel = fixture("orm_o01.hl7")
        .replace("ORC|NW|", "ORC|CA|")
        .replace("ORM0001", "ORM-CA");
    let ack = sender(&hub.mllp).send(&wire(&cancel)).await.expect("AA");
    assert_eq!(ack.code.as_str(), "AA");
    assert!(processed(pool, "ORM-CA").await);
    let (id, code): (i64, String) = sqlx::query_as("SELECT id, error_code FROM dead_letter")
        .fetch_one(pool)
        .await
        .expect("dead letter");
    assert_eq!(code, "unknown_reference");
    // The order arrives; the cancel replays and now applies.
    sender(&hub.mllp)
        .send(&wire(&fixture("orm_o01.hl7")))
        .await
        .expect("AA");
    assert!(processed(pool, "ORM0001").await);
    dlq_replay(&hub, id);
    let status: String = scalar(pool, "SELECT status FROM service_order WHERE placer_number = 'PO-5001'").await;
    assert_eq!(status, "revoked");
}

#[tokio::test]
async fn a_resent_message_is_acknowledged_again_and_has_no_second_effect() {
    let hub = start_hub().await;
    let pool = &hub.db.pool;
    let msg = wire(&fixture("adt_a01.hl7"));
    for _ in 0..3 {
        let ack = sender(&hub.mllp).send(&msg).await.expect("AA");
        assert_eq!(ack.code.as_str(), "AA");
    }
    assert!(processed(pool, "ADT0001").await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count(pool, "SELECT count(*) FROM message").await, 1);
    assert_eq!(count(pool, "SELECT count(*) FROM patient").await, 1);
    let version: i32 = scalar(pool, "SELECT version FROM patient").await;
    assert_eq!(version, 1, "applied once");
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM outbox WHERE payload->>'type' = 'carehub.patient.upserted.v1'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn the_command_line_tools_send_a_file_and_show_how_it_parses() {
    let hub = start_hub().await;
    let dir = std::env::temp_dir().join(format!("carehub-hl7-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    // A file of two messages with LF terminators and a comment, as people keep them.
    let file = dir.join("two.hl7");
    std::fs::write(
        &file,
        format!("# two messages\n{}\n{}", fixture("adt_a01.hl7"), fixture("adt_a08.hl7")),
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["hl7", "send", file.to_str().expect("path"), "--to", &hub.mllp])
        .output()
        .expect("hl7 send");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("1/2 ADT0001: AA") && stdout.contains("2/2 ADT0002: AA"),
        "{stdout}"
    );
    assert!(processed(&hub.db.pool, "ADT0002").await);

    let out = Command::new(BIN)
        .args(["hl7", "parse", fixture_path("adt_a01.hl7").to_str().expect("path")])
        .output()
        .expect("hl7 parse");
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let m = &doc["messages"][0];
    assert_eq!(m["type"], "ADT^A01");
    assert_eq!(m["segments"][2]["segment"], "PID");
    assert_eq!(m["mapping"]["unmapped_segments"]["ZPI"], 1);
    assert_eq!(m["mapping"]["command"]["command"], "upsert_patient");
    let _ = std::fs::remove_dir_all(&dir);
}

fn fixture_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hl7")
        .join(name)
}

#[tokio::test]
async fn mllp_over_tls_is_acknowledged_and_plain_connections_are_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;

    let dir = std::env::temp_dir().join(format!("carehub-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("key");
    let db = fresh_db().await;
    let hub = start_hub_with(
        db,
        vec![
            ("CAREHUB_HL7__LISTENER__TLS__CERT_PATH", cert_path.display().to_string()),
            ("CAREHUB_HL7__LISTENER__TLS__KEY_PATH", key_path.display().to_string()),
        ],
    )
    .await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("trust the test certificate");
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(&hub.mllp).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    tls.write_all(&mllp::frame(&wire(&fixture("adt_a01.hl7"))))
        .await
        .expect("write");
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !reply.ends_with(&[mllp::END, mllp::CR]) {
        let n = tokio::time::timeout(Duration::from_secs(15), tls.read(&mut buf))
            .await
            .expect("ACK in time")
            .expect("read");
        assert!(n > 0, "connection closed before the ACK");
        reply.extend_from_slice(&buf[..n]);
    }
    let (ack, _) = ack_of(&reply[1..reply.len() - 2]);
    assert_eq!((ack.code.as_str(), ack.acked_control_id.as_str()), ("AA", "ADT0001"));
    assert!(processed(&hub.db.pool, "ADT0001").await);

    // Plain MLLP on the TLS port gets no ACK: the handshake fails and the connection closes.
    let addr = hub.mllp.clone();
    let plain = tokio::task::spawn_blocking(move || exchange(&addr, &mllp::frame(&wire(&fixture("adt_a08.hl7")))))
        .await
        .expect("join");
    assert!(plain.is_none());
    assert_eq!(count(&hub.db.pool, "SELECT count(*) FROM message").await, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A NUL byte is refused AE 102 before the ACK (hardening item 12: it used
/// to be answered AA and applied with the NUL replaced), and is stored
/// verbatim as failed without blocking other messages.
#[tokio::test]
async fn a_nul_byte_in_the_header_is_refused_stored_verbatim_and_does_not_block_other_messages() {
    let hub = start_hub().await;
    let odd = fixture("adt_a08.hl7").replace("ADT0002", "ODD\u{0}ID");
    let reply = exchange(&hub.mllp, &mllp::frame(&wire(&odd))).expect("answered");
    let (ack, text) = ack_of(&reply);
    assert_eq!((ack.code.as_str(), ack.error_code), ("AE", Some(102)), "{text}");
    let ack = sender(&hub.mllp)
        .send(&wire(&fixture("adt_a01.hl7")))
        .await
        .expect("accepted");
    assert_eq!(ack.code.as_str(), "AA");
    assert!(processed(&hub.db.pool, "ADT0001").await);
    let (raw, status): (Vec<u8>, String) =
        sqlx::query_as("SELECT raw, status FROM message WHERE control_id = 'ODD\u{FFFD}ID'")
            .fetch_one(&hub.db.pool)
            .await
            .expect("stored");
    assert_eq!(raw, wire(&odd), "the raw bytes keep the NUL");
    assert_eq!(status, "failed");
}

#[tokio::test]
async fn outbound_messages_reach_their_destination_in_order_and_refusals_are_dead_lettered() {
    let (peer, seen) = mllp_peer().await;
    let db = fresh_db().await;
    let hub = start_hub_with(db, vec![("CAREHUB_HL7__DESTINATIONS__CLINIC__ENDPOINT", peer.clone())]).await;
    let pool = &hub.db.pool;
    let topic = env_value(&hub.envs, "CAREHUB_PIPELINES__HL7__OUTBOUND_TOPIC");
    // What a pipeline writes through the outbox: messages for a destination.
    let p = producer();
    for (id, destination) in [
        ("OUT1", "clinic"),
        ("REJ2", "clinic"),
        ("OUT3", "clinic"),
        ("OUT4", "nowhere"),
    ] {
        let raw = wire(&fixture("oru_r01.hl7").replace("ORU0001", id));
        let env = carehub_schema::contracts::Outbound::new(destination, &raw).into_envelope("/test/hl7");
        produce(&p, &topic, destination, &bytes(&env)).await;
    }
    let delivered = eventually(Duration::from_secs(60), || async {
        let n = count(pool, "SELECT count(*) FROM dead_letter").await;
        (n >= 2 && received(&seen).len() >= 3).then_some(())
    })
    .await;
    assert!(delivered.is_some(), "delivered: {:?}", control_ids(&seen));
    assert_eq!(control_ids(&seen), ["OUT1", "REJ2", "OUT3"], "in order, each once");
    let refusals: Vec<(String, String)> =
        sqlx::query_as("SELECT error_code, reason FROM dead_letter WHERE consumer = 'hl7_out' ORDER BY id")
            .fetch_all(pool)
            .await
            .expect("dead letters");
    assert_eq!(refusals.len(), 2);
    assert_eq!(refusals[0].0, "rejected_by_receiver");
    assert!(refusals[0].1.contains("AR"), "{}", refusals[0].1);
    assert_eq!(refusals[1].0, "unknown_destination");
    assert_eq!(
        count(pool, "SELECT count(*) FROM audit_log WHERE action = 'send'").await,
        2
    );

    // The receiver is ready now: the refused message is replayed and delivered.
    let (id,): (i64,) = sqlx::query_as("SELECT id FROM dead_letter WHERE error_code = 'rejected_by_receiver'")
        .fetch_one(pool)
        .await
        .expect("id");
    dlq_replay(&hub, id);
    let again = eventually(Duration::from_secs(60), || async {
        (count(pool, "SELECT count(*) FROM audit_log WHERE action = 'send'").await == 3).then_some(())
    })
    .await;
    assert!(again.is_some(), "replayed and delivered: {:?}", control_ids(&seen));
    assert_eq!(control_ids(&seen).last().map(String::as_str), Some("REJ2"));
}

#[tokio::test]
async fn enhanced_mode_senders_get_a_commit_ack_then_the_application_ack() {
    let (peer, seen) = mllp_peer().await;
    let db = fresh_db().await;
    let hub = start_hub_with(
        db,
        vec![
            ("CAREHUB_HL7__DESTINATIONS__NORTH__ENDPOINT", peer.clone()),
            (
                "CAREHUB_PIPELINES__HL7__ACK_DESTINATIONS__NORTHCLINIC",
                "north".to_owned(),
            ),
        ],
    )
    .await;
    let enhanced = |text: String, control_id: &str, msh16: &str| {
        text.replace("|P|2.5.1", &format!("|P|2.5.1|||AL|{msh16}"))
            .replace("ADT0002", control_id)
    };
    // Applied: CA now, AA later.
    let good = enhanced(fixture("adt_a08.hl7"), "ENH-OK", "AL");
    // A required field missing: stored and committed (CA), then AE with ERR.
    let bad = enhanced(
        fixture("adt_a08.hl7").replace("P-1001^^^NORTHCLINIC&1.2.826.0.1.9999.1&ISO^MR", ""),
        "ENH-AE",
        "AL",
    );
    // MSH-16 ER: a success is not acknowledged by the application.
    let quiet = enhanced(fixture("adt_a08.hl7"), "ENH-ER", "ER");
    // A cancel of an order the hub does not know: CA, then AE 204 after the pipeline refused it.
    let unknown = fixture("orm_o01.hl7")
        .replace("|P|2.3.1", "|P|2.3.1|||AL|AL")
        .replace("ORM0001", "ENH-ORD")
        .replace("ORC|NW|PO-5001", "ORC|CA|PO-9999")
        .replace("OBR|1|PO-5001", "OBR|1|PO-9999");
    for (text, id) in [
        (&good, "ENH-OK"),
        (&bad, "ENH-AE"),
        (&quiet, "ENH-ER"),
        (&unknown, "ENH-ORD"),
    ] {
        let (ack, _) = ack_of(&exchange(&hub.mllp, &mllp::frame(&wire(text))).expect("commit ACK"));
        assert_eq!((ack.code.as_str(), ack.acked_control_id.as_str()), ("CA", id));
    }
    let answered = eventually(Duration::from_secs(60), || async {
        (received(&seen).len() >= 3).then_some(())
    })
    .await;
    assert!(answered.is_some(), "application ACKs: {:?}", received(&seen));
    // Give a wrongly sent fourth ACK the time to show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let acks: std::collections::BTreeMap<String, (String, String)> = received(&seen)
        .iter()
        .map(|text| {
            let msg = Message::parse(text).expect("the application ACK parses");
            assert_eq!(msg.message_type().0, "ACK");
            assert_eq!(msg.get("MSH-5").raw(), "EHR", "addressed to the sender");
            // The HL7 error code: ERR-3 from v2.5, ERR-1.4 before (the ORM is v2.3.1).
            let code = match msg.get("ERR-3.1").raw() {
                "" => msg.get("ERR-1.4.1").raw(),
                c => c,
            };
            (
                msg.get("MSA-2").raw().to_owned(),
                (msg.get("MSA-1").raw().to_owned(), code.to_owned()),
            )
        })
        .collect();
    assert_eq!(acks.len(), 3, "{acks:?}");
    assert_eq!(acks["ENH-OK"].0, "AA");
    assert_eq!(acks["ENH-AE"], ("AE".to_owned(), "101".to_owned()));
    assert_eq!(acks["ENH-ORD"], ("AE".to_owned(), "204".to_owned()));
    assert!(!acks.contains_key("ENH-ER"));
    // The refused ones are dead letters with their reasons, as in original mode.
    assert_eq!(
        count(&hub.db.pool, "SELECT count(*) FROM dead_letter WHERE consumer = 'hl7'").await,
        2
    );
}

/// An order number (EI) with its assigning namespace; empty stays empty.
fn order_number(number: &str, namespace: &str) -> String {
    if number.is_empty() {
        String::new()
    } else {
        format!("{number}^{namespace}")
    }
}

/// An ORM for `placer` (ORC-1 `control`, ORC-5 `orc5`, ORC-3 `filler`).
fn orm(ctl: &str, mrn: &str, control: &str, orc5: &str, placer: &str, filler: &str, due: &str) -> String {
    let filler = order_number(filler, "ORTHOLAB");
    format!(
        "MSH|^~\\&|EHR|NORTHCLINIC|CAREHUB|ORTHOLAB|20261125120000||ORM^O01^ORM_O01|{ctl}|P|2.3.1\r\
         PID|1||{mrn}^^^NORTHCLINIC&1.2.826.0.1.9999.1&ISO^MR||Testpatient^Alex||19800102|F\r\
         ORC|{control}|{placer}^NORTHCLINIC|{filler}||{orc5}||^^^^{due}^R||20261125120000|||D-77^Doctor^Demo^^^^^^NORTHCLINIC&1.2.826.0.1.9999.3&ISO\r\
         OBR|1|{placer}^NORTHCLINIC|{filler}|L3000^Foot orthosis, custom^HCPCS|||20261125120000\r\
         NTE|1||note of {ctl}\r"
    )
}

/// An ORU naming its order by `placer` and/or `filler`, one result `code`.
fn oru(ctl: &str, mrn: &str, placer: &str, filler: &str, code: &str) -> String {
    let (placer, filler) = (order_number(placer, "NORTHCLINIC"), order_number(filler, "ORTHOLAB"));
    format!(
        "MSH|^~\\&|LABSYS|ORTHOLAB|EHR|NORTHCLINIC|20261128150000||ORU^R01^ORU_R01|{ctl}|P|2.5.1\r\
         PID|1||{mrn}^^^NORTHCLINIC&1.2.826.0.1.9999.1&ISO^MR||Testpatient^Alex||19800102|F\r\
         OBR|1|{placer}|{filler}|L3000^Foot orthosis, custom^HCPCS|||20261128140000\r\
         OBX|1|NM|{code}^Fitted length^L||26.4|cm|26.0-27.0|N|||F|||20261128140000\r"
    )
}

/// What the canonical record holds of orders and results, without ids.
async fn order_record(pool: &sqlx::PgPool) -> Vec<String> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT concat_ws(' ', 'order', o.placer_number, o.filler_number, o.status, o.version, o.due_date,
                o.note, i.value, (SELECT count(*) FROM order_item WHERE order_id = o.id),
                (SELECT control_id FROM message WHERE id = o.source_message_id))
           FROM service_order o JOIN patient_identifier i ON i.patient_id = o.patient_id
         UNION ALL
         SELECT concat_ws(' ', 'history', o.placer_number, h.from_status, h.to_status,
                (SELECT control_id FROM message WHERE id = h.source_message_id))
           FROM order_status_history h JOIN service_order o ON o.id = h.order_id
         UNION ALL
         SELECT concat_ws(' ', 'result', r.result_key, r.code, o.placer_number, i.value,
                (SELECT control_id FROM message WHERE id = r.source_message_id))
           FROM observation r JOIN patient_identifier i ON i.patient_id = r.patient_id
           LEFT JOIN service_order o ON o.id = r.order_id
         UNION ALL
         SELECT concat_ws(' ', 'message', control_id, status) FROM message
         UNION ALL
         SELECT concat_ws(' ', 'dead', m.control_id, d.error_code)
           FROM dead_letter d JOIN message m ON m.id = d.message_id
         UNION ALL
         SELECT concat_ws(' ', 'outbox', payload->>'type', count(*)) FROM outbox GROUP BY payload->>'type'
         UNION ALL
         SELECT concat_ws(' ', 'audit', action, entity_type, count(*)) FROM audit_log GROUP BY action, entity_type
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("record");
    rows.into_iter().map(|(r,)| r).collect()
}

/// Orders and results waiting in one batch are judged in the messages'
/// order, exactly as one by one: an order changed twice sees its first
/// change, a result before its order stays unlinked while one after it is
/// linked (by placer, and by the filler number a change in the same batch
/// gave it), refused changes are dead letters of their own, and a resent
/// message has no second effect.
#[tokio::test]
async fn orders_and_results_in_one_batch_end_as_they_would_one_by_one() {
    use carehub_pipeline::{Engine, InboundRecord, Processed};
    let messages = [
        oru("B-R0", "P-2001", "PO-6002", "", "EARLY"),
        orm("B-O1", "P-2001", "NW", "", "PO-6001", "", "20261220"),
        oru("B-R1", "P-2001", "PO-6001", "", "BY-PLACER"),
        orm("B-O2", "P-2001", "SC", "IP", "PO-6001", "LAB-601", ""),
        orm("B-O3", "P-2001", "NW", "", "PO-6002", "", "20261221"),
        oru("B-R2", "P-2001", "", "LAB-601", "BY-FILLER"),
        orm("B-O4", "P-2001", "SC", "CM", "PO-6001", "", "20261224"),
        orm("B-O7", "P-2002", "NW", "", "PO-6003", "", ""),
        oru("B-R3", "P-2002", "PO-6003", "", "OTHER"),
        orm("B-O1", "P-2001", "NW", "", "PO-6001", "", "20261220"),
        // The batch above is applied set-wise; these two are refused, so
        // their batch goes to the retry pass, where each is a dead letter alone.
        orm("B-O5", "P-2001", "SC", "IP", "PO-6001", "", ""),
        orm("B-O6", "P-2001", "SC", "IP", "PO-6999", "", ""),
    ];
    let refused = 2;
    let mut outcomes = Vec::new();
    let mut records = Vec::new();
    for one_by_one in [false, true] {
        let db = fresh_db().await;
        let engine = Engine::new(
            db.pool.clone(),
            std::sync::Arc::new(carehub_pipeline_hl7::Hl7Pipeline::new("events")),
        );
        let mut payloads = Vec::new();
        for m in &messages {
            let received = stored_hl7(&db.pool, m.as_bytes()).await;
            payloads.push(serde_json::to_vec(&received).expect("json"));
        }
        let recs: Vec<InboundRecord<'_>> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| InboundRecord {
                topic: "hl7",
                partition: Some(0),
                offset: Some(i as i64),
                key: Some(b"P-2001".as_slice()),
                payload: p,
            })
            .collect();
        let out = if one_by_one {
            let mut out = Vec::new();
            for r in &recs {
                out.push(engine.process(r).await.expect("processed"));
            }
            out
        } else {
            let (set, retried) = recs.split_at(recs.len() - refused);
            let mut out = engine.process_batch(set).await.expect("set batch");
            out.extend(engine.process_batch(retried).await.expect("retried batch"));
            out
        };
        let summary: Vec<String> = out
            .iter()
            .map(|p| match p {
                Processed::Applied { .. } => "applied".to_owned(),
                Processed::Skipped => "skipped".to_owned(),
                Processed::Duplicate { .. } => "duplicate".to_owned(),
                Processed::DeadLettered { code, .. } => format!("dead:{code}"),
            })
            .collect();
        outcomes.push(summary);
        records.push(order_record(&db.pool).await);
        assert!(
            carehub_schema::AuditLog::verify(&db.pool)
                .await
                .expect("verify")
                .first_break
                .is_none()
        );
    }
    assert_eq!(outcomes[0], outcomes[1], "the batch's outcomes are the one-by-one ones");
    assert_eq!(records[0], records[1], "the batch's record is the one-by-one record");
    // And that record is the right one.
    let record = &records[0];
    let has = |line: &str| assert!(record.iter().any(|r| r == line), "{line} not in {record:#?}");
    has("order PO-6001 LAB-601 completed 3 2026-12-24 note of B-O4 P-2001 1 B-O4");
    has("order PO-6002 active 1 2026-12-21 note of B-O3 P-2001 1 B-O3");
    has("result urn:carehub:hl7-aa:NORTHCLINIC|PO-6002|EARLY| EARLY P-2001 B-R0");
    has("result urn:carehub:hl7-aa:NORTHCLINIC|PO-6001|BY-PLACER| BY-PLACER PO-6001 P-2001 B-R1");
    has("result urn:carehub:hl7-aa:ORTHOLAB|LAB-601|BY-FILLER| BY-FILLER PO-6001 P-2001 B-R2");
    has("history PO-6001 active completed B-O4");
    has("dead B-O5 invalid_transition");
    has("outbox carehub.order.upserted.v1 5");
    assert_eq!(
        outcomes[0][10..],
        ["dead:invalid_transition", "dead:unknown_reference"],
        "{:?}",
        outcomes[0]
    );
    assert_eq!(outcomes[0][9], "duplicate");
}
