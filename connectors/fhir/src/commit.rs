//! Group commit of FHIR writes, on the hub's one [`carehub_schema::GroupCommit`].
//! Every write appends to the one hash-chained audit trail, whose head is
//! locked until commit: one transaction per write would make writes take
//! turns at a commit each (~360 creates/s measured here). Instead one task
//! takes the writes waiting (up to [`MAX_BATCH`]),
//! runs each under a savepoint of one transaction, appends all their audit
//! entries at once and commits once; each caller gets its own answer after
//! that commit. A write that fails rolls back to its savepoint alone.

use carehub_schema::AuditLog;

use crate::outcome::{Outcome, Status};
use crate::store::{self, Writer, Written};

/// Most writes one transaction takes.
pub const MAX_BATCH: usize = 256;

/// A write to run.
#[derive(Debug)]
pub enum Op {
    Create {
        resource_type: String,
        body: String,
        if_none_exist: Option<String>,
    },
    Update {
        resource_type: String,
        id: String,
        body: String,
        if_match: Option<String>,
    },
    Delete {
        resource_type: String,
        id: String,
        if_match: Option<String>,
    },
    /// `POST /` with a batch or transaction Bundle.
    Bundle { body: String },
}

/// What a write gave.
#[derive(Debug)]
pub enum Done {
    Written(Box<Written>),
    /// The response Bundle's text.
    Bundle(String),
}

/// Runs writes in shared transactions (see the module's documentation).
#[derive(Debug, Clone)]
pub struct GroupCommit {
    commit: carehub_schema::GroupCommit<(Op, Writer), Result<Done, Outcome>>,
}

impl GroupCommit {
    pub fn start(pool: sqlx::PgPool) -> Self {
        let commit = carehub_schema::GroupCommit::start("FHIR writer", MAX_BATCH, 1, move |batch| {
            let pool = pool.clone();
            async move { run(&pool, batch).await }
        });
        GroupCommit { commit }
    }

    /// Runs `op` for `writer`; answers once it is committed.
    pub async fn run(&self, op: Op, writer: Writer) -> Result<Done, Outcome> {
        self.commit.submit((op, writer)).await.unwrap_or_else(|_| {
            Err(Outcome::new(
                Status::SERVICE_UNAVAILABLE,
                "transient",
                "the FHIR writer stopped; try again",
            ))
        })
    }
}

async fn run(pool: &sqlx::PgPool, batch: Vec<(Op, Writer)>) -> Vec<Result<Done, Outcome>> {
    let n = batch.len();
    let mut results = Vec::with_capacity(n);
    let outcome: Result<(), Outcome> = async {
        let mut tx = pool.begin().await?;
        let mut audit = Vec::new();
        for (op, writer) in batch {
            let mut sp = sqlx::Connection::begin(&mut *tx).await?;
            match one(&mut sp, &writer, op).await {
                Ok((done, entries)) => {
                    sp.commit().await?;
                    audit.extend(entries);
                    results.push(Ok(done));
                }
                Err(e) => {
                    sp.rollback().await?;
                    results.push(Err(e));
                }
            }
        }
        AuditLog::append_in(&mut tx, &audit).await?;
        tx.commit().await?;
        Ok(())
    }
    .await;
    match outcome {
        Ok(()) => results,
        // Nothing of the batch committed: every caller hears so, none is told
        // its write was stored.
        Err(e) => {
            tracing::error!(status = %e.status(), "a batch of FHIR writes did not commit");
            (0..n)
                .map(|_| {
                    Err(Outcome::new(
                        Status::SERVICE_UNAVAILABLE,
                        "transient",
                        "the write could not be stored; try again",
                    ))
                })
                .collect()
        }
    }
}

async fn one(
    conn: &mut sqlx::PgConnection,
    w: &Writer,
    op: Op,
) -> Result<(Done, Vec<carehub_schema::AuditEntry>), Outcome> {
    let written = match op {
        Op::Create {
            resource_type,
            body,
            if_none_exist,
        } => store::create(conn, w, &resource_type, &body, if_none_exist.as_deref(), None).await?,
        Op::Update {
            resource_type,
            id,
            body,
            if_match,
        } => store::update(conn, w, &resource_type, &id, &body, if_match.as_deref()).await?,
        Op::Delete {
            resource_type,
            id,
            if_match,
        } => store::delete(conn, w, &resource_type, &id, if_match.as_deref()).await?,
        Op::Bundle { body } => {
            let (response, audit) = crate::bundle::process(conn, w, &body).await?;
            return Ok((Done::Bundle(response), audit));
        }
    };
    let mut written = written;
    let audit = written.audit.take().into_iter().collect();
    Ok((Done::Written(Box::new(written)), audit))
}
