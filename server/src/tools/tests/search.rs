//! web_search through the SearXNG provider, against a fake endpoint on
//! loopback: results become search_result blocks, the agent's domain rules
//! drop results, and a missing or broken provider is a clear tool error.

use std::sync::Arc;

use logbook_core::event::{ContentBlock, SearchResultCitations, SearchResultContent};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use super::http::{Reply, TestServer};
use super::{Fixture, text_of};
use crate::tools::ToolServices;
use crate::tools::web::{SearchProvider, SearxngProvider, SystemResolver};

fn searxng(target: &str) -> Reply {
    if !target.starts_with("/search?") || !target.contains("format=json") {
        return Reply::new(400, "text/plain", "bad request");
    }
    let query: String = form_urlencoded::parse(target.split_once('?').unwrap().1.as_bytes())
        .find(|(key, _)| key == "q")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    if query == "fail" {
        return Reply::new(500, "text/plain", "boom");
    }
    let results = json!({"results": [
        {"url": "https://docs.example.com/tides", "title": "Tides", "content": format!("About {query}")},
        {"url": "https://blog.spam.net/x", "title": "Spam", "content": "buy"},
        {"url": "ftp://files.example.com/x", "title": "FTP", "content": "not http"},
        {"url": "https://example.com/blog/post", "title": "", "content": ""}
    ]});
    Reply::new(200, "application/json", results.to_string())
}

fn fixture(server: &TestServer, tools: Value) -> Fixture {
    let provider = SearxngProvider::new(&format!("http://{}/search", server.addr)).unwrap();
    let search: Arc<dyn SearchProvider> = Arc::new(provider);
    let services = ToolServices::new(Arc::new(SystemResolver), Some(search)).unwrap();
    Fixture::with_services(tools, services)
}

fn result(url: &str, title: &str, text: &str) -> ContentBlock {
    ContentBlock::SearchResult {
        source: url.to_owned(),
        title: title.to_owned(),
        content: vec![SearchResultContent::Text { text: text.to_owned() }],
        citations: SearchResultCitations { enabled: true },
    }
}

#[tokio::test]
async fn results_become_search_result_blocks() {
    let server = TestServer::start("127.0.0.1:0", Arc::new(searxng)).await;
    let fx = fixture(&server, json!([{"type": "agent_toolset_20260401"}]));
    let outcome = fx.call("web_search", json!({"query": "moon tides"})).await;
    assert!(!outcome.is_error, "{}", text_of(&outcome));
    assert_eq!(
        outcome.content,
        vec![
            result("https://docs.example.com/tides", "Tides", "About moon tides"),
            result("https://blog.spam.net/x", "Spam", "buy"),
            result("https://example.com/blog/post", "https://example.com/blog/post", "https://example.com/blog/post"),
        ]
    );
    assert!(fx.err("web_search", json!({"query": "fail"})).await.contains("answered HTTP 500"));
    assert!(fx.err("web_search", json!({"query": "  "})).await.contains("the query is empty"));
    assert!(fx.err("web_search", json!({"q": "x"})).await.contains("invalid input"));
}

#[tokio::test]
async fn domain_rules_drop_results() {
    let server = TestServer::start("127.0.0.1:0", Arc::new(searxng)).await;
    let allow = fixture(
        &server,
        json!([{
            "type": "agent_toolset_20260401",
            "configs": [{"name": "web_search", "allowed_domains": ["example.com/blog"]}]
        }]),
    );
    let outcome = allow.call("web_search", json!({"query": "x"})).await;
    assert_eq!(outcome.content.len(), 1, "{:?}", outcome.content);
    assert!(
        matches!(&outcome.content[0], ContentBlock::SearchResult { source, .. } if source == "https://example.com/blog/post")
    );
    let block = fixture(
        &server,
        json!([{
            "type": "agent_toolset_20260401",
            "configs": [{"name": "web_search", "blocked_domains": ["spam.net", "example.com"]}]
        }]),
    );
    assert_eq!(block.ok("web_search", json!({"query": "x"})).await, "no results for \"x\"");
}

