//! The orders and results of a run of messages (between merges), written
//! set-wise once the run's patients are: the orders named by placer number
//! read and locked at once, the results' order numbers looked up at once,
//! each clinic ensured once, the practitioners in one statement, every
//! order change judged in memory in the messages' order ([`OrderBook`]),
//! then the orders, their items and status history, and the results, in
//! one statement per table.

use std::collections::{HashMap, HashSet};

use carehub_pipeline::HandlerError;
use carehub_schema::model::{Identifier, OrganizationKind};
use carehub_schema::order_book::OrderBook;
use carehub_schema::records::{self, OrderApplied, ResultData};
use carehub_schema::repo::{self, Upserted};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Command, Mapped};

/// What the run already wrote for one message's orders or results.
#[derive(Debug, Clone, Default)]
pub(crate) enum Written {
    #[default]
    Nothing,
    Orders {
        clinic: Option<Upserted>,
        /// Each order's orderer.
        orderers: Vec<Option<Upserted>>,
        applied: Vec<OrderApplied>,
    },
    Results {
        /// The order each result belongs to, found when the message came.
        order_ids: Vec<Option<Uuid>>,
        /// The results' rows, when the run wrote them (else the message does).
        rows: Option<Vec<Upserted>>,
    },
    /// The order an appointment is for, found when the message came.
    Appointment { order_id: Option<Uuid> },
}

/// The order a result names: its filler number first, else its placer number.
fn order_of(book: &OrderBook, r: &ResultData) -> Option<Uuid> {
    [&r.filler, &r.placer].into_iter().flatten().find_map(|n| book.find(n))
}

/// Writes the orders and results of `mapped` (a run whose patients `ups`
/// are written, from the messages `message_ids`, in the run's order; one
/// message applied alone is a run of one). A change the order's state
/// refuses refuses the run (the engine's retry pass dead-letters its
/// message alone).
pub(crate) async fn run_orders(
    conn: &mut PgConnection,
    mapped: &[&Mapped],
    ups: &[Upserted],
    message_ids: &[Uuid],
) -> Result<Vec<Written>, HandlerError> {
    let mut out = vec![Written::Nothing; mapped.len()];
    let mut placers: Vec<&Identifier> = Vec::new();
    let mut numbers: Vec<&Identifier> = Vec::new();
    let (mut seen_placers, mut seen_numbers) = (HashSet::new(), HashSet::new());
    for m in mapped {
        match &m.command {
            Command::Orders { orders, .. } => placers.extend(
                orders
                    .iter()
                    .map(|o| &o.placer)
                    .filter(|p| seen_placers.insert((&p.system, &p.value))),
            ),
            Command::Results { results, .. } => numbers.extend(
                results
                    .iter()
                    .flat_map(|r| [&r.filler, &r.placer].into_iter().flatten())
                    .filter(|n| seen_numbers.insert((&n.system, &n.value))),
            ),
            Command::Appointment { appointment, .. } => numbers.extend(
                appointment
                    .placer_order
                    .iter()
                    .filter(|n| seen_numbers.insert((&n.system, &n.value))),
            ),
            _ => {}
        }
    }
    let mut book = OrderBook::load(conn, &placers, &numbers).await?;

    // Each clinic once: the first message that names it may create it.
    let mut clinics: HashMap<(&str, &str), Upserted> = HashMap::new();
    let mut orderers = Vec::new();
    for (m, &message_id) in mapped.iter().zip(message_ids) {
        if let Command::Orders { orders, clinic, .. } = &m.command {
            if let Some(c) = clinic {
                let key = (c.system.as_str(), c.value.as_str());
                if let std::collections::hash_map::Entry::Vacant(slot) = clinics.entry(key) {
                    let up = repo::ensure_organization(conn, OrganizationKind::Clinic, c, &c.value, Some(message_id))
                        .await?;
                    slot.insert(up);
                }
            }
            orderers.extend(
                orders
                    .iter()
                    .filter_map(|o| o.orderer.as_ref())
                    .map(|p| (p, Some(message_id))),
            );
        }
    }
    let mut practitioners = records::upsert_practitioners(conn, &orderers).await?.into_iter();

    let mut announced = HashSet::new();
    let mut results: Vec<(usize, Uuid, Option<Uuid>, &ResultData)> = Vec::new();
    for (i, m) in mapped.iter().enumerate() {
        let msg_id = Some(message_ids[i]);
        let patient = ups.get(i).map(|p| p.id).unwrap_or_default();
        match &m.command {
            Command::Orders { orders, clinic, .. } => {
                let clinic = clinic.as_ref().and_then(|c| {
                    let key = (c.system.as_str(), c.value.as_str());
                    let up = *clinics.get(&key)?;
                    // Created (and audited) by the first message only.
                    Some(Upserted {
                        created: up.created && announced.insert(key),
                        ..up
                    })
                });
                let mut who = Vec::with_capacity(orders.len());
                let mut applied = Vec::with_capacity(orders.len());
                for o in orders {
                    let orderer = match o.orderer {
                        Some(_) => practitioners.next(),
                        None => None,
                    };
                    let done = book
                        .apply(patient, orderer.map(|p| p.id), clinic.map(|c| c.id), o, msg_id, None)
                        .map_err(|r| HandlerError::rejected(r.error_code(), r.to_string()))?;
                    who.push(orderer);
                    applied.push(done);
                }
                out[i] = Written::Orders {
                    clinic,
                    orderers: who,
                    applied,
                };
            }
            Command::Results { results: rs, .. } => {
                let order_ids: Vec<Option<Uuid>> = rs.iter().map(|r| order_of(&book, r)).collect();
                results.extend(rs.iter().zip(&order_ids).map(|(r, o)| (i, patient, *o, r)));
                out[i] = Written::Results { order_ids, rows: None };
            }
            Command::Appointment { appointment, .. } => {
                out[i] = Written::Appointment {
                    order_id: appointment.placer_order.as_ref().and_then(|n| book.find(n)),
                };
            }
            _ => {}
        }
    }
    book.write(conn).await?;

    // The run's results in one statement, unless a result key comes twice
    // (the second must see the first): then each message writes its own.
    let keys: HashSet<&str> = results.iter().map(|r| r.3.result_key.as_str()).collect();
    if !results.is_empty() && keys.len() == results.len() {
        let items: Vec<_> = results
            .iter()
            .map(|&(i, patient, order, r)| (patient, order, r, Some(message_ids[i])))
            .collect();
        let rows = records::upsert_observations(conn, &items).await?;
        for ((i, ..), row) in results.iter().zip(rows) {
            if let Written::Results { rows, .. } = &mut out[*i] {
                rows.get_or_insert_with(Vec::new).push(row);
            }
        }
    }
    Ok(out)
}
