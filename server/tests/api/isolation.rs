//! The tenant-isolation matrix: every route of `routes()`, called on
//! workspace A's objects with A's key, B's key, a revoked key, no key and a
//! malformed key.
//!
//! Invariant: another workspace's object answers exactly like an object that
//! does not exist (same status, error type, details and message up to the id),
//! never 200, never a trace of the object in the body; lists never show
//! another workspace's objects; failed attempts change nothing. Routes only
//! self-hosted workers call take environment keys: there, each workspace uses
//! the key of its own environment, and B's key on A's environment must answer
//! like a key on an environment that does not exist. Work routes act on a
//! self-hosted environment of the workspace, the others on a cloud one.

use axum::http::Method;
use logbook_server::http::{RouteSpec, routes};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use crate::harness::{Auth, Harness, Resp, id, ids, user_message};

/// Marks every string workspace A stores, to detect leaks in B's responses.
const SECRET: &str = "tenant-a-secret";

/// Well-formed ids that name nothing.
const MISSING_AGENT: &str = "agent_01JQ8Z7M3P5R7T9V1X3Z5B7D0E";
const MISSING_ENV: &str = "env_01JQ8Z7M3P5R7T9V1X3Z5B7D0E";
const MISSING_SESSION: &str = "sesn_01JQ8Z7M3P5R7T9V1X3Z5B7D0E";
const MISSING_FILE: &str = "file_01JQ8Z7M3P5R7T9V1X3Z5B7D0E";
const MISSING_RESOURCE: &str = "sesrsc_01JQ8Z7M3P5R7T9V1X3Z5B7D0E";
const MISSING_REPO_RESOURCE: &str = "sesrsc_01JQ8Z7M3P5R7T9V1X3Z5B7D0F";
const MISSING_WORK: &str = "work_01JQ8Z7M3P5R7T9V1X3Z5B7D0E";

/// Objects of one workspace that path parameters and bodies refer to. The
/// environment is self-hosted, so the session has a work item.
#[derive(Debug, Clone)]
struct Ids {
    agent: String,
    env: String,
    session: String,
    /// A downloadable file (a captured output of `session`).
    file: String,
    /// `file` mounted into `session`.
    resource: String,
    /// A repository resource of `session`.
    repo_resource: String,
    /// A self-hosted environment of the workspace (resources are refused
    /// there, so it is not `env`), with a session and so a work item.
    work_env: String,
    work: String,
    /// A live environment key of `env`.
    env_key: String,
}

impl Ids {
    fn missing() -> Ids {
        Ids {
            agent: MISSING_AGENT.to_owned(),
            env: MISSING_ENV.to_owned(),
            session: MISSING_SESSION.to_owned(),
            file: MISSING_FILE.to_owned(),
            resource: MISSING_RESOURCE.to_owned(),
            repo_resource: MISSING_REPO_RESOURCE.to_owned(),
            work_env: MISSING_ENV.to_owned(),
            work: MISSING_WORK.to_owned(),
            env_key: String::new(),
        }
    }

    /// Every object id, for list checks.
    fn all(&self) -> [&String; 4] {
        [&self.agent, &self.env, &self.session, &self.file]
    }

    /// Replaces these ids in `text` by placeholders.
    fn erase(&self, text: &str) -> String {
        text.replace(&self.agent, "<agent>")
            .replace(&self.env, "<env>")
            .replace(&self.session, "<session>")
            .replace(&self.file, "<file>")
            .replace(&self.repo_resource, "<resource>")
            .replace(&self.resource, "<resource>")
            .replace(&self.work, "<work>")
            .replace(&self.work_env, "<env>")
    }
}

/// The credential a route is called with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cred {
    /// The workspace's API key.
    ApiKey,
    /// The environment key of the workspace's own environment.
    EnvKey,
}

/// What one route is called with.
#[derive(Debug)]
struct Call {
    path: String,
    body: Option<Value>,
    /// A list route: B's key must succeed and show none of A's objects.
    list: bool,
    /// A create route that references no existing object: B's key creates in B.
    creates: bool,
    /// A route about the server, not about any workspace's objects: every
    /// valid key gets the same answer.
    global: bool,
    /// A multipart file upload (the body is ignored).
    upload: bool,
    /// The credential A's own call uses.
    cred: Cred,
}

