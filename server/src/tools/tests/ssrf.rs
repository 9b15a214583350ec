//! The SSRF corpus for web_fetch (G-T1), and web_fetch's behaviour.
//!
//! Method: trap servers listen on 127.0.0.1 and [::1] and count every
//! connection. Each URL form of the corpus points at a trap, directly
//! (decimal, octal, hex, short, IPv6, IPv4-mapped, `[::]`, `0.0.0.0`,
//! trailing dots, userinfo tricks, percent-encoding, IDN, other schemes),
//! through a name the test's resolver maps to an internal address (loopback,
//! private, link-local/metadata, ULA, CGNAT, NAT64, 6to4, multicast, mixed
//! public and private answers, a rebinding name whose second answer is
//! loopback), or through redirects (301/302/303/307/308, relative and
//! scheme-relative Locations, chains) served by the "public" server. Every
//! form must fail for the right reason (the address filter, the scheme or
//! userinfo rule; never a connection error, which would mean a connection
//! was tried), and the traps must count zero connections at the end.
//!
//! The "public" server is a loopback listener too: the test resolver names it
//! `public.test` = 203.0.113.10 (a documentation address, which the filter
//! allows), and the fetcher's test-only rewrite sends that checked address to
//! the listener (see `web::guard`). The filter itself is the production one.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use logbook_core::event::{ContentBlock, DocumentSource};
use serde_json::{Value, json};

use super::http::{Reply, TestServer};
use super::{Fixture, services_with, text_of};
use crate::tools::web::{HostResolver, LookupFuture};

const PUBLIC_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));

/// The test's DNS: fixed answers, and one name that rebinds.
#[derive(Debug, Default)]
struct FakeDns {
    rebind_lookups: AtomicUsize,
}

impl HostResolver for FakeDns {
    fn lookup(&self, host: String) -> LookupFuture<'static> {
        let ips =
            |list: &[&str]| -> std::io::Result<Vec<IpAddr>> { Ok(list.iter().map(|ip| ip.parse().unwrap()).collect()) };
        let answer = match host.trim_end_matches('.').to_ascii_lowercase().as_str() {
            "public.test" | "www.public.test" | "other.test" => ips(&["203.0.113.10"]),
            "loopback.test" | "localhost" => ips(&["127.0.0.1"]),
            "v6loop.test" => ips(&["::1"]),
            "mapped.test" => ips(&["::ffff:127.0.0.1"]),
            "mixed.test" => ips(&["203.0.113.10", "127.0.0.1"]),
            "private.test" => ips(&["10.0.0.1"]),
            "meta.test" => ips(&["169.254.169.254"]),
            "zero.test" => ips(&["0.0.0.0"]),
            "ula.test" => ips(&["fd00::1"]),
            "cgnat.test" => ips(&["100.64.0.1"]),
            "nat64.test" => ips(&["64:ff9b::7f00:1"]),
            "sixtofour.test" => ips(&["2002:7f00:1::1"]),
            "linklocal6.test" => ips(&["fe80::1"]),
            "multicast.test" => ips(&["224.0.0.1"]),
            "empty.test" => ips(&[]),
            "rebind.test" => {
                if self.rebind_lookups.fetch_add(1, Ordering::SeqCst) == 0 {
                    ips(&["203.0.113.10"])
                } else {
                    ips(&["127.0.0.1"])
                }
            }
            _ => Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no such name")),
        };
        Box::pin(async move { answer })
    }
}

/// The public server's pages.
fn public_site(path_and_query: &str) -> Reply {
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let params: BTreeMap<String, String> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    match path {
        "/page" => Reply::new(
            200,
            "text/html; charset=utf-8",
            format!(
                "<html><head><title>Tide tables</title><script>var tracker = 1;</script></head><body>\
                 <nav>Home | News | About</nav><article><h1>Tide tables</h1>{}</article>\
                 <footer>Copyright</footer></body></html>",
                "<p>High tide comes twice a day, pulled by the moon across the sea.</p>".repeat(15)
            ),
        ),
        "/text" => Reply::new(200, "text/plain", "plain text body\n"),
        "/words" => Reply::new(200, "text/plain", "word ".repeat(1_000)),
        "/doc.pdf" => Reply::new(200, "application/pdf", b"%PDF-1.4\n%%EOF\n".to_vec()),
        "/image.png" => Reply::new(200, "image/png", b"\x89PNG\r\n\x1a\n".to_vec()),
        "/huge" => Reply::new(200, "text/plain", vec![b'a'; 21 * 1024 * 1024]),
        "/loop" => Reply::redirect(302, "/loop"),
        "/redirect" => {
            let code = params.get("code").and_then(|code| code.parse().ok()).unwrap_or(302);
            Reply::redirect(code, params.get("to").map_or("/text", String::as_str))
        }
        _ => Reply::new(404, "text/plain", "not found"),
    }
}

