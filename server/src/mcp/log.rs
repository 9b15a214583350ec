//! The SDK's own log events with the URLs they name cut down.
//!
//! `rmcp` logs its transport's failures itself (at `error` level: "fail to
//! delete session: ... for url (http://...)"), with reqwest's error text,
//! which names the MCP server's whole URL. Such a URL may carry a token in
//! its path, query or user info, and Logbook never shows more of it than
//! `scheme://host:port` ([`super::connect::shown`]). Turning the SDK's logs
//! off would hide its failures from the operator, and a filter the operator
//! sets (`LOGBOOK_LOG=debug`) would turn them on again; so every event from
//! the SDK, or inside one of its spans, is formatted as usual and then has
//! each URL in it cut down to `scheme://host[:port]`, whatever the filter.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The SDK's crate, the target of its events and spans.
const SDK_TARGET: &str = "rmcp";
/// What stands for the cut part of a URL (path, query, fragment, user info).
const CUT: &str = "/…";

/// An event formatter: `inner`'s format, with URLs cut down in the SDK's
/// events.
#[derive(Debug, Clone)]
pub struct RedactSdkUrls<F> {
    inner: F,
}

impl<F> RedactSdkUrls<F> {
    pub fn new(inner: F) -> Self {
        Self { inner }
    }
}

impl<S, N, F> FormatEvent<S, N> for RedactSdkUrls<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let from_sdk = is_sdk(event.metadata().target())
            || ctx.event_scope().is_some_and(|mut scope| scope.any(|span| is_sdk(span.metadata().target())));
        if !from_sdk {
            return self.inner.format_event(ctx, writer, event);
        }
        // Formatted apart (without colours), then cut.
        let mut line = String::new();
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        writer.write_str(&redact_urls(&line))
    }
}

fn is_sdk(target: &str) -> bool {
    target == SDK_TARGET || target.strip_prefix(SDK_TARGET).is_some_and(|rest| rest.starts_with("::"))
}

/// `text` with every URL (`scheme://...`, up to a space, a quote, a bracket
/// or a backslash) cut down to `scheme://host[:port]`, followed by [`CUT`]
/// when anything was cut.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let after = &rest[at + 3..];
        let url_end = after
            .find(|ch: char| ch.is_whitespace() || matches!(ch, '"' | '\'' | '<' | '>' | '(' | ')' | '`' | '\\'))
            .unwrap_or(after.len());
        let url = &after[..url_end];
        let authority = &url[..url.find(['/', '?', '#']).unwrap_or(url.len())];
        let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
        out.push_str(&rest[..at + 3]);
        out.push_str(host);
        if host.len() < url.len() {
            out.push_str(CUT);
        }
        rest = &after[url_end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_cut_to_their_origin() {
        assert_eq!(
            redact_urls("fail to delete session: error sending request for url (http://127.0.0.1:8080/mcp?token=s3)"),
            "fail to delete session: error sending request for url (http://127.0.0.1:8080/…)"
        );
        assert_eq!(redact_urls("url: \"https://user:pw@host.test/a\" then"), "url: \"https://host.test/…\" then");
        assert_eq!(redact_urls("https://host.test?k=v https://host.test"), "https://host.test/… https://host.test");
        assert_eq!(redact_urls("no url here: a://"), "no url here: a://");
        assert!(is_sdk("rmcp") && is_sdk("rmcp::transport") && !is_sdk("rmcpx") && !is_sdk("logbook_server"));
    }
}
