//! `/v1/environments` (API digest §2.2, §3.2): defaults, networking and
//! package rules, update rules, config type changes, archive, delete.

use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use crate::harness::{Harness, id, ids, without};

fn cloud(networking: Value, packages: Value) -> Value {
    json!({"name": "e", "config": {"type": "cloud", "networking": networking, "packages": packages}})
}

fn limited(hosts: Value) -> Value {
    json!({"type": "limited", "allowed_hosts": hosts})
}

#[tokio::test]
async fn create_fills_defaults() {
    // Goal: with only a name, the environment is cloud, unrestricted, with
    // all six package lists empty, organization scope, empty metadata, null
    // description (API digest §3.2 and the §7 strict sample). Method: compare
    // whole objects for the minimal, the wire-capture and the self-hosted bodies.
    let h = Harness::new();
    let env = h.env("dev").await;
    assert!(id(&env).starts_with("env_"), "{env}");
    let now = h.now().to_string();
    let empty_packages = json!({"type": "packages", "apt": [], "cargo": [], "gem": [], "go": [], "npm": [], "pip": []});
    assert_eq!(
        without(&env, &["id"]),
        json!({
            "type": "environment", "name": "dev", "description": null, "metadata": {},
            "config": {"type": "cloud", "networking": {"type": "unrestricted"}, "packages": empty_packages},
            "scope": "organization", "created_at": now, "updated_at": now, "archived_at": null
        })
    );
    let env = h
        .post(
            "/v1/environments",
            &json!({"name": "dev", "config": {"type": "cloud", "networking": {"type": "unrestricted"},
                "packages": {"pip": ["requests"]}}, "description": "d", "metadata": {"k": "v"}, "scope": "account"}),
        )
        .await
        .ok();
    assert_eq!(
        without(&env, &["id", "created_at", "updated_at"]),
        json!({
            "type": "environment", "name": "dev", "description": "d", "metadata": {"k": "v"},
            "config": {"type": "cloud", "networking": {"type": "unrestricted"},
                "packages": {"type": "packages", "apt": [], "cargo": [], "gem": [], "go": [], "npm": [], "pip": ["requests"]}},
            "scope": "account", "archived_at": null
        })
    );
    let env = h.self_hosted_env("worker").await;
    assert_eq!(env["config"], json!({"type": "self_hosted"}));
    assert_eq!(h.get(&format!("/v1/environments/{}", id(&env))).await.ok(), env);
}

#[tokio::test]
async fn create_validation() {
    // Goal: a bad name, config, scope or metadata is a 400. Method: a table of
    // bodies sent to POST /v1/environments.
    let h = Harness::new();
    let cases = [
        json!({"name": ""}),
        json!({}),
        json!({"name": "e", "config": {"type": "kubernetes"}}),
        json!({"name": "e", "config": "cloud"}),
        json!({"name": "e", "config": {"type": "cloud", "networking": {"type": "open"}}}),
        json!({"name": "e", "config": {"type": "cloud", "packages": {"pip": "requests"}}}),
        json!({"name": "e", "config": {"type": "cloud", "packages": {"pip": ["two words"]}}}),
        json!({"name": "e", "scope": "galaxy"}),
    ];
    for body in cases {
        let resp = h.post("/v1/environments", &body).await;
        assert_eq!(resp.status.as_u16(), 400, "{body} must be rejected: {}", resp.text());
        resp.invalid();
    }
    let body = h.post("/v1/environments", &json!({"name": "e", "metadata": {"k": 1}})).await.invalid();
    assert_eq!(body["error"]["details"]["error_code"], "invalid_metadata");
}

#[tokio::test]
async fn limited_networking_rules() {
    // Goal: limited networking resolves its flags to false, accepts hostnames
    // and `*.host` rules, refuses anything else, and requires
    // allow_package_managers when packages are given. Method: create variants.
    let h = Harness::new();
    let env = h
        .post(
            "/v1/environments",
            &cloud(limited(json!(["api.example.com", "*.example.com", "localhost"])), Value::Null),
        )
        .await
        .ok();
    assert_eq!(
        env["config"]["networking"],
        json!({"type": "limited", "allowed_hosts": ["api.example.com", "*.example.com", "localhost"],
            "allow_mcp_servers": false, "allow_package_managers": false})
    );
    // Packages need allow_package_managers: true.
    let pkgs = json!({"pip": ["requests==2.0"]});
    h.post("/v1/environments", &cloud(limited(json!([])), pkgs.clone())).await.invalid();
    let net = json!({"type": "limited", "allowed_hosts": [], "allow_package_managers": false});
    h.post("/v1/environments", &cloud(net, pkgs.clone())).await.invalid();
    let net =
        json!({"type": "limited", "allowed_hosts": [], "allow_package_managers": true, "allow_mcp_servers": true});
    let env = h.post("/v1/environments", &cloud(net, pkgs.clone())).await.ok();
    assert_eq!(env["config"]["networking"]["allow_package_managers"], true);
    assert_eq!(env["config"]["packages"]["pip"], json!(["requests==2.0"]));
    // Unrestricted networking needs no flag.
    h.post("/v1/environments", &cloud(json!({"type": "unrestricted"}), pkgs)).await.ok();
    // Bad host rules.
    for host in [
        "http://example.com",
        "exa mple.com",
        "*",
        "*.",
        "-bad.example.com",
        "",
        "example.com/path",
        "a..b",
        "*.*.example.com",
    ] {
        let resp = h.post("/v1/environments", &cloud(limited(json!([host])), Value::Null)).await;
        assert_eq!(resp.status.as_u16(), 400, "host {host:?} must be rejected: {}", resp.text());
        resp.invalid();
    }
    h.post("/v1/environments", &cloud(limited(json!("example.com")), Value::Null)).await.invalid();
    h.post("/v1/environments", &cloud(json!({"type": "limited", "allow_mcp_servers": "yes"}), Value::Null))
        .await
        .invalid();
}

