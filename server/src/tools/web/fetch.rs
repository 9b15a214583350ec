//! `web_fetch {url}`: one web page, PDF or text document, fetched by the
//! server and returned as readable text or a document block.
//!
//! Only `http` and `https`, no credentials in the URL, the agent's
//! `allowed_domains` / `blocked_domains` and the environment's networking (a
//! `limited` environment's `allowed_hosts`), both refused as
//! `url_not_allowed`, and
//! connections to public addresses only: names through [`CheckedResolver`],
//! IP-address hosts checked here. Redirects are followed by hand, at most
//! [`MAX_REDIRECTS`], each new URL going through every check again. Proxies
//! from the environment are ignored (a proxy would resolve the name itself).
//! The whole fetch has a deadline and the body a size cap. Errors are tool
//! errors whose text starts with the Messages API's web fetch error codes
//! (`invalid_input`, `url_too_long`, `url_not_allowed`, `url_not_accessible`,
//! `unsupported_content_type`, `url_not_in_prior_context`). The URL the model
//! asks for (not the redirects the site answers with) must appear in the
//! parts of the session's log the agent's `url_sources` allow (`sources`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures_util::StreamExt;
use logbook_core::event::{ContentBlock, DocumentSource};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use url::{Host, Url};

use super::domains::{FetchSettings, egress_permits};
use super::extract::{self, BodyKind};
use super::guard::{self, CheckedResolver, HostResolver};
use crate::net::addr::is_public;
use crate::runner::ToolOutcome;

/// Longest URL accepted (the Messages API web fetch tool's limit).
pub const MAX_URL_CHARS: usize = 250;
/// Most redirects followed: enough for http→https→canonical host chains.
pub const MAX_REDIRECTS: usize = 5;
/// Largest body read (the PDF cap of the read tool, so a fetched PDF and a read one agree).
pub const MAX_BODY_BYTES: usize = 20 * 1024 * 1024;
/// The whole fetch, redirects included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// One TCP (and TLS) connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Characters per token when applying `max_content_tokens` (the usual
/// estimate for English text; the cap is approximate by nature).
const CHARS_PER_TOKEN: u64 = 4;
const USER_AGENT: &str = concat!("logbook-web-fetch/", env!("CARGO_PKG_VERSION"));

/// The web_fetch client, shared by every session.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
}

