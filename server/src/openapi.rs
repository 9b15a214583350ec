//! The OpenAPI 3.1 document served at `/openapi.json`, generated from the route
//! table so it always lists every route the server has.
//!
//! Schemas are deliberately coarse (objects with their required fields and the
//! error envelope); the authoritative shapes are the Managed Agents API's,
//! documented in the official SDKs.

use serde_json::{Map, Value, json};

use crate::http::{MANAGED_AGENTS_BETA, RouteSpec};

pub fn document(routes: &[RouteSpec]) -> Value {
    let mut paths = Map::new();
    for route in routes {
        let entry = paths.entry(route.path.to_owned()).or_insert_with(|| json!({}));
        let method = route.method.as_str().to_lowercase();
        let parameters: Vec<Value> = path_params(route.path)
            .into_iter()
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .chain(std::iter::once(json!({
                "name": "anthropic-beta", "in": "header", "required": true,
                "schema": {"type": "string"}, "description": format!("comma list including {MANAGED_AGENTS_BETA}")
            })))
            .collect();
        let ok = if route.streaming {
            json!({"description": "Server-sent events", "content": {"text/event-stream": {"schema": {"type": "string"}}}})
        } else {
            json!({"description": "Success", "content": {"application/json": {"schema": {"type": "object"}}}})
        };
        let mut operation = json!({
            "summary": route.summary,
            "operationId": operation_id(route),
            "parameters": parameters,
            "security": [{"ApiKey": []}, {"Bearer": []}],
            "responses": {
                "200": ok,
                "400": {"$ref": "#/components/responses/Error"},
                "401": {"$ref": "#/components/responses/Error"},
                "404": {"$ref": "#/components/responses/Error"},
                "409": {"$ref": "#/components/responses/Error"},
                "413": {"$ref": "#/components/responses/Error"},
                "429": {"$ref": "#/components/responses/Error"},
                "500": {"$ref": "#/components/responses/Error"}
            }
        });
        if route.method == axum::http::Method::POST
            && let Some(op) = operation.as_object_mut()
        {
            op.insert(
                "requestBody".to_owned(),
                json!({"required": false, "content": {"application/json": {"schema": {"type": "object"}}}}),
            );
        }
        if let Some(obj) = entry.as_object_mut() {
            obj.insert(method, operation);
        }
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
            "responses": {
                "Error": {
                    "description": "An error",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
                }
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

fn path_params(path: &str) -> Vec<&str> {
    path.split('/').filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect()
}

fn operation_id(route: &RouteSpec) -> String {
    let mut id = route.method.as_str().to_lowercase();
    for segment in route.path.split('/').filter(|s| !s.is_empty() && *s != "v1") {
        id.push('_');
        id.push_str(segment.trim_start_matches('{').trim_end_matches('}'));
    }
    id
}