#[tokio::test]
async fn without_a_provider_the_tool_says_so() {
    let fx = Fixture::new();
    let text = fx.err("web_search", json!({"query": "anything"})).await;
    assert!(
        text.starts_with("web_search: no search provider is configured") && text.contains("LOGBOOK_SEARCH_URL"),
        "{text}"
    );
    assert!(ToolServices::from_search_url(Some("not a url")).is_err());
    assert!(ToolServices::from_search_url(Some("file:///x")).is_err());
    assert!(ToolServices::from_search_url(Some("  ")).is_ok());
}

/// Goal: results on hosts a `limited` environment does not allow are dropped
/// (the hosted tool omits them). Method: the environment allows only
/// `*.example.com`.
#[tokio::test]
async fn limited_networking_drops_results() {
    use crate::sandbox::policy::{EgressPolicy, HostRule};
    let server = TestServer::start("127.0.0.1:0", Arc::new(searxng)).await;
    let mut fx = fixture(&server, json!([{"type": "agent_toolset_20260401"}]));
    fx.egress = EgressPolicy::Hosts(vec![HostRule::parse("*.example.com")]);
    let outcome = fx.call("web_search", json!({"query": "x"})).await;
    assert_eq!(outcome.content, vec![result("https://docs.example.com/tides", "Tides", "About x")]);
}

/// A search endpoint on loopback that answers its one request with `answer`
/// (head and body as raw bytes), then closes, or with `stall` keeps the
/// connection open; and a fixture searching it at `path_and_query`.
async fn raw_endpoint(answer: Vec<u8>, stall: bool, path_and_query: &str) -> (tokio::task::JoinHandle<()>, Fixture) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 4096];
        let _ = stream.read(&mut head).await;
        let _ = stream.write_all(&answer).await;
        if stall {
            // Held open until the test aborts the task.
            std::future::pending::<()>().await;
        }
        let _ = stream.shutdown().await;
    });
    let provider = SearxngProvider::new(&format!("http://{addr}{path_and_query}")).unwrap();
    let search: Arc<dyn SearchProvider> = Arc::new(provider);
    let services = ToolServices::new(Arc::new(SystemResolver), Some(search)).unwrap();
    (server, Fixture::with_services(json!([{"type": "agent_toolset_20260401"}]), services))
}

/// Defect (review, web): the SearXNG provider reads the whole answer into
/// memory (`response.bytes()`) and only then compares it with
/// `MAX_RESPONSE_BYTES` (4 MiB, "largest provider answer read"): an answer
/// of any size is buffered whole for up to the 20 s search deadline (at
/// loopback speed, gigabytes), and an answer already past the cap that
/// keeps its connection open holds the call until that deadline instead of
/// failing at once. Method: an endpoint that announces 1 GB, and one that
/// announces no length (chunked), each sending 5 MiB and then stalling; the
/// search must fail as too large (read whole, it would fail at the search
/// deadline as a broken answer).
#[tokio::test]
async fn an_oversized_provider_answer_is_cut_off_at_the_cap_while_reading() {
    let body = vec![b' '; 5 * 1024 * 1024];
    let mut announced =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n".to_vec();
    announced.extend_from_slice(&body);
    let mut chunked =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    chunked.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
    chunked.extend_from_slice(&body);
    chunked.extend_from_slice(b"\r\n");
    for answer in [announced, chunked] {
        let (server, fx) = raw_endpoint(answer, true, "/search").await;
        let text = fx.err("web_search", json!({"query": "x"})).await;
        server.abort();
        assert!(text.contains("larger than"), "{text}");
    }
}

/// Defect (review, web): the provider's endpoint is the operator's and may
/// carry a credential (`LOGBOOK_SEARCH_URL=https://search.example/search?key=...`
/// or `https://user:password@...`). A failed request is reported without
/// its URL (`without_url()`), but a failure while reading the answer
/// (`response.bytes()`) is reported with `err.to_string()`, which names the
/// whole request URL: the credential goes into the tool result, to the
/// model and the session's log. Method: the endpoint's query holds a key;
/// it announces a longer body than it sends and closes.
#[tokio::test]
async fn a_broken_provider_answer_does_not_show_the_endpoints_credentials() {
    let answer =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"results\"".to_vec();
    let (server, fx) = raw_endpoint(answer, false, "/search?key=sk-operator-secret").await;
    let text = fx.err("web_search", json!({"query": "x"})).await;
    server.abort();
    assert!(text.starts_with("web_search: "), "{text}");
    assert!(!text.contains("sk-operator-secret"), "the endpoint's key reached the tool result: {text}");
}
