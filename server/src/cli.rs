//! The command line: `logbook serve` and the offline tools.
//!
//! Every subcommand reports failures as one line saying what went wrong and
//! what to do, and exits non-zero. Long operations print progress to stderr.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use logbook_store::{SledOptions, SledStore};

use crate::http::{AppState, app};

#[derive(Debug, Parser)]
#[command(name = "logbook", version, about = "A self-hosted, event-sourced Managed Agents runtime")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "LOGBOOK_LISTEN", default_value = "127.0.0.1:8088")]
        listen: SocketAddr,
        /// Data directory (created if missing).
        #[arg(long, env = "LOGBOOK_DATA", default_value = "./logbook-data")]
        data: PathBuf,
        /// sled cache size in MiB.
        #[arg(long, default_value_t = 256)]
        cache_mib: u64,
    },
    /// Verify every session's hash chain, every head and every blob.
    Verify {
        #[arg(long, env = "LOGBOOK_DATA", default_value = "./logbook-data")]
        data: PathBuf,
        /// Print the full report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Serve { listen, data, cache_mib } => serve(listen, data, cache_mib),
        Command::Verify { data, json } => verify(data, json),
    };
    match res {
        Ok(code) => code,
        Err(err) => {
            eprintln!("logbook: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn open_store(data: &std::path::Path, cache_mib: u64) -> anyhow::Result<SledStore> {
    let options = SledOptions { cache_capacity_bytes: cache_mib * 1024 * 1024 };
    let store = SledStore::open(data, &options).with_context(|| format!("opening the store in {}", data.display()))?;
    for corruption in store.quarantined() {
        eprintln!(
            "logbook: quarantined {corruption}; run `logbook verify --data {}` for a full report",
            data.display()
        );
    }
    Ok(store)
}

fn serve(listen: SocketAddr, data: PathBuf, cache_mib: u64) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_env("LOGBOOK_LOG")).init();
    let store = open_store(&data, cache_mib)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}; is another server running there? pass --listen"))?;
        let local = listener.local_addr().context("reading the bound address")?;
        eprintln!("logbook: serving on http://{local} with data in {}", data.display());
        axum::serve(listener, app(AppState::new(store)))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("serving HTTP")?;
        eprintln!("logbook: shut down cleanly");
        Ok(ExitCode::SUCCESS)
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        () = term => {},
    }
}

fn verify(data: PathBuf, json: bool) -> anyhow::Result<ExitCode> {
    if !data.exists() {
        anyhow::bail!("no data directory at {}; pass --data DIR", data.display());
    }
    let store = open_store(&data, 64)?;
    let started = Instant::now();
    let mut last_print = Instant::now();
    let report = store
        .verify_all(&mut |progress| {
            if last_print.elapsed().as_millis() >= 500 {
                eprintln!(
                    "logbook: verified {} records in {} sessions, {} blobs",
                    progress.n_records, progress.n_sessions, progress.n_blobs
                );
                last_print = Instant::now();
            }
        })
        .context("reading the store")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report).context("encoding the report")?);
    }
    let n_damaged = report.damaged().count();
    for damaged in report.damaged() {
        for brk in &damaged.report.breaks {
            eprintln!("logbook: {}: break at seq {}: {:?}", damaged.session, brk.seq, brk.kind);
        }
    }
    for err in &report.blob_errors {
        eprintln!("logbook: {err}");
    }
    eprintln!(
        "logbook: {} records in {} sessions and {} blobs checked in {:.1}s: {}",
        report.n_records,
        report.sessions.len(),
        report.n_blobs,
        started.elapsed().as_secs_f64(),
        if report.is_intact() { "intact".to_owned() } else { format!("{n_damaged} sessions damaged") }
    );
    Ok(if report.is_intact() { ExitCode::SUCCESS } else { ExitCode::from(2) })
}