#[tokio::test]
async fn update_rules() {
    // Goal: updates preserve omitted fields (also inside networking), clear
    // description with null but store "", patch metadata (null or "" deletes),
    // keep the object unchanged on a no-op, refuse clearing the name. Method:
    // successive updates of one environment.
    let h = Harness::new();
    let env = h
        .post(
            "/v1/environments",
            &json!({"name": "e", "description": "d", "metadata": {"a": "1", "b": "2", "c": "3"},
                "config": {"type": "cloud", "networking": {"type": "limited", "allowed_hosts": ["x.example"],
                    "allow_package_managers": true}, "packages": {"npm": ["left-pad"]}}}),
        )
        .await
        .ok();
    let path = format!("/v1/environments/{}", id(&env));
    h.tick(1000);
    assert_eq!(h.post(&path, &json!({})).await.ok(), env, "empty update is a no-op");
    assert_eq!(h.post(&path, &json!({"name": "e", "description": "d"})).await.ok(), env, "same values are a no-op");

    let updated = h.post(&path, &json!({"name": "renamed"})).await.ok();
    let mut expected = env.clone();
    expected["name"] = json!("renamed");
    expected["updated_at"] = json!(h.now().to_string());
    assert_eq!(updated, expected);

    let updated = h.post(&path, &json!({"description": ""})).await.ok();
    assert_eq!(updated["description"], "", "\"\" is stored");
    let updated = h.post(&path, &json!({"description": null})).await.ok();
    assert_eq!(updated["description"], Value::Null, "null clears");

    let updated = h.post(&path, &json!({"metadata": {"a": null, "b": "", "d": "4"}})).await.ok();
    assert_eq!(updated["metadata"], json!({"c": "3", "d": "4"}));

    // Omitted networking fields keep their values.
    let updated = h
        .post(
            &path,
            &json!({"config": {"type": "cloud", "networking": {"type": "limited", "allow_mcp_servers": true}}}),
        )
        .await
        .ok();
    assert_eq!(
        updated["config"],
        json!({"type": "cloud",
            "networking": {"type": "limited", "allowed_hosts": ["x.example"], "allow_mcp_servers": true,
                "allow_package_managers": true},
            "packages": {"type": "packages", "apt": [], "cargo": [], "gem": [], "go": [], "npm": ["left-pad"], "pip": []}})
    );
    // Turning off package managers while packages remain is refused.
    h.post(
        &path,
        &json!({"config": {"type": "cloud", "networking": {"type": "limited", "allow_package_managers": false}}}),
    )
    .await
    .invalid();
    let updated =
        h.post(&path, &json!({"config": {"type": "cloud", "networking": {"type": "unrestricted"}}})).await.ok();
    assert_eq!(updated["config"]["networking"], json!({"type": "unrestricted"}));
    assert_eq!(updated["config"]["packages"]["npm"], json!(["left-pad"]));

    h.post(&path, &json!({"name": null})).await.invalid();
    h.post(&path, &json!({"name": ""})).await.invalid();
    h.post(&path, &json!({"scope": "galaxy"})).await.invalid();
    let body = h.post(&path, &json!({"metadata": {"n": 5}})).await.invalid();
    assert_eq!(body["error"]["details"]["error_code"], "invalid_metadata");
    let body = h.post("/v1/environments/env_01JQ8Z7M3P5R7T9V1X3Z5B7D0E", &json!({"name": "x"})).await.not_found();
    assert_eq!(body["error"]["details"]["error_code"], "environment_not_found");
}

#[tokio::test]
async fn config_type_change_is_invalid_config_type_change() {
    // Goal: changing config type cloud ↔ self_hosted is 400 with
    // `error_code: invalid_config_type_change`, and the environment is
    // unchanged. Method: try both directions.
    let h = Harness::new();
    let cloud_env = h.env("c").await;
    let hosted = h.self_hosted_env("s").await;
    for (env, config) in [(&cloud_env, json!({"type": "self_hosted"})), (&hosted, json!({"type": "cloud"}))] {
        let path = format!("/v1/environments/{}", id(env));
        let body = h.post(&path, &json!({"config": config})).await.invalid();
        assert_eq!(body["error"]["details"]["error_code"], "invalid_config_type_change", "{body}");
        assert_eq!(&h.get(&path).await.ok(), env);
    }
    // Same type is fine.
    let path = format!("/v1/environments/{}", id(&hosted));
    assert_eq!(h.post(&path, &json!({"config": {"type": "self_hosted"}})).await.ok(), hosted);
}

