//! The HTTP app: routes, and the API's error envelope for unknown routes.
//!
//! `app(state)` builds the router so tests can drive it without a socket. Every
//! response carries a `request-id` header, and every error uses the envelope
//! `{"type":"error","error":{"type","message"},"request_id"}` the official SDKs
//! parse.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use logbook_store::SledStore;
use serde_json::json;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: SledStore,
    request_counter: Arc<AtomicU64>,
}

impl AppState {
    pub fn new(store: SledStore) -> AppState {
        AppState { store, request_counter: Arc::new(AtomicU64::new(0)) }
    }
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), request_id))
        .with_state(state)
}

async fn health(State(state): State<AppState>) -> Response {
    let quarantined = state.store.quarantined();
    let body = json!({
        "status": if quarantined.is_empty() { "ok" } else { "degraded" },
        "quarantined_sessions": quarantined.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
    });
    Json(body).into_response()
}

async fn not_found(request: Request) -> Response {
    let message = format!("no route for {} {}", request.method(), request.uri().path());
    let body = json!({"type": "error", "error": {"type": "not_found_error", "message": message}});
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// Stamps a `request-id` on every response and into error bodies.
async fn request_id(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let n = state.request_counter.fetch_add(1, Ordering::Relaxed);
    let id = format!("req_{:016x}{:08x}", std::process::id(), n);
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("request-id", value);
    }
    response
}
