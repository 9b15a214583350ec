//! Tests of reading the model config from (a stand-in for) the environment.

use pretty_assertions::assert_eq;

use super::*;

#[test]
fn defaults_when_nothing_is_set() {
    let config = ModelConfig::from_lookup(|_| None).unwrap();
    assert_eq!(config, ModelConfig::new(DEFAULT_BASE_URL));
    assert_eq!(config.messages_url(), "https://api.anthropic.com/v1/messages");
    assert_eq!(config.idle_timeout, DEFAULT_IDLE_TIMEOUT);
    assert_eq!(config.anthropic_version, "2023-06-01");
}

#[test]
fn variables_are_read_and_empty_ones_ignored() {
    let config = ModelConfig::from_lookup(|name| match name {
        "ANTHROPIC_BASE_URL" => Some("http://127.0.0.1:9999/proxy/".to_owned()),
        "ANTHROPIC_API_KEY" => Some(" sk-test ".to_owned()),
        "ANTHROPIC_BETA" => Some("a-2025, ,b-2026".to_owned()),
        _ => None,
    })
    .unwrap();
    assert_eq!(config.messages_url(), "http://127.0.0.1:9999/proxy/v1/messages");
    assert_eq!(config.api_key.as_deref(), Some("sk-test"));
    assert_eq!(config.betas, vec!["a-2025".to_owned(), "b-2026".to_owned()]);

    let empty = ModelConfig::from_lookup(|_| Some("  ".to_owned())).unwrap();
    assert_eq!(empty.api_key, None);
    assert_eq!(empty.base_url, DEFAULT_BASE_URL);
}

#[test]
fn debug_never_shows_the_key() {
    let mut config = ModelConfig::new("http://x");
    config.api_key = Some("sk-secret-value".to_owned());
    let debug = format!("{config:?}");
    assert!(!debug.contains("sk-secret-value"), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");
}

#[test]
fn web_tools_are_the_providers_only_on_anthropics_api() {
    // Goal: Anthropic's server tools are sent only to Anthropic's API unless
    // the operator says otherwise; a typo is an error, not a silent default.
    let with = |base: Option<&str>, web: Option<&str>| {
        ModelConfig::from_lookup(|name| match name {
            "ANTHROPIC_BASE_URL" => base.map(str::to_owned),
            "LOGBOOK_WEB_TOOLS" => web.map(str::to_owned),
            _ => None,
        })
    };
    assert_eq!(with(None, None).unwrap().web_tools, WebTools::Server);
    assert_eq!(with(Some("https://API.anthropic.com/"), None).unwrap().web_tools, WebTools::Server);
    assert_eq!(with(Some("http://127.0.0.1:8080"), None).unwrap().web_tools, WebTools::Client);
    assert_eq!(with(Some("https://api.anthropic.com.evil.example"), None).unwrap().web_tools, WebTools::Client);
    assert_eq!(with(Some("http://127.0.0.1:8080"), Some("server")).unwrap().web_tools, WebTools::Server);
    assert_eq!(with(None, Some("client")).unwrap().request_options().web_tools, WebTools::Client);
    assert_eq!(with(None, Some("both")), Err(ConfigError::WebTools { value: "both".to_owned() }));
}

#[test]
fn the_shown_endpoint_has_no_credentials() {
    let config = ModelConfig::new("https://gw-user:gw-pass@gateway.example:8443/anthropic/");
    assert_eq!(config.shown_messages_url(), "https://gateway.example:8443/anthropic/v1/messages");
    assert_eq!(shown_url("http://u:p@127.0.0.1:9/v1/messages?key=k#f"), "http://127.0.0.1:9/v1/messages");
    assert!(!format!("{config:?}").contains("gw-pass"));
    assert_eq!(shown_url("not a url with gw-pass"), "<the model API URL>");
}
