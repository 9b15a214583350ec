//! `/x/v1/sessions/{id}/slice` and `/x/v1/sessions/{id}/events/{seq}`:
//! reading a session cheaply.
//!
//! A slice is the session's events with their seqs, filtered (`types[]`,
//! `from_seq`/`to_seq`, `last_turns`, `tools[]`, `path`, `include_internal`)
//! and bounded by a token budget (`budget_tokens`, estimated by
//! `logbook_replay::tokens`) and a count (`limit`), in either order. Large
//! payloads come as previews (`logbook_replay::slice`); a cut event names
//! its handle, `events/{seq}`, which returns it whole.

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use logbook_core::{EventType, Record, Seq, SessionId};
use logbook_replay::slice::{Filter, Relevant, preview};
use logbook_store::{MAX_READ_RECORDS, Read, SledStore};
use serde_json::{Value, json};

use crate::api::error::ApiError;
use crate::api::events::session_of;
use crate::api::sessions::parse_session_id;
use crate::api::wire::{Order, Query};
use crate::state::AppState;
use crate::tenancy::Tenant;

/// The token budget of a slice when the request names none.
pub const DEFAULT_SLICE_BUDGET_TOKENS: u64 = 20_000;
/// The largest budget a slice may ask for.
pub const MAX_SLICE_BUDGET_TOKENS: u64 = 1_000_000;
/// Most records one slice request reads (a filter that matches little must
/// not read a whole long session at once): past it the page ends and
/// `next_seq` says where to continue.
pub const MAX_SCAN_RECORDS: usize = 50_000;
/// Most calls before the scanned range one slice request looks up (each
/// lookup may read several records); past it the page ends there.
pub const MAX_CALL_LOOKUPS: usize = 1_000;
/// Events in a slice when `limit` is not given, and at most.
pub const DEFAULT_SLICE_LIMIT: usize = 1_000;
pub const MAX_SLICE_LIMIT: usize = 10_000;

/// A parsed slice request.
#[derive(Debug, Clone)]
pub struct SliceRequest {
    pub filter: Filter,
    pub from: u64,
    /// Inclusive; at most the last seq of the log (a larger `to_seq` is
    /// clamped to it).
    pub to: u64,
    pub order: Order,
    pub budget_tokens: u64,
    pub limit: usize,
}

/// The slice of a session's records.
#[derive(Debug, Clone)]
pub struct Slice {
    pub events: Vec<Value>,
    pub used_tokens: u64,
    /// Where to continue (the next seq in the slice's order), when cut short.
    pub next_seq: Option<u64>,
}

fn parse_request(store: &SledStore, id: SessionId, query: &Query) -> Result<SliceRequest, ApiError> {
    let head = store.head(id)?.next.get();
    let last = head.checked_sub(1);
    let number = |name: &str| -> Result<Option<u64>, ApiError> {
        query
            .one(name)
            .map(|raw| raw.parse::<u64>().map_err(|_| ApiError::invalid(format!("{name}: {raw:?} is not a number"))))
            .transpose()
    };
    let mut types = BTreeSet::new();
    for raw in query.all("types[]").into_iter().chain(query.all("types")) {
        let kind: EventType =
            raw.parse().map_err(|_| ApiError::invalid(format!("types[]: {raw:?} is not an event type")))?;
        types.insert(kind);
    }
    let tools: BTreeSet<String> =
        query.all("tools[]").into_iter().chain(query.all("tool")).map(str::to_owned).collect();
    let path = query.one("path").map(|p| format!("/{}", p.trim_start_matches('/')));
    let filter = Filter { types, include_internal: query.flag("include_internal")?, tools, path };
    let mut from = number("from_seq")?.unwrap_or(0);
    // `to` is clamped to the last seq: the pre-pass window of `build` is
    // counted back from it, and a window past the head holds no record.
    let last = last.unwrap_or(0);
    let to = number("to_seq")?.map_or(last, |to| to.min(last));
    if let Some(turns) = number("last_turns")? {
        from = from.max(turn_start(store, id, turns)?);
    }
    let budget_tokens = number("budget_tokens")?.unwrap_or(DEFAULT_SLICE_BUDGET_TOKENS);
    if budget_tokens == 0 || budget_tokens > MAX_SLICE_BUDGET_TOKENS {
        return Err(ApiError::invalid(format!("budget_tokens: must be between 1 and {MAX_SLICE_BUDGET_TOKENS}")));
    }
    let limit = query.limit(DEFAULT_SLICE_LIMIT, MAX_SLICE_LIMIT)?;
    let order = query.order(Order::Asc)?;
    Ok(SliceRequest { filter, from, to, order, budget_tokens, limit })
}

