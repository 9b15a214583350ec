//! Discrepancies between the server and the references found by the API
//! review (managed-agents-api.md, managed-agents-behaviour.md). Each test
//! asserts what the reference says and fails until the server does it.

use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use crate::harness::{Harness, id};

/// A budget in the shape the SDK sends.
fn budget(amount: &str) -> Value {
    json!({"type": "limit", "max_list_cost": {"amount": amount, "currency": "USD"}})
}

/// API digest §2.4 (SessionUpdate): "`budget?` (... unpriced model → `model_not_budgetable`)";
/// behaviour digest §12: "Models without list price → 400 at create, or pause + update
/// rejected later."
///
/// Logbook prices only the models in `runner::pricing::PRICES`; any other id
/// (a local backend's, a family it does not know) has no list price, so the
/// runner's budget check always sees a cost of 0 and never pauses. A budget on
/// such a session must be refused at create, not accepted and silently ignored.
#[tokio::test]
async fn a_budget_on_a_model_without_a_list_price_is_refused_at_create() {
    let h = Harness::new();
    let agent = h.agent_with(&json!({"name": "local", "model": "my-local-model"})).await;
    let env = h.env("e").await;
    let resp = h
        .post("/v1/sessions", &json!({"agent": id(&agent), "environment_id": id(&env), "budget": budget("2500")}))
        .await;
    assert_eq!(
        resp.status.as_u16(),
        400,
        "a budget on an unpriced model must be refused (model_not_budgetable), got {}: {}",
        resp.status,
        resp.text()
    );
    let body = resp.invalid();
    assert_eq!(body["error"]["details"]["error_code"], "model_not_budgetable", "{body}");
}
