//! The offline subcommands: `logbook export` (a session as a bundle),
//! `logbook verify BUNDLE` (checks a bundle without any server),
//! `logbook import` (loads a bundle into a data directory, chain intact),
//! `logbook show` (a session's state at a seq) and `logbook fork` (a new
//! session continuing one from a seq).
//!
//! They work on a stopped server's data directory (sled holds a lock) or on a
//! bundle file, print progress and failures to stderr, and exit non-zero with
//! a line that says what to do.

use std::io::{BufRead as _, BufWriter, Write as _};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use logbook_core::{Clock, SessionId, SystemClock};
use logbook_replay::audit::{SignedHead, parse_hex};
use logbook_replay::bundle::{self, BundleReport, MAX_LINE_BYTES};
use logbook_store::{Read as _, ResourceKind, Resources, SledStore};

use crate::api::sessions::StoredSession;
use crate::audit::{self, AuditKey};
use crate::progress::Progress;
use crate::tenancy;

/// `logbook export`: writes the session's bundle to `out` (or stdout): its
/// records and the blobs they name, or with `records_only` its records alone
/// (format 1, for a session whose files' contents this store lacks).
pub fn export(
    store: &SledStore,
    key: &AuditKey,
    session: &str,
    out: Option<&Path>,
    records_only: bool,
) -> anyhow::Result<ExitCode> {
    let id: SessionId = session.parse().map_err(|_| anyhow::anyhow!("{session} is not a session id (sesn_...)"))?;
    let object = find_session(store, id)?
        .ok_or_else(|| anyhow::anyhow!("no session {id} in this data directory; `logbook verify --json` names them"))?;
    let value = serde_json::to_value(&object).context("encoding the session object")?;
    let now = SystemClock.now();
    let plan = if records_only {
        audit::plan_records_only(store, id)?
    } else {
        audit::plan_export(store, id).map_err(|err| match err {
            audit::ExportError::MissingBlob { .. } => {
                anyhow::anyhow!("{err} (`--records-only` exports its records without the files' contents)")
            }
            other @ (audit::ExportError::Store(_)
            | audit::ExportError::Io(_)
            | audit::ExportError::Render { .. }
            | audit::ExportError::BadManifest { .. }
            | audit::ExportError::BlobMismatch { .. }) => other.into(),
        })?
    };
    let mut progress = Progress::new("exported", Some(store.head(id)?.next.get()));
    let mut tick = |done: audit::Exported| {
        progress.tick_with_blobs(done.records, done.blobs, done.n_blobs, Some(done.blob_bytes));
    };
    let done = match out {
        Some(path) => {
            let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
            let mut writer = BufWriter::new(file);
            let done = audit::write_export(store, key, &plan, Some(value), now, &mut writer, &mut tick)?;
            writer.flush().with_context(|| format!("writing {}", path.display()))?;
            writer.get_ref().sync_all().with_context(|| format!("syncing {}", path.display()))?;
            done
        }
        None => {
            let stdout = std::io::stdout();
            let mut writer = BufWriter::new(stdout.lock());
            let done = audit::write_export(store, key, &plan, Some(value), now, &mut writer, &mut tick)?;
            writer.flush().context("writing stdout")?;
            done
        }
    };
    eprintln!(
        "logbook: exported {} records and {} blobs ({} bytes) of {id}, signed by key {}",
        done.records,
        done.blobs,
        done.blob_bytes,
        key.public_hex()
    );
    Ok(ExitCode::SUCCESS)
}

/// A bundle line that is not UTF-8, which export never writes: the bundle
/// was changed (verify reports it as damaged).
#[derive(Debug, thiserror::Error)]
#[error("line {line} of the bundle is not UTF-8: the bundle was changed")]
struct NotUtf8 {
    line: usize,
}