/// Fills a route's path parameters with `ids`; an unknown parameter fails the test.
fn fill(route: &RouteSpec, ids: &Ids) -> String {
    let mut path = route.path.to_owned();
    // Work routes act on the workspace's self-hosted environment.
    let env = if route.path.contains("/work") { &ids.work_env } else { &ids.env };
    for (param, value) in [
        ("{agent_id}", &ids.agent),
        ("{environment_id}", env),
        ("{session_id}", &ids.session),
        ("{thread_id}", &ids.session.replacen("sesn_", "sthr_", 1)),
        ("{*path}", &"workspace/notes.txt".to_owned()),
        ("{seq}", &"0".to_owned()),
        ("{file_id}", &ids.file),
        ("{resource_id}", &ids.resource),
        ("{work_id}", &ids.work),
    ] {
        path = path.replace(param, value);
    }
    assert!(!path.contains('{'), "route {} {} has a path parameter the matrix cannot fill", route.method, route.path);
    path
}

/// The call for a route against `ids`. A route the matrix does not know fails the test.
fn call_for(route: &RouteSpec, ids: &Ids) -> Call {
    let path = fill(route, ids);
    let call = |body: Option<Value>| Call {
        path: path.clone(),
        body,
        list: false,
        creates: false,
        global: false,
        upload: false,
        cred: Cred::ApiKey,
    };
    let worker = |body: Option<Value>| Call { cred: Cred::EnvKey, ..call(body) };
    match (route.method.as_str(), route.path) {
        ("POST", "/v1/agents") => {
            Call { creates: true, ..call(Some(json!({"name": "new", "model": "claude-sonnet-4-6"}))) }
        }
        ("POST", "/v1/environments") => Call { creates: true, ..call(Some(json!({"name": "new"}))) },
        ("POST", "/v1/sessions") => call(Some(json!({"agent": ids.agent, "environment_id": ids.env}))),
        ("GET", "/v1/agents") => Call { path: format!("{path}?include_archived=true"), list: true, ..call(None) },
        ("GET", "/v1/environments") => Call { path: format!("{path}?include_archived=true"), list: true, ..call(None) },
        ("GET", "/v1/sessions") => Call { path: format!("{path}?include_archived=true"), list: true, ..call(None) },
        ("GET", "/v1/agents/{agent_id}")
        | ("GET", "/v1/agents/{agent_id}/versions")
        | ("GET", "/v1/environments/{environment_id}")
        | ("GET", "/v1/sessions/{session_id}")
        | ("GET", "/v1/sessions/{session_id}/events")
        | ("GET", "/v1/sessions/{session_id}/events/stream") => call(None),
        ("POST", "/v1/agents/{agent_id}") => call(Some(json!({"name": "hijacked", "metadata": {"owner": "b"}}))),
        ("POST", "/v1/environments/{environment_id}") => call(Some(json!({"name": "hijacked"}))),
        ("POST", "/v1/sessions/{session_id}") => call(Some(json!({"title": "hijacked"}))),
        ("POST", "/v1/agents/{agent_id}/archive")
        | ("POST", "/v1/environments/{environment_id}/archive")
        | ("POST", "/v1/sessions/{session_id}/archive")
        | ("DELETE", "/v1/environments/{environment_id}")
        | ("DELETE", "/v1/sessions/{session_id}") => call(None),
        ("POST", "/v1/sessions/{session_id}/events") => call(Some(json!({"events": [user_message("hijacked")]}))),
        ("GET", "/x/v1/keys") => Call { global: true, ..call(None) },
        ("GET", "/x/v1/sessions/{session_id}/verify") | ("GET", "/x/v1/sessions/{session_id}/export") => call(None),
        ("POST", "/x/v1/sessions/{session_id}/consistency") => call(Some(empty_head(&ids.session))),
        ("GET", "/x/v1/sessions/{session_id}/state")
        | ("GET", "/x/v1/sessions/{session_id}/files/{*path}")
        | ("GET", "/x/v1/sessions/{session_id}/slice")
        | ("GET", "/x/v1/sessions/{session_id}/context")
        | ("GET", "/x/v1/sessions/{session_id}/events/{seq}") => call(None),
        ("POST", "/x/v1/sessions/{session_id}/fork") => call(Some(json!({"at_seq": 0}))),
        ("GET", "/v1/sessions/{session_id}/threads")
        | ("GET", "/v1/sessions/{session_id}/threads/{thread_id}")
        | ("POST", "/v1/sessions/{session_id}/threads/{thread_id}/archive")
        | ("GET", "/v1/sessions/{session_id}/threads/{thread_id}/events")
        | ("GET", "/v1/sessions/{session_id}/threads/{thread_id}/stream") => call(None),
        ("POST", "/v1/files") => Call { creates: true, upload: true, ..call(None) },
        ("GET", "/v1/files") => Call { path: format!("{path}?limit=1000"), list: true, ..call(None) },
        ("GET", "/v1/files/{file_id}")
        | ("GET", "/v1/files/{file_id}/content")
        | ("DELETE", "/v1/files/{file_id}")
        | ("GET", "/v1/sessions/{session_id}/resources")
        | ("GET", "/v1/sessions/{session_id}/resources/{resource_id}")
        | ("DELETE", "/v1/sessions/{session_id}/resources/{resource_id}") => call(None),
        ("POST", "/v1/sessions/{session_id}/resources") => {
            call(Some(json!({"type": "file", "file_id": ids.file, "mount_path": "/added/again.csv"})))
        }
        ("POST", "/v1/sessions/{session_id}/resources/{resource_id}") => Call {
            path: route.path.replace("{session_id}", &ids.session).replace("{resource_id}", &ids.repo_resource),
            ..call(Some(json!({"authorization_token": "rotated-by-someone"})))
        },
        ("GET", "/v1/environments/{environment_id}/work/poll") => {
            Call { path: format!("{path}?block_ms=1"), ..worker(None) }
        }
        ("POST", "/v1/environments/{environment_id}/work/{work_id}/ack") => worker(None),
        ("POST", "/v1/environments/{environment_id}/work/{work_id}/heartbeat") => {
            Call { path: format!("{path}?expected_last_heartbeat=NO_HEARTBEAT"), ..worker(None) }
        }
        ("GET", "/v1/environments/{environment_id}/work") => worker(None),
        ("POST", "/v1/environments/{environment_id}/work/{work_id}/stop") => call(Some(json!({"force": true}))),
        ("GET", "/v1/environments/{environment_id}/work/{work_id}")
        | ("GET", "/v1/environments/{environment_id}/work/stats")
        | ("POST", "/x/v1/environments/{environment_id}/work/healthcheck") => call(None),
        ("POST", "/v1/environments/{environment_id}/work/{work_id}") => {
            call(Some(json!({"metadata": {"owner": "hijacked"}})))
        }
        (method, path) => panic!("route {method} {path} is missing from the tenant-isolation matrix"),
    }
}

