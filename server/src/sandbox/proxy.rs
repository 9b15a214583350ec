//! The egress proxy a sandbox reaches the network through: an HTTP proxy
//! (CONNECT for HTTPS, absolute-form requests for plain HTTP) served on a unix
//! socket that only that sandbox has bound in.
//!
//! A sandbox has no network interface but loopback, so this is its only way
//! out. For each connection the proxy reads the request head (refusing with a
//! 400 any head whose framing an upstream could read differently: bare LF or
//! CR, control characters, folded lines; see [`parse_head`]), checks the host
//! against the sandbox's [`EgressPolicy`] (a refused host gets a 403 naming
//! it), resolves the name, keeps only the addresses `net::addr::is_public`
//! accepts (a name resolving only to loopback, private, link-local or metadata
//! addresses gets a 403 too), connects, and then relays bytes both ways.
//! Plain HTTP requests are sent on as `Connection: close` with the `Host`
//! header set to the checked target, so one connection never reaches a second
//! host. Under a `limited` policy a `CONNECT` tunnel must start with a TLS
//! ClientHello whose server name (SNI) is the checked host (`net::sni`):
//! otherwise a tunnel opened for an allowed host could carry TLS for any other
//! name its front end serves. The proxy never connects anywhere before these
//! checks pass, and relays nothing before the ClientHello is checked.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::policy::{EgressPolicy, normalize};
use crate::net::addr::is_public;
use crate::net::sni;

/// Longest request head accepted (request line and headers).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Connections one sandbox may have open through its proxy at once.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long resolving a name may take.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting to an upstream address may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send its TLS ClientHello through a tunnel.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// The TLS alert sent when a tunnel's ClientHello is refused: fatal,
/// `unrecognized_name` (112), so the client's error says what happened.
const ALERT_UNRECOGNIZED_NAME: [u8; 7] = [21, 3, 1, 0, 2, 2, 112];

/// Resolves host names (a trait so tests can make names resolve anywhere).
pub trait Resolve: Send + Sync + std::fmt::Debug {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a>;
}

pub type ResolveFuture<'a> = Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'a>>;

/// The system resolver.
#[derive(Debug, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// A running proxy; stops (with every relayed connection) when dropped.
#[derive(Debug)]
pub struct Proxy {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Serves the proxy on a new unix socket at `path` (replacing a stale one),
    /// connectable by any local user: only the sandbox has it bound in, and the
    /// directory holding it is not listable by others.
    pub fn start(path: &Path, policy: EgressPolicy, resolver: Arc<dyn Resolve>) -> std::io::Result<Proxy> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        let listener = bind_unix(path)?;
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o666))?;
        let policy = Arc::new(policy);
        let task = tokio::spawn(serve(listener, policy, resolver));
        Ok(Proxy { path: path.to_owned(), task })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The longest path a unix socket address holds (`sun_path` less its NUL).
const MAX_SUN_PATH: usize = 107;

/// Binds a unix socket at `path`, however deep the data directory is: a path
/// too long for a socket address is reached through the parent directory's
/// descriptor (`/proc/self/fd/N/name`), which the kernel resolves to the same
/// directory.
fn bind_unix(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::fd::AsRawFd as _;
    if path.as_os_str().len() <= MAX_SUN_PATH {
        return UnixListener::bind(path);
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a socket path needs a directory and a name",
        ));
    };
    let dir = std::fs::File::open(parent)?;
    let short = Path::new("/proc/self/fd").join(dir.as_raw_fd().to_string()).join(name);
    let listener = UnixListener::bind(&short)?;
    drop(dir);
    Ok(listener)
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve(listener: UnixListener, policy: Arc<EgressPolicy>, resolver: Arc<dyn Resolve>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Dropping the set (when this task is aborted) aborts every connection.
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let Ok((mut client, _)) = accepted else {
            // Out of descriptors and the like: a pause, not a spin (a failing
            // accept fails again at once).
            tokio::time::sleep(crate::transport::ACCEPT_BACKOFF).await;
            continue;
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            connections.spawn(async move {
                let _ = respond(&mut client, 503, "too many proxied connections from this sandbox").await;
            });
            continue;
        };
        let policy = Arc::clone(&policy);
        let resolver = Arc::clone(&resolver);
        connections.spawn(async move {
            if let Err(err) = handle(client, &policy, resolver.as_ref()).await {
                tracing::debug!(error = %err, "proxied connection ended");
            }
            drop(permit);
        });
    }
}

/// Why a proxied connection ended early.
#[derive(Debug, thiserror::Error)]
enum ProxyError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("refused: {0}")]
    Refused(String),
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRequest {
    pub host: String,
    pub port: u16,
    /// For plain HTTP, the head to send upstream; `None` for CONNECT.
    pub forward_head: Option<Vec<u8>>,
}

