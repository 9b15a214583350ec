//! Where the model lives and how long to wait for it.
//!
//! [`ModelConfig`] is read once from the environment at start-up
//! ([`ModelConfig::from_env`]) and then passed explicitly; nothing below it
//! reads the environment. Its `Debug` never prints the API key.

use std::fmt;
use std::time::Duration;

use super::request::{CompactionSettings, RequestOptions, WebTools};

/// The endpoint used when `ANTHROPIC_BASE_URL` is not set.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The host of Anthropic's API: the only backend with Anthropic's server
/// tools, so the default of `LOGBOOK_WEB_TOOLS` is `server` for it and
/// `client` for any other.
pub const ANTHROPIC_API_HOST: &str = "api.anthropic.com";
/// The `anthropic-version` header every request carries.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Time allowed to establish a connection (TCP and TLS).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed without a single byte from the model (headers or stream):
/// the stream sends `ping` events while it thinks, so a silent minute means
/// it is gone.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// `max_tokens` when the agent does not say: within the output limit of every
/// Claude 4 and later model.
pub const DEFAULT_MAX_TOKENS: u32 = 32_000;
/// The context window assumed when `LOGBOOK_CONTEXT_WINDOW` is not set: every
/// current Claude model's standard window.
pub const DEFAULT_CONTEXT_WINDOW: u64 = 200_000;
/// The context compacts at this share of the window (`LOGBOOK_COMPACTION_PERCENT`;
/// 0 turns compaction off). Leaves room for the answer and a round of tool
/// results before the window is reached.
pub const DEFAULT_COMPACTION_PERCENT: u64 = 80;
/// A compaction keeps the newest turns worth this share of the window
/// (`LOGBOOK_COMPACTION_KEEP_PERCENT`).
pub const DEFAULT_COMPACTION_KEEP_PERCENT: u64 = 20;

/// Connection settings of the Messages API client.
#[derive(Clone, PartialEq, Eq)]
pub struct ModelConfig {
    /// Scheme, host and optional path prefix; `/v1/messages` is appended.
    pub base_url: String,
    /// `x-api-key`; `None` makes every request fail with `Authentication`
    /// before anything is sent.
    pub api_key: Option<String>,
    pub connect_timeout: Duration,
    /// Longest silence tolerated while waiting for headers or stream bytes.
    /// Not a total deadline: a healthy stream may run for many minutes.
    pub idle_timeout: Duration,
    pub anthropic_version: String,
    /// Extra `anthropic-beta` values sent with every request (`ANTHROPIC_BETA`,
    /// comma-separated). Betas the request itself needs are added on top.
    pub betas: Vec<String>,
    /// Default `max_tokens` for requests built with [`ModelConfig::request_options`].
    pub max_tokens: u32,
    /// When the runner compacts a session's context (`None`: never).
    pub compaction: Option<CompactionSettings>,
    /// Who runs web_search and web_fetch (`LOGBOOK_WEB_TOOLS`).
    pub web_tools: WebTools,
}

impl ModelConfig {
    /// A config for `base_url` with every other setting at its default and no key.
    pub fn new(base_url: impl Into<String>) -> ModelConfig {
        let base_url = base_url.into();
        ModelConfig {
            web_tools: default_web_tools(&base_url),
            base_url,
            api_key: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            anthropic_version: ANTHROPIC_VERSION.to_owned(),
            betas: Vec::new(),
            max_tokens: DEFAULT_MAX_TOKENS,
            compaction: Some(CompactionSettings::from_percent(
                DEFAULT_CONTEXT_WINDOW,
                DEFAULT_COMPACTION_PERCENT,
                DEFAULT_COMPACTION_KEEP_PERCENT,
            )),
        }
    }