/// A head of the empty log of `session`, signed with the test server's key:
/// consistent with any log of that session.
fn empty_head(session: &str) -> Value {
    let key = logbook_server::audit::AuditKey::from_seed(crate::harness::AUDIT_SEED);
    let session = session.parse().expect("a session id");
    let head = key.sign(session, 0, logbook_core::chain::GENESIS, logbook_core::Timestamp::from_unix_micros(0));
    json!({"signed_head": head})
}

async fn send(h: &Harness, route: &RouteSpec, call: &Call, auth: Auth<'_>) -> Resp {
    if call.upload {
        return h.upload_with(auth, "new.csv", "text/csv", b"a,b\n").await;
    }
    match (&call.body, route.method.clone()) {
        (Some(body), method) => h.call(method, &call.path, auth, Some(body)).await,
        (None, Method::GET) => h.call(Method::GET, &call.path, auth, None).await,
        (None, method) => {
            // Bodiless POST/DELETE as the SDK sends them: JSON content type, empty body.
            let key = match auth {
                Auth::XApiKey(key) | Auth::Bearer(key) => key,
                Auth::Missing => "",
            };
            if key.is_empty() {
                h.call(method, &call.path, Auth::Missing, None).await
            } else {
                h.bodiless(method, &call.path, key).await
            }
        }
    }
}

/// Workspace A's objects, named with the secret marker.
async fn objects_of_a(h: &Harness) -> Ids {
    let agent = h
        .agent_with(&json!({"name": format!("{SECRET} agent"), "model": "claude-sonnet-4-6", "system": SECRET,
            "metadata": {"owner": SECRET}}))
        .await;
    let env =
        h.post("/v1/environments", &json!({"name": format!("{SECRET} env"), "metadata": {"owner": SECRET}})).await.ok();
    let session = h
        .post(
            "/v1/sessions",
            &json!({"agent": agent["id"], "environment_id": env["id"], "title": SECRET, "metadata": {"owner": SECRET},
                "resources": [{"type": "github_repository", "url": format!("https://github.com/{SECRET}/repo"),
                               "authorization_token": SECRET}]}),
        )
        .await
        .ok();
    h.post(&format!("/v1/sessions/{}/events", id(&session)), &json!({"events": [user_message(SECRET)]})).await.ok();
    seed_workspace_file(h, id(&session));
    let (file, resource, repo_resource) = files_of(h, &h.key_a.clone(), &session, SECRET).await;
    let (work_env, work, env_key) = work_of_new_env(h, &h.key_a.clone(), id(&agent), SECRET).await;
    Ids {
        agent: id(&agent).to_owned(),
        env: id(&env).to_owned(),
        session: id(&session).to_owned(),
        file,
        resource,
        repo_resource,
        work_env,
        work,
        env_key,
    }
}

