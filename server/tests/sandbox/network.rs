//! Egress (G-X3): `limited` reaches only its allowed hosts (plus the package
//! managers when allowed), a refused host gets a 403 naming it, and nothing
//! reaches the host's loopback even through an allowed name; `unrestricted`
//! reaches public hosts. The allowed hosts used are the registries this
//! project's machines reach (PyPI, npm).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::harness::{Sbx, limited, session, text, unrestricted};

/// A loopback listener that counts connections and answers each with a tiny
/// HTTP response.
fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let n = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&n);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let _ = stream.read(&mut [0u8; 1024]);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (port, n)
}

/// Goal: in `limited` mode no byte reaches a loopback listener, whatever
/// the allowlist says; allowed public hosts work; others get a 403 naming
/// the host. Method: the allowlist holds `localhost` (an attacker's dream)
/// and `pypi.org`; a listener counts connections; the positive control is a
/// connection from the test itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_reaches_only_allowed_public_hosts() {
    let sbx = Sbx::new();
    let (s, env) = (session(), limited(&["localhost", "pypi.org", "*.localhost"], false));
    let (port, n_connections) = counting_listener();
    for url in [
        format!("--noproxy '' http://localhost:{port}/"),
        format!("http://localhost:{port}/"),
        format!("http://a.localhost:{port}/"),
        format!("http://127.0.0.1:{port}/"),
        format!("--noproxy '' -p http://localhost:{port}/"),
        format!("--noproxy '' http://127.0.0.1:{port}/"),
        format!("--noproxy '*' http://127.0.0.1:{port}/"),
        format!("'http://[::ffff:127.0.0.1]:{port}/'"),
    ] {
        let outcome = sbx.bash(s, &env, &format!("curl -sf --max-time 10 {url}")).await;
        assert!(outcome.is_error, "{url}: {}", text(&outcome));
    }
    // NO_PROXY names localhost (for servers inside the sandbox): override it.
    let refused = sbx.bash(s, &env, &format!("curl -s --noproxy '' --max-time 10 http://localhost:{port}/")).await;
    assert!(text(&refused).contains("localhost") && text(&refused).contains("non-public"), "{}", text(&refused));
    let blocked = sbx.bash(s, &env, "curl -s --max-time 10 http://registry.npmjs.org/").await;
    assert!(
        text(&blocked).contains("egress to registry.npmjs.org is blocked"),
        "a 403 naming the host: {}",
        text(&blocked)
    );
    let tunnel = sbx.bash(s, &env, "curl -sS --max-time 10 https://registry.npmjs.org/ 2>&1").await;
    assert!(tunnel.is_error && text(&tunnel).contains("403"), "{}", text(&tunnel));
    let allowed =
        sbx.ok(s, &env, "curl -sf --max-time 60 https://pypi.org/simple/six/ | grep -c 'six-' | head -1").await;
    assert!(allowed.trim().parse::<u32>().unwrap() > 0, "the allowed host works: {allowed}");
    assert_eq!(n_connections.load(Ordering::SeqCst), 0, "the sandbox reached the loopback listener");
    // Positive control: the listener does count.
    std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let counted =
        crate::harness::eventually(std::time::Duration::from_secs(10), || n_connections.load(Ordering::SeqCst) == 1)
            .await;
    assert!(counted);
}

/// Goal: `allow_package_managers` opens the registries and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn package_managers_open_the_registries_only() {
    let sbx = Sbx::new();
    let (s, env) = (session(), limited(&[], true));
    sbx.ok(s, &env, "curl -sf --max-time 60 -o /dev/null https://registry.npmjs.org/is-number").await;
    let blocked = sbx.bash(s, &env, "curl -s --max-time 10 http://example.org/").await;
    assert!(text(&blocked).contains("egress to example.org is blocked"), "{}", text(&blocked));
    let nothing = limited(&[], false);
    let closed = sbx.bash(session(), &nothing, "curl -sS --max-time 10 https://pypi.org/ 2>&1").await;
    assert!(closed.is_error && text(&closed).contains("403"), "{}", text(&closed));
}

/// Goal: `unrestricted` reaches public hosts through the proxy and still not
/// the host's loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrestricted_reaches_public_hosts_but_not_loopback() {
    let sbx = Sbx::new();
    let (s, env) = (session(), unrestricted());
    let (port, n_connections) = counting_listener();
    sbx.ok(s, &env, "curl -sf --max-time 60 -o /dev/null https://registry.npmjs.org/is-number").await;
    let loopback = sbx.bash(s, &env, &format!("curl -s --noproxy '' --max-time 10 http://127.0.0.1:{port}/")).await;
    assert!(text(&loopback).contains("non-public"), "{}", text(&loopback));
    assert_eq!(n_connections.load(Ordering::SeqCst), 0);
}

