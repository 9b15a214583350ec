//! The web tools' settings from the agent's toolset config:
//! `allowed_domains` / `blocked_domains` (a domain covers its subdomains;
//! web_search entries may add a path prefix) and web_fetch's
//! `max_content_tokens` and `url_sources` (`sources`). The API validated them when the agent was saved
//! (`api::tools`); anything unreadable here counts as absent. On top of them,
//! the session environment's networking ([`EgressPolicy`]): a `limited`
//! environment's `allowed_hosts` bound the web tools as they bound the
//! sandbox (a fetch elsewhere is `url_not_allowed`, a search drops the
//! result).

use logbook_core::entry::Entry;
use serde_json::{Map, Value};
use url::{Host, Url};

use super::sources::UrlSources;

use crate::api::tools::Tool;
use crate::sandbox::policy::EgressPolicy;

/// Which URLs a web tool may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DomainRules {
    Any,
    /// Only these.
    Allow(Vec<DomainRule>),
    /// All but these.
    Block(Vec<DomainRule>),
}

/// `example.com` or, for web_search, `example.com/docs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DomainRule {
    host: String,
    path: Option<String>,
}

/// What web_fetch's config says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FetchSettings {
    pub(crate) rules: DomainRules,
    pub(crate) max_content_tokens: Option<u64>,
    /// The hosts the session's environment lets it reach.
    pub(crate) egress: EgressPolicy,
    /// Where a fetched URL may come from.
    pub(crate) url_sources: UrlSources,
    /// The texts of the session's context a URL must appear in, when
    /// `url_sources` bounds them ([`FetchSettings::with_context`]); `None`:
    /// any URL.
    pub(crate) allowed_context: Option<Vec<String>>,
}

/// What web_search's config says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SearchSettings {
    pub(crate) rules: DomainRules,
    /// The hosts the session's environment lets it reach.
    pub(crate) egress: EgressPolicy,
}

impl FetchSettings {
    /// The agent's web_fetch config, within the environment's `egress`.
    pub(crate) fn from_tools(tools: &[Tool], egress: &EgressPolicy) -> FetchSettings {
        let extra = tool_extra(tools, "web_fetch");
        FetchSettings {
            rules: extra.map(DomainRules::from_extra).unwrap_or(DomainRules::Any),
            max_content_tokens: extra.and_then(|extra| extra.get("max_content_tokens")).and_then(Value::as_u64),
            egress: egress.clone(),
            url_sources: extra.map_or(UrlSources::ALL, UrlSources::from_extra),
            allowed_context: None,
        }
    }

    /// These settings with the texts of the session's `log` that
    /// `url_sources` lets URLs come from (none read when it allows all).
    pub(crate) fn with_context(mut self, log: &[Entry]) -> FetchSettings {
        if !self.url_sources.admits_all() {
            self.allowed_context = Some(self.url_sources.allowed_texts(log));
        }
        self
    }
}

impl SearchSettings {
    /// The agent's web_search config, within the environment's `egress`.
    pub(crate) fn from_tools(tools: &[Tool], egress: &EgressPolicy) -> SearchSettings {
        SearchSettings {
            rules: tool_extra(tools, "web_search").map(DomainRules::from_extra).unwrap_or(DomainRules::Any),
            egress: egress.clone(),
        }
    }
}

/// Whether the environment's `egress` lets the session reach `url`'s host
/// (IP-address hosts match no `limited` rule).
pub(crate) fn egress_permits(egress: &EgressPolicy, url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(domain)) => egress.allows(domain),
        Some(Host::Ipv4(ip)) => egress.allows(&ip.to_string()),
        Some(Host::Ipv6(ip)) => egress.allows(&ip.to_string()),
        None => false,
    }
}

impl DomainRules {
    fn from_extra(extra: &Map<String, Value>) -> DomainRules {
        let list = |key: &str| -> Option<Vec<DomainRule>> {
            let items = extra.get(key)?.as_array()?;
            Some(items.iter().filter_map(Value::as_str).map(DomainRule::parse).collect())
        };
        match (list("allowed_domains"), list("blocked_domains")) {
            (Some(allowed), _) => DomainRules::Allow(allowed),
            (None, Some(blocked)) => DomainRules::Block(blocked),
            (None, None) => DomainRules::Any,
        }
    }

    /// Whether `url` may be used. IP-address hosts match no domain, so an
    /// allowlist refuses them.
    pub(crate) fn permits(&self, url: &Url) -> bool {
        let host = match url.host() {
            Some(Host::Domain(domain)) => normalize_host(domain),
            Some(Host::Ipv4(_) | Host::Ipv6(_)) | None => String::new(),
        };
        let path = url.path();
        let hit = |rules: &[DomainRule]| rules.iter().any(|rule| rule.matches(&host, path));
        match self {
            DomainRules::Any => true,
            DomainRules::Allow(rules) => hit(rules),
            DomainRules::Block(rules) => !hit(rules),
        }
    }
}

impl DomainRule {
    fn parse(text: &str) -> DomainRule {
        match text.split_once('/') {
            Some((host, path)) => DomainRule { host: normalize_host(host), path: Some(format!("/{path}")) },
            None => DomainRule { host: normalize_host(text), path: None },
        }
    }

    fn matches(&self, host: &str, path: &str) -> bool {
        if host.is_empty() || self.host.is_empty() {
            return false;
        }
        let host_ok =
            host == self.host || host.strip_suffix(self.host.as_str()).is_some_and(|rest| rest.ends_with('.'));
        let path_ok = match &self.path {
            None => true,
            Some(prefix) => {
                let prefix = prefix.trim_end_matches('/');
                path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
            }
        };
        host_ok && path_ok
    }
}

/// Lowercase, without the trailing dot of a fully qualified name.
fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The extra settings of the built-in tool `name`, if the agent configures it.
fn tool_extra<'t>(tools: &'t [Tool], name: &str) -> Option<&'t Map<String, Value>> {
    tools.iter().find_map(|tool| match tool {
        Tool::AgentToolset { configs, .. } => configs.iter().find(|config| config.name == name).map(|c| &c.extra),
        Tool::McpToolset { .. } | Tool::Custom { .. } => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap_or_else(|err| panic!("{text}: {err}"))
    }

    #[test]
    fn allowlists_cover_subdomains_only_on_label_boundaries() {
        let rules = DomainRules::Allow(vec![DomainRule::parse("example.com")]);
        assert!(rules.permits(&url("https://example.com/a")));
        assert!(rules.permits(&url("https://docs.example.com./a")));
        assert!(rules.permits(&url("https://EXAMPLE.com/")));
        assert!(!rules.permits(&url("https://badexample.com/")));
        assert!(!rules.permits(&url("https://example.com.evil.net/")));
        assert!(!rules.permits(&url("http://93.184.216.34/")));
    }

    #[test]
    fn blocklists_and_path_prefixes() {
        let rules = DomainRules::Block(vec![DomainRule::parse("evil.net")]);
        assert!(!rules.permits(&url("https://www.evil.net/x")));
        assert!(rules.permits(&url("https://good.net/x")));
        let rules = DomainRules::Allow(vec![DomainRule::parse("example.com/docs")]);
        assert!(rules.permits(&url("https://example.com/docs")));
        assert!(rules.permits(&url("https://example.com/docs/a")));
        assert!(!rules.permits(&url("https://example.com/docsx")));
        assert!(!rules.permits(&url("https://example.com/blog")));
    }
}
