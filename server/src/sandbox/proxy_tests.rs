use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::*;
use crate::sandbox::policy::HostRule;

#[test]
fn parses_connect_and_absolute_form_requests() {
    let connect = parse_head(b"CONNECT PyPI.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n").unwrap();
    assert_eq!((connect.host.as_str(), connect.port, connect.forward_head), ("pypi.org", 443, None));
    let v6 = parse_head(b"CONNECT [::1]:8443 HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!((v6.host.as_str(), v6.port), ("::1", 8443));
    let get = parse_head(
        b"GET http://example.com/a?b HTTP/1.1\r\nHost: evil.com\r\nProxy-Authorization: x\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n",
    )
    .unwrap();
    assert_eq!((get.host.as_str(), get.port), ("example.com", 80));
    assert_eq!(
        String::from_utf8(get.forward_head.unwrap()).unwrap(),
        "GET /a?b HTTP/1.1\r\nAccept: */*\r\nHost: example.com\r\nConnection: close\r\n\r\n"
    );
}

#[test]
fn refuses_malformed_and_non_proxy_requests() {
    for head in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"GET https://example.com/ HTTP/1.1\r\n\r\n",
        b"CONNECT example.com HTTP/1.1\r\n\r\n",
        b"CONNECT user@example.com:443 HTTP/1.1\r\n\r\n",
        b"GET http://user:pw@example.com/ HTTP/1.1\r\n\r\n",
        b"CONNECT :443 HTTP/1.1\r\n\r\n",
        b"CONNECT example.com:99999 HTTP/1.1\r\n\r\n",
        b"GET http://example.com/ HTTP/2\r\n\r\n",
        b"garbage\r\n\r\n",
    ] {
        assert!(parse_head(head).is_err(), "{}", String::from_utf8_lossy(head));
    }
}

/// Goal: a plain HTTP request reaches its upstream as one request, with the
/// proxy's `Host` and `Connection: close`, so one connection never reaches a
/// second host (docs/sandbox.md). Servers such as nginx end a header line at
/// a bare LF, so a bare LF inside what the proxy takes for one header line
/// ends the head early for them: what follows is a second, pipelined request
/// naming any host the upstream serves. Method: such a head must be refused,
/// or forwarded with no bare LF in it.
#[test]
fn a_bare_line_feed_cannot_smuggle_a_second_request_upstream() {
    let head = b"GET http://allowed.example/ HTTP/1.0\r\nX: a\nConnection: keep-alive\n\nGET /admin HTTP/1.1\nHost: internal.example\n\n\r\n\r\n";
    if let Ok(request) = parse_head(head) {
        let forwarded = request.forward_head.unwrap();
        let bare_lf =
            forwarded.iter().enumerate().any(|(idx, byte)| *byte == b'\n' && (idx == 0 || forwarded[idx - 1] != b'\r'));
        assert!(!bare_lf, "forwarded upstream: {:?}", String::from_utf8_lossy(&forwarded));
    }
}