/// Reads a bundle's lines, refusing lines longer than the format allows,
/// with progress lines (in records: the lines after the header).
fn read_lines(path: &Path) -> anyhow::Result<Vec<String>> {
    let mut progress = Progress::new("read", None);
    let file = std::fs::File::open(path).with_context(|| format!("opening the bundle {}", path.display()))?;
    let mut reader = std::io::BufReader::new(file);
    let mut lines = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = std::io::Read::take(&mut reader, MAX_LINE_BYTES as u64 + 2)
            .read_until(b'\n', &mut line)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            return Ok(lines);
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        // Export writes UTF-8 JSON only: anything else was changed. (Read
        // lossily, a stray byte would become U+FFFD, which a record may
        // really hold, and pass the check.)
        let text = String::from_utf8(std::mem::take(&mut line)).map_err(|_| NotUtf8 { line: lines.len() + 1 })?;
        lines.push(text);
        progress.tick(lines.len().saturating_sub(1) as u64);
    }
}

/// A verifier's progress over a bundle's `lines` (header first, then one
/// line per record, then one per blob).
fn checking(lines: &[String]) -> Progress {
    let records = lines.iter().skip(1).filter(|l| !l.is_empty() && !bundle::is_blob_line(l)).count();
    Progress::new("verified", Some(records as u64))
}

/// `lines` as `bundle::verify` and `bundle::parse` take them, ticking
/// `progress` with the records (and blobs) checked so far as each line is
/// taken.
fn with_progress<'a>(lines: &'a [String], progress: &'a mut Progress) -> impl Iterator<Item = &'a str> + 'a {
    let n_blobs = lines.iter().filter(|l| bundle::is_blob_line(l)).count() as u64;
    let (mut records, mut blobs) = (0u64, 0u64);
    lines.iter().enumerate().map(move |(i, line)| {
        // What was checked before this line.
        if n_blobs == 0 {
            progress.tick(records);
        } else {
            progress.tick_with_blobs(records, blobs, n_blobs, None);
        }
        if bundle::is_blob_line(line) {
            blobs += 1;
        } else if i > 0 && !line.is_empty() {
            records += 1;
        }
        line.as_str()
    })
}

fn pinned_key(public_key: Option<&str>) -> anyhow::Result<Option<[u8; 32]>> {
    public_key
        .map(|hex| parse_hex::<32>(hex).ok_or_else(|| anyhow::anyhow!("--public-key must be 64 lowercase hex digits")))
        .transpose()
}

