//! The ceiling a pipeline's figure is read against, measured in the same
//! run: what PostgreSQL alone does with the very rows the pipeline wrote,
//! and what the broker alone does with the very events it published.
//!
//! PostgreSQL: the rows each of the pipeline's transactions wrote (grouped
//! by the writing transaction: a row's `xmin`; for rows a later transaction
//! changed again and outbox rows, which the relay stamps later, the creating
//! transaction's `now()` they carry; for audit entries, appended in a
//! subtransaction, their message's row; a transaction
//! is the pipeline's when it claimed the consumer's event ids) are written
//! again, transaction by transaction in the same order — so the same batch
//! sizes — into a fresh database with the same schema (migrations:
//! indexes, constraints, triggers), one prepared statement per table per
//! transaction (`INSERT … SELECT * FROM unnest($1::text::<table>[])`, or
//! `UPDATE … FROM unnest(…)` for rows the pipeline changed), with the
//! server's own durability settings, over 1 to 4 connections; the best
//! counts. No parsing, mapping, Kafka or hub logic: only the writes.
//! Conservative: rows updated more than once in one transaction are written
//! once, so the ceiling errs high.
//!
//! Broker: the pipeline's outbox events (same keys, same payloads) produced
//! to a fresh topic with the relay's producer settings (idempotent, acks=all).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::producer::FutureRecord;

use crate::common::*;

/// How one table's rows are written again.
pub enum Write {
    Insert,
    /// `UPDATE <table> x SET <set> FROM unnest(…) u WHERE <key>` (`x` the row, `u` the new values).
    Update {
        key: &'static str,
        set: &'static str,
    },
}

/// One table the pipeline writes.
pub struct Rows {
    pub table: &'static str,
    /// The rows' source: `<table> t …` (a join may say which transaction wrote a row).
    pub from: String,
    /// The writing transaction's id for a row of `from` (`t.xmin`), as text.
    pub batch: &'static str,
    pub write: Write,
}

impl Rows {
    pub fn insert(table: &'static str, from: impl Into<String>, batch: &'static str) -> Self {
        Rows {
            table,
            from: from.into(),
            batch,
            write: Write::Insert,
        }
    }

    pub fn update(
        table: &'static str,
        from: impl Into<String>,
        batch: &'static str,
        key: &'static str,
        set: &'static str,
    ) -> Self {
        Rows {
            table,
            from: from.into(),
            batch,
            write: Write::Update { key, set },
        }
    }
}

/// What the ceiling starts from and writes.
pub struct Ceiling<'a> {
    /// Tables copied whole before the clock starts (the state the pipeline started from), parents first.
    pub seed: &'a [&'a str],
    /// Run on the copy after seeding: back to the state before the pipeline.
    pub reset: &'a [&'a str],
    /// What each transaction writes, parents first.
    pub rows: Vec<Rows>,
    /// Run once in every transaction that writes audit entries (the chain head).
    pub per_batch: &'a [&'a str],
    /// How many records the pipeline applied with these rows.
    pub records: usize,
    /// The pipeline's consumer name: its transactions are those that claimed event ids for it.
    pub consumer: &'a str,
}

/// For audit entries (appended in a nested transaction, whose rows carry a
/// subtransaction's `xmin`): the transaction that wrote them, by their
/// message's row (marked processed there), for the appends that hold a
/// pipeline's own (`system`) entries — one `at` per append. Use as
/// `Rows::from`, with `batch` = `g.x`.
pub fn audit_by_message() -> String {
    "audit_log t JOIN (SELECT a.at, min(m.xmin::text) AS x FROM audit_log a JOIN message m ON m.id = a.message_id
                         WHERE a.actor_kind = 'system' GROUP BY a.at) g ON g.at = t.at"
        .to_owned()
}

/// Rows by the transaction that created them, through the time column they
/// share with its claims (`now()`): for rows a later transaction changed
/// (their `xmin` is the later one's), and for outbox rows, which the relay
/// stamps later. `join` may reach the column through a parent
/// (`JOIN patient p ON p.id = t.patient_id`). Use as `Rows::from`, with
/// `batch` = `c.x`.
pub fn created(table: &str, join: &str, time: &str, consumer: &str) -> String {
    format!(
        "{table} t {join} JOIN (SELECT DISTINCT processed_at, xmin::text AS x FROM consumed_event
                                 WHERE consumer = '{consumer}') c ON c.processed_at = {time}"
    )
}

