//! The HTTP side of the model client: one streaming `POST /v1/messages`.
//!
//! [`ModelClient`] owns one reqwest client (connection pool, TLS) and the
//! [`ModelConfig`]. It never retries: it classifies each failure as a
//! [`ModelError`] and leaves retrying to the runner, which records every
//! attempt. There is no total request deadline (a long answer streams for
//! minutes); the connect timeout bounds connecting and the idle timeout
//! bounds every wait for bytes, headers included.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;

use super::config::ModelConfig;
use super::error::{ModelError, parse_retry_after};
use super::request::WEB_FETCH_TOOL_TYPE;
use super::stream::{ModelResponse, StreamEvent, error_chain, read_stream};

/// Most bytes read from an error response's body.
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// How long an unused pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The beta a request needs when it offers the `web_fetch_20250910` server tool.
const WEB_FETCH_BETA: &str = "web-fetch-2025-09-10";
/// The beta of fast mode (`speed: "fast"`).
const FAST_MODE_BETA: &str = "fast-mode-2026-02-01";

/// A Messages API client. Cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct ModelClient {
    http: reqwest::Client,
    config: ModelConfig,
}

impl ModelClient {
    /// A client for `config`. Fails only when the TLS stack cannot be set up.
    pub fn new(config: ModelConfig) -> Result<ModelClient, ModelError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .user_agent(concat!("logbook/", env!("CARGO_PKG_VERSION")));
        if is_loopback(&config.base_url) {
            // A local model server (or a test's fake) is never behind the
            // HTTP(S)_PROXY of the environment.
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|error| ModelError::Connect { reason: format!("cannot build the HTTP client: {error}") })?;
        Ok(ModelClient { http, config })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Sends `request` (a Messages API body, e.g. from
    /// [`build_request`](super::build_request); `stream: true` is set if
    /// missing) and reads the streamed answer to its end, calling `on_event`
    /// as it arrives.
    ///
    /// The API key is checked before anything is sent. Betas the request
    /// needs (`web-fetch-2025-09-10` when it offers `web_fetch_20250910`) are
    /// added to the configured ones in `anthropic-beta`.
    pub async fn stream(
        &self,
        request: &Value,
        on_event: &mut (dyn FnMut(StreamEvent) + Send),
    ) -> Result<ModelResponse, ModelError> {
        let headers = self.headers(request)?;
        let body = if request.get("stream") == Some(&Value::Bool(true)) {
            serde_json::to_vec(request)
        } else {
            let mut request = request.clone();
            if let Value::Object(fields) = &mut request {
                fields.insert("stream".to_owned(), Value::Bool(true));
            }
            serde_json::to_vec(&request)
        }
        .map_err(|error| ModelError::InvalidRequest {
            status: 0,
            message: format!("unserialisable request: {error}"),
        })?;

        let send = self.http.post(self.config.messages_url()).headers(headers).body(body).send();
        // Errors name the endpoint without credentials a URL may carry.
        let url = self.config.shown_messages_url();
        // Connecting has its own timeout; after that, headers must come within
        // the idle timeout like any other bytes.
        let wait = self.config.connect_timeout.saturating_add(self.config.idle_timeout);
        let response = match tokio::time::timeout(wait, send).await {
            Err(_elapsed) => return Err(ModelError::broken(format!("no response headers from {url} within {wait:?}"))),
            // reqwest's own text would name the whole URL again.
            Ok(Err(error)) if error.is_connect() => {
                return Err(ModelError::Connect { reason: format!("{url}: {}", error_chain(&error.without_url())) });
            }
            Ok(Err(error)) => return Err(ModelError::broken(format!("{url}: {}", error_chain(&error.without_url())))),
            Ok(Ok(response)) => response,
        };

        let status = response.status();
        let request_id = header(response.headers(), "request-id");
        if !status.is_success() {
            let retry_after = parse_retry_after(
                header(response.headers(), "retry-after-ms").as_deref(),
                header(response.headers(), "retry-after").as_deref(),
            );
            let should_retry = header(response.headers(), "x-should-retry");
            let body = self.read_error_body(response).await;
            let error = ModelError::from_status(status.as_u16(), retry_after, &body)
                .with_should_retry(should_retry.as_deref())
                .with_retry_after(retry_after);
            tracing::debug!(%status, request_id = ?request_id, %error, "model request failed");
            return Err(error);
        }
        let content_type = header(response.headers(), "content-type").unwrap_or_default();
        if !content_type.is_empty() && !content_type.starts_with("text/event-stream") {
            return Err(ModelError::broken(format!(
                "expected an event stream from {url}, got content-type {content_type:?}"
            )));
        }
        let body = response.bytes_stream().map(|chunk| chunk.map_err(reqwest::Error::without_url));
        let mut message = read_stream(body, self.config.idle_timeout, on_event).await?;
        message.request_id = request_id;
        Ok(message)
    }

    /// The request headers; fails with `Authentication` when there is no usable key.
    fn headers(&self, request: &Value) -> Result<HeaderMap, ModelError> {
        let key = self.config.api_key.as_deref().filter(|key| !key.is_empty()).ok_or_else(|| {
            ModelError::Authentication { message: "no API key configured: set ANTHROPIC_API_KEY".to_owned() }
        })?;
        let mut key = HeaderValue::from_str(key).map_err(|_| ModelError::Authentication {
            message: "the API key contains characters not allowed in an HTTP header".to_owned(),
        })?;
        key.set_sensitive(true);
        let version =
            HeaderValue::from_str(&self.config.anthropic_version).map_err(|_| ModelError::InvalidRequest {
                status: 0,
                message: "anthropic_version is not a valid header value".to_owned(),
            })?;

        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", key);
        headers.insert("anthropic-version", version);
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("accept", HeaderValue::from_static("text/event-stream"));
        let mut betas = self.config.betas.clone();
        if offers_tool(request, WEB_FETCH_TOOL_TYPE) && !betas.iter().any(|beta| beta == WEB_FETCH_BETA) {
            betas.push(WEB_FETCH_BETA.to_owned());
        }
        // Fast mode is a research preview behind its beta.
        if request.get("speed").and_then(Value::as_str) == Some(super::request::FAST_SPEED)
            && !betas.iter().any(|beta| beta == FAST_MODE_BETA)
        {
            betas.push(FAST_MODE_BETA.to_owned());
        }
        if !betas.is_empty() {
            let betas = HeaderValue::from_str(&betas.join(",")).map_err(|_| ModelError::InvalidRequest {
                status: 0,
                message: format!("anthropic-beta values are not a valid header: {betas:?}"),
            })?;
            headers.insert("anthropic-beta", betas);
        }
        Ok(headers)
    }

    /// Up to [`MAX_ERROR_BODY_BYTES`] of an error response's body; whatever
    /// arrived when the body fails or stalls.
    async fn read_error_body(&self, response: reqwest::Response) -> Vec<u8> {
        let mut body = Vec::new();
        let mut chunks = response.bytes_stream();
        while body.len() < MAX_ERROR_BODY_BYTES {
            match tokio::time::timeout(self.config.idle_timeout, chunks.next()).await {
                Ok(Some(Ok(chunk))) => {
                    let room = MAX_ERROR_BODY_BYTES - body.len();
                    body.extend_from_slice(chunk.get(..room).unwrap_or(&chunk));
                }
                Ok(Some(Err(_)) | None) | Err(_) => break,
            }
        }
        body
    }
}

/// Whether a base URL points at this machine.
fn is_loopback(base_url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(base_url) else { return false };
    let Some(host) = url.host_str() else { return false };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A header's value as text, if present and visible ASCII.
fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|value| value.to_str().ok()).map(str::to_owned)
}

/// Whether the request's `tools` include one of type `kind`.
fn offers_tool(request: &Value, kind: &str) -> bool {
    request
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|tools| tools.iter().any(|tool| tool.get("type").and_then(Value::as_str) == Some(kind)))
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