/// A new self-hosted environment of the workspace of `api_key`, with a session
/// of `agent` (so one work item), the item's metadata marked: (env, work, key).
async fn work_of_new_env(h: &Harness, api_key: &str, agent: &str, marker: &str) -> (String, String, String) {
    let auth = Auth::XApiKey(api_key);
    let body = json!({"name": format!("{marker} workers"), "config": {"type": "self_hosted"}});
    let env = h.call(Method::POST, "/v1/environments", auth, Some(&body)).await.ok();
    let env = id(&env).to_owned();
    let body = json!({"agent": agent, "environment_id": env, "title": marker});
    h.call(Method::POST, "/v1/sessions", auth, Some(&body)).await.ok();
    let env_key = environment_key(h, api_key, &env);
    let work = work_of(h, &env_key, &env).await;
    let update = json!({"metadata": {"owner": marker}});
    h.call(Method::POST, &format!("/v1/environments/{env}/work/{work}"), auth, Some(&update)).await.ok();
    (env, work, env_key)
}
/// A captured output of `session` (named and filled with `marker`), mounted
/// back into it, and a repository resource: (file, resource, repo resource).
async fn files_of(h: &Harness, key: &str, session: &Value, marker: &str) -> (String, String, String) {
    let sid = id(session);
    crate::files::write_output(h, sid, &format!("{marker}.csv"), marker.as_bytes());
    let captured = crate::files::capture(h, key, sid).await;
    let file = captured[0].to_string();
    let auth = Auth::XApiKey(key);
    let path = format!("/v1/sessions/{sid}/resources");
    let mounted = json!({"type": "file", "file_id": file, "mount_path": format!("/{marker}/a.csv")});
    let resource = h.call(Method::POST, &path, auth, Some(&mounted)).await.ok();
    // Repositories are only given at creation: read the one `objects_*` made.
    let listed = h.call(Method::GET, &path, auth, None).await.ok();
    let repo = listed["data"].as_array().unwrap().iter().find(|r| r["type"] == "github_repository").unwrap().clone();
    (file, id(&resource).to_owned(), id(&repo).to_owned())
}

/// Records `/workspace/notes.txt` (holding the secret) in the session's log, as
/// a tool call would.
fn seed_workspace_file(h: &Harness, session: &str) {
    use logbook_core::event::{Event, FileChange, WorkspaceChange, WorkspaceDelta};
    use logbook_store::{Append, Blobs, Read};
    let session: logbook_core::SessionId = session.parse().unwrap();
    let store = h.state.store();
    let blob = store.put_blob(SECRET.as_bytes()).unwrap();
    let head = store.head(session).unwrap().next;
    let delta = WorkspaceDelta {
        tool_use_id: None,
        changes: vec![WorkspaceChange {
            path: "/workspace/notes.txt".to_owned(),
            change: FileChange::Written { blob: *blob.as_bytes(), size: SECRET.len() as u64, mode: 0o644 },
        }],
    };
    let entry =
        logbook_core::Entry { id: h.state.event_id(head), event: Event::WorkspaceDelta(delta), at: h.state.now() };
    store.append(session, head, &[entry]).unwrap();
}

/// Objects of workspace B, so its lists are not trivially empty.
async fn objects_of_b(h: &Harness) -> Ids {
    let b = Auth::XApiKey(&h.key_b);
    let agent = h.call(Method::POST, "/v1/agents", b, Some(&json!({"name": "b", "model": "m"}))).await.ok();
    let env = h.call(Method::POST, "/v1/environments", b, Some(&json!({"name": "b"}))).await.ok();
    let body = json!({"agent": agent["id"], "environment_id": env["id"],
        "resources": [{"type": "github_repository", "url": "https://github.com/b/repo"}]});
    let session = h.call(Method::POST, "/v1/sessions", b, Some(&body)).await.ok();
    let (file, resource, repo_resource) = files_of(h, &h.key_b.clone(), &session, "tenant-b").await;
    let (work_env, work, env_key) = work_of_new_env(h, &h.key_b.clone(), id(&agent), "tenant-b").await;
    Ids {
        agent: id(&agent).to_owned(),
        env: id(&env).to_owned(),
        session: id(&session).to_owned(),
        file,
        resource,
        repo_resource,
        work_env,
        work,
        env_key,
    }
}

