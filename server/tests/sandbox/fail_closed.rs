//! Fail-closed (G-X2): with a precondition of the sandbox removed, bash
//! runs nothing and the call says why. The positive control is the same call
//! with everything in place.

use std::path::PathBuf;
use std::sync::Arc;

use logbook_server::api::environments::EnvConfig;
use logbook_server::sandbox::layout::SANDBOX_UID;
use logbook_server::sandbox::{SandboxConfig, SandboxTools};
use logbook_store::MemStore;

use crate::harness::{Sbx, session, text, unrestricted};

/// A marker file the command would create if it ran anywhere.
fn marker(sbx: &Sbx, s: logbook_core::SessionId) -> PathBuf {
    sbx.paths(s).workspace().join("ran")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_bubblewrap_nothing_runs() {
    let sbx = Sbx::new();
    let config = SandboxConfig {
        bwrap: PathBuf::from("/nonexistent/bwrap"),
        ..SandboxConfig::for_data(&sbx.data, PathBuf::from(env!("CARGO_BIN_EXE_logbook")))
    };
    let broken = SandboxTools::new(config, Arc::new(MemStore::in_memory().unwrap())).unwrap();
    assert!(broken.check().iter().any(|p| p.contains("bubblewrap is not installed")), "{:?}", broken.check());
    let s = session();
    let env = unrestricted();
    let input = logbook_core::Json::new(&serde_json::json!({"command": "touch /workspace/ran; touch ran"}));
    let call = logbook_server::runner::ToolCall {
        session: s,
        tool_use_id: logbook_core::EventId::for_seq(1, logbook_core::Seq::new(1), 1),
        name: "bash",
        input: &input,
        agent_tools: &[],
        environment: Some(&env),
        log: &[],
    };
    let outcome = logbook_server::runner::ToolExecutor::run(&broken, &call).await;
    assert!(outcome.is_error);
    assert!(text(&outcome).contains("bubblewrap is not installed"), "{}", text(&outcome));
    assert!(!marker(&sbx, s).exists());
    // Positive control: the same command with a working sandbox.
    sbx.ok(s, &env, "touch ran").await;
    assert!(marker(&sbx, s).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_forwarder_or_an_environment_nothing_runs() {
    let sbx = Sbx::new();
    let config = SandboxConfig {
        forwarder: PathBuf::from("/nonexistent/logbook"),
        ..SandboxConfig::for_data(&sbx.data, PathBuf::from(env!("CARGO_BIN_EXE_logbook")))
    };
    let broken = SandboxTools::new(config, Arc::new(MemStore::in_memory().unwrap())).unwrap();
    let s = session();
    let env = unrestricted();
    let input = logbook_core::Json::new(&serde_json::json!({"command": "touch ran"}));
    let mut call = logbook_server::runner::ToolCall {
        session: s,
        tool_use_id: logbook_core::EventId::for_seq(1, logbook_core::Seq::new(1), 1),
        name: "bash",
        input: &input,
        agent_tools: &[],
        environment: Some(&env),
        log: &[],
    };
    let outcome = logbook_server::runner::ToolExecutor::run(&broken, &call).await;
    assert!(outcome.is_error && text(&outcome).contains("sandbox could not be started"), "{}", text(&outcome));
    call.environment = None;
    let outcome = logbook_server::runner::ToolExecutor::run(&sbx.tools, &call).await;
    assert!(outcome.is_error && text(&outcome).contains("environment could not be loaded"), "{}", text(&outcome));
    let mut self_hosted = unrestricted();
    self_hosted.config = EnvConfig::SelfHosted {};
    call.environment = Some(&self_hosted);
    let outcome = logbook_server::runner::ToolExecutor::run(&sbx.tools, &call).await;
    assert!(outcome.is_error && text(&outcome).contains("self_hosted"), "{}", text(&outcome));
    assert!(!marker(&sbx, s).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_directories_belong_to_the_sandbox_uid() {
    use std::os::unix::fs::MetadataExt;
    let sbx = Sbx::new();
    let (s, env) = (session(), unrestricted());
    sbx.ok(s, &env, "touch /mnt/session/outputs/o").await;
    let paths = sbx.paths(s);
    for dir in [paths.root(), &paths.workspace(), &paths.uploads(), &paths.outputs(), &paths.outputs().join("o")] {
        let meta = std::fs::metadata(dir).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (SANDBOX_UID, SANDBOX_UID), "{}", dir.display());
    }
    assert_eq!(std::fs::metadata(paths.root()).unwrap().mode() & 0o777, 0o700);
}