/// The traps, the public server and a fixture whose fetcher uses them.
struct Net {
    trap4: TestServer,
    trap6: TestServer,
    public: TestServer,
    dns: Arc<FakeDns>,
}

impl Net {
    async fn start() -> Net {
        Net {
            trap4: TestServer::trap("127.0.0.1:0").await,
            trap6: TestServer::trap("[::1]:0").await,
            public: TestServer::start("127.0.0.1:0", Arc::new(public_site)).await,
            dns: Arc::new(FakeDns::default()),
        }
    }

    fn fixture(&self, tools: Value) -> Fixture {
        let services = services_with(self.dns.clone(), vec![(PUBLIC_IP, self.public.addr)], None);
        Fixture::with_services(tools, services)
    }

    fn default_fixture(&self) -> Fixture {
        self.fixture(json!([{"type": "agent_toolset_20260401"}]))
    }

    fn trapped(&self) -> usize {
        self.trap4.connections() + self.trap6.connections()
    }
}

fn enc(url: &str) -> String {
    form_urlencoded::byte_serialize(url.as_bytes()).collect()
}

/// What a refusal must say.
const NOT_PUBLIC: &str = "not a public address";
const SCHEME: &str = "only http and https";
const USERINFO: &str = "user name or password";

/// The corpus: URL and the reason its refusal must give.
fn corpus(p: u16, p6: u16) -> Vec<(String, &'static str)> {
    let direct: Vec<(String, &'static str)> = [
        (format!("http://127.0.0.1:{p}/"), NOT_PUBLIC),
        (format!("http://127.0.0.1:{p}"), NOT_PUBLIC),
        (format!("https://127.0.0.1:{p}/"), NOT_PUBLIC),
        (format!("HTTP://127.0.0.1:{p}/x"), NOT_PUBLIC),
        (format!("http://127.1:{p}/"), NOT_PUBLIC),
        (format!("http://127.0.1:{p}/"), NOT_PUBLIC),
        (format!("http://2130706433:{p}/"), NOT_PUBLIC),
        (format!("http://0x7f000001:{p}/"), NOT_PUBLIC),
        (format!("http://0x7F.0x0.0x0.0x1:{p}/"), NOT_PUBLIC),
        (format!("http://017700000001:{p}/"), NOT_PUBLIC),
        (format!("http://0177.0.0.01:{p}/"), NOT_PUBLIC),
        (format!("http://0177.1:{p}/"), NOT_PUBLIC),
        (format!("http://127.000.000.001:{p}/"), NOT_PUBLIC),
        (format!("http://127.0.0.1.:{p}/"), NOT_PUBLIC),
        (format!("http://127.255.255.254:{p}/"), NOT_PUBLIC),
        (format!("http://[::1]:{p6}/"), NOT_PUBLIC),
        (format!("http://[0:0:0:0:0:0:0:1]:{p6}/"), NOT_PUBLIC),
        (format!("http://[::ffff:127.0.0.1]:{p}/"), NOT_PUBLIC),
        (format!("http://[::ffff:7f00:1]:{p}/"), NOT_PUBLIC),
        (format!("http://[0:0:0:0:0:ffff:127.0.0.1]:{p}/"), NOT_PUBLIC),
        (format!("http://[::127.0.0.1]:{p}/"), NOT_PUBLIC),
        (format!("http://[::ffff:0:127.0.0.1]:{p}/"), NOT_PUBLIC),
        (format!("http://[64:ff9b::127.0.0.1]:{p}/"), NOT_PUBLIC),
        (format!("http://[2002:7f00:1::]:{p}/"), NOT_PUBLIC),
        (format!("http://[::]:{p}/"), NOT_PUBLIC),
        (format!("http://[::]:{p6}/"), NOT_PUBLIC),
        (format!("http://0.0.0.0:{p}/"), NOT_PUBLIC),
        (format!("http://0:{p}/"), NOT_PUBLIC),
        (format!("http://0x0:{p}/"), NOT_PUBLIC),
        (format!("http://0.1.2.3:{p}/"), NOT_PUBLIC),
        ("http://169.254.169.254/latest/meta-data/".to_owned(), NOT_PUBLIC),
        ("http://[fd00:ec2::254]/latest/meta-data/".to_owned(), NOT_PUBLIC),
        ("http://[::ffff:169.254.169.254]/".to_owned(), NOT_PUBLIC),
        ("http://2852039166/".to_owned(), NOT_PUBLIC),
        (format!("http://10.0.0.1:{p}/"), NOT_PUBLIC),
        (format!("http://192.168.1.1:{p}/"), NOT_PUBLIC),
        (format!("http://172.16.0.1:{p}/"), NOT_PUBLIC),
        (format!("http://100.64.0.1:{p}/"), NOT_PUBLIC),
        (format!("http://198.18.0.1:{p}/"), NOT_PUBLIC),
        (format!("http://[fe80::1]:{p}/"), NOT_PUBLIC),
        (format!("http://[fc00::1]:{p}/"), NOT_PUBLIC),
        (format!("http://224.0.0.1:{p}/"), NOT_PUBLIC),
        (format!("http://255.255.255.255:{p}/"), NOT_PUBLIC),
        (format!("http://240.0.0.1:{p}/"), NOT_PUBLIC),
        (format!("http://%31%32%37.0.0.1:{p}/"), NOT_PUBLIC),
        (format!("http://127.0.0.1:{p}/%2e%2e/"), NOT_PUBLIC),
        (format!("http://\u{ff11}\u{ff12}\u{ff17}.\u{ff10}.\u{ff10}.\u{ff11}:{p}/"), NOT_PUBLIC),
        (format!("http://127\u{3002}0\u{3002}0\u{3002}1:{p}/"), NOT_PUBLIC),
        (format!("http:///127.0.0.1:{p}/"), NOT_PUBLIC),
        (format!("http:\\\\127.0.0.1:{p}\\x"), NOT_PUBLIC),
        (format!("http://127.0.0.1:{p}#@public.test/"), NOT_PUBLIC),
        (format!("http://127.0.0.1:{p}?@public.test/"), NOT_PUBLIC),
        // Names the resolver maps inside.
        (format!("http://localhost:{p}/"), NOT_PUBLIC),
        (format!("http://LOCALHOST:{p}/"), NOT_PUBLIC),
        (format!("http://localhost.:{p}/"), NOT_PUBLIC),
        (format!("http://\u{24db}\u{24de}\u{24d2}\u{24d0}\u{24db}\u{24d7}\u{24de}\u{24e2}\u{24e3}:{p}/"), NOT_PUBLIC),
        (format!("http://loopback.test:{p}/"), NOT_PUBLIC),
        (format!("http://loopback.test.:{p}/"), NOT_PUBLIC),
        (format!("http://LoopBack.TEST:{p}/"), NOT_PUBLIC),
        (format!("http://v6loop.test:{p6}/"), NOT_PUBLIC),
        (format!("http://mapped.test:{p}/"), NOT_PUBLIC),
        (format!("http://mixed.test:{p}/"), NOT_PUBLIC),
        (format!("http://private.test:{p}/"), NOT_PUBLIC),
        ("http://meta.test/latest/meta-data/".to_owned(), NOT_PUBLIC),
        (format!("http://zero.test:{p}/"), NOT_PUBLIC),
        (format!("http://ula.test:{p}/"), NOT_PUBLIC),
        (format!("http://cgnat.test:{p}/"), NOT_PUBLIC),
        (format!("http://nat64.test:{p}/"), NOT_PUBLIC),
        (format!("http://sixtofour.test:{p}/"), NOT_PUBLIC),
        (format!("http://linklocal6.test:{p}/"), NOT_PUBLIC),
        (format!("http://multicast.test:{p}/"), NOT_PUBLIC),
        (format!("http://empty.test:{p}/"), "has no addresses"),
        (format!("http://unknown.test:{p}/"), "no such name"),
        // Credentials in the URL, however they are dressed up.
        (format!("http://user:pass@127.0.0.1:{p}/"), USERINFO),
        (format!("http://public.test@127.0.0.1:{p}/"), USERINFO),
        (format!("http://127.0.0.1:{p}@public.test/"), USERINFO),
        ("http://127.0.0.1%2f@public.test/".to_owned(), USERINFO),
        (format!("http://:@loopback.test:{p}/"), NOT_PUBLIC),
        // Other schemes.
        ("file:///etc/passwd".to_owned(), SCHEME),
        ("file://localhost/etc/passwd".to_owned(), SCHEME),
        (format!("gopher://127.0.0.1:{p}/_GET%20/"), SCHEME),
        (format!("dict://127.0.0.1:{p}/info"), SCHEME),
        (format!("ftp://127.0.0.1:{p}/"), SCHEME),
        (format!("ws://127.0.0.1:{p}/"), SCHEME),
        (format!("wss://127.0.0.1:{p}/"), SCHEME),
        ("data:text/html,<h1>hi</h1>".to_owned(), SCHEME),
        ("javascript:alert(1)".to_owned(), SCHEME),
        (format!("view-source:http://127.0.0.1:{p}/"), SCHEME),
    ]
    .into_iter()
    .collect();

    let mut all = direct;
    // Redirects from the public server into the traps.
    let targets = [
        format!("http://127.0.0.1:{p}/"),
        format!("http://[::1]:{p6}/"),
        format!("http://loopback.test:{p}/"),
        format!("http://2130706433:{p}/"),
        format!("http://localhost:{p}/"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
    ];
    for code in [301, 302, 303, 307, 308] {
        for target in &targets {
            all.push((format!("http://public.test/redirect?code={code}&to={}", enc(target)), NOT_PUBLIC));
        }
        all.push((format!("http://public.test/redirect?code={code}&to={}", enc("file:///etc/passwd")), SCHEME));
    }
    // Scheme-relative and chained redirects.
    all.push((format!("http://public.test/redirect?to={}", enc(&format!("//127.0.0.1:{p}/x"))), NOT_PUBLIC));
    let inner = format!("http://public.test/redirect?code=307&to={}", enc(&format!("http://127.0.0.1:{p}/")));
    let middle = format!("http://www.public.test/redirect?code=301&to={}", enc(&inner));
    all.push((format!("http://public.test/redirect?code=308&to={}", enc(&middle)), NOT_PUBLIC));
    // Rebinding: the first answer is public, the next (same name, for the redirect) is loopback.
    all.push((format!("http://rebind.test/redirect?to={}", enc(&format!("http://rebind.test:{p}/"))), NOT_PUBLIC));
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ssrf_corpus_makes_no_connection() {
    let net = Net::start().await;
    let fx = net.default_fixture();
    // Positive controls: the traps count, and the public server is reachable through the fetcher.
    let control = reqwest::get(format!("http://127.0.0.1:{}/", net.trap4.port())).await.unwrap();
    assert_eq!(control.text().await.unwrap(), "LEAKED");
    assert_eq!(net.trap4.connections(), 1);
    let control = reqwest::get(format!("http://[::1]:{}/", net.trap6.port())).await.unwrap();
    assert_eq!(control.text().await.unwrap(), "LEAKED");
    assert_eq!(net.trapped(), 2);
    assert!(fx.ok("web_fetch", json!({"url": "http://public.test/text"})).await.contains("plain text body"));
    let before = net.trapped();

    let corpus = corpus(net.trap4.port(), net.trap6.port());
    assert!(corpus.len() >= 100, "the corpus has {} URL forms", corpus.len());
    eprintln!("SSRF corpus: {} URL forms", corpus.len());
    for (url, reason) in &corpus {
        let outcome = fx.call("web_fetch", json!({"url": url})).await;
        let text = text_of(&outcome);
        assert!(outcome.is_error, "{url}: fetched: {text}");
        assert!(!text.contains("LEAKED"), "{url}: {text}");
        assert!(text.contains(reason), "{url}: refused for another reason than {reason:?}: {text}");
        assert_eq!(net.trapped(), before, "{url}: a trap was connected to");
    }
    assert!(net.public.connections() > 30, "the redirect forms went through the public server");
    assert!(net.dns.rebind_lookups.load(Ordering::SeqCst) >= 2, "the rebinding name was resolved again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_pages_text_and_pdfs() {
    let net = Net::start().await;
    let fx = net.default_fixture();
    let page = fx.ok("web_fetch", json!({"url": "http://public.test/page"})).await;
    assert!(page.starts_with("Title: Tide tables\nURL: http://public.test/page\n\n"), "{page}");
    assert!(page.contains("High tide comes twice a day"), "{page}");
    assert!(!page.contains("var tracker") && !page.contains("Home | News"), "{page}");
    assert_eq!(
        fx.ok("web_fetch", json!({"url": "http://public.test/text"})).await,
        "URL: http://public.test/text\n\nplain text body\n"
    );
    let outcome = fx.call("web_fetch", json!({"url": "http://public.test/doc.pdf"})).await;
    assert!(!outcome.is_error);
    let [ContentBlock::Document { source: DocumentSource::Base64 { media_type, .. }, title, .. }] =
        outcome.content.as_slice()
    else {
        panic!("not a document: {:?}", outcome.content)
    };
    assert_eq!((media_type.as_str(), title.as_deref()), ("application/pdf", Some("http://public.test/doc.pdf")));
    // A redirect between public URLs is followed.
    let text = fx.ok("web_fetch", json!({"url": "http://public.test/redirect?code=301&to=%2Ftext"})).await;
    assert_eq!(text, "URL: http://public.test/text\n\nplain text body\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_errors_name_their_code() {
    let net = Net::start().await;
    let fx = net.default_fixture();
    let err = |url: &str| {
        let url = url.to_owned();
        let fx = &fx;
        async move { fx.err("web_fetch", json!({"url": url})).await }
    };
    assert!(err("http://public.test/image.png").await.starts_with("web_fetch error unsupported_content_type: "));
    let text = err("http://public.test/missing").await;
    assert!(text.starts_with("web_fetch error url_not_accessible: ") && text.contains("HTTP 404"), "{text}");
    assert!(err("http://public.test/loop").await.contains("redirects more than 5 times"));
    assert!(err("http://public.test/huge").await.contains("larger than 20971520 bytes"));
    assert!(err(&format!("http://public.test/{}", "a".repeat(250))).await.starts_with("web_fetch error url_too_long"));
    assert!(err("not a url").await.starts_with("web_fetch error invalid_input"));
    let text = fx.err("web_fetch", json!({"address": "http://public.test/"})).await;
    assert!(text.starts_with("web_fetch error invalid_input"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_rules_and_the_token_cap_apply() {
    let net = Net::start().await;
    let allow = net.fixture(json!([{
        "type": "agent_toolset_20260401",
        "configs": [{"name": "web_fetch", "allowed_domains": ["public.test"], "max_content_tokens": 5}]
    }]));
    assert!(allow.ok("web_fetch", json!({"url": "http://public.test/text"})).await.contains("plain text body"));
    assert!(allow.ok("web_fetch", json!({"url": "http://www.public.test/text"})).await.contains("plain text body"));
    let text = allow.err("web_fetch", json!({"url": "http://other.test/text"})).await;
    assert!(text.starts_with("web_fetch error url_not_allowed: "), "{text}");
    // A redirect out of the allowlist is refused too.
    let text =
        allow.err("web_fetch", json!({"url": "http://public.test/redirect?to=http%3A%2F%2Fother.test%2Ftext"})).await;
    assert!(text.starts_with("web_fetch error url_not_allowed: "), "{text}");
    // An allowlist of names refuses IP addresses, public or not.
    assert!(allow.err("web_fetch", json!({"url": "http://203.0.113.10/text"})).await.contains("url_not_allowed"));
    let words = allow.ok("web_fetch", json!({"url": "http://public.test/words"})).await;
    assert!(words.ends_with("word word word word \n\n[content cut to about 5 tokens (max_content_tokens)]"), "{words}");

    let block = net.fixture(json!([{
        "type": "agent_toolset_20260401",
        "configs": [{"name": "web_fetch", "blocked_domains": ["other.test"]}]
    }]));
    assert!(block.err("web_fetch", json!({"url": "http://other.test/text"})).await.contains("url_not_allowed"));
    assert!(block.ok("web_fetch", json!({"url": "http://public.test/text"})).await.contains("plain text body"));
    assert_eq!(net.trapped(), 0);
}

/// The checked address list is what the client dials: a resolver answer
/// rewritten to a trap after the check is the only way to reach it, and a
/// private first answer is never dialled even when a public one follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_checked_addresses_are_dialled() {
    let net = Net::start().await;
    let trap: SocketAddr = net.trap4.addr;
    // Control: rewriting the public address to the trap does reach it, so
    // the zero counts above are not an artefact of the rewrite.
    let services = services_with(net.dns.clone(), vec![(PUBLIC_IP, trap)], None);
    let fx = Fixture::with_services(json!([{"type": "agent_toolset_20260401"}]), services);
    assert!(fx.ok("web_fetch", json!({"url": "http://public.test/"})).await.contains("LEAKED"));
    assert_eq!(net.trap4.connections(), 1);
}

/// Goal: a `limited` environment's `allowed_hosts` bound web_fetch as they
/// bound the sandbox: a host outside them is `url_not_allowed`, on the first
/// URL and on every redirect, and an IP address never matches. Method: the
/// fixture's environment allows only `public.test`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_networking_bounds_fetches_and_their_redirects() {
    use crate::sandbox::policy::{EgressPolicy, HostRule};
    let net = Net::start().await;
    let mut fx = net.default_fixture();
    fx.egress = EgressPolicy::Hosts(vec![HostRule::parse("public.test")]);
    assert!(fx.ok("web_fetch", json!({"url": "http://PUBLIC.test./text"})).await.contains("plain text body"));
    let text = fx.err("web_fetch", json!({"url": "http://other.test/text"})).await;
    assert!(text.starts_with("web_fetch error url_not_allowed: ") && text.contains("networking"), "{text}");
    let text =
        fx.err("web_fetch", json!({"url": "http://public.test/redirect?to=http%3A%2F%2Fother.test%2Ftext"})).await;
    assert!(text.starts_with("web_fetch error url_not_allowed: "), "{text}");
    assert!(fx.err("web_fetch", json!({"url": "http://203.0.113.10/text"})).await.contains("url_not_allowed"));
    // `limited` with no hosts allows nothing, as when the environment is unknown.
    fx.egress = crate::tools::egress_of(None);
    assert!(fx.err("web_fetch", json!({"url": "http://public.test/text"})).await.contains("url_not_allowed"));
    assert_eq!(net.trapped(), 0);
}

/// Defect (review): web_fetch's `url_sources` (managed-agents-api.md, the
/// web_fetch extras: which parts of the context a fetched URL may come from)
/// is validated when the agent is saved and then ignored: the web_fetch
/// Logbook runs fetches any URL the model writes (no `url_not_in_prior_context`,
/// §8.3), and the request builder does not pass `url_sources` to the
/// provider's server tool either. A URL built by the model (a prompt
/// injection's exfiltration URL) is fetched though the agent allows URLs
/// only from web_search results. Method: a web_fetch config whose only
/// source is web_search's results; with no search result in the session at
/// all, any URL must be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_sources_bound_what_web_fetch_fetches() {
    let net = Net::start().await;
    let fx = net.fixture(json!([{
        "type": "agent_toolset_20260401",
        "configs": [{"name": "web_fetch", "url_sources": {
            "user_input": "none",
            "client_tool_results": "none",
            "server_tool_results": {"type": "only", "tools": [{"type": "tool_reference", "name": "web_search"}]}
        }}]
    }]));
    let outcome = fx.call("web_fetch", json!({"url": "http://public.test/text?secret=from-the-model"})).await;
    assert!(
        outcome.is_error && text_of(&outcome).contains("url_not_in_prior_context"),
        "a URL from no allowed source was fetched: {}",
        text_of(&outcome)
    );
}

/// Defect (review): the HTML of a fetched page is turned into text by
/// recursive walks (htmd's `walk_node`, dom_smoothie), and `MAX_HTML_BYTES`
/// bounds the bytes, not the nesting. A 25 KB page of 5,000 nested `<div>`s
/// overflows the 2 MiB stack of the blocking-pool thread (debug build; a
/// release build needs a deeper page, well within the 5 MiB cap). A stack
/// overflow is not a panic `spawn_blocking` could catch: it aborts the
/// process, so one page the model fetches (a prompt injection's link) kills
/// the whole server and every session in it. Method: the "public" site
/// serves such a page; web_fetch must answer (an error result is fine).
/// Run it with nextest (one process per test): the defect aborts the
/// process running it (SIGABRT, "stack overflow").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_page_does_not_bring_the_server_down() {
    let deep = Arc::new(|_: &str| Reply::new(200, "text/html", "<div>".repeat(5_000).into_bytes()));
    let site = TestServer::start("127.0.0.1:0", deep).await;
    let services = services_with(Arc::new(FakeDns::default()), vec![(PUBLIC_IP, site.addr)], None);
    let fx = Fixture::with_services(json!([{"type": "agent_toolset_20260401"}]), services);
    let outcome = fx.call("web_fetch", json!({"url": "http://public.test/deep"})).await;
    assert!(!text_of(&outcome).is_empty(), "{outcome:?}");
}

/// Defect (review, tools): `url_sources` admits a URL when it is a
/// substring of an allowed text (`text.contains(url)` in `web::fetch`), so
/// any prefix of a URL in the context passes, including prefixes that name
/// another host: a user who wrote `http://public.testimonials.example/a`
/// lets the agent fetch `http://public.test`, a site that appears nowhere
/// in the conversation. The check exists so that the agent fetches only
/// URLs the allowed sources gave it (`url_not_in_prior_context`), not
/// addresses it builds; cutting a URL short builds one. Method: the only
/// allowed source is the user's input, which names one URL; a prefix of it
/// that is another host must be refused with `url_not_in_prior_context`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_sources_admit_only_urls_the_context_holds_not_their_prefixes() {
    use logbook_core::entry::Entry;
    use logbook_core::event::{Event, UserMessage};
    use logbook_core::{EventId, Timestamp};

    let net = Net::start().await;
    let fx = net.fixture(json!([{
        "type": "agent_toolset_20260401",
        "configs": [{"name": "web_fetch", "url_sources": {
            "user_input": "all", "client_tool_results": "none", "server_tool_results": "none"
        }}]
    }]));
    let said = "Please summarise http://public.testimonials.example/a for me.";
    let log = [Entry {
        id: EventId::from_parts(1, 1),
        event: Event::UserMessage(UserMessage { content: vec![ContentBlock::Text { text: said.to_owned() }] }),
        at: Timestamp::from_unix_micros(0),
    }];
    let call = |url: &str| fx.call_with_log("web_fetch", json!({"url": url}), &log);
    // Control: a URL from no source is refused.
    let control = call("http://public.test/text").await;
    assert!(text_of(&control).contains("url_not_in_prior_context"), "{}", text_of(&control));
    let outcome = call("http://public.test").await;
    assert!(
        outcome.is_error && text_of(&outcome).contains("url_not_in_prior_context"),
        "a host the conversation never named was fetched (a prefix of a URL it did name): {}",
        text_of(&outcome)
    );
    assert_eq!(net.public.connections(), 0, "the fetcher connected to a host no allowed source named");
}

/// Defect (review, web): with `url_sources` set, web_fetch checks that the
/// URL is written in the allowed context by parsing, for every `http://` in
/// every allowed text, everything from there to the next whitespace
/// (`fetch::written_urls`, `names_url`): quadratic in a text's length. A
/// page the agent fetched earlier (a web_fetch result of 100,000 characters,
/// under the spill threshold, so it stays in the log) that is `http://`
/// repeated with no whitespace makes every later web_fetch call of the
/// session parse gigabytes, synchronously on a runtime worker, where the
/// fetch's own 30 s deadline cannot interrupt it. A URL is at most 250
/// characters, so no candidate longer than that can ever match. Method: the
/// log holds such a result (50,000 characters here; 100,000 took 96 s in a
/// debug build); a fetch of a URL it does not name must be refused
/// (`url_not_in_prior_context`), and no candidate URL read from it may run
/// past the longest URL a fetch can name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_sources_check_is_not_quadratic_in_the_contexts_text() {
    use logbook_core::entry::Entry;
    use logbook_core::event::{AgentToolResult, AgentToolUse, Event};
    use logbook_core::{EventId, Json, Timestamp};

    let net = Net::start().await;
    let fx = net.fixture(json!([{
        "type": "agent_toolset_20260401",
        "configs": [{"name": "web_fetch", "url_sources": {
            "user_input": "none", "client_tool_results": "none", "server_tool_results": "all"
        }}]
    }]));
    let hostile = format!("URL: http://public.test/page\n\n{}", "http://".repeat(50_000 / 7));
    let use_id = EventId::from_parts(1, 1);
    let log = [
        Entry {
            id: use_id,
            event: Event::AgentToolUse(AgentToolUse {
                name: "web_fetch".to_owned(),
                input: Json::new(&json!({"url": "http://public.test/page"})),
                evaluated_permission: None,
                evaluation: None,
                session_thread_id: None,
            }),
            at: Timestamp::from_unix_micros(0),
        },
        Entry {
            id: EventId::from_parts(1, 2),
            event: Event::AgentToolResult(AgentToolResult {
                tool_use_id: use_id,
                content: Some(vec![ContentBlock::Text { text: hostile.clone() }]),
                is_error: Some(false),
            }),
            at: Timestamp::from_unix_micros(1),
        },
    ];
    let outcome = fx.call_with_log("web_fetch", json!({"url": "http://public.test/text"}), &log).await;
    assert!(text_of(&outcome).contains("url_not_in_prior_context"), "{}", text_of(&outcome));
    // The work is bounded by what is read per candidate: no candidate runs
    // past the longest URL a fetch may name (each used to run to the text's
    // end, so the whole check was quadratic in it).
    let longest = crate::tools::web::fetch::written_urls(&hostile).map(str::len).max().unwrap_or(0);
    assert!(longest <= crate::tools::web::fetch::MAX_URL_CHARS + 16, "a candidate of {longest} bytes");
}

/// Defect (review, web): `scan` bounds a page's nesting and element count
/// before the parsers see it, but not the text: dom_smoothie's readability
/// pass is quadratic in the number of `&` characters of a text (a
/// paragraph of 20,000 `&` takes 1.2 s in a debug build, of 40,000 4.4 s), so a page of
/// one paragraph, within every bound and far under `MAX_HTML_BYTES` (a
/// 5 MiB one would take hours), keeps the parser thread busy past
/// web_fetch's 30 s deadline; the call fails as `url_not_accessible`, and
/// the thread, which nothing can cancel, burns a core on until it is done,
/// one more for every fetch of the page. Method: the "public" site serves
/// `<p>` and 200,000 `&`s (200 KB); web_fetch must return its text
/// promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_ampersands_is_converted_promptly() {
    let page = Arc::new(|_: &str| Reply::new(200, "text/html", format!("<p>{}</p>", "&".repeat(200_000)).into_bytes()));
    let site = TestServer::start("127.0.0.1:0", page).await;
    let services = services_with(Arc::new(FakeDns::default()), vec![(PUBLIC_IP, site.addr)], None);
    let fx = Fixture::with_services(json!([{"type": "agent_toolset_20260401"}]), services);
    // Readability would take minutes (the fetch fails at its 30 s deadline);
    // htmd alone converts the page.
    let outcome = fx.call("web_fetch", json!({"url": "http://public.test/amp"})).await;
    let text = text_of(&outcome);
    assert!(!outcome.is_error && text.contains("&&&&"), "{}", &text[..text.len().min(300)]);
}

