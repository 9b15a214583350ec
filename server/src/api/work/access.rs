//! What a scoped credential may reach: the check the HTTP guard runs on every
//! request after authenticating the key, with the route's [`Access`].
//!
//! - An API key works on every route that takes API keys (all but the
//!   worker-only queue routes: poll, ack, heartbeat, list).
//! - An environment key works only on routes that take it, and only on its own
//!   environment (another environment answers 404, as if it did not exist) and
//!   on sessions running in that environment.
//! - A sessions token works only on routes that take it, only on its own work
//!   item and session, and on the session's routes only while its claim holds
//!   the item's lease (it expires with the lease). Heartbeat and stop check
//!   the claim themselves, to answer 412 and 409 the way workers expect.
//!
//! A route that does not take a credential's kind answers 403 saying which
//! credential it takes.

use logbook_core::{EnvironmentId, SessionId, Timestamp, WorkId};
use logbook_store::SledStore;

use super::queue;
use crate::api::error::ApiError;
use crate::api::{environments, sessions};
use crate::tenancy::{KeyScope, Principal};

/// Which credentials a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub api_key: bool,
    pub environment_key: bool,
    pub sessions_token: bool,
}

impl Access {
    /// Workspace API keys only: the default of every route.
    pub const API_KEY: Access = Access { api_key: true, environment_key: false, sessions_token: false };
    /// The queue's worker routes (poll, ack, list): environment keys only.
    pub const ENVIRONMENT_KEY: Access = Access { api_key: false, environment_key: true, sessions_token: false };
    /// A work item's lease (heartbeat): the worker's credentials.
    pub const WORKER: Access = Access { api_key: false, environment_key: true, sessions_token: true };
    /// Monitoring (stats): API keys and environment keys.
    pub const MONITOR: Access = Access { api_key: true, environment_key: true, sessions_token: false };
    /// Every credential: stop, and the session routes a worker uses.
    pub const ANY: Access = Access { api_key: true, environment_key: true, sessions_token: true };

    fn takes(self) -> &'static str {
        match (self.api_key, self.environment_key, self.sessions_token) {
            (true, false, false) => "an API key",
            (false, true, false) => "an environment key",
            (false, true, true) => "an environment key or the work item's sessions token",
            (true, true, false) => "an API key or an environment key",
            (true, true, true) | (true, false, true) | (false, false, true) | (false, false, false) => {
                "another kind of credential"
            }
        }
    }
}

/// Path parameters of the request, by name.
#[derive(Debug, Default, Clone)]
pub struct PathParams(pub Vec<(String, String)>);

impl PathParams {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

/// Checks that `principal` may call a route taking `access` with these path parameters.
pub fn check(
    store: &SledStore,
    principal: &Principal,
    access: Access,
    params: &PathParams,
    now: Timestamp,
) -> Result<(), ApiError> {
    let refused = |what: &str| {
        ApiError::forbidden(format!("{what} cannot call this endpoint; it takes {}", access.takes()))
            .with_code("credential_not_accepted")
    };
    match principal.scope {
        KeyScope::Workspace => {
            if access.api_key {
                Ok(())
            } else {
                Err(refused("an API key"))
            }
        }
        KeyScope::Environment { environment_id } => {
            if !access.environment_key {
                return Err(refused("an environment key"));
            }
            same_env(params, environment_id)?;
            if let Some(raw) = params.get("session_id") {
                // Sessions of its own environment only.
                let id = sessions::parse_session_id(raw)?;
                let (_, session) = sessions::load(store, &principal.tenant(), id)?;
                if session.environment_id != environment_id {
                    return Err(sessions::not_found(raw));
                }
            }
            Ok(())
        }
        KeyScope::WorkSession { environment_id, work_id, session_id, .. } => {
            if !access.sessions_token {
                return Err(refused("a sessions token"));
            }
            same_env(params, environment_id)?;
            same_work(params, work_id)?;
            if let Some(raw) = params.get("session_id") {
                same_session(raw, session_id)?;
                match hold(store, principal, now)? {
                    Hold::Held { .. } => {}
                    Hold::Ended => return Err(ApiError::unauthenticated(TOKEN_EXPIRED)),
                }
            }
            Ok(())
        }
    }
}

/// What a sessions token whose claim no longer holds its item is told.
pub const TOKEN_EXPIRED: &str = "this sessions token expired: its work item's lease ended; poll for the work again";

/// Whether a sessions token's claim still holds its work item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The claim holds the item; its lease runs until `until` unless renewed
    /// (`None`: no lease yet, the claim is not acked).
    Held { until: Option<Timestamp> },
    /// The lease lapsed, went to another claim, or the item stopped or is
    /// gone: the token reaches nothing any more.
    Ended,
}

/// Whether `principal`, a sessions token, still holds its item at `now`.
/// Every other credential holds no lease and is always [`Hold::Held`]: it
/// changes only offline.
pub fn hold(store: &SledStore, principal: &Principal, now: Timestamp) -> Result<Hold, ApiError> {
    let KeyScope::WorkSession { environment_id, work_id, claim, .. } = principal.scope else {
        return Ok(Hold::Held { until: None });
    };
    let item = queue::load(store, &principal.tenant(), environment_id, work_id)?;
    Ok(match item {
        Some((_, mut item)) => {
            item.settle(now);
            if item.held_by(claim) {
                Hold::Held { until: item.lease.map(|lease| lease.expires_at) }
            } else {
                Hold::Ended
            }
        }
        None => Hold::Ended,
    })
}

fn same_env(params: &PathParams, own: EnvironmentId) -> Result<(), ApiError> {
    match params.get("environment_id") {
        Some(raw) if raw.parse::<EnvironmentId>().ok() != Some(own) => Err(environments::not_found(raw)),
        Some(_) | None => Ok(()),
    }
}

fn same_work(params: &PathParams, own: WorkId) -> Result<(), ApiError> {
    match params.get("work_id") {
        Some(raw) if raw.parse::<WorkId>().ok() != Some(own) => Err(queue::not_found(raw)),
        Some(_) | None => Ok(()),
    }
}

fn same_session(raw: &str, own: SessionId) -> Result<(), ApiError> {
    if raw.parse::<SessionId>().ok() == Some(own) { Ok(()) } else { Err(sessions::not_found(raw)) }
}