/// Goal: the proxy reads a request head as strict HTTP/1.1 parsers do, so
/// no upstream can read a different head from what it forwards: a bare LF
/// or CR anywhere, another control character, a folded line or a header
/// name that is not a token is refused (RFC 9112 §2.2, §5), while a tab in a
/// header's value is fine. Method: `parse_head` on each, and the served
/// proxy's answer to one (a 400, before any lookup).
#[tokio::test]
async fn heads_an_upstream_could_read_differently_are_refused_with_a_400() {
    for head in [
        &b"GET http://a.example/ HTTP/1.1\r\nX: a\nHost: b.example\r\n\r\n"[..],
        b"GET http://a.example/ HTTP/1.1\nX: a\r\n\r\n",
        b"GET http://a.example/ HTTP/1.1\r\nX: a\rHost: b.example\r\n\r\n",
        b"GET http://a.example/ HTTP/1.1\r\nX: a\0b\r\n\r\n",
        b"GET http://a.example/ HTTP/1.1\r\nX: a\x7f\r\n\r\n",
        b"GET http://a.example/ HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
        b"GET http://a.example/ HTTP/1.1\r\nHost : b.example\r\n\r\n",
        b"GET http://a.example/ HTTP/1.1\r\nno colon\r\n\r\n",
        b"GET http://a.example/ HTTP/1.1\r\n: empty name\r\n\r\n",
        b"GET\thttp://a.example/ HTTP/1.1\r\n\r\n",
        b"GET http://a.example/ HTTP/1.1\r\n\r\nGET http://b.example/ HTTP/1.1\r\n\r\n",
        b"CONNECT a.example:443 HTTP/1.1\r\nX: a\nY: b\r\n\r\n",
        b"GET http://a.example/ HTTP/1.1\r\n",
    ] {
        assert!(parse_head(head).is_err(), "{:?}", String::from_utf8_lossy(head));
    }
    let tab = parse_head(b"GET http://a.example/ HTTP/1.1\r\nX-Tab:\ta\tb\r\n\r\n").unwrap();
    assert_eq!(
        String::from_utf8(tab.forward_head.unwrap()).unwrap(),
        "GET / HTTP/1.1\r\nX-Tab:\ta\tb\r\nHost: a.example\r\nConnection: close\r\n\r\n"
    );

    let dir = tempfile::tempdir().unwrap();
    let resolver = Arc::new(FixedResolver { addr: "127.0.0.1:9".parse().unwrap(), n_lookups: AtomicUsize::new(0) });
    let path = dir.path().join("proxy.sock");
    let _proxy = Proxy::start(&path, EgressPolicy::Open, Arc::clone(&resolver) as Arc<dyn Resolve>).unwrap();
    let answer =
        ask(&path, "GET http://a.example/ HTTP/1.0\r\nX: a\nConnection: keep-alive\n\nGET /admin HTTP/1.1\nHost: internal.example\n\n\r\n\r\n")
            .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("line feed not preceded by a carriage return"), "{answer}");
    assert_eq!(resolver.n_lookups.load(Ordering::SeqCst), 0, "refused before any lookup");
}

/// Resolves every name to one address and counts the lookups.
#[derive(Debug)]
struct FixedResolver {
    addr: SocketAddr,
    n_lookups: AtomicUsize,
}

impl Resolve for FixedResolver {
    fn resolve<'a>(&'a self, _host: &'a str, _port: u16) -> ResolveFuture<'a> {
        self.n_lookups.fetch_add(1, Ordering::SeqCst);
        let addr = self.addr;
        Box::pin(async move { Ok(vec![addr]) })
    }
}

async fn ask(path: &std::path::Path, head: &str) -> String {
    let mut stream = UnixStream::connect(path).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_string(&mut response)).await.unwrap().unwrap();
    response
}

/// Goal: the proxy refuses by policy before resolving, and refuses a name
/// that resolves to loopback without connecting. Method: a loopback listener
/// counts connections; a resolver maps every name to it.
#[tokio::test]
async fn blocked_hosts_get_a_403_naming_them_and_no_connection() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let n_accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&n_accepted);
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let resolver = Arc::new(FixedResolver { addr: target, n_lookups: AtomicUsize::new(0) });
    let policy = EgressPolicy::Hosts(vec![HostRule::Exact("allowed.example".to_owned())]);
    let path = dir.path().join("proxy.sock");
    let _proxy = Proxy::start(&path, policy, Arc::clone(&resolver) as Arc<dyn Resolve>).unwrap();

    let refused = ask(&path, "CONNECT blocked.example:443 HTTP/1.1\r\n\r\n").await;
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(refused.contains("blocked.example"), "{refused}");
    assert_eq!(resolver.n_lookups.load(Ordering::SeqCst), 0, "refused by policy before any lookup");

    let private = ask(&path, "CONNECT allowed.example:443 HTTP/1.1\r\n\r\n").await;
    assert!(private.starts_with("HTTP/1.1 403"), "{private}");
    assert!(private.contains("non-public"), "{private}");
    let plain = ask(&path, &format!("GET http://allowed.example:{}/ HTTP/1.1\r\n\r\n", target.port())).await;
    assert!(plain.starts_with("HTTP/1.1 403"), "{plain}");
    let literal = ask(&path, &format!("CONNECT 127.0.0.1:{} HTTP/1.1\r\n\r\n", target.port())).await;
    assert!(literal.starts_with("HTTP/1.1 403"), "{literal}");

    // Positive control: the listener does count a direct connection.
    tokio::net::TcpStream::connect(target).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while n_accepted.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(n_accepted.load(Ordering::SeqCst), 1, "only the control connection reached the listener");
}