/// DEFECT (network policy bypass): `web_fetch`, which Logbook runs itself in
/// the server (`tools::run`), never looks at the environment's networking.
/// A `limited` environment's `allowed_hosts` is meant to be the session's
/// whole egress (DESIGN.md: "`limited` has no network except an allowlisting
/// proxy"; managed-agents-behaviour.md §6.4: a limited environment's
/// `allowed_hosts` also applies to web_fetch, which answers `url_not_allowed`),
/// but `ToolContext` carries no environment and `FetchSettings` only the
/// agent's own domain lists, so the model (or a prompt injection) can send
/// workspace data to any public host. Method: a limited environment allowing
/// only pypi.org; bash's curl to registry.npmjs.org is refused by the proxy
/// (the control), the same URL through web_fetch must be refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_networking_also_bounds_web_fetch() {
    use logbook_core::{EventId, Json, Seq};
    use logbook_server::runner::{ToolCall, ToolExecutor};
    use serde_json::json;

    let sbx = Sbx::new();
    let (s, env) = (session(), limited(&["pypi.org"], false));
    let url = "https://registry.npmjs.org/is-number";
    // Control: the sandbox itself cannot reach the host.
    let curl = sbx.bash(s, &env, &format!("curl -sS --max-time 10 {url} 2>&1")).await;
    assert!(curl.is_error && text(&curl).contains("403"), "{}", text(&curl));
    let tools = logbook_server::api::tools::resolve_tools(&[json!({"type": "agent_toolset_20260401"})]).unwrap();
    let input = Json::new(&json!({ "url": url }));
    let call = ToolCall {
        session: s,
        tool_use_id: EventId::for_seq(1, Seq::new(1), 1),
        name: "web_fetch",
        input: &input,
        agent_tools: &tools,
        environment: Some(&env),
        log: &[],
    };
    let fetched = sbx.tools.run(&call).await;
    assert!(
        fetched.is_error && text(&fetched).contains("url_not_allowed"),
        "web_fetch reached registry.npmjs.org, which the limited environment does not allow: is_error={} {}",
        fetched.is_error,
        text(&fetched).chars().take(300).collect::<String>()
    );
}

/// DEFECT (host services reachable through the proxy): the proxy refuses
/// loopback and private addresses but not the host's own interface
/// addresses. On a host whose address passes `is_public` (a public IP on
/// bare metal or a dev box; here eth0 is 192.0.2.2, a documentation address
/// `is_public` allows on purpose), a sandbox reaches every host service
/// listening on all interfaces (the Logbook API under
/// `LOGBOOK_LISTEN=0.0.0.0:...`, its /metrics, databases), which the
/// sandbox docs say it never does. Method: a listener on 0.0.0.0 counts
/// connections; an `unrestricted` sandbox fetches the host's own outbound
/// address through the proxy; the positive control connects from the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hosts_own_addresses_are_not_reachable_through_the_proxy() {
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let n = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&n);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let _ = stream.read(&mut [0u8; 1024]);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhost-secret");
        }
    });
    // The host's own address on its outbound interface (no packet is sent).
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    probe.connect("8.8.8.8:53").unwrap();
    let own = probe.local_addr().unwrap().ip();
    // Positive control: the service answers on that address.
    std::net::TcpStream::connect((own, port)).unwrap();
    assert!(crate::harness::eventually(std::time::Duration::from_secs(10), || n.load(Ordering::SeqCst) == 1).await);
    let sbx = Sbx::new();
    let outcome = sbx.bash(session(), &unrestricted(), &format!("curl -s --max-time 10 http://{own}:{port}/")).await;
    assert_eq!(
        n.load(Ordering::SeqCst),
        1,
        "the sandbox reached a host service at the host's own address {own}:{port}: {}",
        text(&outcome)
    );
}

/// DEFECT (limited networking bypassed by fronting): the proxy checks the
/// host of `CONNECT` and then relays whatever TLS the sandbox sends, without
/// looking at the ClientHello's server name. A sandbox allowed only
/// `pypi.org` opens `CONNECT pypi.org:443` and then speaks TLS for
/// `registry.npmjs.org` (SNI and Host); any front end that serves several
/// names on one address (a CDN, a shared ingress, this machine's registry
/// mirror) answers for the name the policy refused. Method: the direct
/// request to registry.npmjs.org is refused (the control), the fronted one
/// must be too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_to_an_allowed_host_cannot_carry_tls_for_another() {
    let sbx = Sbx::new();
    let (s, env) = (session(), limited(&["pypi.org"], false));
    let direct = sbx.bash(s, &env, "curl -sS --max-time 20 https://registry.npmjs.org/is-number 2>&1").await;
    assert!(direct.is_error && text(&direct).contains("403"), "{}", text(&direct));
    let fronted = sbx
        .bash(
            s,
            &env,
            "curl -sS --max-time 20 --connect-to registry.npmjs.org:443:pypi.org:443 https://registry.npmjs.org/is-number 2>&1",
        )
        .await;
    assert!(
        !text(&fronted).contains("\"name\": \"is-number\"") && !text(&fronted).contains("\"name\":\"is-number\""),
        "registry.npmjs.org answered through a tunnel the policy opened for pypi.org: {}",
        text(&fronted).chars().take(200).collect::<String>()
    );
}