/// A new environment key of `env`, in the workspace of `api_key`.
fn environment_key(h: &Harness, api_key: &str, env: &str) -> String {
    let workspace = h.tenant(api_key).workspace;
    logbook_server::tenancy::create_environment_key(h.state.store(), workspace, env.parse().unwrap(), h.now()).unwrap()
}

/// The id of the (only) work item of `env`.
async fn work_of(h: &Harness, env_key: &str, env: &str) -> String {
    let page = h.call(Method::GET, &format!("/v1/environments/{env}/work"), Auth::Bearer(env_key), None).await.ok();
    let items = ids(&page);
    assert_eq!(items.len(), 1, "one session, one work item: {page}");
    items[0].clone()
}

/// Everything A can read about its objects, to check that nothing changed.
async fn snapshot(h: &Harness, ids: &Ids) -> Vec<Value> {
    let mut out = Vec::new();
    for path in [
        format!("/v1/agents/{}", ids.agent),
        format!("/v1/agents/{}/versions", ids.agent),
        format!("/v1/environments/{}", ids.env),
        format!("/v1/sessions/{}", ids.session),
        format!("/v1/sessions/{}/events", ids.session),
        format!("/v1/files/{}", ids.file),
        format!("/v1/sessions/{}/resources", ids.session),
        format!("/v1/environments/{}/work/{}", ids.work_env, ids.work),
    ] {
        let resp = h.get(&path).await;
        out.push(json!({"path": path, "status": resp.status.as_u16(), "body": resp.json()}));
    }
    out
}

/// An error reduced to what must not depend on whether the object exists elsewhere.
fn shape(resp: &Resp, ids: &Ids) -> Value {
    let body = resp.json();
    json!({
        "status": resp.status.as_u16(),
        "type": body["error"]["type"],
        "details": body["error"]["details"],
        "message": ids.erase(body["error"]["message"].as_str().unwrap_or("")),
        "x-should-retry": resp.header("x-should-retry"),
    })
}

