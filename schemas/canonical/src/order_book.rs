//! Orders of a batch of messages, judged in memory in the messages' order
//! and written set-wise: one statement per table, whatever the batch's size.
//!
//! [`OrderBook::load`] reads (and locks, in id order) the orders the batch
//! names by placer number, and looks up the order numbers its results refer
//! to; [`OrderBook::apply`] decides each order change as
//! [`apply_order`] would have one by one (a second change
//! of one order in the batch sees the first); [`OrderBook::write`] writes the
//! new orders, the changed ones, their items and status history. One order
//! applied alone is a book of one: there is one implementation.

use std::collections::HashMap;

use chrono::NaiveDate;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::Result;
use crate::model::Identifier;
use crate::records::{ItemData, OrderApplied, OrderData, OrderRejected, TERMINAL_ORDER_STATUSES};

type Number = (String, String);

fn number(id: &Identifier) -> Number {
    (id.system.clone(), id.value.clone())
}

/// An order's columns as the batch leaves them. For an order that existed
/// before the batch, the optional columns are the batch's patch: `None`
/// keeps what the row holds (`COALESCE`).
#[derive(Debug, Clone)]
struct OrderRow {
    id: Uuid,
    placer: Identifier,
    filler: Option<Identifier>,
    patient_id: Uuid,
    orderer_id: Option<Uuid>,
    clinic_id: Option<Uuid>,
    status: String,
    priority: &'static str,
    due_date: Option<NaiveDate>,
    device_spec: Option<serde_json::Value>,
    note: Option<String>,
    source_message_id: Option<Uuid>,
    version: i32,
    /// Changes the batch made (an existing row's version grows by as many).
    changes: i32,
    /// Created by this batch (inserted), else updated.
    new: bool,
    /// The items the batch's last change with items listed.
    items: Option<Vec<ItemData>>,
}

/// One row of `order_status_history`.
#[derive(Debug, Clone)]
struct StatusChange {
    order_id: Uuid,
    from_status: Option<String>,
    to_status: String,
    reason: String,
    source_message_id: Option<Uuid>,
}

/// The batch's orders, between what was read and what is written.
#[derive(Debug, Default)]
pub struct OrderBook {
    /// By placer number: the rows read, and the orders the batch created.
    rows: HashMap<Number, OrderRow>,
    /// Placer numbers in the order the batch first touched them.
    touched: Vec<Number>,
    /// Order numbers (placer or filler) looked up for results, as the database held them.
    found: HashMap<Number, Uuid>,
    /// Numbers of the orders the batch created or gave a filler number.
    numbered: HashMap<Number, Uuid>,
    history: Vec<StatusChange>,
}