/// Why a fetcher could not be built.
#[derive(Debug, thiserror::Error)]
#[error("building the web_fetch HTTP client failed: {0}")]
pub struct FetcherError(#[from] reqwest::Error);

/// Whether `text` names `url`: some URL written in it is `url` (compared
/// parsed, so spelling differences such as a host's case do not count, and
/// without fragments, which are never fetched). Only whole URLs count: a
/// prefix of one (`http://public.test` inside
/// `http://public.testimonials.example/`) names another host altogether.
fn names_url(text: &str, url: &Url) -> bool {
    let wanted = without_fragment(url);
    written_urls(text).any(|written| {
        // Punctuation closing a sentence or a bracket is not part of the URL
        // (`see https://example.com/a.`), unless the URL really ends with it.
        let trimmed = written.trim_end_matches(['.', ',', ';', ':', '!', '?', ')', ']', '}', '\'', '"']);
        [written, trimmed]
            .iter()
            .any(|candidate| Url::parse(candidate).is_ok_and(|parsed| without_fragment(&parsed) == wanted))
    })
}

/// The `http://` and `https://` URLs written in `text`, each up to the first
/// character that cannot be in one written out (whitespace, quotes, angle
/// brackets). Only those a fetch could name: one longer than
/// [`MAX_URL_CHARS`] (and the punctuation that may close it) is skipped
/// unread, so a text of many `http://` without a break costs time in
/// proportion to its length, not its square.
pub(crate) fn written_urls(text: &str) -> impl Iterator<Item = &str> {
    const WINDOW: usize = 4 * (MAX_URL_CHARS + 16);
    let lower = text.to_ascii_lowercase();
    let mut starts = Vec::new();
    for scheme in ["http://", "https://"] {
        starts.extend(lower.match_indices(scheme).map(|(at, _)| at));
    }
    starts.into_iter().filter_map(move |start| {
        let rest = &text[start..];
        // At most WINDOW bytes are looked at, cut back to a character's start.
        let mut window = rest.len().min(WINDOW);
        while !rest.is_char_boundary(window) {
            window -= 1;
        }
        let ends = |c: char| c.is_whitespace() || matches!(c, '"' | '<' | '>' | '`');
        let end = match rest[..window].find(ends) {
            Some(end) => end,
            None if window == rest.len() => rest.len(),
            None => return None,
        };
        let written = &rest[..end];
        (written.chars().count() <= MAX_URL_CHARS + 16).then_some(written)
    })
}

fn without_fragment(url: &Url) -> Url {
    let mut url = url.clone();
    url.set_fragment(None);
    url
}

impl Fetcher {
    /// A fetcher resolving names with `resolver`.
    pub fn new(resolver: Arc<dyn HostResolver>) -> Result<Fetcher, FetcherError> {
        Fetcher::with_resolver(CheckedResolver::new(resolver))
    }

    /// For tests: checked addresses are rewritten by `rewrite` before the
    /// client connects (see [`guard`]).
    #[cfg(test)]
    pub(crate) fn with_rewrite(resolver: Arc<dyn HostResolver>, rewrite: guard::Rewrite) -> Fetcher {
        match Fetcher::with_resolver(CheckedResolver::with_rewrite(resolver, rewrite)) {
            Ok(fetcher) => fetcher,
            Err(err) => panic!("{err}"),
        }
    }

    fn with_resolver(resolver: CheckedResolver) -> Result<Fetcher, FetcherError> {
        let client = reqwest::Client::builder()
            .dns_resolver(resolver)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(FETCH_TIMEOUT)
            .user_agent(USER_AGENT)
            .build()?;
        Ok(Fetcher { client })
    }

    /// Runs one web_fetch call.
    pub(crate) async fn run(&self, settings: &FetchSettings, input: &Value) -> ToolOutcome {
        let input: Input = match serde_json::from_value(input.clone()) {
            Ok(input) => input,
            Err(err) => return failure(Failure::new(Code::InvalidInput, format!("the input needs a url: {err}"))),
        };
        match tokio::time::timeout(FETCH_TIMEOUT, self.fetch(settings, &input.url)).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(fail)) => failure(fail),
            Err(_) => failure(Failure::new(
                Code::UrlNotAccessible,
                format!("fetching {} took longer than {} s", input.url, FETCH_TIMEOUT.as_secs()),
            )),
        }
    }

    async fn fetch(&self, settings: &FetchSettings, raw_url: &str) -> Result<ToolOutcome, Failure> {
        if raw_url.chars().count() > MAX_URL_CHARS {
            return Err(Failure::new(Code::UrlTooLong, format!("the URL is longer than {MAX_URL_CHARS} characters")));
        }
        let mut url = Url::parse(raw_url.trim())
            .map_err(|err| Failure::new(Code::InvalidInput, format!("{raw_url} is not a valid URL: {err}")))?;
        if let Some(texts) = &settings.allowed_context
            && !texts.iter().any(|text| names_url(text, &url))
        {
            return Err(Failure::new(
                Code::UrlNotInPriorContext,
                format!("{url} appears in no part of the conversation the agent's url_sources allow URLs from"),
            ));
        }
        for n_redirects in 0..=MAX_REDIRECTS {
            check_url(&url, settings)?;
            let response = self.client.get(url.clone()).send().await.map_err(|err| request_failure(&url, &err))?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|value| value.to_str().ok())
                    .ok_or_else(|| {
                        Failure::new(Code::UrlNotAccessible, format!("{url} answered {status} without a Location"))
                    })?;
                let next = url.join(location).map_err(|err| {
                    Failure::new(
                        Code::UrlNotAccessible,
                        format!("{url} redirects to an invalid URL {location:?}: {err}"),
                    )
                })?;
                if n_redirects == MAX_REDIRECTS {
                    break;
                }
                url = next;
                continue;
            }
            if !status.is_success() {
                return Err(Failure::new(Code::UrlNotAccessible, format!("{url} answered HTTP {status}")));
            }
            return read_body(response, &url, settings).await;
        }
        Err(Failure::new(Code::UrlNotAccessible, format!("{raw_url} redirects more than {MAX_REDIRECTS} times")))
    }
}