#[tokio::test]
async fn every_route_is_isolated_between_workspaces() {
    // Goal: the isolation invariant holds on every route of the table.
    // Method: for each route (a route the matrix does not know fails), fresh
    // objects of A; call with B's key (x-api-key and Bearer), comparing the
    // answer with the answer for ids that do not exist and scanning it for
    // A's data; with a revoked, a missing and a malformed key (401); check A's
    // objects did not change; finally call with A's key (success).
    let h = Harness::new();
    let b_objects = objects_of_b(&h).await;
    let missing = Ids::missing();
    let table = routes();
    assert!(table.len() >= 21, "the route table shrank to {}", table.len());
    for route in &table {
        let what = format!("{} {}", route.method, route.path);
        let a_ids = objects_of_a(&h).await;
        let before = snapshot(&h, &a_ids).await;
        let on_a = call_for(route, &a_ids);
        let on_missing = call_for(route, &Ids::missing());

        let (key_of_a, key_of_b) = match on_a.cred {
            Cred::ApiKey => (h.key_a.as_str(), h.key_b.as_str()),
            Cred::EnvKey => (a_ids.env_key.as_str(), b_objects.env_key.as_str()),
        };
        for auth in [Auth::XApiKey(key_of_b), Auth::Bearer(key_of_b)] {
            let resp = send(&h, route, &on_a, auth).await;
            let text = resp.text();
            assert!(!text.contains(SECRET), "{what}: B's answer leaks A's data: {text}");
            if on_a.list {
                let page = resp.ok();
                let listed = ids(&page);
                for a_id in a_ids.all() {
                    assert!(!listed.contains(a_id), "{what}: B's list shows A's {a_id}");
                }
                assert!(
                    b_objects.all().iter().any(|b_id| listed.contains(b_id)),
                    "{what}: B's list does not show B's own objects: {listed:?}"
                );
            } else if on_a.global {
                assert_eq!(resp.status.as_u16(), 200, "{what}: a server-wide route answers every key: {text}");
            } else if on_a.creates {
                assert_eq!(resp.status.as_u16(), 200, "{what}: B may create in B: {text}");
            } else {
                assert_eq!(resp.status.as_u16(), 404, "{what}: B's key on A's object must be 404, got {text}");
                resp.not_found();
                let like_missing = send(&h, route, &on_missing, auth).await;
                assert_eq!(
                    shape(&resp, &a_ids),
                    shape(&like_missing, &missing),
                    "{what}: B's answer differs from a missing id's"
                );
                let a_missing = send(&h, route, &on_missing, Auth::XApiKey(key_of_a)).await;
                assert_eq!(
                    shape(&a_missing, &missing),
                    shape(&like_missing, &missing),
                    "{what}: missing ids differ by tenant"
                );
            }
        }

        let revoked_env_key = environment_key(&h, &h.key_a, &a_ids.work_env);
        logbook_server::tenancy::revoke_key(h.state.store(), &revoked_env_key, h.now()).unwrap();
        let bad_keys = [
            ("revoked", Auth::XApiKey(&h.revoked_a)),
            ("revoked environment", Auth::Bearer(&revoked_env_key)),
            ("revoked bearer", Auth::Bearer(&h.revoked_a)),
            ("missing", Auth::Missing),
            ("malformed", Auth::XApiKey("not-a-logbook-key")),
            ("malformed bearer", Auth::Bearer("sk-logbook-short")),
        ];
        for (kind, auth) in bad_keys {
            let resp = send(&h, route, &on_a, auth).await;
            assert_eq!(resp.status.as_u16(), 401, "{what} with a {kind} key: {}", resp.text());
            resp.error(401, "authentication_error");
            assert!(!resp.text().contains(SECRET), "{what}: the {kind} key's answer leaks A's data");
        }

        assert_eq!(snapshot(&h, &a_ids).await, before, "{what}: refused calls changed A's objects");

        if route.path.ends_with("/heartbeat") {
            // A lease exists only once the item is acknowledged.
            let ack = format!("/v1/environments/{}/work/{}/ack", a_ids.work_env, a_ids.work);
            h.call(Method::POST, &ack, Auth::Bearer(&a_ids.env_key), None).await.ok();
        }
        let resp = send(&h, route, &on_a, Auth::Bearer(key_of_a)).await;
        // A's environment has sessions, so deleting it is refused, after A's
        // key reached it (which is what this matrix checks).
        let in_use = route.method.as_str() == "DELETE"
            && route.path == "/v1/environments/{environment_id}"
            && resp.status.as_u16() == 409
            && resp.json()["error"]["details"]["error_code"] == "environment_in_use";
        // A session's primary thread is archived with the session, after A's
        // key reached it.
        let primary = route.path.ends_with("/threads/{thread_id}/archive")
            && resp.status.as_u16() == 400
            && resp.json()["error"]["details"]["error_code"] == "primary_thread";
        assert!(resp.status.is_success() || in_use || primary, "{what} with A's key: {} {}", resp.status, resp.text());
        if on_a.list {
            let listed = ids(&resp.json());
            assert!(a_ids.all().iter().any(|a_id| listed.contains(a_id)), "{what}: A's list does not show A's objects");
            for b_id in b_objects.all() {
                assert!(!listed.contains(b_id), "{what}: A's list shows B's {b_id}");
            }
        }
    }
}

#[tokio::test]
async fn references_in_bodies_and_filters_stay_in_the_workspace() {
    // Goal: object ids inside bodies and query filters are resolved in the
    // caller's workspace only: B cannot start a session on A's agent or A's
    // environment (404 as if missing), and B's session list filtered by A's
    // agent is empty. Method: mix A's and B's ids in B's requests.
    let h = Harness::new();
    let a_ids = objects_of_a(&h).await;
    let b_ids = objects_of_b(&h).await;
    let b = Auth::XApiKey(&h.key_b);
    let create = |agent: &str, env: &str| json!({"agent": agent, "environment_id": env});
    let mixes = [
        (create(&a_ids.agent, &b_ids.env), create(MISSING_AGENT, &b_ids.env)),
        (create(&b_ids.agent, &a_ids.env), create(&b_ids.agent, MISSING_ENV)),
        (
            json!({"agent": {"type": "agent", "id": a_ids.agent, "version": 1}, "environment_id": b_ids.env}),
            json!({"agent": {"type": "agent", "id": MISSING_AGENT, "version": 1}, "environment_id": b_ids.env}),
        ),
        (
            json!({"agent": {"type": "agent_with_overrides", "id": a_ids.agent, "model": "m"}, "environment_id": b_ids.env}),
            json!({"agent": {"type": "agent_with_overrides", "id": MISSING_AGENT, "model": "m"}, "environment_id": b_ids.env}),
        ),
    ];
    for (with_a, with_missing) in mixes {
        let resp = h.call(Method::POST, "/v1/sessions", b, Some(&with_a)).await;
        let body = resp.not_found();
        assert!(!resp.text().contains(SECRET), "{body}");
        let like_missing = h.call(Method::POST, "/v1/sessions", b, Some(&with_missing)).await;
        assert_eq!(shape(&resp, &a_ids), shape(&like_missing, &Ids::missing()), "{with_a}");
    }
    let page = h
        .call(Method::GET, &format!("/v1/sessions?agent_id={}&include_archived=true", a_ids.agent), b, None)
        .await
        .ok();
    assert_eq!(ids(&page), Vec::<String>::new());
    // A sees its own sessions under that filter (one on each environment).
    let page = h.get(&format!("/v1/sessions?agent_id={}", a_ids.agent)).await.ok();
    let listed = ids(&page);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.contains(&a_ids.session), "{listed:?}");
    assert!(!listed.contains(&b_ids.session), "{listed:?}");
}

