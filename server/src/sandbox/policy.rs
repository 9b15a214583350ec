//! The egress policy of a sandbox: which host names its proxy may connect to.
//!
//! An environment's `networking` decides it: `unrestricted` allows every host,
//! `limited` only `allowed_hosts` (a bare host matches exactly, `*.example.com`
//! matches its subdomains but not the apex) plus, with `allow_package_managers`,
//! [`PACKAGE_MANAGER_HOSTS`]. Host names are compared case-insensitively and
//! without a trailing dot. IP literals match no rule, so `limited` never
//! reaches an address by number. Whatever the policy says, the proxy connects
//! only to addresses `crate::net::addr::is_public` accepts, after resolution.

use std::net::IpAddr;

use crate::api::environments::Networking;

/// The package-manager hosts `allow_package_managers` opens (the documented
/// list), plus Debian's archive hosts, which this server's apt installs use.
pub const PACKAGE_MANAGER_HOSTS: &[&str] = &[
    "github.com",
    "api.github.com",
    "codeload.github.com",
    "raw.githubusercontent.com",
    "objects.githubusercontent.com",
    "release-assets.githubusercontent.com",
    "gitlab.com",
    "bitbucket.org",
    "registry.npmjs.org",
    "registry.yarnpkg.com",
    "nodejs.org",
    "pypi.org",
    "files.pythonhosted.org",
    "crates.io",
    "index.crates.io",
    "static.crates.io",
    "static.rust-lang.org",
    "proxy.golang.org",
    "sum.golang.org",
    "repo1.maven.org",
    "repo.maven.apache.org",
    "services.gradle.org",
    "plugins.gradle.org",
    "plugins-artifacts.gradle.org",
    "rubygems.org",
    "index.rubygems.org",
    "packagist.org",
    "repo.packagist.org",
    "archive.ubuntu.com",
    "security.ubuntu.com",
    "ppa.launchpad.net",
    "registry-1.docker.io",
    "auth.docker.io",
    "production.cloudflare.docker.com",
    "download.docker.com",
    "ghcr.io",
    // Not in the documented list: the Debian archive this machine's apt uses.
    "deb.debian.org",
    "security.debian.org",
];

/// Where a sandbox may connect through its proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressPolicy {
    /// Any host (that resolves to a public address).
    Open,
    /// Only hosts matching one of the rules.
    Hosts(Vec<HostRule>),
}

/// One allowed-host rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRule {
    /// This host exactly.
    Exact(String),
    /// Any subdomain of this host (`*.example.com` holds `example.com`).
    Subdomains(String),
}

impl EgressPolicy {
    /// The policy of an environment's `networking`.
    pub fn from_networking(networking: &Networking) -> EgressPolicy {
        match networking {
            Networking::Unrestricted {} => EgressPolicy::Open,
            Networking::Limited { allowed_hosts, allow_package_managers, allow_mcp_servers: _ } => {
                let mut rules: Vec<HostRule> = allowed_hosts.iter().map(|rule| HostRule::parse(rule)).collect();
                if *allow_package_managers {
                    rules.extend(PACKAGE_MANAGER_HOSTS.iter().map(|host| HostRule::Exact((*host).to_owned())));
                }
                EgressPolicy::Hosts(rules)
            }
        }
    }

    /// This policy plus the package-manager hosts (for package installs).
    pub fn with_package_managers(&self) -> EgressPolicy {
        match self {
            EgressPolicy::Open => EgressPolicy::Open,
            EgressPolicy::Hosts(rules) => {
                let mut rules = rules.clone();
                rules.extend(PACKAGE_MANAGER_HOSTS.iter().map(|host| HostRule::Exact((*host).to_owned())));
                EgressPolicy::Hosts(rules)
            }
        }
    }

    /// Whether the proxy may connect to `host` (a name or an IP literal).
    pub fn allows(&self, host: &str) -> bool {
        match self {
            EgressPolicy::Open => true,
            EgressPolicy::Hosts(rules) => {
                let host = normalize(host);
                if host.parse::<IpAddr>().is_ok() {
                    return false;
                }
                rules.iter().any(|rule| rule.matches(&host))
            }
        }
    }

    /// Whether some host at or under `domain` (a web tool's `allowed_domains`
    /// entry, which covers its subdomains) may be reached: `domain` itself,
    /// or a rule naming a host beneath it.
    pub fn reaches_within(&self, domain: &str) -> bool {
        match self {
            EgressPolicy::Open => true,
            EgressPolicy::Hosts(rules) => {
                let domain = normalize(domain);
                let beneath = |host: &str| {
                    host == domain
                        || (host.len() > domain.len() + 1
                            && host.ends_with(domain.as_str())
                            && host.as_bytes()[host.len() - domain.len() - 1] == b'.')
                };
                self.allows(&domain)
                    || rules.iter().any(|rule| match rule {
                        HostRule::Exact(host) | HostRule::Subdomains(host) => beneath(host),
                    })
            }
        }
    }
}

impl HostRule {
    /// A rule as an environment writes it (already validated by the API).
    pub fn parse(rule: &str) -> HostRule {
        match rule.strip_prefix("*.") {
            Some(apex) => HostRule::Subdomains(normalize(apex)),
            None => HostRule::Exact(normalize(rule)),
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostRule::Exact(exact) => host == exact,
            HostRule::Subdomains(apex) => {
                host.len() > apex.len() + 1
                    && host.ends_with(apex.as_str())
                    && host.as_bytes()[host.len() - apex.len() - 1] == b'.'
            }
        }
    }
}

/// Lowercase, without a trailing dot or IPv6 brackets.
pub fn normalize(host: &str) -> String {
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(hosts: &[&str], package_managers: bool) -> EgressPolicy {
        EgressPolicy::from_networking(&Networking::Limited {
            allowed_hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            allow_mcp_servers: false,
            allow_package_managers: package_managers,
        })
    }

    #[test]
    fn exact_rules_match_only_the_host() {
        let policy = limited(&["api.example.com"], false);
        assert!(policy.allows("api.example.com"));
        assert!(policy.allows("API.Example.COM."));
        assert!(!policy.allows("example.com"));
        assert!(!policy.allows("x.api.example.com"));
        assert!(!policy.allows("api.example.com.evil.net"));
        assert!(!policy.allows("evilapi.example.com"));
    }

    #[test]
    fn wildcard_rules_match_subdomains_not_the_apex() {
        let policy = limited(&["*.example.com"], false);
        assert!(policy.allows("a.example.com"));
        assert!(policy.allows("a.b.example.com"));
        assert!(!policy.allows("example.com"));
        assert!(!policy.allows("badexample.com"));
        assert!(!policy.allows(".example.com"));
    }

    #[test]
    fn limited_never_matches_ip_literals_and_nothing_is_allowed_by_default() {
        let policy = limited(&[], false);
        for host in ["pypi.org", "127.0.0.1", "localhost", "[::1]", "169.254.169.254"] {
            assert!(!policy.allows(host), "{host}");
        }
        assert!(!limited(&["*.0.0.1"], false).allows("127.0.0.1"));
    }

    #[test]
    fn package_managers_open_the_documented_hosts() {
        let policy = limited(&[], true);
        assert!(policy.allows("pypi.org"));
        assert!(policy.allows("registry.npmjs.org"));
        assert!(!policy.allows("example.org"));
        assert!(limited(&[], false).with_package_managers().allows("files.pythonhosted.org"));
    }

    #[test]
    fn unrestricted_allows_every_name() {
        let policy = EgressPolicy::from_networking(&Networking::Unrestricted {});
        assert!(policy.allows("anything.example"));
    }
}
