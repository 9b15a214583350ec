//! The OpenAPI 3.1 document served at `/openapi.json`, generated from the route
//! tables so it always lists every route the server has: the API routes with
//! their path, query and header parameters, request bodies, success
//! responses and the error statuses each may answer, and the operational
//! routes.
//!
//! Schemas are deliberately coarse (objects with their required fields and the
//! error envelope); the authoritative shapes are the Managed Agents API's,
//! documented in the official SDKs.

use serde_json::{Map, Value, json};

use crate::http::{
    HeaderParam, MANAGED_AGENTS_BETA, OperationalRoute, ParamKind, QueryParam, RequestBody, ResponseBody, RouteSpec,
    requires_managed_agents_beta,
};

/// The error statuses every API route may answer, with the envelope, and
/// when (`api::error`, and the middleware in `http`).
const COMMON_ERRORS: &[(u16, &str)] = &[
    (400, "invalid_request_error: a malformed request, or no anthropic-beta where the route needs it"),
    (401, "authentication_error: no key, or one the server does not know (or an expired sessions token)"),
    (
        403,
        "permission_error: error_code credential_not_accepted when the route does not take this kind of \
         credential (an API key, an environment key, a sessions token), or the credential does not reach the object",
    ),
    (404, "not_found_error: no such route or object (objects of other workspaces included)"),
    (408, "timeout_error: the request body did not arrive in time (nothing was done; the connection is closed)"),
    (409, "conflict_error: the object's state does not allow the request, or a concurrent change (x-should-retry)"),
    (413, "request_too_large: the body is over the route's limit"),
    (
        429,
        "rate_limit_error: over the workspace's rate limit, or (event streams, exports, uploads, downloads) it holds as many \
         open at once as it may; retry after retry-after",
    ),
    (500, "api_error: an internal error, or error_code session_corrupted for a quarantined session"),
    (
        503,
        "api_error: a feature this server is not configured for, a store that can no longer write durably, or \
         (error_code insufficient_storage, x-should-retry: false) new work while the data directory's disk is below \
         its reserve",
    ),
    (529, "overloaded_error: the session is too busy to write to right now; retry"),
];

/// The status a route that is not a stream answers when it runs out of time.
const TIMEOUT_ERROR: (u16, &str) = (
    504,
    "timeout_error: the request ran out of time; a write may still take effect (x-should-retry: false): check before \
     retrying",
);

pub fn document(routes: &[RouteSpec], operational: &[OperationalRoute]) -> Value {
    let mut paths = Map::new();
    for route in routes {
        let mut operation = api_operation(route);
        if let Some(body) = request_body(route.body)
            && let Some(op) = operation.as_object_mut()
        {
            op.insert("requestBody".to_owned(), body);
        }
        insert(&mut paths, route.path, route.method.as_str(), operation);
    }
    for route in operational {
        let operation = json!({
            "summary": route.summary,
            "operationId": operation_id("get", route.path),
            "security": [],
            "responses": {"200": success(route.response)}
        });
        insert(&mut paths, route.path, "GET", operation);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Logbook: Claude Managed Agents API (self-hosted)",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "Bearer": {"type": "http", "scheme": "bearer"}
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["type", "error"],
                    "properties": {
                        "type": {"const": "error"},
                        "error": {
                            "type": "object",
                            "required": ["type", "message"],
                            "properties": {
                                "type": {"type": "string"},
                                "message": {"type": "string"},
                                "details": {"type": "object"}
                            }
                        },
                        "request_id": {"type": ["string", "null"]}
                    }
                }
            }
        }
    })
}

/// Adds `operation` under `path` (as an OpenAPI template) and `method`.
fn insert(paths: &mut Map<String, Value>, path: &str, method: &str, operation: Value) {
    let entry = paths.entry(openapi_path(path)).or_insert_with(|| json!({}));
    if let Some(item) = entry.as_object_mut() {
        item.insert(method.to_lowercase(), operation);
    }
}

/// An API route's operation, without its request body.
fn api_operation(route: &RouteSpec) -> Value {
    let parameters: Vec<Value> = path_params(route.path)
        .into_iter()
        .map(path_param)
        .chain(route.query.iter().map(query_param))
        .chain(std::iter::once(beta_header(route.path)))
        .chain(route.headers.iter().map(header_param))
        .collect();
    let mut responses = Map::new();
    responses.insert("200".to_owned(), success(route.response));
    // Streams are not cut off by the request timeout.
    let timeout = (!route.streaming).then_some(TIMEOUT_ERROR);
    let extra = route.errors.iter().map(|error| (error.status, error.description));
    for (status, description) in COMMON_ERRORS.iter().copied().chain(timeout).chain(extra) {
        responses.insert(status.to_string(), error_response(description));
    }
    json!({
        "summary": route.summary,
        "operationId": operation_id(route.method.as_str(), route.path),
        "parameters": parameters,
        "security": [{"ApiKey": []}, {"Bearer": []}],
        "responses": responses
    })
}