/// Defect (review, web): web_fetch returns any body labelled
/// `application/pdf` as a PDF document block, whatever its bytes
/// (`extract::classify` trusts the Content-Type). A page whose server
/// mislabels it (or a hostile one) puts a "PDF" that is HTML into the
/// session's log, and the Messages API refuses every later request that
/// carries it, as it does an invalid PDF. The server checks the `%PDF-`
/// signature everywhere else a document block is made (`runner::inline`,
/// `api::events`). Method: the site answers `application/pdf` with HTML;
/// the result must not be a document block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_labelled_pdf_that_is_no_pdf_is_not_returned_as_a_document() {
    let page = Arc::new(|_: &str| Reply::new(200, "application/pdf", b"<html><body>not a pdf</body></html>".to_vec()));
    let site = TestServer::start("127.0.0.1:0", page).await;
    let services = services_with(Arc::new(FakeDns::default()), vec![(PUBLIC_IP, site.addr)], None);
    let fx = Fixture::with_services(json!([{"type": "agent_toolset_20260401"}]), services);
    let outcome = fx.call("web_fetch", json!({"url": "http://public.test/report.pdf"})).await;
    assert!(
        !outcome.content.iter().any(|block| matches!(block, ContentBlock::Document { .. })),
        "bytes that are no PDF came back as a PDF document block: {:?}",
        outcome.content
    );
}