/// `logbook verify BUNDLE`: exit 0 when valid, 1 (naming the first bad seq)
/// otherwise. With `against`, also checks that the bundle extends that
/// earlier signed head and, when no key is pinned, that the bundle is signed
/// by the earlier head's key (exit 1 otherwise).
pub fn verify_bundle(
    path: &Path,
    public_key: Option<&str>,
    against: Option<&Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let pinned = pinned_key(public_key)?;
    let lines = match read_lines(path) {
        Ok(lines) => lines,
        Err(err) if err.downcast_ref::<NotUtf8>().is_some() => {
            if json {
                let value = serde_json::json!({
                    "report": {"valid": false, "session_id": null, "problems": [err.to_string()]},
                    "consistency": null,
                });
                crate::cli::print_line(&serde_json::to_string_pretty(&value).context("encoding the report")?)?;
            }
            eprintln!("logbook: the bundle is damaged: {err}");
            return Ok(ExitCode::from(1));
        }
        Err(err) => return Err(err),
    };
    let report = bundle::verify(with_progress(&lines, &mut checking(&lines)), pinned.as_ref());
    let mut consistency = None;
    if let Some(head_path) = against
        && report.is_valid()
    {
        let text = std::fs::read_to_string(head_path).with_context(|| format!("reading {}", head_path.display()))?;
        let head: SignedHead =
            serde_json::from_str(&text).with_context(|| format!("{} is not a signed head", head_path.display()))?;
        head.check(pinned.as_ref()).map_err(|e| anyhow::anyhow!("the earlier signed head does not check out: {e}"))?;
        let parsed = bundle::parse(with_progress(&lines, &mut checking(&lines)), pinned.as_ref())
            .map_err(|_| anyhow::anyhow!("the bundle changed while being read"))?;
        if head.session_id != parsed.header.session_id {
            anyhow::bail!("the signed head is of {}, the bundle of {}", head.session_id, parsed.header.session_id);
        }
        // Without --public-key the bundle's signature was only checked
        // against the key the bundle itself names: a continuation must be
        // signed by the key that signed the earlier head, or anyone holding
        // the first records could append their own and sign the result.
        if pinned.is_none() && parsed.header.signed_head.public_key != head.public_key {
            print_report(&report);
            eprintln!(
                "logbook: REFUSED: the bundle is signed by key {}, the earlier signed head by key {}; \
                 a continuation must be signed by the same key (pass --public-key to check against a key you trust)",
                parsed.header.signed_head.public_key, head.public_key
            );
            return Ok(ExitCode::from(1));
        }
        let from = head.seq.map_or(0, |s| s.get());
        let tail = parsed.records.iter().filter(|r| r.seq().get() >= from);
        let n_total = parsed.header.anchor.next_seq.get() + parsed.header.n_records;
        consistency = Some(logbook_replay::audit::consistency(&head, n_total, tail));
    }
    if json {
        let mut shown = serde_json::to_value(&report).context("encoding the report")?;
        if let Some(fields) = shown.as_object_mut() {
            fields.insert("valid".to_owned(), serde_json::Value::Bool(report.is_valid()));
        }
        let value = serde_json::json!({"report": shown, "consistency": consistency});
        crate::cli::print_line(&serde_json::to_string_pretty(&value).context("encoding the report")?)?;
    }
    print_report(&report);
    if let Some(verdict) = &consistency {
        if verdict.is_consistent() {
            eprintln!("logbook: consistent with the earlier signed head");
        } else {
            eprintln!("logbook: NOT consistent with the earlier signed head: {verdict:?}");
            return Ok(ExitCode::from(1));
        }
    }
    Ok(if report.is_valid() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn print_report(report: &BundleReport) {
    for problem in &report.problems {
        eprintln!("logbook: {problem:?}");
    }
    let session = report.session_id.map_or_else(|| "?".to_owned(), |s| s.to_string());
    if report.is_valid() {
        eprintln!(
            "logbook: bundle of {session}: {} records and {} blobs, chain, signed head and blobs valid",
            report.n_lines, report.n_blobs
        );
    } else {
        match report.first_bad_seq() {
            Some(seq) => eprintln!("logbook: bundle of {session} is damaged: first bad seq {seq}"),
            None if report.problems.iter().all(bundle::Problem::is_blob) => {
                let named: Vec<String> = report.problems.iter().filter_map(blob_of).collect();
                eprintln!(
                    "logbook: bundle of {session} is damaged: its records are intact, its blobs are not: {}",
                    named.join(", ")
                );
            }
            None => eprintln!("logbook: bundle of {session} is damaged: its header or signed head is bad"),
        }
    }
}

/// The blob a blob problem names, as text ("line N" when the line names none).
fn blob_of(problem: &bundle::Problem) -> Option<String> {
    match problem {
        bundle::Problem::Blob { blob: Some(blob), reason, .. } => Some(format!("blob {blob} ({reason})")),
        bundle::Problem::Blob { index, blob: None, reason } => Some(format!("blob line {index} ({reason})")),
        bundle::Problem::MissingBlob { blob, reason, .. } => Some(format!("blob {blob} is missing ({reason})")),
        bundle::Problem::Header { .. }
        | bundle::Problem::Signature { .. }
        | bundle::Problem::Line { .. }
        | bundle::Problem::Chain { .. }
        | bundle::Problem::Truncated { .. }
        | bundle::Problem::Trailing { .. }
        | bundle::Problem::HeadMismatch { .. } => None,
    }
}

/// `logbook import`: verifies the bundle, then loads its blobs, records and
/// session object into `store` under `workspace`.
///
/// The session object names its source's environment. With `environment`
/// the imported session is moved to that environment of the workspace
/// (which must exist and be hosted the same way: the tool host is part of
/// how the log replays), so that it can be forked and continued; without
/// it, an environment the workspace lacks is warned about (reading,
/// verifying and exporting the session work; forking or continuing it needs
/// the environment). A bundle that does not verify is an
/// [`audit::ImportError::Invalid`] naming its problems.
pub fn import(
    store: &SledStore,
    path: &Path,
    workspace: &str,
    public_key: Option<&str>,
    environment: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let pinned = pinned_key(public_key)?;
    let lines = read_lines(path)?;
    let parsed = match bundle::parse(with_progress(&lines, &mut checking(&lines)), pinned.as_ref()) {
        Ok(parsed) => parsed,
        Err(report) => {
            print_report(&report);
            let problems: Vec<String> = report.problems.iter().map(|p| format!("{p:?}")).collect();
            return Err(audit::ImportError::Invalid(problems.join("; ")))
                .context("refusing to import a bundle that does not verify");
        }
    };
    drop(lines);
    let id = parsed.header.session_id;
    let mut object: StoredSession = parsed
        .header
        .session
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the bundle carries no session object; export it with a newer logbook"))
        .and_then(|value| serde_json::from_value(value).context("the bundle's session object"))?;
    if object.id != id {
        anyhow::bail!("the bundle's session object is {}, its log {id}", object.id);
    }
    if find_session(store, id)?.is_some() {
        anyhow::bail!("session {id} already exists in this data directory; imports never overwrite");
    }
    let now = SystemClock.now();
    let workspace = tenancy::ensure_workspace(store, workspace, now).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let tenant = tenancy::Tenant { workspace: workspace.id };
    match environment {
        Some(raw) => object = with_environment(store, &tenant, object, raw)?,
        None => {
            if crate::api::environments::load(store, &tenant, object.environment_id).is_err() {
                eprintln!(
                    "logbook: warning: the session's environment {} is not in workspace {}: the session can be \
                     read, verified and exported, but forking or continuing it needs an environment (import it \
                     with --environment ENV_ID)",
                    object.environment_id, workspace.name
                );
            }
        }
    }
    let mut progress = Progress::new("imported", Some(parsed.records.len() as u64));
    let done = audit::import_records(store, &parsed, &mut |done| {
        progress.tick_with_blobs(done.records, done.blobs, done.n_blobs, None);
    })?;
    let n = done.records;
    let bytes =
        crate::api::to_bytes(&object).map_err(|e| anyhow::anyhow!("encoding the session object: {}", e.message))?;
    store
        .swap_resource(ResourceKind::Session, &tenant.key(id.to_bytes()), None, Some(&bytes))?
        .map_err(|_| anyhow::anyhow!("session {id} appeared while importing"))?;
    eprintln!(
        "logbook: imported {n} records and {} blobs of {id} into workspace {}, chain intact",
        done.blobs, workspace.name
    );
    Ok(ExitCode::SUCCESS)
}

/// `object` moved to the environment `raw` of `tenant`, which must exist and
/// be hosted as the session's was.
fn with_environment(
    store: &SledStore,
    tenant: &tenancy::Tenant,
    mut object: StoredSession,
    raw: &str,
) -> anyhow::Result<StoredSession> {
    let env_id: logbook_core::EnvironmentId =
        raw.parse().map_err(|_| anyhow::anyhow!("--environment: {raw:?} is not an environment id (env_...)"))?;
    let (_, env) = crate::api::environments::load(store, tenant, env_id)
        .map_err(|e| anyhow::anyhow!("--environment {env_id}: {}", e.message))?;
    let self_hosted = matches!(env.config, crate::api::environments::EnvConfig::SelfHosted {});
    if self_hosted != object.self_hosted {
        let hosting = |self_hosted: bool| if self_hosted { "self-hosted" } else { "cloud" };
        anyhow::bail!(
            "--environment {env_id} is {}, the session's environment was {}: a session's tool host is fixed \
             (its log replays with it)",
            hosting(self_hosted),
            hosting(object.self_hosted)
        );
    }
    object.environment_id = env_id;
    Ok(object)
}

/// The stored session object with this id, in any workspace.
fn find_session(store: &SledStore, id: SessionId) -> anyhow::Result<Option<StoredSession>> {
    Ok(find_session_in(store, id)?.map(|(_, session)| session))
}

/// The session object with this id and the workspace it belongs to.
fn find_session_in(store: &SledStore, id: SessionId) -> anyhow::Result<Option<(tenancy::Tenant, StoredSession)>> {
    let mut found = None;
    crate::api::scan_all(store, ResourceKind::Session, b"", |key, bytes| {
        let Some(workspace) = key.strip_suffix(&id.to_bytes()).and_then(|w| <[u8; 16]>::try_from(w).ok()) else {
            return Ok(std::ops::ControlFlow::Continue(()));
        };
        let tenant = tenancy::Tenant { workspace: logbook_core::WorkspaceId::from_bytes(workspace) };
        found = Some((tenant, bytes.to_vec()));
        Ok(std::ops::ControlFlow::Break(()))
    })
    .map_err(|err| anyhow::anyhow!("reading the sessions: {}", err.message))?;
    found
        .map(|(tenant, bytes)| {
            Ok((
                tenant,
                crate::api::from_bytes(&bytes)
                    .map_err(|err| anyhow::anyhow!("decoding a session object: {}", err.message))?,
            ))
        })
        .transpose()
}

/// `logbook show`: a session's state after a seq (JSON on stdout), one of its
/// workspace files (bytes on stdout), or its context fitted to a budget.
pub fn show(
    store: &SledStore,
    session: &str,
    at_seq: Option<u64>,
    file: Option<&str>,
    budget_tokens: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let id: SessionId = session.parse().map_err(|_| anyhow::anyhow!("{session:?} is not a session id (sesn_...)"))?;
    let object = find_session(store, id)?.with_context(|| format!("no session {id} in this data directory"))?;
    let at = crate::api::x::state::seq_at(store, id, at_seq).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let projected = crate::projection::state_at(store, id, at).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let at_head = crate::api::x::state::is_head(store, id, at).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let options = crate::model::ModelConfig::from_env()?.request_options();
    let mut out = std::io::stdout().lock();
    match (file, budget_tokens) {
        (Some(path), _) => {
            let path = format!("/{}", path.trim_start_matches('/'));
            let (blob, size) = crate::api::x::state::file_contents(&projected, &path, at)
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            crate::resources::content::copy_to(store, blob, size, &mut out)
                .with_context(|| format!("reading {path} from the store"))?;
        }
        (None, Some(budget)) => {
            let value = crate::api::x::state::context_json(&options, id, at, &object, &projected, budget, at_head);
            writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        }
        (None, None) => {
            let value = crate::api::x::state::state_json(&options, id, at, &object, &projected, at_head);
            writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `logbook fork`: a new session continuing `session` after `at_seq` (or the
/// event `at_event_id`), with its workspace written under `data`; prints the
/// new session (JSON). The server wakes it when it next starts.
pub fn fork(
    store: &SledStore,
    data: &Path,
    session: &str,
    request: crate::api::x::fork::ForkRequest,
) -> anyhow::Result<ExitCode> {
    use crate::api::x::fork::{ForkPlace, fork_session};
    let parent: SessionId =
        session.parse().map_err(|_| anyhow::anyhow!("{session:?} is not a session id (sesn_...)"))?;
    let (tenant, _) =
        find_session_in(store, parent)?.with_context(|| format!("no session {parent} in this data directory"))?;
    let now = SystemClock.now();
    let child = SessionId::from_parts(
        u64::try_from(now.unix_ms()).unwrap_or(0),
        rand::RngExt::random::<u128>(&mut rand::rng()),
    );
    let paths = crate::sandbox::layout::SessionPaths::new(data, child);
    let place = ForkPlace { tenant, parent, child, now, paths: Some(&paths), state: None };
    let forked = fork_session(store, &place, request).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    eprintln!(
        "forked {parent} after seq {} into {child} ({} workspace entries written)",
        forked.origin.parent_seq, forked.n_files
    );
    crate::cli::print_line(&serde_json::to_string_pretty(&forked.to_wire(now))?)?;
    Ok(ExitCode::SUCCESS)
}
