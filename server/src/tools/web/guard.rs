//! Name resolution for web_fetch, with every answer checked against the
//! address filter before anything connects.
//!
//! The HTTP client is given [`CheckedResolver`] as its only resolver: it asks
//! a [`HostResolver`] for the name's addresses, refuses the name when any of
//! them is not public ([`crate::net::addr::is_public`]), and hands the client
//! exactly the addresses it checked, so the client connects to those and
//! resolves nothing itself (no second lookup for a rebinding DNS server to
//! answer differently). A name with one public and one private address is
//! refused outright rather than filtered: such answers are how rebinding
//! attacks look, and a fallback to the private address must never happen.
//! URLs whose host is an IP address never reach a resolver (the client
//! connects to the literal); `fetch` checks those itself before the request.
//!
//! The resolver is injectable so tests can name fake hosts. Tests also need a
//! "public" server, which can only listen on loopback here: under `cfg(test)`
//! alone, [`CheckedResolver`] can rewrite an address after it has passed the
//! filter (a documentation address to a loopback port). Production builds
//! have no such field.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::net::addr::is_public;

/// Longest a name lookup may take.
pub(crate) const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A boxed lookup future.
pub type LookupFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>>;

/// Turns a host name into addresses.
pub trait HostResolver: Send + Sync + fmt::Debug {
    fn lookup(&self, host: String) -> LookupFuture<'static>;
}

/// The system's resolver (`getaddrinfo`, through tokio).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl HostResolver for SystemResolver {
    fn lookup(&self, host: String) -> LookupFuture<'static> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|addr| addr.ip()).collect())
        })
    }
}

/// A name refused because it resolves to an address sessions may not reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NotPublic {
    pub(crate) host: String,
    pub(crate) addr: IpAddr,
}

impl fmt::Display for NotPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} resolves to {}, which is not a public address", self.host, self.addr)
    }
}

impl std::error::Error for NotPublic {}

/// A test-only rewrite of checked addresses (see the module docs).
#[cfg(test)]
pub(crate) type Rewrite = Arc<dyn Fn(SocketAddr) -> SocketAddr + Send + Sync>;

/// The HTTP client's resolver (see the module docs).
#[derive(Clone)]
pub(crate) struct CheckedResolver {
    inner: Arc<dyn HostResolver>,
    #[cfg(test)]
    rewrite: Option<Rewrite>,
}

impl fmt::Debug for CheckedResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckedResolver").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl CheckedResolver {
    pub(crate) fn new(inner: Arc<dyn HostResolver>) -> CheckedResolver {
        CheckedResolver {
            inner,
            #[cfg(test)]
            rewrite: None,
        }
    }

    #[cfg(test)]
    pub(crate) fn with_rewrite(inner: Arc<dyn HostResolver>, rewrite: Rewrite) -> CheckedResolver {
        CheckedResolver { inner, rewrite: Some(rewrite) }
    }

    /// The checked addresses of `host`.
    pub(crate) async fn checked(
        &self,
        host: &str,
    ) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let lookup = self.inner.lookup(host.to_owned());
        let addrs = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
            Ok(result) => result?,
            Err(_) => return Err(format!("resolving {host} timed out").into()),
        };
        if addrs.is_empty() {
            return Err(format!("{host} has no addresses").into());
        }
        if let Some(addr) = addrs.iter().find(|addr| !is_public(**addr)) {
            return Err(Box::new(NotPublic { host: host.to_owned(), addr: *addr }));
        }
        let checked = addrs.into_iter().map(|ip| SocketAddr::new(ip, 0));
        #[cfg(test)]
        if let Some(rewrite) = &self.rewrite {
            return Ok(checked.map(|addr| rewrite(addr)).collect());
        }
        Ok(checked.collect())
    }
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = self.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = resolver.checked(&host).await?;
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The [`NotPublic`] refusal somewhere in an error's chain of sources.
pub(crate) fn find_not_public<'e>(err: &'e (dyn std::error::Error + 'static)) -> Option<&'e NotPublic> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<NotPublic>() {
            return Some(found);
        }
        current = err.source();
    }
    None
}