#[tokio::test]
async fn the_socket_binds_under_a_data_directory_deeper_than_a_socket_address() {
    // A socket address holds 107 bytes of path; data directories (and test
    // temporary directories) are often deeper.
    let dir = tempfile::tempdir().unwrap();
    let deep = dir
        .path()
        .join("a-long-directory-name-".repeat(4))
        .join("sandboxes")
        .join("sesn_01KQHPHXG0ER84196JGGSX5KCB")
        .join("run");
    std::fs::create_dir_all(&deep).unwrap();
    let path = deep.join("proxy.sock");
    assert!(path.as_os_str().len() > 108, "{}", path.display());
    let resolver = Arc::new(FixedResolver { addr: "127.0.0.1:9".parse().unwrap(), n_lookups: AtomicUsize::new(0) });
    let _proxy = Proxy::start(&path, EgressPolicy::Hosts(Vec::new()), resolver as Arc<dyn Resolve>).unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(&path).unwrap().file_type().is_socket());
}

/// A TLS ClientHello record naming `name` (SNI), with these further
/// extensions (type, data).
fn client_hello(name: &str, extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut sni = vec![0u8];
    sni.extend(u16::try_from(name.len()).unwrap().to_be_bytes());
    sni.extend(name.as_bytes());
    let mut sni_data = u16::try_from(sni.len()).unwrap().to_be_bytes().to_vec();
    sni_data.extend(sni);
    let mut all = vec![(0u16, sni_data)];
    all.extend(extensions.iter().cloned());
    let mut body = vec![3, 3];
    body.extend([7u8; 32]);
    body.push(0);
    body.extend([0, 2, 0x13, 0x01]);
    body.extend([1, 0]);
    let mut ext = Vec::new();
    for (kind, data) in &all {
        ext.extend(kind.to_be_bytes());
        ext.extend(u16::try_from(data.len()).unwrap().to_be_bytes());
        ext.extend(data);
    }
    body.extend(u16::try_from(ext.len()).unwrap().to_be_bytes());
    body.extend(ext);
    let mut handshake = vec![1u8];
    handshake.extend(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
    handshake.extend(body);
    let mut record = vec![22, 3, 1];
    record.extend(u16::try_from(handshake.len()).unwrap().to_be_bytes());
    record.extend(handshake);
    record
}

/// Defect (review of beebe27, proxy.rs `check_hello`, server/src/sandbox/proxy.rs:275):
/// the check reads only the ClientHello's cleartext (outer) server name. A
/// ClientHello carrying `encrypted_client_hello` (ECH, extension 0xfe0d, RFC
/// 9849; Go's crypto/tls and curl --ech speak it) names the real server only
/// in its encrypted inner hello, which the front end decrypts whatever the
/// outer name says (the client chooses the ECH config, public_name
/// included). So `CONNECT allowed:443` plus an outer SNI of `allowed` and an
/// inner one of any other name the same ECH-capable front end (a CDN) serves
/// passes: exactly the fronting the commit set out to stop. A tunnel whose
/// hello offers ECH must be refused (its real name cannot be checked).
/// Method: `check_hello` on such a hello, for an allowed host.
#[tokio::test]
async fn a_tunnel_hello_offering_encrypted_client_hello_is_refused() {
    let policy = EgressPolicy::Hosts(vec![HostRule::Exact("allowed.example".to_owned())]);
    // The control: the plain hello for the allowed host passes.
    let (mut ours, _theirs) = UnixStream::pair().unwrap();
    let plain = client_hello("allowed.example", &[]);
    assert!(check_hello(&mut ours, "allowed.example", &policy, plain).await.is_ok());
    // An outer ECH extension (type 0 = outer, then an opaque payload).
    let mut ech = vec![0u8, 0x00, 0x20, 0x00, 0x01, 0x01, 0x00, 0x20];
    ech.extend([0x42; 32]);
    ech.extend([0x00, 0x40]);
    ech.extend([0x17; 64]);
    let (mut ours, _theirs) = UnixStream::pair().unwrap();
    let hello = client_hello("allowed.example", &[(0xfe0d, ech)]);
    assert!(
        check_hello(&mut ours, "allowed.example", &policy, hello).await.is_err(),
        "a hello whose real server name is encrypted (ECH) passes the tunnel's name check"
    );
}
