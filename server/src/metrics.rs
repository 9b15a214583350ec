//! Prometheus metrics at `/metrics`, in the text exposition format.
//!
//! A small fixed set of counters and gauges, labelled only by route template,
//! method and status class (never by session or workspace id), so cardinality
//! stays bounded by the route table.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// method -> route -> status -> (count, total seconds). Nested, not keyed by
/// the triple, so that counting a request looks its keys up by reference and
/// allocates nothing once they exist; walked in the same order.
type RequestTable = BTreeMap<String, BTreeMap<String, BTreeMap<u16, (u64, f64)>>>;

/// Panics anywhere in the process since it started, counted by the hook
/// [`count_panics`] installs. Every one is a bug: where the server catches
/// them (a session's turn, a workspace scan, an export) it goes on, so
/// without this count they would show only on stderr.
static PANICS: AtomicU64 = AtomicU64::new(0);

/// Counts every later panic in [`PANICS`], then reports it as before (the
/// previous hook prints it to stderr). For `serve`, once, at start-up.
pub fn count_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::Relaxed);
        previous(info);
    }));
}

#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<RequestTable>,
    pub events_appended: AtomicU64,
    pub sse_streams_open: AtomicI64,
    pub sse_events_sent: AtomicU64,
    pub rate_limited: AtomicU64,
    /// Requests refused because the data directory's disk is low on space
    /// (`crate::diskguard`).
    pub disk_low_refused: AtomicU64,
    /// Sessions whose next model call or tool run waits for a free work
    /// slot of their workspace (`RunnerConfig::max_working_per_workspace`).
    pub runner_sessions_waiting: AtomicI64,
}

impl Metrics {
    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        if let Ok(mut requests) = self.requests.lock() {
            let routes = match requests.get_mut(method) {
                Some(routes) => routes,
                None => requests.entry(method.to_owned()).or_default(),
            };
            let statuses = match routes.get_mut(route) {
                Some(statuses) => statuses,
                None => routes.entry(route.to_owned()).or_default(),
            };
            let entry = statuses.entry(status).or_insert((0, 0.0));
            entry.0 += 1;
            entry.1 += seconds;
        }
    }

    /// Every (method, route, status) counted, in that order, with its count
    /// and total seconds.
    fn requests(&self) -> Vec<(String, String, u16, u64, f64)> {
        let Ok(requests) = self.requests.lock() else { return Vec::new() };
        let mut out = Vec::new();
        for (method, routes) in requests.iter() {
            for (route, statuses) in routes {
                for (status, (count, seconds)) in statuses {
                    out.push((method.clone(), route.clone(), *status, *count, *seconds));
                }
            }
        }
        out
    }

    pub fn render(&self, extra: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP logbook_http_requests_total HTTP requests answered.");
        let _ = writeln!(out, "# TYPE logbook_http_requests_total counter");
        let requests = self.requests();
        for (method, route, status, count, _) in &requests {
            let _ = writeln!(
                out,
                "logbook_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {count}"
            );
        }
        let _ = writeln!(out, "# HELP logbook_http_request_seconds_total Time spent answering HTTP requests.");
        let _ = writeln!(out, "# TYPE logbook_http_request_seconds_total counter");
        for (method, route, status, _, seconds) in &requests {
            let _ = writeln!(
                out,
                "logbook_http_request_seconds_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {seconds}"
            );
        }
        let counters = [
            (
                "logbook_events_appended_total",
                "counter",
                "Events appended through the API.",
                self.events_appended.load(Ordering::Relaxed) as f64,
            ),
            (
                "logbook_sse_streams_open",
                "gauge",
                "Open SSE event streams.",
                self.sse_streams_open.load(Ordering::Relaxed) as f64,
            ),
            (
                "logbook_sse_events_sent_total",
                "counter",
                "Events written to SSE streams.",
                self.sse_events_sent.load(Ordering::Relaxed) as f64,
            ),
            (
                "logbook_runner_sessions_waiting",
                "gauge",
                "Sessions waiting for a work slot of their workspace.",
                self.runner_sessions_waiting.load(Ordering::Relaxed) as f64,
            ),
            (
                "logbook_rate_limited_total",
                "counter",
                "Requests refused by rate limits.",
                self.rate_limited.load(Ordering::Relaxed) as f64,
            ),
            (
                "logbook_disk_low_refused_total",
                "counter",
                "Requests refused because the data directory's disk was below its reserve of free space.",
                self.disk_low_refused.load(Ordering::Relaxed) as f64,
            ),
            (
                "logbook_panics_total",
                "counter",
                "Panics in the server process (each a bug; stderr has where).",
                PANICS.load(Ordering::Relaxed) as f64,
            ),
        ];
        for (name, kind, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        }
        for (name, help, value) in extra {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}