#[tokio::test]
async fn archived_environment_is_read_only() {
    // Goal: an archived environment refuses updates with 400
    // `environment_archived`, starts no sessions, stays retrievable, and is
    // listed only with include_archived. Method: archive one of two.
    let h = Harness::new();
    let kept = h.env("kept").await;
    h.tick(1000);
    let env = h.env("gone").await;
    h.tick(1000);
    let path = format!("/v1/environments/{}", id(&env));
    let archived = h.post_empty(&format!("{path}/archive")).await.ok();
    assert_eq!(archived["archived_at"], json!(h.now().to_string()));
    assert_eq!(h.post_empty(&format!("{path}/archive")).await.ok(), archived, "archive is idempotent");
    let body = h.post(&path, &json!({"name": "again"})).await.invalid();
    assert_eq!(body["error"]["details"]["error_code"], "environment_archived");
    assert_eq!(h.get(&path).await.ok(), archived);
    let agent = h.agent("a").await;
    h.post("/v1/sessions", &json!({"agent": id(&agent), "environment_id": id(&env)})).await.invalid();
    assert_eq!(ids(&h.get("/v1/environments").await.ok()), vec![id(&kept)]);
    assert_eq!(ids(&h.get("/v1/environments?include_archived=true").await.ok()), vec![id(&env), id(&kept)]);
}

#[tokio::test]
async fn delete_then_not_found() {
    // Goal: DELETE answers exactly `{id, type:"environment_deleted"}`; after it
    // every call on the id is 404 `environment_not_found`, like an id that
    // never existed. Method: delete, then call every environment route.
    let h = Harness::new();
    let env = h.env("doomed").await;
    let path = format!("/v1/environments/{}", id(&env));
    assert_eq!(h.delete(&path).await.ok(), json!({"id": env["id"], "type": "environment_deleted"}));
    let responses = [
        h.get(&path).await,
        h.post(&path, &json!({"name": "x"})).await,
        h.post_empty(&format!("{path}/archive")).await,
        h.delete(&path).await,
    ];
    for resp in responses {
        let body = resp.not_found();
        assert_eq!(body["error"]["details"]["error_code"], "environment_not_found");
    }
    assert!(ids(&h.get("/v1/environments?include_archived=true").await.ok()).is_empty());
    for missing in ["env_01JQ8Z7M3P5R7T9V1X3Z5B7D0E", "env_nope", "nope"] {
        let body = h.get(&format!("/v1/environments/{missing}")).await.not_found();
        assert_eq!(body["error"]["details"]["error_code"], "environment_not_found");
    }
}

#[tokio::test]
async fn an_environment_in_use_is_not_deleted() {
    // Goal: an environment is deleted only when no session references it
    // (behaviour digest §6.4): 409 `environment_in_use`, not to be retried,
    // while a session (archived too) uses it; deleted once they are gone.
    // Method: a session in it, archived, then deleted.
    let h = Harness::new();
    let agent = h.agent("a").await;
    let env = h.env("busy").await;
    let session = h.session(&agent, &env).await;
    let path = format!("/v1/environments/{}", id(&env));
    let refused = h.delete(&path).await;
    assert_eq!(refused.status, 409);
    assert_eq!(refused.headers.get("x-should-retry").unwrap(), "false");
    let body: Value = serde_json::from_slice(&refused.bytes).unwrap();
    assert_eq!(body["error"]["details"]["error_code"], "environment_in_use", "{body}");
    h.post_empty(&format!("/v1/sessions/{}/archive", id(&session))).await.ok();
    assert_eq!(h.delete(&path).await.status, 409, "an archived session still references it");
    h.delete(&format!("/v1/sessions/{}", id(&session))).await.ok();
    h.delete(&path).await.ok();
    h.get(&path).await.not_found();
}

#[tokio::test]
async fn list_pages() {
    // Goal: the environment list pages newest first with limit/page and
    // refuses bad limits and foreign cursors. Method: 3 environments, limit 2.
    let h = Harness::new();
    let mut created = Vec::new();
    for n in 0..3 {
        created.push(id(&h.env(&format!("e{n}")).await).to_owned());
        h.tick(1000);
    }
    let first = h.get("/v1/environments?limit=2").await.ok();
    assert_eq!(ids(&first), vec![created[2].clone(), created[1].clone()]);
    let cursor = first["next_page"].as_str().unwrap();
    let second = h.get(&format!("/v1/environments?limit=2&page={cursor}")).await.ok();
    assert_eq!(ids(&second), vec![created[0].clone()]);
    assert_eq!(second["next_page"], Value::Null);
    h.get("/v1/environments?limit=0").await.invalid();
    h.get("/v1/environments?limit=101").await.invalid();
    h.get("/v1/environments?page=agents_00").await.invalid();
}