impl OrderBook {
    /// Locks and reads the orders placed under `placers` (in id order, so
    /// two batches never wait on each other in a circle), and looks up the
    /// orders `numbers` (placer or filler numbers) name.
    pub async fn load(conn: &mut PgConnection, placers: &[&Identifier], numbers: &[&Identifier]) -> Result<Self> {
        let mut book = OrderBook::default();
        if !placers.is_empty() {
            type Row = (Uuid, String, String, String, i32);
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT o.id, o.placer_system, o.placer_number, o.status, o.version FROM service_order o
                   JOIN unnest($1::text[], $2::text[]) AS p(system, value)
                     ON o.placer_system = p.system AND o.placer_number = p.value
                  ORDER BY o.id FOR UPDATE OF o",
            )
            .bind(placers.iter().map(|p| p.system.as_str()).collect::<Vec<_>>())
            .bind(placers.iter().map(|p| p.value.as_str()).collect::<Vec<_>>())
            .fetch_all(&mut *conn)
            .await?;
            for (id, system, value, status, version) in rows {
                let placer = Identifier {
                    system,
                    value,
                    type_code: None,
                };
                book.rows.insert(
                    number(&placer),
                    OrderRow {
                        id,
                        placer,
                        filler: None,
                        patient_id: Uuid::nil(),
                        orderer_id: None,
                        clinic_id: None,
                        status,
                        priority: "routine",
                        due_date: None,
                        device_spec: None,
                        note: None,
                        source_message_id: None,
                        version,
                        changes: 0,
                        new: false,
                        items: None,
                    },
                );
            }
        }
        if !numbers.is_empty() {
            let rows: Vec<(String, String, Uuid)> = sqlx::query_as(
                "SELECT n.system, n.value, o.id FROM unnest($1::text[], $2::text[]) AS n(system, value)
                  CROSS JOIN LATERAL (
                        SELECT id FROM service_order
                         WHERE (placer_system = n.system AND placer_number = n.value)
                            OR (filler_system = n.system AND filler_number = n.value)
                         LIMIT 1) o",
            )
            .bind(numbers.iter().map(|n| n.system.as_str()).collect::<Vec<_>>())
            .bind(numbers.iter().map(|n| n.value.as_str()).collect::<Vec<_>>())
            .fetch_all(&mut *conn)
            .await?;
            book.found = rows.into_iter().map(|(s, v, id)| ((s, v), id)).collect();
        }
        Ok(book)
    }

    /// The order a placer or filler number names now: one the batch created
    /// or numbered so far, else one the database held (`load`'s `numbers`).
    pub fn find(&self, n: &Identifier) -> Option<Uuid> {
        let key = number(n);
        self.numbered.get(&key).or_else(|| self.found.get(&key)).copied()
    }

    /// Decides one order change in memory, as [`apply_order`] would
    /// have applied it after the batch's earlier ones. `new_id`: the id a new
    /// order takes (a FHIR ServiceRequest's), else a fresh one. The placer
    /// number must have been given to [`load`](Self::load).
    pub fn apply(
        &mut self,
        patient_id: Uuid,
        orderer_id: Option<Uuid>,
        clinic_id: Option<Uuid>,
        o: &OrderData,
        source_message_id: Option<Uuid>,
        new_id: Option<Uuid>,
    ) -> std::result::Result<OrderApplied, OrderRejected> {
        let key = number(&o.placer);
        let spec = (!o.observations.is_empty()).then(|| serde_json::json!({ "observations": o.observations }));
        let (row, created, from_status) = match self.rows.get_mut(&key) {
            None => {
                if o.control != "NW" && o.control != "XO" && o.control != "SN" {
                    return Err(OrderRejected::Unknown {
                        system: o.placer.system.clone(),
                        value: o.placer.value.clone(),
                        control: o.control.clone(),
                    });
                }
                let row = OrderRow {
                    id: new_id.unwrap_or_else(Uuid::now_v7),
                    placer: o.placer.clone(),
                    filler: o.filler.clone(),
                    patient_id,
                    orderer_id,
                    clinic_id,
                    status: o.status.unwrap_or("active").to_owned(),
                    priority: o.priority,
                    due_date: o.due_date,
                    device_spec: spec,
                    note: o.note.clone(),
                    source_message_id,
                    version: 1,
                    changes: 1,
                    new: true,
                    items: None,
                };
                self.touched.push(key.clone());
                (self.rows.entry(key).or_insert(row), true, None)
            }
            Some(row) => {
                let next = o.status.unwrap_or(row.status.as_str()).to_owned();
                if next != row.status && TERMINAL_ORDER_STATUSES.contains(&row.status.as_str()) {
                    return Err(OrderRejected::Transition {
                        placer: o.placer.value.clone(),
                        from: row.status.clone(),
                        to: next,
                    });
                }
                if row.changes == 0 && !row.new {
                    self.touched.push(key);
                }
                let from = std::mem::replace(&mut row.status, next);
                row.priority = o.priority;
                // What a change does not say, it leaves as it was.
                row.filler = o.filler.clone().or(row.filler.take());
                row.orderer_id = orderer_id.or(row.orderer_id);
                row.due_date = o.due_date.or(row.due_date);
                row.device_spec = spec.or(row.device_spec.take());
                row.note = o.note.clone().or(row.note.take());
                row.clinic_id = clinic_id.or(row.clinic_id);
                row.source_message_id = source_message_id;
                row.version += 1;
                row.changes += 1;
                (row, false, Some(from))
            }
        };
        if !o.items.is_empty() {
            row.items = Some(o.items.clone());
        }
        let (id, version, status) = (row.id, row.version, row.status.clone());
        self.numbered.insert(number(&row.placer), id);
        if let Some(f) = &o.filler {
            self.numbered.insert(number(f), id);
        }
        if from_status.as_deref() != Some(status.as_str()) {
            self.history.push(StatusChange {
                order_id: id,
                from_status: from_status.clone(),
                to_status: status.clone(),
                reason: format!("order control {}", o.control),
                source_message_id,
            });
        }
        Ok(OrderApplied {
            id,
            created,
            version,
            from_status,
            status,
        })
    }

    /// Writes what [`apply`](Self::apply) decided: the new orders, the
    /// changed ones, the items of those that listed items, the status
    /// history (in the order the changes happened).
    pub async fn write(&self, conn: &mut PgConnection) -> Result<()> {
        let rows: Vec<&OrderRow> = self.touched.iter().filter_map(|k| self.rows.get(k)).collect();
        let (mut new, mut changed): (Vec<&OrderRow>, Vec<&OrderRow>) = rows.iter().partition(|r| r.new);
        new.sort_by_key(|r| r.id);
        changed.sort_by_key(|r| r.id);
        if !new.is_empty() {
            sqlx::query(
                "INSERT INTO service_order (id, placer_system, placer_number, filler_system, filler_number,
                                            patient_id, orderer_id, status, priority, due_date, device_spec,
                                            note, source_message_id, clinic_id, version)
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::uuid[],
                                      $7::uuid[], $8::text[], $9::text[], $10::date[], $11::jsonb[], $12::text[],
                                      $13::uuid[], $14::uuid[], $15::int[])",
            )
            .bind(new.iter().map(|r| r.id).collect::<Vec<_>>())
            .bind(new.iter().map(|r| r.placer.system.as_str()).collect::<Vec<_>>())
            .bind(new.iter().map(|r| r.placer.value.as_str()).collect::<Vec<_>>())
            .bind(
                new.iter()
                    .map(|r| r.filler.as_ref().map(|f| f.system.as_str()))
                    .collect::<Vec<_>>(),
            )
            .bind(
                new.iter()
                    .map(|r| r.filler.as_ref().map(|f| f.value.as_str()))
                    .collect::<Vec<_>>(),
            )
            .bind(new.iter().map(|r| r.patient_id).collect::<Vec<_>>())
            .bind(new.iter().map(|r| r.orderer_id).collect::<Vec<_>>())
            .bind(new.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
            .bind(new.iter().map(|r| r.priority).collect::<Vec<_>>())
            .bind(new.iter().map(|r| r.due_date).collect::<Vec<_>>())
            .bind(new.iter().map(|r| r.device_spec.as_ref()).collect::<Vec<_>>())
            .bind(new.iter().map(|r| r.note.as_deref()).collect::<Vec<_>>())
            .bind(new.iter().map(|r| r.source_message_id).collect::<Vec<_>>())
            .bind(new.iter().map(|r| r.clinic_id).collect::<Vec<_>>())
            .bind(new.iter().map(|r| r.version).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        if !changed.is_empty() {
            sqlx::query(
                "UPDATE service_order o
                    SET status = u.status, priority = u.priority,
                        filler_system = COALESCE(u.filler_system, o.filler_system),
                        filler_number = COALESCE(u.filler_number, o.filler_number),
                        orderer_id = COALESCE(u.orderer_id, o.orderer_id), due_date = COALESCE(u.due_date, o.due_date),
                        device_spec = COALESCE(u.device_spec, o.device_spec), note = COALESCE(u.note, o.note),
                        clinic_id = COALESCE(u.clinic_id, o.clinic_id),
                        source_message_id = u.source_message_id, version = o.version + u.changes, updated_at = now()
                   FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::uuid[], $7::date[],
                               $8::jsonb[], $9::text[], $10::uuid[], $11::uuid[], $12::int[])
                        AS u(id, status, priority, filler_system, filler_number, orderer_id, due_date, device_spec,
                             note, clinic_id, source_message_id, changes)
                  WHERE o.id = u.id",
            )
            .bind(changed.iter().map(|r| r.id).collect::<Vec<_>>())
            .bind(changed.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
            .bind(changed.iter().map(|r| r.priority).collect::<Vec<_>>())
            .bind(
                changed
                    .iter()
                    .map(|r| r.filler.as_ref().map(|f| f.system.as_str()))
                    .collect::<Vec<_>>(),
            )
            .bind(
                changed
                    .iter()
                    .map(|r| r.filler.as_ref().map(|f| f.value.as_str()))
                    .collect::<Vec<_>>(),
            )
            .bind(changed.iter().map(|r| r.orderer_id).collect::<Vec<_>>())
            .bind(changed.iter().map(|r| r.due_date).collect::<Vec<_>>())
            .bind(changed.iter().map(|r| r.device_spec.as_ref()).collect::<Vec<_>>())
            .bind(changed.iter().map(|r| r.note.as_deref()).collect::<Vec<_>>())
            .bind(changed.iter().map(|r| r.clinic_id).collect::<Vec<_>>())
            .bind(changed.iter().map(|r| r.source_message_id).collect::<Vec<_>>())
            .bind(changed.iter().map(|r| r.changes).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        let listed: Vec<&OrderRow> = new
            .iter()
            .chain(&changed)
            .filter(|r| r.items.is_some())
            .copied()
            .collect();
        let replaced: Vec<Uuid> = listed.iter().filter(|r| !r.new).map(|r| r.id).collect();
        if !replaced.is_empty() {
            sqlx::query("DELETE FROM order_item WHERE order_id = ANY($1)")
                .bind(&replaced)
                .execute(&mut *conn)
                .await?;
        }
        let lines: Vec<(Uuid, i32, &ItemData)> = listed
            .iter()
            .flat_map(|r| {
                r.items
                    .iter()
                    .flatten()
                    .enumerate()
                    .map(|(i, item)| (r.id, i as i32 + 1, item))
            })
            .collect();
        if !lines.is_empty() {
            sqlx::query(
                "INSERT INTO order_item (order_id, line_no, code_system, code, display)
                 SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[])",
            )
            .bind(lines.iter().map(|l| l.0).collect::<Vec<_>>())
            .bind(lines.iter().map(|l| l.1).collect::<Vec<_>>())
            .bind(lines.iter().map(|l| l.2.code_system.as_str()).collect::<Vec<_>>())
            .bind(lines.iter().map(|l| l.2.code.as_str()).collect::<Vec<_>>())
            .bind(lines.iter().map(|l| l.2.display.as_deref()).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        let h = &self.history;
        insert_status_history(
            conn,
            &h.iter()
                .map(|x| {
                    (
                        x.order_id,
                        x.from_status.as_deref(),
                        x.to_status.as_str(),
                        x.reason.as_str(),
                        x.source_message_id,
                    )
                })
                .collect::<Vec<_>>(),
        )
        .await?;
        Ok(())
    }
}

/// One `order_status_history` row: order, from, to, reason, source message.
pub type HistoryRow<'a> = (Uuid, Option<&'a str>, &'a str, &'a str, Option<Uuid>);

/// Writes order status changes in one statement, their ids in the order given.
pub async fn insert_status_history(conn: &mut PgConnection, rows: &[HistoryRow<'_>]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    // WITH ORDINALITY keeps the history's ids in the order the changes happened.
    sqlx::query(
        "INSERT INTO order_status_history (order_id, from_status, to_status, reason, source_message_id)
         SELECT order_id, from_status, to_status, reason, source_message_id
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[])
                WITH ORDINALITY AS u(order_id, from_status, to_status, reason, source_message_id, n)
          ORDER BY n",
    )
    .bind(rows.iter().map(|r| r.0).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.1).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.2).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.3).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.4).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Creates or changes the order named by its placer number; a status change