#[derive(Debug, Deserialize)]
struct Input {
    url: String,
}

/// The Messages API's web fetch error codes used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    InvalidInput,
    UrlTooLong,
    UrlNotAllowed,
    UrlNotAccessible,
    UnsupportedContentType,
    /// The URL is in no part of the context `url_sources` allows.
    UrlNotInPriorContext,
}

impl Code {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Code::InvalidInput => "invalid_input",
            Code::UrlTooLong => "url_too_long",
            Code::UrlNotAllowed => "url_not_allowed",
            Code::UrlNotAccessible => "url_not_accessible",
            Code::UnsupportedContentType => "unsupported_content_type",
            Code::UrlNotInPriorContext => "url_not_in_prior_context",
        }
    }
}

/// A failed fetch: its code and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) code: Code,
    pub(crate) detail: String,
}

impl Failure {
    fn new(code: Code, detail: impl Into<String>) -> Failure {
        Failure { code, detail: detail.into() }
    }
}

fn failure(fail: Failure) -> ToolOutcome {
    ToolOutcome::error(format!("web_fetch error {}: {}", fail.code.as_str(), fail.detail))
}

/// Every check a URL passes before a request to it (see the module docs).
pub(crate) fn check_url(url: &Url, settings: &FetchSettings) -> Result<(), Failure> {
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(Failure::new(
                Code::InvalidInput,
                format!("{url}: only http and https URLs can be fetched, not {other}:"),
            ));
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Failure::new(
            Code::InvalidInput,
            format!("{url}: URLs with a user name or password are not fetched"),
        ));
    }
    let ip = match url.host() {
        None => return Err(Failure::new(Code::InvalidInput, format!("{url} has no host"))),
        Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        // The URL parser turns every numeric IPv4 form into Host::Ipv4; this
        // catches a form it would leave as a name but a resolver would not.
        Some(Host::Domain(domain)) => domain.trim_end_matches('.').parse::<IpAddr>().ok(),
    };
    if !settings.rules.permits(url) {
        return Err(Failure::new(
            Code::UrlNotAllowed,
            format!("{url} is not allowed by the agent's web_fetch domains"),
        ));
    }
    if !egress_permits(&settings.egress, url) {
        return Err(Failure::new(
            Code::UrlNotAllowed,
            format!(
                "{url}: the host is not allowed by this environment's networking policy \
                 (limited networking reaches only its allowed_hosts)"
            ),
        ));
    }
    if let Some(ip) = ip
        && !is_public(ip)
    {
        return Err(Failure::new(
            Code::UrlNotAccessible,
            format!("{url}: {ip} is not a public address; web_fetch only connects to public addresses"),
        ));
    }
    Ok(())
}

fn request_failure(url: &Url, err: &reqwest::Error) -> Failure {
    if let Some(refused) = guard::find_not_public(err) {
        return Failure::new(
            Code::UrlNotAccessible,
            format!("{url}: {refused}; web_fetch only connects to public addresses"),
        );
    }
    let what = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else {
        "the request failed"
    };
    Failure::new(Code::UrlNotAccessible, format!("{url}: {what}: {}", error_chain(err)))
}

/// An error and its sources, as one line.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        let part = err.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = err.source();
    }
    text
}

