//! events and event_txns.

use std::collections::HashMap;

use sqlx::{PgConnection, PgExecutor};

use serde_json::Value;

/// A built, signed event, ready to be stored (made by service::events).
#[derive(Debug, Clone)]
pub struct BuiltEvent {
    pub event_id: String,
    pub room_id: String,
    pub event_type: String,
    pub state_key: Option<String>,
    pub sender: String,
    pub origin_server_ts: i64,
    pub depth: i64,
    pub pdu: String,
    pub client_json: String,
    pub content: Value,
    pub state_unsigned: Option<String>,
    pub device_id: Option<String>,
    pub txn_id: Option<String>,
    pub relates_to: Option<String>,
    pub rel_type: Option<String>,
    pub contains_url: bool,
}

/// Identifies an idempotent request: one device, one endpoint (`scope`), one transaction ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TxnKey {
    pub user_id: String,
    pub device_id: String,
    pub scope: String,
    pub txn_id: String,
}

pub struct NewEventRow<'a> {
    pub stream_ordering: i64,
    pub event: &'a BuiltEvent,
}

pub async fn insert_events(conn: &mut PgConnection, rows: &[NewEventRow<'_>]) -> sqlx::Result<()> {
    let n = rows.len();
    let (mut stream, mut ids, mut rooms, mut types, mut keys, mut senders) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut ts, mut depths, mut pdus, mut clients, mut unsigned, mut devices, mut txns, mut relates, mut rels, mut urls) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for row in rows {
        let e = row.event;
        stream.push(row.stream_ordering);
        ids.push(e.event_id.clone());
        rooms.push(e.room_id.clone());
        types.push(e.event_type.clone());
        keys.push(e.state_key.clone());
        senders.push(e.sender.clone());
        ts.push(e.origin_server_ts);
        depths.push(e.depth);
        pdus.push(e.pdu.clone());
        clients.push(e.client_json.clone());
        unsigned.push(e.state_unsigned.clone());
        devices.push(e.device_id.clone());
        txns.push(e.txn_id.clone());
        relates.push(e.relates_to.clone());
        rels.push(e.rel_type.clone());
        urls.push(e.contains_url);
    }
    sqlx::query!(
        "INSERT INTO events (stream_ordering, event_id, room_id, event_type, state_key, sender, origin_server_ts,
             depth, pdu, client_json, state_unsigned, device_id, txn_id, relates_to, rel_type, contains_url)
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
             $8::bigint[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[],
             $16::bool[])",
        &stream,
        &ids,
        &rooms,
        &types,
        &keys as &[Option<String>],
        &senders,
        &ts,
        &depths,
        &pdus,
        &clients,
        &unsigned as &[Option<String>],
        &devices as &[Option<String>],
        &txns as &[Option<String>],
        &relates as &[Option<String>],
        &rels as &[Option<String>],
        &urls
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The (room, event) each already-used transaction key produced.
pub async fn find_txns(conn: &mut PgConnection, keys: &[&TxnKey]) -> sqlx::Result<HashMap<TxnKey, (String, String)>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let users: Vec<String> = keys.iter().map(|k| k.user_id.clone()).collect();
    let devices: Vec<String> = keys.iter().map(|k| k.device_id.clone()).collect();
    let scopes: Vec<String> = keys.iter().map(|k| k.scope.clone()).collect();
    let txn_ids: Vec<String> = keys.iter().map(|k| k.txn_id.clone()).collect();
    let rows = sqlx::query!(
        r#"SELECT t.user_id, t.device_id, t.scope, t.txn_id, t.event_id, e.room_id AS "room_id?"
         FROM event_txns t
         JOIN UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) AS k(user_id, device_id, scope, txn_id)
           ON t.user_id = k.user_id AND t.device_id = k.device_id AND t.scope = k.scope AND t.txn_id = k.txn_id
         LEFT JOIN events e ON e.event_id = t.event_id"#,
        &users,
        &devices,
        &scopes,
        &txn_ids
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let key = TxnKey { user_id: r.user_id, device_id: r.device_id, scope: r.scope, txn_id: r.txn_id };
            (key, (r.room_id.unwrap_or_default(), r.event_id))
        })
        .collect())
}

pub async fn insert_txns(conn: &mut PgConnection, rows: &[(TxnKey, String)], now: i64) -> sqlx::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let users: Vec<String> = rows.iter().map(|r| r.0.user_id.clone()).collect();
    let devices: Vec<String> = rows.iter().map(|r| r.0.device_id.clone()).collect();
    let scopes: Vec<String> = rows.iter().map(|r| r.0.scope.clone()).collect();
    let txn_ids: Vec<String> = rows.iter().map(|r| r.0.txn_id.clone()).collect();
    let events: Vec<String> = rows.iter().map(|r| r.1.clone()).collect();
    sqlx::query!(
        "INSERT INTO event_txns (user_id, device_id, scope, txn_id, event_id, created_ts)
         SELECT *, $6::bigint FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])",
        &users,
        &devices,
        &scopes,
        &txn_ids,
        &events,
        now
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn prune_txns(db: impl PgExecutor<'_>, older_than: i64) -> sqlx::Result<u64> {
    Ok(sqlx::query!("DELETE FROM event_txns WHERE created_ts < $1", older_than).execute(db).await?.rows_affected())
}