/// An error response: the envelope, and when it is answered.
fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

/// A request header a route's handler reads (optional: none is required).
fn header_param(param: &HeaderParam) -> Value {
    json!({
        "name": param.name, "in": "header", "required": false,
        "schema": {"type": "string"}, "description": param.description
    })
}

/// A path parameter: a `{name}` segment, or a catch-all `{*name}` that may
/// hold several segments.
fn path_param(param: PathParam<'_>) -> Value {
    match param {
        PathParam::Segment(name) => json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}),
        PathParam::Rest(name) => json!({
            "name": name, "in": "path", "required": true, "schema": {"type": "string"},
            "description": "The rest of the path: may hold slashes, sent as they are"
        }),
    }
}

fn query_param(param: &QueryParam) -> Value {
    let schema = match param.kind {
        ParamKind::String => json!({"type": "string"}),
        ParamKind::Integer => json!({"type": "integer", "minimum": 0}),
        ParamKind::Boolean => json!({"type": "boolean"}),
        ParamKind::DateTime => json!({"type": "string", "format": "date-time"}),
        ParamKind::StringArray => json!({"type": "array", "items": {"type": "string"}}),
    };
    let mut value = json!({
        "name": param.name, "in": "query", "required": false,
        "schema": schema, "description": param.description
    });
    if param.kind == ParamKind::StringArray
        && let Some(obj) = value.as_object_mut()
    {
        obj.insert("style".to_owned(), json!("form"));
        obj.insert("explode".to_owned(), json!(true));
    }
    value
}

/// The `anthropic-beta` header, required where the guard requires it.
fn beta_header(path: &str) -> Value {
    let required = requires_managed_agents_beta(path);
    let description = if required {
        format!("A comma-separated list including {MANAGED_AGENTS_BETA}")
    } else {
        format!("A comma-separated list of betas; this route does not need {MANAGED_AGENTS_BETA}")
    };
    json!({
        "name": "anthropic-beta", "in": "header", "required": required,
        "schema": {"type": "string"}, "description": description
    })
}

fn request_body(body: RequestBody) -> Option<Value> {
    let json_object = json!({"application/json": {"schema": {"type": "object"}}});
    match body {
        RequestBody::None => None,
        RequestBody::Json => Some(json!({"required": true, "content": json_object})),
        // An empty body reads as `{}`.
        RequestBody::OptionalJson => Some(json!({"required": false, "content": json_object})),
        RequestBody::Multipart => Some(json!({
            "required": true,
            "content": {"multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "contentMediaType": "application/octet-stream"}}
                }
            }}
        })),
    }
}

fn success(response: ResponseBody) -> Value {
    let (description, content) = match response {
        ResponseBody::Json => ("Success", json!({"application/json": {"schema": {"type": "object"}}})),
        ResponseBody::EventStream => {
            ("Server-sent events", json!({"text/event-stream": {"schema": {"type": "string"}}}))
        }
        ResponseBody::Bytes => (
            "The file's bytes",
            json!({"application/octet-stream": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}}),
        ),
        ResponseBody::JsonLines => ("JSON Lines", json!({"application/x-ndjson": {"schema": {"type": "string"}}})),
        ResponseBody::Text => ("Text", json!({"text/plain": {"schema": {"type": "string"}}})),
    };
    json!({"description": description, "content": content})
}

/// A path parameter of a route template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathParam<'a> {
    /// `{name}`: one segment.
    Segment(&'a str),
    /// `{*name}`: axum's catch-all, the rest of the path.
    Rest(&'a str),
}

fn path_params(path: &str) -> Vec<PathParam<'_>> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| match name.strip_prefix('*') {
            Some(rest) => PathParam::Rest(rest),
            None => PathParam::Segment(name),
        })
        .collect()
}

/// A route template as an OpenAPI path template: axum's catch-all `{*name}`
/// becomes `{name}` (OpenAPI has no catch-all; the parameter says it may
/// hold slashes).
fn openapi_path(path: &str) -> String {
    path.replace("{*", "{")
}

fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_lowercase();
    for segment in path.split('/').filter(|s| !s.is_empty() && *s != "v1") {
        id.push('_');
        let name = segment.trim_start_matches('{').trim_start_matches('*').trim_end_matches('}');
        // An identifier, as code generators name methods after it.
        id.extend(name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }));
    }
    id
}
