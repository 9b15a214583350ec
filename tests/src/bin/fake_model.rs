//! The scripted fake Messages API as a process, for tests written in other
//! languages (the Python end-to-end suite).
//!
//! Usage: `fake-model [--port PORT] [--api-key KEY] [--script FILE]`.
//! `--port 0` (the default) picks a free port. Once listening it prints
//! `fake-model listening on http://127.0.0.1:PORT` on stdout; tests read that
//! line, then drive it through `/_fake/script`, `/_fake/requests` and
//! `/_fake/reset` (see `logbook_tests::fake_model`). It runs until killed.

use std::io::Write;

use anyhow::{Context, bail};
use logbook_tests::fake_model::{FakeOptions, FakeState, router};
use serde_json::Value;

const USAGE: &str = "usage: fake-model [--port PORT] [--api-key KEY] [--script FILE]";

fn main() -> anyhow::Result<()> {
    let mut port: u16 = 0;
    let mut options = FakeOptions::default();
    let mut script: Vec<Value> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--port" => port = value()?.parse().context("--port")?,
            "--api-key" => options.api_key = Some(value()?),
            "--script" => {
                let path = value()?;
                let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
                script = serde_json::from_str(&text).with_context(|| format!("{path} is not a JSON list of steps"))?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let state = FakeState::new(script, options)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(("127.0.0.1", port)).await.with_context(|| format!("binding port {port}"))?;
        let addr = listener.local_addr()?;
        let mut stdout = std::io::stdout();
        writeln!(stdout, "fake-model listening on http://{addr}")?;
        stdout.flush()?;
        // TCP_NODELAY, or each streamed event waits for the client's delayed ACK.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, router(state)).await.context("serving")
    })
}