/// What starts a turn (a turn runs from a user input to the next
/// `session.status_idle`): the inputs that give a session work (as
/// `events::starts_work` names them, and a worker's tool result) and a
/// running status. Records after the last idle count as an open turn only
/// if one of them is among these; a `session.updated` (a title change), an
/// interrupt of an idle session or usage alone does not start one.
const TURN_STARTS: [EventType; 8] = [
    EventType::UserMessage,
    EventType::UserToolConfirmation,
    EventType::UserCustomToolResult,
    EventType::UserToolResult,
    EventType::UserDefineOutcome,
    EventType::SystemMessage,
    EventType::SessionStatusRunning,
    EventType::SessionStatusRescheduled,
];

/// The first seq of the last `turns` turns (a turn ends at a
/// `session.status_idle`): the seq after the idle that ended the turn before.
/// Records after the last idle that start no turn (see [`TURN_STARTS`]) are
/// not a turn of their own: the slice from the start of the last completed
/// turn holds them too.
fn turn_start(store: &SledStore, id: SessionId, turns: u64) -> Result<u64, ApiError> {
    let mut idles = Vec::new();
    let mut next = Seq::ZERO;
    loop {
        let page = store.scan_types(id, &[EventType::SessionStatusIdle], next, MAX_READ_RECORDS)?;
        let Some(last) = page.last() else { break };
        let Some(after) = last.seq().next() else { break };
        idles.extend(page.iter().map(|r| r.seq().get()));
        next = after;
    }
    // A turn still running has no idle yet; it counts as the newest turn.
    // Only input or a running status after the last idle opens one.
    let after_last_idle = idles.last().map_or(Seq::ZERO, |&idle| Seq::new(idle + 1));
    let open_turn = !store.scan_types(id, &TURN_STARTS, after_last_idle, 1)?.is_empty();
    let ended_wanted = if open_turn { turns.saturating_sub(1) } else { turns };
    let n = idles.len() as u64;
    if ended_wanted >= n {
        return Ok(0);
    }
    let before = usize::try_from(n - ended_wanted - 1).unwrap_or(0);
    Ok(idles.get(before).map_or(0, |&idle| idle + 1))
}

/// Every record of `[from, to]` in seq order, page by page.
fn for_each(
    store: &SledStore,
    id: SessionId,
    from: u64,
    to: u64,
    mut visit: impl FnMut(&Record) -> Result<bool, ApiError>,
) -> Result<(), ApiError> {
    let mut next = from;
    while next <= to {
        let page = store.read(id, Seq::new(next), MAX_READ_RECORDS)?;
        if page.is_empty() {
            return Ok(());
        }
        for record in &page {
            if record.seq().get() > to || !visit(record)? {
                return Ok(());
            }
            next = record.seq().get() + 1;
        }
    }
    Ok(())
}