async fn read_body(response: reqwest::Response, url: &Url, settings: &FetchSettings) -> Result<ToolOutcome, Failure> {
    let content_type =
        response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).map(str::to_owned);
    if response.status() == StatusCode::NO_CONTENT {
        return Ok(text_outcome(url, None, "[the server sent no content]".to_owned()));
    }
    let mut body: Vec<u8> = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|err| request_failure(url, &err))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(Failure::new(
                Code::UrlNotAccessible,
                format!("{url}: the response is larger than {MAX_BODY_BYTES} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    match extract::classify(content_type.as_deref(), &body) {
        BodyKind::Pdf => {
            let data = base64::engine::general_purpose::STANDARD.encode(&body);
            Ok(ToolOutcome {
                content: vec![ContentBlock::Document {
                    source: DocumentSource::Base64 { media_type: "application/pdf".to_owned(), data },
                    title: Some(url.to_string()),
                    context: None,
                }],
                is_error: false,
            })
        }
        BodyKind::Html => {
            let html = String::from_utf8_lossy(&body).into_owned();
            let page_url = url.to_string();
            let page = extract::html_to_text_on_own_thread(html, page_url).await.map_err(|_| {
                Failure::new(Code::UnsupportedContentType, format!("{url}: the HTML could not be parsed"))
            })?;
            Ok(text_outcome(url, page.title, limit_tokens(page.text, settings.max_content_tokens)))
        }
        BodyKind::Text => {
            let text = String::from_utf8_lossy(&body).into_owned();
            Ok(text_outcome(url, None, limit_tokens(text, settings.max_content_tokens)))
        }
        BodyKind::Unsupported => Err(Failure::new(
            Code::UnsupportedContentType,
            format!(
                "{url} is {}; web_fetch returns web pages, text and PDFs",
                content_type.as_deref().unwrap_or("binary content")
            ),
        )),
    }
}

/// Cuts `text` to about `max_tokens` tokens, saying so.
fn limit_tokens(text: String, max_tokens: Option<u64>) -> String {
    let Some(max_tokens) = max_tokens else { return text };
    let max_chars = usize::try_from(max_tokens.saturating_mul(CHARS_PER_TOKEN)).unwrap_or(usize::MAX);
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => {
            format!("{}\n\n[content cut to about {max_tokens} tokens (max_content_tokens)]", &text[..cut])
        }
        None => text,
    }
}

fn text_outcome(url: &Url, title: Option<String>, body: String) -> ToolOutcome {
    let mut text = String::new();
    if let Some(title) = title {
        text.push_str(&format!("Title: {title}\n"));
    }
    text.push_str(&format!("URL: {url}\n\n"));
    text.push_str(if body.trim().is_empty() { "[the page has no readable text]" } else { &body });
    ToolOutcome { content: vec![ContentBlock::Text { text }], is_error: false }
}

#[cfg(test)]
mod names_url_tests {
    use super::*;

    fn names(text: &str, url: &str) -> bool {
        names_url(text, &Url::parse(url).expect("a test URL parses"))
    }

    #[test]
    fn only_whole_urls_written_in_the_text_are_named() {
        let text = "Read https://Example.com/a/b?x=1 and (see http://public.testimonials.example/a).";
        assert!(names(text, "https://example.com/a/b?x=1"));
        assert!(names(text, "https://example.com/a/b?x=1#part"));
        assert!(names(text, "http://public.testimonials.example/a"));
        assert!(!names(text, "https://example.com/a"));
        assert!(!names(text, "http://public.test"));
        assert!(!names(text, "http://public.testimonials.example/"));
        assert!(!names("no links here", "https://example.com/"));
        // A URL that really ends with punctuation is named as written.
        assert!(names("at https://example.com/v1.", "https://example.com/v1."));
        assert!(names("\"https://example.com/q\"", "https://example.com/q"));
    }
}
