//! The server-side tools of a session whose environment is self-hosted: its
//! workspace is on the user's worker, not on this server.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use logbook_core::{EventId, Json, SessionId, Timestamp};
use serde_json::json;

use super::http::{Reply, TestServer};
use super::{services_with, text_of};
use crate::api::environments::{EnvConfig, Environment};
use crate::api::tools::resolve_tools;
use crate::runner::{ToolCall, ToolExecutor};
use crate::sandbox::{SandboxConfig, SandboxTools};
use crate::tools::web::{HostResolver, LookupFuture};

const PUBLIC_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));

/// `public.test` is the documentation address the fetcher's test rewrite
/// sends to the loopback site.
#[derive(Debug)]
struct OneName;

impl HostResolver for OneName {
    fn lookup(&self, host: String) -> LookupFuture<'static> {
        let answer = if host == "public.test" {
            Ok(vec![PUBLIC_IP])
        } else {
            Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no such name"))
        };
        Box::pin(async move { answer })
    }
}

/// Defect (review, tools): a web tool's output over 100,000 characters in a
/// self-hosted session is "saved" to a workspace that is not the session's.
/// Logbook runs web_fetch for self-hosted sessions (their worker does not),
/// through the same executor as for its own sandboxes, which spills large
/// outputs into the server's directory for the session
/// (`sandboxes/<session>/workspace/.logbook/tool-outputs/`) and tells the
/// model the whole text is in `/workspace/.logbook/tool-outputs/<hash>.txt`
/// ("read it with view_range, or search it with grep"). The model's read
/// and grep run on the worker, where no such file exists: the rest of the
/// page is lost and the model is pointed at a file it cannot find (and the
/// runner then records the server-side file as a workspace change of the
/// self-hosted session). MCP results of such sessions get a preview that
/// says the output could not be saved (`runner/step.rs`,
/// `ToolHost::Worker`); web tool results do not. Method: the sandboxed
/// executor runs web_fetch of a 150,000-character page for a session whose
/// environment is self-hosted; nothing may be written for it on the server
/// and the result must not name a saved file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_web_fetch_of_a_self_hosted_session_is_not_saved_to_a_workspace_it_does_not_have() {
    let site =
        TestServer::start("127.0.0.1:0", Arc::new(|_: &str| Reply::new(200, "text/plain", "word ".repeat(30_000))))
            .await;
    let services = services_with(Arc::new(OneName), vec![(PUBLIC_IP, site.addr)], None);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let config = SandboxConfig {
        tool_services: Some(Arc::new(services)),
        ..SandboxConfig::for_data(&data, PathBuf::from("/nonexistent/logbook"))
    };
    let store = Arc::new(logbook_store::MemStore::in_memory().unwrap());
    let tools = SandboxTools::new(config, store as _).unwrap();

    let session = SessionId::from_parts(1_700_000_000_000, 7);
    let at = Timestamp::from_unix_micros(1_700_000_000_000_000);
    let environment = Environment {
        id: logbook_core::EnvironmentId::from_parts(1_700_000_000_000, 1),
        object: "environment".to_owned(),
        name: "worker".to_owned(),
        description: None,
        metadata: serde_json::Map::new(),
        config: EnvConfig::SelfHosted {},
        scope: "organization".to_owned(),
        created_at: at,
        updated_at: at,
        archived_at: None,
    };
    let agent_tools = resolve_tools(&[json!({"type": "agent_toolset_20260401"})]).unwrap();
    let input = Json::new(&json!({"url": "http://public.test/page"}));
    let call = ToolCall {
        session,
        tool_use_id: EventId::from_parts(1_700_000_000_000, 1),
        name: "web_fetch",
        input: &input,
        agent_tools: &agent_tools,
        environment: Some(&environment),
        log: &[],
    };
    let outcome = tokio::time::timeout(Duration::from_secs(60), tools.run(&call)).await.expect("web_fetch hangs");
    let text = text_of(&outcome);
    assert!(!outcome.is_error, "the fetch itself failed: {text}");

    let spill = tools.paths(session).workspace().join(".logbook");
    let saved: Vec<PathBuf> = walkdir(&spill);
    assert!(
        saved.is_empty() && !text.contains("saved whole in /workspace"),
        "a self-hosted session's output was saved on the server, where its worker cannot read it ({saved:?}); \
         the model was told: {}",
        text.lines().next().unwrap_or_default()
    );
}

/// Every file below `dir` (none if it does not exist).
fn walkdir(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                stack.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    files
}