/// Builds a slice (blocking; reads the store).
pub fn build(store: &SledStore, id: SessionId, request: &SliceRequest) -> Result<Slice, ApiError> {
    let mut relevant = Relevant::default();
    // The pre-pass covers the records this request can scan at most; calls
    // outside it whose answers are scanned are looked up one by one.
    let window = MAX_SCAN_RECORDS as u64;
    let learned = match request.order {
        Order::Asc => (request.from, request.to.min(request.from.saturating_add(window))),
        Order::Desc => (request.from.max(request.to.saturating_sub(window)), request.to),
    };
    if request.filter.by_tool_call() {
        for_each(store, id, learned.0, learned.1, |record| {
            let entry = record.entry().map_err(ApiError::internal)?;
            request.filter.learn(&entry, &mut relevant);
            Ok(true)
        })?;
    }
    let mut slice = Slice { events: Vec::new(), used_tokens: 0, next_seq: None };
    // Calls made before the range whose answers fall in it, looked up once.
    let mut looked_up: BTreeSet<logbook_core::EventId> = BTreeSet::new();
    let mut n_lookups = 0usize;
    let mut n_scanned = 0usize;
    let mut take = |record: &Record| -> Result<bool, ApiError> {
        let seq = record.seq().get();
        n_scanned += 1;
        if n_scanned > MAX_SCAN_RECORDS {
            // Bounded work per request: the client continues at next_seq.
            slice.next_seq = Some(seq);
            return Ok(false);
        }
        let entry = record.entry().map_err(ApiError::internal)?;
        if request.filter.by_tool_call()
            && let Some(call) = logbook_replay::slice::call_of(&entry.event)
            && !(learned.0..=learned.1).contains(&call.seq_hint().get())
            && !relevant.tool_uses.contains(&call)
            && !looked_up.contains(&call)
        {
            if n_lookups == MAX_CALL_LOOKUPS {
                // Each lookup may read many records: bounded too. The page
                // has passed at least this many records, so it progresses.
                slice.next_seq = Some(seq);
                return Ok(false);
            }
            n_lookups += 1;
            looked_up.insert(call);
            if let Some((_, call_entry)) = crate::api::events::find_event(store, id, call)? {
                // A slice continued at `next_seq` (or started mid-turn) keeps
                // the answers of relevant calls made before it.
                request.filter.learn(&call_entry, &mut relevant);
            }
        }
        if !request.filter.keeps(&entry, &relevant) {
            return Ok(true);
        }
        let shown = preview(seq, &entry);
        // The first kept event is taken even over the budget: a page that
        // took nothing would name itself as the next, and paging would stall.
        let over = slice.used_tokens + shown.tokens > request.budget_tokens && !slice.events.is_empty();
        if slice.events.len() >= request.limit || over {
            slice.next_seq = Some(seq);
            return Ok(false);
        }
        slice.used_tokens += shown.tokens;
        slice.events.push(shown.json);
        Ok(true)
    };
    match request.order {
        Order::Asc => for_each(store, id, request.from, request.to, &mut take)?,
        Order::Desc => {
            let mut before = request.to.saturating_add(1);
            'pages: while before > request.from {
                let page = store.read_before(id, Seq::new(before), MAX_READ_RECORDS)?;
                if page.is_empty() {
                    break;
                }
                for record in page.iter().rev() {
                    if record.seq().get() < request.from || !take(record)? {
                        break 'pages;
                    }
                    before = record.seq().get();
                }
            }
        }
    }
    Ok(slice)
}

/// `GET /x/v1/sessions/{id}/slice`.
pub async fn slice(
    State(app): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(raw): Path<String>,
    query: Query,
) -> Result<Json<Value>, ApiError> {
    let id = parse_session_id(&raw)?;
    let (request, slice) = app
        .blocking(move |store| {
            session_of(store, &tenant, id)?;
            let request = parse_request(store, id, &query)?;
            let slice = build(store, id, &request)?;
            Ok((request, slice))
        })
        .await?;
    Ok(Json(json!({
        "type": "session_slice",
        "session_id": id,
        "from_seq": request.from,
        "to_seq": request.to,
        "order": request.order.as_str(),
        "budget_tokens": request.budget_tokens,
        "used_tokens": slice.used_tokens,
        "truncated": slice.next_seq.is_some(),
        "next_seq": slice.next_seq,
        "data": slice.events,
    })))
}

/// `GET /x/v1/sessions/{id}/events/{seq}`: one event whole, internal ones too.
pub async fn event(
    State(app): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path((raw, seq)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_session_id(&raw)?;
    let seq: u64 = seq.parse().map_err(|_| ApiError::invalid(format!("{seq:?} is not a seq")))?;
    let entry = app
        .blocking(move |store| {
            session_of(store, &tenant, id)?;
            let record = store
                .read(id, Seq::new(seq), 1)?
                .into_iter()
                .next()
                .filter(|r| r.seq().get() == seq)
                .ok_or_else(|| ApiError::not_found(format!("the session has no event at seq {seq}")))?;
            record.entry().map_err(ApiError::internal)
        })
        .await?;
    let mut value = serde_json::to_value(&entry).map_err(ApiError::internal)?;
    if let Value::Object(map) = &mut value {
        map.insert("seq".to_owned(), json!(seq));
    }
    Ok(Json(value))
}