pub struct PgCeiling {
    pub best: f64,
    pub best_connections: usize,
    pub transactions: usize,
}

impl Ceiling<'_> {
    /// Measures and prints the PostgreSQL ceiling.
    pub async fn postgres(&self, source: &TestDb) -> PgCeiling {
        let mine: Vec<(String,)> = sqlx::query_as("SELECT DISTINCT xmin::text FROM consumed_event WHERE consumer = $1")
            .bind(self.consumer)
            .fetch_all(&source.pool)
            .await
            .expect("the pipeline's transactions");
        let mine: std::collections::HashSet<String> = mine.into_iter().map(|(x,)| x).collect();
        // transaction id → (table index, rows as the text of an array of the table's row type)
        let mut txs: BTreeMap<u64, Vec<(usize, String)>> = BTreeMap::new();
        for (i, r) in self.rows.iter().enumerate() {
            let sql = format!(
                "SELECT ({b})::text, array_agg(DISTINCT t)::text FROM {from} WHERE ({b}) IS NOT NULL GROUP BY 1",
                b = r.batch,
                from = r.from
            );
            let groups: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_all(&source.pool)
                .await
                .expect("read the pipeline's rows");
            for (xid, rows) in groups {
                if mine.contains(&xid) {
                    txs.entry(xid.parse().unwrap_or(0)).or_default().push((i, rows));
                }
            }
        }
        let mut seeds = Vec::new();
        for t in self.seed {
            let sql = format!("SELECT coalesce(array_agg(t)::text, '{{}}') FROM {t} t");
            let (rows,): (String,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_one(&source.pool)
                .await
                .expect("read seed");
            seeds.push((*t, rows));
        }
        let settings: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, setting FROM pg_settings
              WHERE name IN ('synchronous_commit', 'fsync', 'wal_sync_method', 'full_page_writes') ORDER BY name",
        )
        .fetch_all(&source.pool)
        .await
        .expect("settings");
        let txs: Vec<Vec<(usize, String)>> = txs.into_values().collect();
        let statements: usize = txs.iter().map(Vec::len).sum();
        println!(
            "  ceiling, PostgreSQL alone: the same rows in the same {} transactions ({:.1} records and {:.1} statements each), \
             same schema; {}",
            txs.len(),
            self.records as f64 / txs.len().max(1) as f64,
            statements as f64 / txs.len().max(1) as f64,
            settings
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let mut best = (0.0, 0);
        for conns in 1..=4usize {
            let target = fresh_db().await;
            for (t, rows) in &seeds {
                let sql = format!("INSERT INTO {t} SELECT * FROM unnest($1::text::{t}[])");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(rows)
                    .execute(&target.pool)
                    .await
                    .expect("seed");
            }
            for sql in self.reset {
                sqlx::query(sqlx::AssertSqlSafe(*sql))
                    .execute(&target.pool)
                    .await
                    .expect("reset");
            }
            let (rate, retried) = self.replay(&target, &txs, conns).await;
            println!("    {conns} connection(s): {rate:>8.0} records/s ({retried} transactions tried again)");
            if rate > best.0 {
                best = (rate, conns);
            }
        }
        PgCeiling {
            best: best.0,
            best_connections: best.1,
            transactions: txs.len(),
        }
    }

    async fn replay(&self, target: &TestDb, txs: &[Vec<(usize, String)>], conns: usize) -> (f64, usize) {
        let sqls: Vec<String> = self
            .rows
            .iter()
            .map(|r| match &r.write {
                Write::Insert => format!("INSERT INTO {t} SELECT * FROM unnest($1::text::{t}[])", t = r.table),
                Write::Update { key, set } => format!(
                    "UPDATE {t} x SET {set} FROM unnest($1::text::{t}[]) u WHERE {key}",
                    t = r.table
                ),
            })
            .collect();
        let audit = self.rows.iter().position(|r| r.table == "audit_log");
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..conns {
            let pool = target.pool.clone();
            let mine: Vec<Vec<(usize, String)>> = txs.iter().skip(c).step_by(conns).cloned().collect();
            let sqls = sqls.clone();
            let per_batch: Vec<String> = self.per_batch.iter().map(|s| (*s).to_owned()).collect();
            tasks.push(tokio::spawn(async move {
                let mut conn = pool.acquire().await.expect("connection");
                let mut queue: std::collections::VecDeque<Vec<(usize, String)>> = mine.into();
                let mut failures = 0usize;
                let mut spent = vec![Duration::ZERO; sqls.len() + 1];
                let mut progress = Instant::now();
                while let Some(tx) = queue.pop_front() {
                    let mut t = sqlx::Connection::begin(&mut *conn).await.expect("begin");
                    let mut ok = true;
                    for (i, rows) in &tx {
                        let q = sqlx::query(sqlx::AssertSqlSafe(sqls[*i].clone())).bind(rows);
                        let began = Instant::now();
                        let done = q.execute(&mut *t).await;
                        spent[*i] += began.elapsed();
                        if let Err(e) = done {
                            failures += 1;
                            assert!(failures < 100_000, "ceiling replay keeps failing: {e}");
                            ok = false;
                            break;
                        }
                    }
                    if ok && audit.is_some_and(|a| tx.iter().any(|(i, _)| *i == a)) {
                        for s in &per_batch {
                            ok &= sqlx::query(sqlx::AssertSqlSafe(s.clone()))
                                .execute(&mut *t)
                                .await
                                .is_ok();
                        }
                    }
                    let began = Instant::now();
                    let committed = ok && t.commit().await.is_ok();
                    spent[sqls.len()] += began.elapsed();
                    if committed {
                        progress = Instant::now();
                    } else {
                        // Nothing committed for long: the waiting transactions'
                        // rows depend on each other in a circle.
                        assert!(
                            progress.elapsed() < Duration::from_secs(30),
                            "ceiling replay: {} transactions cannot be applied",
                            queue.len() + 1
                        );
                        // A row whose parent another transaction writes (later
                        // in this queue, or on another connection, not yet
                        // committed): tried again after the others.
                        queue.push_back(tx);
                        tokio::time::sleep(Duration::from_micros(200)).await;
                    }
                }
                (failures, spent)
            }));
        }
        let mut retried = 0;
        let mut spent = vec![Duration::ZERO; sqls.len() + 1];
        for t in tasks {
            let (failures, took) = t.await.expect("replay");
            retried += failures;
            for (s, t) in spent.iter_mut().zip(took) {
                *s += t;
            }
        }
        if conns == 1 {
            let names: Vec<String> = self
                .rows
                .iter()
                .map(|r| r.table.to_owned())
                .chain(["commit".to_owned()])
                .zip(&spent)
                .filter(|(_, d)| !d.is_zero())
                .map(|(n, d)| format!("{n} {:.0} ms", d.as_secs_f64() * 1000.0))
                .collect();
            println!("    1 connection, time per statement kind: {}", names.join(", "));
        }
        let rate = self.records as f64 / started.elapsed().as_secs_f64();
        (rate, retried)
    }
}

