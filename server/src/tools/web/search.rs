//! `web_search {query}` when the search does not run at Anthropic: a
//! [`SearchProvider`] configured by the operator, or a clear error.
//!
//! With the Anthropic backend the model never calls this: the request builder
//! offers the `web_search_20250305` server tool, Anthropic searches, and the
//! blocks come back in the model's response. Other backends have no server
//! tools, so the search has to happen here. The one provider today speaks
//! SearXNG's JSON API (`GET <endpoint>?q=...&format=json`), which several
//! self-hosted search services offer. Its endpoint is the operator's choice
//! and usually on the operator's own network, so it is deliberately not put
//! through web_fetch's public-address filter; the model chooses only the query.
//! Results outside the agent's `allowed_domains` (or inside its
//! `blocked_domains`), or on a host a `limited` environment does not allow,
//! are dropped, as the hosted tool does. The query itself goes to the
//! operator's endpoint whatever the environment allows.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use logbook_core::event::{ContentBlock, SearchResultCitations, SearchResultContent};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::domains::{SearchSettings, egress_permits};
use crate::runner::ToolOutcome;

/// Most results returned to the model.
pub const MAX_SEARCH_RESULTS: usize = 10;
/// Longest query accepted: search engines cut far shorter ones.
pub const MAX_QUERY_CHARS: usize = 1_000;
/// The whole search request.
pub const SEARCH_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest provider answer read.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// One search result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHit {
    pub url: String,
    pub title: String,
    pub snippet: String,
}

/// Why a provider returned no results.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("the search provider could not be reached: {0}")]
    Request(String),
    #[error("the search provider answered HTTP {0}")]
    Status(u16),
    #[error("the search provider's answer is not what was expected: {0}")]
    Decode(String),
}

/// A boxed search future.
pub type SearchFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<SearchHit>, SearchError>> + Send + 'a>>;

/// Something that answers web searches.
pub trait SearchProvider: Send + Sync + fmt::Debug {
    fn search<'a>(&'a self, query: &'a str) -> SearchFuture<'a>;
}

/// A SearXNG-compatible JSON search endpoint.
#[derive(Debug, Clone)]
pub struct SearxngProvider {
    endpoint: Url,
    client: reqwest::Client,
}

impl SearxngProvider {
    /// A provider at `endpoint` (e.g. `http://127.0.0.1:8888/search`).
    pub fn new(endpoint: &str) -> Result<SearxngProvider, SearchError> {
        let endpoint = Url::parse(endpoint)
            .map_err(|err| SearchError::Request(format!("the endpoint {endpoint:?} is not a URL: {err}")))?;
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(SearchError::Request(format!("the endpoint {endpoint} must be http or https")));
        }
        let client = reqwest::Client::builder()
            .timeout(SEARCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|err| SearchError::Request(err.to_string()))?;
        Ok(SearxngProvider { endpoint, client })
    }
}

#[derive(Debug, Deserialize)]
struct SearxngAnswer {
    #[serde(default)]
    results: Vec<SearxngResult>,
}

#[derive(Debug, Deserialize)]
struct SearxngResult {
    url: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    content: String,
}

impl SearchProvider for SearxngProvider {
    fn search<'a>(&'a self, query: &'a str) -> SearchFuture<'a> {
        Box::pin(async move {
            let mut url = self.endpoint.clone();
            url.query_pairs_mut().append_pair("q", query).append_pair("format", "json");
            let response =
                self.client.get(url).send().await.map_err(|err| SearchError::Request(err.without_url().to_string()))?;
            if !response.status().is_success() {
                return Err(SearchError::Status(response.status().as_u16()));
            }
            // Read up to the cap and no further; errors lose the endpoint's
            // URL (and any key in it), as the send's do.
            let too_large = || SearchError::Decode(format!("the answer is larger than {MAX_RESPONSE_BYTES} bytes"));
            if response.content_length().is_some_and(|length| length > MAX_RESPONSE_BYTES as u64) {
                return Err(too_large());
            }
            let mut body: Vec<u8> = Vec::new();
            let mut stream = response.bytes_stream();
            while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
                let chunk = chunk.map_err(|err| SearchError::Request(err.without_url().to_string()))?;
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            let answer: SearxngAnswer =
                serde_json::from_slice(&body).map_err(|err| SearchError::Decode(err.to_string()))?;
            Ok(answer
                .results
                .into_iter()
                .map(|result| SearchHit { url: result.url, title: result.title, snippet: result.content })
                .collect())
        })
    }
}

#[derive(Debug, Deserialize)]
struct Input {
    query: String,
}

/// Runs one web_search call.
pub(crate) async fn run(
    provider: Option<&dyn SearchProvider>,
    settings: &SearchSettings,
    input: &Value,
) -> ToolOutcome {
    let Some(provider) = provider else {
        return ToolOutcome::error(
            "web_search: no search provider is configured on this server. The operator can set LOGBOOK_SEARCH_URL \
             to a SearXNG-compatible JSON endpoint; with the Anthropic model backend the search runs at Anthropic \
             instead",
        );
    };
    let input: Input = match serde_json::from_value(input.clone()) {
        Ok(input) => input,
        Err(err) => return ToolOutcome::error(format!("web_search: invalid input: {err}")),
    };
    let query = input.query.trim();
    if query.is_empty() {
        return ToolOutcome::error("web_search: the query is empty");
    }
    if query.chars().count() > MAX_QUERY_CHARS {
        return ToolOutcome::error(format!("web_search: the query is longer than {MAX_QUERY_CHARS} characters"));
    }
    let hits = match tokio::time::timeout(SEARCH_TIMEOUT, provider.search(query)).await {
        Ok(Ok(hits)) => hits,
        Ok(Err(err)) => return ToolOutcome::error(format!("web_search: {err}")),
        Err(_) => {
            return ToolOutcome::error(format!(
                "web_search: the search took longer than {} s",
                SEARCH_TIMEOUT.as_secs()
            ));
        }
    };
    let blocks: Vec<ContentBlock> = hits
        .into_iter()
        .filter_map(|hit| {
            let url = Url::parse(&hit.url).ok().filter(|url| matches!(url.scheme(), "http" | "https"))?;
            (settings.rules.permits(&url) && egress_permits(&settings.egress, &url)).then(|| result_block(hit, url))
        })
        .take(MAX_SEARCH_RESULTS)
        .collect();
    if blocks.is_empty() {
        return ToolOutcome { content: vec![ContentBlock::text(format!("no results for {query:?}"))], is_error: false };
    }
    ToolOutcome { content: blocks, is_error: false }
}

fn result_block(hit: SearchHit, url: Url) -> ContentBlock {
    let title = if hit.title.trim().is_empty() { url.to_string() } else { hit.title.trim().to_owned() };
    let snippet = if hit.snippet.trim().is_empty() { title.clone() } else { hit.snippet.trim().to_owned() };
    ContentBlock::SearchResult {
        source: url.to_string(),
        title,
        content: vec![SearchResultContent::Text { text: snippet }],
        citations: SearchResultCitations { enabled: true },
    }
}