#[tokio::test]
async fn crafted_and_foreign_cursors_never_cross_workspaces() {
    // Goal: a `page` cursor is only a position inside the caller's own
    // objects: whatever bytes it holds (another workspace's cursor, or one
    // crafted to point before or after everything), a list answers either
    // 400 or a page of the caller's objects, never another workspace's.
    // Method: workspaces created a day before and a day after A (their
    // objects' keys sort below and above A's), each with its own agent,
    // environment and session; they list with crafted cursors in both
    // directions and with cursors A's own lists returned.
    let h = Harness::new();
    let a_ids = objects_of_a(&h).await;
    for n in 0..3 {
        h.agent(&format!("{SECRET} extra {n}")).await;
        h.post("/v1/environments", &json!({"name": format!("{SECRET} extra {n}")})).await.ok();
    }
    let a_agent_cursor = h.get("/v1/agents?limit=1").await.ok()["next_page"].as_str().unwrap().to_owned();
    let a_env_cursor = h.get("/v1/environments?limit=1").await.ok()["next_page"].as_str().unwrap().to_owned();
    let day = 86_400_000_000;
    let early = h.workspace_key("early", logbook_core::Timestamp::from_unix_micros(crate::harness::START_MICROS - day));
    let late = h.workspace_key("late", logbook_core::Timestamp::from_unix_micros(crate::harness::START_MICROS + day));
    let high = "ff".repeat(40);
    let low = "00".repeat(40);
    let mut leaks = Vec::new();
    for key in [&early, &late] {
        let auth = Auth::XApiKey(key);
        let agent = h.call(Method::POST, "/v1/agents", auth, Some(&json!({"name": "own", "model": "m"}))).await.ok();
        let env = h.call(Method::POST, "/v1/environments", auth, Some(&json!({"name": "own"}))).await.ok();
        let body = json!({"agent": agent["id"], "environment_id": env["id"]});
        h.call(Method::POST, "/v1/sessions", auth, Some(&body)).await.ok();
        let versions = format!("/v1/agents/{}/versions", id(&agent));
        let urls = vec![
            format!("/v1/agents?include_archived=true&page=agents_{high}"),
            format!("/v1/agents?include_archived=true&page=agents_{low}"),
            format!("/v1/agents?include_archived=true&page={a_agent_cursor}"),
            format!("/v1/environments?include_archived=true&page=envs_{high}"),
            format!("/v1/environments?include_archived=true&page=envs_{low}"),
            format!("/v1/environments?include_archived=true&page={a_env_cursor}"),
            format!("/v1/sessions?include_archived=true&order=desc&page=sessions_6e64{high}"),
            format!("/v1/sessions?include_archived=true&order=asc&page=sessions_6e61{low}"),
            format!("/v1/sessions?include_archived=true&order=desc&page=sessions_7064{low}"),
            format!("/v1/sessions?include_archived=true&order=asc&page=sessions_7061{high}"),
            format!("{versions}?page=versions_{high}"),
            format!("{versions}?page=versions_{low}"),
            format!("/v1/files?page=page_{high}"),
            format!("/v1/files?page=page_{low}"),
        ];
        for url in urls {
            let resp = h.call(Method::GET, &url, auth, None).await;
            if !resp.status.is_success() {
                resp.invalid();
                continue;
            }
            let text = resp.text();
            let foreign = a_ids.all().iter().any(|a_id| text.contains(a_id.as_str()));
            if text.contains(SECRET) || foreign {
                let who = if key == &early { "early" } else { "late" };
                leaks.push(format!("{who}: GET {url} shows workspace A's objects"));
            }
        }
    }
    assert!(leaks.is_empty(), "cross-workspace leaks through page cursors:\n{}", leaks.join("\n"));
}