async fn handle(mut client: UnixStream, policy: &EgressPolicy, resolver: &dyn Resolve) -> Result<(), ProxyError> {
    let (head, rest) = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client)).await {
        Ok(Ok(read)) => read,
        Ok(Err(err)) => return Err(err.into()),
        Err(_) => return Err(ProxyError::Refused("the request head did not arrive in time".to_owned())),
    };
    let request = match parse_head(&head) {
        Ok(request) => request,
        Err(message) => {
            respond(&mut client, 400, &message).await?;
            return Err(ProxyError::Refused(message));
        }
    };
    if !policy.allows(&request.host) {
        let message = format!(
            "logbook: egress to {} is blocked: the host is not allowed by this environment's networking policy",
            request.host
        );
        tracing::info!(host = %request.host, "sandbox egress blocked by policy");
        respond(&mut client, 403, &message).await?;
        return Err(ProxyError::Refused(message));
    }
    let addrs = match tokio::time::timeout(RESOLVE_TIMEOUT, resolver.resolve(&request.host, request.port)).await {
        Ok(Ok(addrs)) => addrs,
        Ok(Err(_)) | Err(_) => {
            let message = format!("logbook: cannot resolve {}", request.host);
            respond(&mut client, 502, &message).await?;
            return Err(ProxyError::Refused(message));
        }
    };
    let public: Vec<SocketAddr> = addrs.into_iter().filter(|addr| is_public(addr.ip())).collect();
    if public.is_empty() {
        let message = format!(
            "logbook: egress to {} is blocked: it resolves only to loopback, private, link-local or other non-public addresses",
            request.host
        );
        tracing::info!(host = %request.host, "sandbox egress to a non-public address blocked");
        respond(&mut client, 403, &message).await?;
        return Err(ProxyError::Refused(message));
    }
    let mut upstream = None;
    for addr in &public {
        if let Ok(Ok(stream)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            upstream = Some(stream);
            break;
        }
    }
    let Some(mut upstream) = upstream else {
        let message = format!("logbook: cannot connect to {}:{}", request.host, request.port);
        respond(&mut client, 502, &message).await?;
        return Err(ProxyError::Refused(message));
    };
    let rest = match &request.forward_head {
        None => {
            client.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n").await?;
            match policy {
                EgressPolicy::Open => rest,
                EgressPolicy::Hosts(_) => check_hello(&mut client, &request.host, policy, rest).await?,
            }
        }
        Some(head) => {
            upstream.write_all(head).await?;
            rest
        }
    };
    upstream.write_all(&rest).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// Reads the tunnel's first bytes, after `read` (already read), up to the end
/// of the TLS ClientHello, and returns them if its server name is `host` and
/// `policy` allows it; otherwise sends the client a TLS alert and refuses.
async fn check_hello(
    client: &mut UnixStream,
    host: &str,
    policy: &EgressPolicy,
    mut read: Vec<u8>,
) -> Result<Vec<u8>, ProxyError> {
    let deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
    let mut chunk = [0u8; 4096];
    let outcome = loop {
        match sni::server_name(&read) {
            Ok(Some(name)) => break Ok(name),
            Ok(None) => {}
            Err(err) => break Err(err.to_string()),
        }
        let room = sni::MAX_HELLO_BYTES.saturating_sub(read.len()).clamp(1, chunk.len());
        let n = match tokio::time::timeout_at(deadline, client.read(&mut chunk[..room])).await {
            Ok(Ok(0)) => return Err(ProxyError::Refused("the client closed before its ClientHello".to_owned())),
            Ok(Ok(n)) => n,
            Ok(Err(err)) => return Err(err.into()),
            Err(_) => break Err("the TLS ClientHello did not arrive in time".to_owned()),
        };
        read.extend_from_slice(&chunk[..n]);
    };
    let refusal = match outcome {
        Ok(name) if name == host && policy.allows(&name) => return Ok(read),
        Ok(name) => format!("the tunnel to {host} carries TLS for {name}, which this tunnel was not opened for"),
        Err(reason) => format!("{reason} (a tunnel to {host} must carry TLS naming {host})"),
    };
    tracing::info!(host = %host, reason = %refusal, "sandbox egress blocked by policy");
    client.write_all(&ALERT_UNRECOGNIZED_NAME).await?;
    client.shutdown().await?;
    Err(ProxyError::Refused(refusal))
}

/// Reads up to the end of the request head; returns the head and any bytes
/// read past it.
async fn read_head(client: &mut UnixStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the client closed before a request"));
        }
        let searched_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf[searched_from..].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = searched_from + pos + 4;
            let rest = buf.split_off(end);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the request head is too large"));
        }
    }
}