/// is written to `order_status_history`. Returns `Ok(Err(_))` for a change
/// the order's state does not allow, or a change to an unknown order.
pub async fn apply_order(
    conn: &mut PgConnection,
    patient_id: Uuid,
    orderer_id: Option<Uuid>,
    clinic_id: Option<Uuid>,
    o: &OrderData,
    source_message_id: Option<Uuid>,
) -> Result<std::result::Result<OrderApplied, OrderRejected>> {
    apply_order_as(conn, patient_id, orderer_id, clinic_id, o, source_message_id, None).await
}

/// [`apply_order`], a new order taking `new_id` when given (a FHIR
/// ServiceRequest's id, so that the record and the resource share it).
/// An order book of one.
pub async fn apply_order_as(
    conn: &mut PgConnection,
    patient_id: Uuid,
    orderer_id: Option<Uuid>,
    clinic_id: Option<Uuid>,
    o: &OrderData,
    source_message_id: Option<Uuid>,
    new_id: Option<Uuid>,
) -> Result<std::result::Result<OrderApplied, OrderRejected>> {
    let mut book = OrderBook::load(conn, &[&o.placer], &[]).await?;
    let applied = book.apply(patient_id, orderer_id, clinic_id, o, source_message_id, new_id);
    if applied.is_ok() {
        book.write(conn).await?;
    }
    Ok(applied)
}
