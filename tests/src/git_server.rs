//! A git server on loopback, over https, for tests of repository resources.
//!
//! It serves the repositories under a root directory with `git http-backend`
//! (run as a CGI program per request) behind a TLS listener whose certificate
//! is issued for `localhost` and `127.0.0.1` by a throwaway CA (the CA's PEM
//! file is what the server under test is told to trust). Access rules by
//! path: repositories under `/private/` need `Authorization: Basic` with the
//! user `x-access-token` and the configured token (else 401, as GitHub
//! answers); under `/forbidden/` every request gets 403; the rest is public.
//! Every request is recorded with its status and the bytes of its response
//! body, so tests can see what a clone transferred.
//!
//! [`make_repo`] builds a bare repository from a list of commits with the
//! `git` command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use base64::Engine;
use tokio::io::AsyncWriteExt;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// One request the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub path: String,
    pub status: u16,
    /// Bytes of the response body.
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum GitServerError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    #[error("git {args}: {stderr}")]
    Git { args: String, stderr: String },
}

#[derive(Debug, Clone)]
struct App {
    root: PathBuf,
    token: String,
    served: Arc<Mutex<Vec<Served>>>,
}

/// A running server; stopped on drop.
#[derive(Debug)]
pub struct GitServer {
    addr: SocketAddr,
    ca_file: PathBuf,
    served: Arc<Mutex<Vec<Served>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _certs: tempfile::TempDir,
}

impl GitServer {
    /// Serves the repositories under `root`; `/private/` needs `token`.
    pub fn start(root: &Path, token: &str) -> Result<GitServer, GitServerError> {
        let certs = tempfile::tempdir()?;
        let (acceptor, ca_pem) = tls_acceptor()?;
        let ca_file = certs.path().join("ca.pem");
        std::fs::write(&ca_file, ca_pem)?;
        let served = Arc::new(Mutex::new(Vec::new()));
        let app = App { root: root.to_owned(), token: token.to_owned(), served: Arc::clone(&served) };
        let router = Router::new().fallback(handle).with_state(app);
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("git-server".to_owned()).spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            runtime.block_on(async move {
                let Ok(tcp) = tokio::net::TcpListener::from_std(listener) else { return };
                tokio::select! {
                    _ = axum::serve(TlsListener { tcp, acceptor }, router) => {}
                    _ = stop_rx => {}
                }
            });
        })?;
        Ok(GitServer { addr, ca_file, served, stop: Some(stop_tx), thread: Some(thread), _certs: certs })
    }

    /// `https://localhost:PORT/<repo>`.
    pub fn url(&self, repo: &str) -> String {
        format!("https://localhost:{}/{repo}", self.addr.port())
    }

    /// The same repository named by the IP literal `127.0.0.1`.
    pub fn ip_url(&self, repo: &str) -> String {
        format!("https://127.0.0.1:{}/{repo}", self.addr.port())
    }

    /// The PEM file of the CA that issued the server's certificate.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// Every request answered so far.
    pub fn served(&self) -> Vec<Served> {
        self.served.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A CA and a certificate it issued for `localhost` and `127.0.0.1`.
fn tls_acceptor() -> Result<(TlsAcceptor, String), GitServerError> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "logbook test CA");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate()?;
    let leaf_params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    let leaf = leaf_params.signed_by(&leaf_key, &issuer)?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)?;
    Ok((TlsAcceptor::from(Arc::new(config)), ca_cert.pem()))
}

struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else { continue };
            // A client that fails the handshake (say, one that does not trust
            // the CA) is dropped; the next one is served.
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

async fn handle(State(app): State<App>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    let response = if path.starts_with("/forbidden/") {
        plain(StatusCode::FORBIDDEN, "forbidden")
    } else if path.starts_with("/private/") && !authorized(&headers, &app.token) {
        let mut response = plain(StatusCode::UNAUTHORIZED, "authentication required");
        response.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Basic realm=\"git\""));
        response
    } else {
        cgi(&app.root, &method, &uri, &headers, body).await
    };
    let bytes = axum::body::HttpBody::size_hint(response.body()).exact().unwrap_or(0);
    app.served.lock().unwrap_or_else(PoisonError::into_inner).push(Served {
        path,
        status: response.status().as_u16(),
        bytes,
    });
    response
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.strip_prefix("Basic ").is_some_and(|b| b.trim() == expected))
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response
}