/// Workspace B deletes an environment while workspace A creates a session.
/// The delete holds its environment's lock while it reads every session of
/// B (many, for a busy tenant) to see whether one names the environment.
/// That lock used to be one for the whole server, so every session create of
/// every workspace waited on B's scan.
///
/// Method: hold the lock of B's environment as a delete does (released only
/// once the test is done); a session create of A in its own environment
/// must go through meanwhile (within a deadline: it would wait forever on a
/// shared lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_delete_in_one_workspace_does_not_hold_up_session_creates_in_another() {
    use std::time::Duration;
    let h = Harness::new();
    let b = Auth::XApiKey(&h.key_b);
    let env_b = h.call(Method::POST, "/v1/environments", b, Some(&json!({"name": "b"}))).await.ok();
    let env_b: logbook_core::EnvironmentId = id(&env_b).parse().unwrap();
    let (locked_tx, locked) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let state = h.state.clone();
    let deleting = std::thread::spawn(move || {
        let _unused = state.environment_unused(env_b);
        locked_tx.send(()).unwrap();
        let _ = release_rx.recv_timeout(Duration::from_secs(120));
    });
    locked.recv_timeout(Duration::from_secs(60)).expect("the lock is taken");
    let agent_a = h.agent("a").await;
    let env_a = h.env("a").await;
    let body_a = json!({"agent": id(&agent_a), "environment_id": id(&env_a)});
    let created = tokio::time::timeout(Duration::from_secs(60), h.post("/v1/sessions", &body_a)).await;
    release.send(()).unwrap();
    deleting.join().unwrap();
    created.expect("workspace A's session create waited on workspace B's environment delete").ok();
}

/// Workspace A's session is quarantined (its log failed an integrity check).
/// To workspace B, that session must still answer exactly like a session that
/// does not exist: 404, never a 500 naming A's session, its damage and seq.
/// Some session routes read the session's log head (keyed by the session id
/// alone, whatever the workspace) before they look the session up in the
/// caller's workspace, so B learns that A's session exists and is damaged.
///
/// Method: A's session's location of seq 0 in the index is pointed past the
/// end of the log (as the store's tamper tests do) and a read quarantines
/// the session; then every session route is called with B's key on A's
/// session and on a missing one, and the answers compared.
#[tokio::test]
async fn a_quarantined_session_of_another_workspace_answers_like_a_missing_one() {
    use logbook_store::Read;
    use logbook_store::engine::{Engine, Tree};
    let h = Harness::new();
    let session = h.quick_session().await;
    h.post(&format!("/v1/sessions/{}/events", id(&session)), &json!({"events": [user_message(SECRET)]})).await.ok();
    let sid: logbook_core::SessionId = id(&session).parse().unwrap();
    let store = h.state.store();
    store.checkpoint().unwrap();
    let key = logbook_store::keys::locations_key(sid, logbook_core::Seq::ZERO).to_vec();
    let mut chunk = store.engine().get(Tree::Log, &key).unwrap().unwrap();
    chunk[1..9].copy_from_slice(&(u64::MAX - 8).to_le_bytes());
    store.engine().apply(Tree::Log, vec![(key, Some(chunk))]).unwrap();
    store.clear_caches();
    assert!(store.read(sid, logbook_core::Seq::ZERO, 10).is_err(), "the session is quarantined");
    assert!(store.head(sid).is_err(), "the session's head is refused too");

    let on_a = Ids { session: id(&session).to_owned(), ..Ids::missing() };
    let missing = Ids::missing();
    let b = Auth::XApiKey(&h.key_b);
    let mut leaks = Vec::new();
    for route in routes().iter().filter(|route| route.path.contains("{session_id}")) {
        let what = format!("{} {}", route.method, route.path);
        let call = call_for(route, &on_a);
        if call.cred != Cred::ApiKey {
            continue;
        }
        let resp = send(&h, route, &call, b).await;
        let like_missing = send(&h, route, &call_for(route, &missing), b).await;
        if shape(&resp, &on_a) != shape(&like_missing, &missing) {
            leaks.push(format!("{what}: {} {}", resp.status.as_u16(), resp.text()));
        }
    }
    assert!(leaks.is_empty(), "B's key on A's quarantined session answers unlike a missing one:\n{}", leaks.join("\n"));
}