/// Parses a proxy request head: `CONNECT host:port` or an absolute-form
/// `http://` request. Errors are messages for a 400.
///
/// The head is held to HTTP/1.1's framing as strict parsers hold it (RFC
/// 9112 §2.2, §5): lines end with CRLF, and no other control character
/// appears but a tab inside a header's value; no line is folded; each
/// header is a token, a colon and a value. An upstream that ends a line at a
/// bare LF (nginx does) would otherwise read a different head than the
/// proxy did: a bare LF inside what the proxy forwards as one header line
/// ends the head early for it, and what follows is a second request, for
/// any host that upstream serves, past the proxy's `Host` and
/// `Connection: close`.
pub fn parse_head(head: &[u8]) -> Result<ProxyRequest, String> {
    let text = std::str::from_utf8(head).map_err(|_| "the request head is not UTF-8".to_owned())?;
    let (request_line, headers) = check_framing(text)?;
    let lines = headers.iter().copied();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("malformed request line {request_line:?}"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(format!("unsupported protocol {version:?}"));
    }
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = split_authority(target, None)?;
        return Ok(ProxyRequest { host, port, forward_head: None });
    }
    let lower = target.to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Err("send https:// requests through CONNECT".to_owned());
    }
    if !lower.starts_with("http://") {
        return Err(format!("{target:?} is not an absolute http:// URL (this is a proxy)"));
    }
    let after_scheme = &target["http://".len()..];
    let authority_end = after_scheme.find(['/', '?', '#']).unwrap_or(after_scheme.len());
    let (authority, path) = after_scheme.split_at(authority_end);
    let (host, port) = split_authority(authority, Some(80))?;
    let path = match path {
        "" => "/".to_owned(),
        p if p.starts_with('/') => p.to_owned(),
        p => format!("/{p}"),
    };
    let mut forward = format!("{method} {path} {version}\r\n");
    for line in lines {
        let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
        if matches!(name.as_str(), "host" | "connection" | "proxy-connection" | "proxy-authorization" | "keep-alive") {
            continue;
        }
        forward.push_str(line);
        forward.push_str("\r\n");
    }
    let bracketed = if host.contains(':') { format!("[{host}]") } else { host.clone() };
    let host_header = if port == 80 { bracketed } else { format!("{bracketed}:{port}") };
    forward.push_str(&format!("Host: {host_header}\r\nConnection: close\r\n\r\n"));
    Ok(ProxyRequest { host, port, forward_head: Some(forward.into_bytes()) })
}

/// Splits a request head into its request line and header lines, refusing
/// any framing an upstream could read differently (see [`parse_head`]).
fn check_framing(text: &str) -> Result<(&str, Vec<&str>), String> {
    let bytes = text.as_bytes();
    for (idx, byte) in bytes.iter().enumerate() {
        let refused = match *byte {
            b'\r' => bytes.get(idx + 1) != Some(&b'\n'),
            b'\n' => idx == 0 || bytes[idx - 1] != b'\r',
            // Only inside a header's value, checked per line below.
            b'\t' => false,
            0x00..=0x1f | 0x7f => true,
            _ => false,
        };
        if refused {
            let what = match *byte {
                b'\r' => "a carriage return not followed by a line feed".to_owned(),
                b'\n' => "a line feed not preceded by a carriage return".to_owned(),
                other => format!("the control character 0x{other:02x}"),
            };
            return Err(format!("the request head holds {what} at byte {idx}: lines must end with CRLF"));
        }
    }
    let lines =
        text.strip_suffix(HEAD_END).ok_or_else(|| "the request head does not end with an empty line".to_owned())?;
    let mut lines = lines.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    if request_line.contains('\t') {
        return Err(format!("malformed request line {request_line:?}"));
    }
    let mut headers = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            return Err("folded header lines (obsolete line folding) are not accepted".to_owned());
        }
        let name = line.split_once(':').map(|(name, _)| name).unwrap_or("");
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(format!("malformed header line {line:?}"));
        }
        headers.push(line);
    }
    Ok((request_line, headers))
}

/// The blank line that ends a request head.
const HEAD_END: &str = "\r\n\r\n";

/// A byte of an HTTP token (a header's name; RFC 9110 §5.6.2).
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// `host[:port]` or `[v6][:port]`, with no userinfo.
fn split_authority(authority: &str, default_port: Option<u16>) -> Result<(String, u16), String> {
    if authority.contains('@') {
        return Err("user information in the target is not supported".to_owned());
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| format!("malformed authority {authority:?}"))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match (port, default_port) {
        (Some(port), _) => port.parse::<u16>().map_err(|_| format!("malformed port in {authority:?}"))?,
        (None, Some(default)) => default,
        (None, None) => return Err(format!("{authority:?} has no port")),
    };
    if host.is_empty() || port == 0 {
        return Err(format!("malformed authority {authority:?}"));
    }
    Ok((normalize(host), port))
}

async fn respond(client: &mut UnixStream, status: u16, message: &str) -> std::io::Result<()> {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let body = format!("{message}\n");
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(response.as_bytes()).await?;
    client.shutdown().await
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