/// Runs `git http-backend` for one request.
async fn cgi(root: &Path, method: &Method, uri: &Uri, headers: &HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let mut command = tokio::process::Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", uri.path())
        .env("REQUEST_METHOD", method.as_str())
        .env("QUERY_STRING", uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("HTTP_GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let Ok(mut child) = command.spawn() else { return plain(StatusCode::INTERNAL_SERVER_ERROR, "no git") };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&body).await;
    }
    let Ok(output) = child.wait_with_output().await else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "git http-backend failed");
    };
    let out = output.stdout;
    let (head_end, body_start) = match find(&out, b"\r\n\r\n") {
        Some(at) => (at, at + 4),
        None => match find(&out, b"\n\n") {
            Some(at) => (at, at + 2),
            None => return plain(StatusCode::BAD_GATEWAY, "malformed CGI output"),
        },
    };
    let mut response = Response::new(Body::from(out[body_start..].to_vec()));
    for line in String::from_utf8_lossy(&out[..head_end]).lines() {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next().and_then(|c| c.parse::<u16>().ok()).unwrap_or(500);
            *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        } else if let (Ok(name), Ok(value)) =
            (axum::http::HeaderName::try_from(name.trim()), axum::http::HeaderValue::from_str(value))
        {
            response.headers_mut().append(name, value);
        }
    }
    response
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One commit of [`make_repo`]: on `branch` (created from the previous
/// commit if new), writing `files` (path, contents).
#[derive(Debug, Clone)]
pub struct CommitSpec<'a> {
    pub branch: &'a str,
    pub files: Vec<(&'a str, Vec<u8>)>,
}

/// Builds the bare repository `root/<rel>` (default branch `main`, which is
/// checked out last) from `commits`; returns each commit's sha.
pub fn make_repo(root: &Path, rel: &str, commits: &[CommitSpec<'_>]) -> Result<Vec<String>, GitServerError> {
    let work = tempfile::tempdir()?;
    let dir = work.path();
    git(dir, &["init", "--quiet", "--initial-branch=main"])?;
    let mut shas = Vec::new();
    for commit in commits {
        let branches = git(dir, &["branch", "--list", commit.branch])?;
        if branches.trim().is_empty() && !shas.is_empty() {
            git(dir, &["checkout", "--quiet", "-b", commit.branch])?;
        } else if !shas.is_empty() {
            git(dir, &["checkout", "--quiet", commit.branch])?;
        }
        for (path, bytes) in &commit.files {
            let file = dir.join(path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(file, bytes)?;
        }
        git(dir, &["add", "--all"])?;
        git(dir, &["commit", "--quiet", "--message", &format!("commit {}", shas.len())])?;
        shas.push(git(dir, &["rev-parse", "HEAD"])?.trim().to_owned());
    }
    git(dir, &["checkout", "--quiet", "main"])?;
    let target = root.join(rel);
    std::fs::create_dir_all(target.parent().unwrap_or(root))?;
    let target_text = target.to_string_lossy().into_owned();
    git(dir, &["clone", "--quiet", "--bare", ".", &target_text])?;
    Ok(shas)
}

/// Runs git in `dir` with a fixed identity; returns stdout.
pub fn git(dir: &Path, args: &[&str]) -> Result<String, GitServerError> {
    let output = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Logbook Test")
        .env("GIT_AUTHOR_EMAIL", "test@logbook.invalid")
        .env("GIT_COMMITTER_NAME", "Logbook Test")
        .env("GIT_COMMITTER_EMAIL", "test@logbook.invalid")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        // The tests inspect clones the sandbox user owns.
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "safe.directory")
        .env("GIT_CONFIG_VALUE_0", "*")
        .output()?;
    if !output.status.success() {
        return Err(GitServerError::Git {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