    /// Reads `ANTHROPIC_BASE_URL` (default [`DEFAULT_BASE_URL`]),
    /// `ANTHROPIC_API_KEY`, `ANTHROPIC_BETA`, the compaction settings
    /// (`LOGBOOK_CONTEXT_WINDOW`, `LOGBOOK_COMPACTION_PERCENT`,
    /// `LOGBOOK_COMPACTION_KEEP_PERCENT`) and `LOGBOOK_WEB_TOOLS` (`server` or
    /// `client`; default `server` for Anthropic's API, else `client`). Empty
    /// values count as unset.
    pub fn from_env() -> Result<ModelConfig, ConfigError> {
        ModelConfig::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`ModelConfig::from_env`] over any variable lookup, for tests.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<ModelConfig, ConfigError> {
        let var = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let mut config = ModelConfig::new(var("ANTHROPIC_BASE_URL").unwrap_or_else(|| DEFAULT_BASE_URL.to_owned()));
        config.api_key = var("ANTHROPIC_API_KEY");
        config.betas = var("ANTHROPIC_BETA")
            .map(|betas| betas.split(',').map(str::trim).filter(|b| !b.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default();
        let number = |name: &str, default: u64| var(name).and_then(|v| v.parse::<u64>().ok()).unwrap_or(default);
        let window = number("LOGBOOK_CONTEXT_WINDOW", DEFAULT_CONTEXT_WINDOW);
        let trigger = number("LOGBOOK_COMPACTION_PERCENT", DEFAULT_COMPACTION_PERCENT).min(100);
        let keep = number("LOGBOOK_COMPACTION_KEEP_PERCENT", DEFAULT_COMPACTION_KEEP_PERCENT).min(trigger);
        config.compaction =
            (trigger > 0 && window > 0).then(|| CompactionSettings::from_percent(window, trigger, keep));
        if let Some(web_tools) = var("LOGBOOK_WEB_TOOLS") {
            config.web_tools = WebTools::parse(&web_tools).ok_or(ConfigError::WebTools { value: web_tools })?;
        }
        Ok(config)
    }

    /// The request options matching this config (its `max_tokens` and
    /// compaction settings).
    pub fn request_options(&self) -> RequestOptions {
        RequestOptions {
            max_tokens: self.max_tokens,
            compaction: self.compaction,
            web_tools: self.web_tools,
            ..RequestOptions::default()
        }
    }

    /// `{base_url}/v1/messages`, without doubling a trailing slash.
    pub fn messages_url(&self) -> String {
        format!("{}/v1/messages", self.base_url.trim_end_matches('/'))
    }

    /// [`Self::messages_url`] as errors and logs may show it: without a user,
    /// password or query, which may hold a gateway's credentials.
    pub fn shown_messages_url(&self) -> String {
        shown_url(&self.messages_url())
    }
}

/// `url` without its user, password, query or fragment; `<the model API
/// URL>` when it does not parse, since then nothing is known to be safe.
pub(super) fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            // Fails only for URLs that cannot have a user (no host): then there is none.
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.to_string()
        }
        Err(_) => "<the model API URL>".to_owned(),
    }
}

/// A setting of the environment that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("LOGBOOK_WEB_TOOLS={value}: must be `server` (Anthropic's server tools) or `client` (run by Logbook)")]
    WebTools { value: String },
}

/// `server` when `base_url` is Anthropic's API, else `client`.
fn default_web_tools(base_url: &str) -> WebTools {
    let host = url::Url::parse(base_url).ok().and_then(|url| url.host_str().map(str::to_ascii_lowercase));
    if host.as_deref() == Some(ANTHROPIC_API_HOST) { WebTools::Server } else { WebTools::Client }
}

impl Default for ModelConfig {
    fn default() -> ModelConfig {
        ModelConfig::new(DEFAULT_BASE_URL)
    }
}

impl fmt::Debug for ModelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelConfig")
            .field("base_url", &shown_url(&self.base_url))
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("anthropic_version", &self.anthropic_version)
            .field("betas", &self.betas)
            .field("max_tokens", &self.max_tokens)
            .field("compaction", &self.compaction)
            .field("web_tools", &self.web_tools)
            .finish()
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