/// Produces the pipeline's outbox events (same keys and payloads) to a fresh
/// topic as the relay would; prints and returns events/s.
pub async fn broker_ceiling(source: &TestDb, outbox_where: &str) -> f64 {
    let sql = format!("SELECT key, payload::text FROM outbox WHERE {outbox_where} ORDER BY id");
    let events: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(&source.pool)
        .await
        .expect("outbox");
    let topic = unique_topic("ceiling");
    create_topics(&[&topic]).await;
    let producer = carehub_kafka::idempotent_producer_with_linger(&kafka(), 5).expect("producer");
    let started = Instant::now();
    let mut pending = Vec::with_capacity(events.len());
    for (key, payload) in events.iter() {
        // send_result enqueues at once (send would wait to be polled); a full
        // queue is waited out.
        let mut record = FutureRecord::to(&topic).key(key).payload(payload);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => break pending.push(delivery),
                Err((_, back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
    for p in pending {
        p.await.expect("delivery").map_err(|(e, _)| e).expect("produce");
    }
    let rate = events.len() as f64 / started.elapsed().as_secs_f64();
    println!(
        "  ceiling, broker alone: the pipeline's {} outbox events produced (idempotent, acks=all, linger 5 ms): {rate:.0} events/s",
        events.len()
    );
    rate
}
