//! Content reports for the admins: Synapse's event_reports admin API and `axon report list`.

use super::{Page, contains_pattern, descending};
use crate::store::reports::EventReportFilter;
pub use crate::store::reports::{EventReportRow, ReportRow};
use crate::{AppState, Error, Result, store};

/// The newest `limit` reports of every kind, newest first (for the admin CLI).
pub async fn newest(state: &AppState, limit: i64) -> Result<Vec<ReportRow>> {
    Ok(store::reports::newest(&state.db, limit.max(0)).await?)
}

/// The listing's query (GET /_synapse/admin/v1/event_reports).
#[derive(Debug, Default)]
pub struct ReportQuery {
    pub from: Option<i64>,
    pub limit: Option<i64>,
    /// `b` (newest first, the default) or `f`.
    pub dir: Option<String>,
    pub user_id: Option<String>,
    pub room_id: Option<String>,
    pub event_sender_user_id: Option<String>,
}

/// A page of event reports, the total and the next offset.
pub async fn event_reports(
    state: &AppState,
    q: ReportQuery,
) -> Result<(Vec<EventReportRow>, i64, Option<i64>)> {
    let page = Page::new(q.from, q.limit, 100)?;
    let desc = descending(Some(q.dir.as_deref().unwrap_or("b")))?;
    let filter = EventReportFilter {
        reporter: q.user_id.as_deref().map(contains_pattern),
        room_id: q.room_id.as_deref().map(contains_pattern),
        sender: q.event_sender_user_id,
    };
    let rows =
        store::reports::event_reports(&state.db, &filter, desc, page.from, page.limit).await?;
    let total = store::reports::count_event_reports(&state.db, &filter).await?;
    let next = page.next(rows.len(), total);
    Ok((rows, total, next))
}

pub async fn event_report(state: &AppState, id: i64) -> Result<EventReportRow> {
    store::reports::event_report(&state.db, id)
        .await?
        .ok_or_else(|| Error::not_found("Event report not found"))
}

pub async fn delete_event_report(state: &AppState, id: i64) -> Result<()> {
    if store::reports::delete_event_report(&state.db, id).await? {
        Ok(())
    } else {
        Err(Error::not_found("Event report not found"))
    }
}
