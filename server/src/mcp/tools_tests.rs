//! Tests of MCP tool naming, permissions and result conversion.

use std::collections::BTreeSet;

use pretty_assertions::assert_eq;
use serde_json::json;

use super::*;
use crate::api::tools::resolve_tools;

fn listed(name: &str) -> ListedTool {
    ListedTool {
        name: name.to_owned(),
        description: Some(format!("does {name}")),
        input_schema: json!({"type": "object"}),
    }
}

#[test]
fn names_are_valid_unique_and_stable() {
    // Goal: whatever a server and tool are called, the model gets a name the
    // Messages API accepts, unique across servers, the same every time.
    let taken = BTreeSet::new();
    assert_eq!(model_name("docs", "search", &taken), "mcp__docs__search");
    assert_eq!(model_name("my docs!", "find.page", &taken), "mcp__my_docs___find_page");
    let long = model_name(&"s".repeat(200), &"t".repeat(200), &taken);
    assert!(long.len() <= MAX_TOOL_NAME_CHARS, "{long}");
    assert_eq!(long, model_name(&"s".repeat(200), &"t".repeat(200), &taken));
    // Two pairs that sanitize alike both get names, and different ones.
    let first = model_name("a b", "x", &taken);
    let taken: BTreeSet<String> = [first.clone()].into();
    let second = model_name("a_b", "x", &taken);
    assert_ne!(first, second);
    for name in [&first, &second, &long] {
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'), "{name}");
        assert!(name.starts_with(NAME_PREFIX));
    }
}

#[test]
fn names_do_not_depend_on_the_listing_order() {
    // Goal: a server listing its tools in another order (after a reconnect)
    // gives each the same name, so the history's calls keep meaning the same
    // tool. Method: two tools whose plain names collide, listed both ways
    // round; both get hashed names, the others plain ones.
    let tools = resolve_tools(&[json!({"type": "mcp_toolset", "mcp_server_name": "s"})]).unwrap();
    let listing = [listed("get.file"), listed("search"), listed("get_file")];
    let reversed: Vec<ListedTool> = listing.iter().rev().cloned().collect();
    let named = |tools_listed: &[ListedTool]| -> BTreeSet<(String, String)> {
        offer(&tools, [("s", tools_listed)]).names.into_iter().map(|n| (n.tool, n.name)).collect()
    };
    let names = named(&listing);
    assert_eq!(names, named(&reversed));
    let name_of = |tool: &str| names.iter().find(|(t, _)| t == tool).map(|(_, name)| name.clone()).unwrap();
    assert_eq!(name_of("search"), "mcp__s__search");
    for tool in ["get.file", "get_file"] {
        assert!(name_of(tool).starts_with("mcp__s__get_file_"), "{}", name_of(tool));
    }
    assert_ne!(name_of("get.file"), name_of("get_file"));
}

#[test]
fn names_do_not_depend_on_the_listing_order_when_a_plain_name_is_another_tools_hashed_one() {
    // Goal: a tool whose plain name equals the hashed name another tool
    // would get keeps the same names in either listing order.
    let tools = resolve_tools(&[json!({"type": "mcp_toolset", "mcp_server_name": "s"})]).unwrap();
    let hashed = model_name("s", "get.file", &BTreeSet::from(["mcp__s__get_file".to_owned()]));
    let third = hashed.strip_prefix("mcp__s__").unwrap().to_owned();
    let listing = [listed("get.file"), listed("get_file"), listed(&third)];
    let reversed: Vec<ListedTool> = listing.iter().rev().cloned().collect();
    let named = |tools_listed: &[ListedTool]| -> BTreeSet<(String, String)> {
        offer(&tools, [("s", tools_listed)]).names.into_iter().map(|n| (n.tool, n.name)).collect()
    };
    assert_eq!(named(&listing), named(&reversed));
}

#[test]
fn only_enabled_tools_are_offered_and_permissions_follow_the_toolset() {
    let tools = resolve_tools(&[
        json!({"type": "mcp_toolset", "mcp_server_name": "docs",
               "configs": [{"name": "delete", "enabled": false},
                           {"name": "search", "permission_policy": {"type": "always_allow"}},
                           {"name": "judge", "permission_policy": {"type": "auto"}}]}),
        json!({"type": "mcp_toolset", "mcp_server_name": "off", "default_config": {"enabled": false},
               "configs": [{"name": "only", "enabled": true}]}),
    ])
    .unwrap();
    let docs = [listed("search"), listed("delete"), listed("write"), listed("judge")];
    let off = [listed("only"), listed("other")];
    let offered = offer(&tools, [("docs", &docs[..]), ("off", &off[..])]);
    let names: Vec<(&str, &str, &str)> =
        offered.names.iter().map(|n| (n.name.as_str(), n.server.as_str(), n.tool.as_str())).collect();
    assert_eq!(
        names,
        [
            ("mcp__docs__search", "docs", "search"),
            ("mcp__docs__delete", "docs", "delete"),
            ("mcp__docs__write", "docs", "write"),
            ("mcp__docs__judge", "docs", "judge"),
            ("mcp__off__only", "off", "only"),
            ("mcp__off__other", "off", "other"),
        ]
    );
    let offered_names: Vec<&Value> = offered.definitions.iter().map(|d| &d["name"]).collect();
    assert_eq!(offered_names, ["mcp__docs__search", "mcp__docs__write", "mcp__docs__judge", "mcp__off__only"]);
    assert_eq!(
        offered.definitions[0],
        json!({"name": "mcp__docs__search", "description": "does search", "input_schema": {"type": "object"}})
    );
    assert_eq!(permission(&tools, "docs", "search"), (EvaluatedPermission::Allow, Some(ToolEvaluation::AlwaysAllow)));
    // MCP's default policy asks.
    assert_eq!(permission(&tools, "docs", "write"), (EvaluatedPermission::Ask, Some(ToolEvaluation::AlwaysAsk)));
    assert_eq!(permission(&tools, "docs", "judge").0, EvaluatedPermission::Ask);
    assert_eq!(permission(&tools, "docs", "delete"), (EvaluatedPermission::Deny, None));
    assert_eq!(permission(&tools, "nope", "search"), (EvaluatedPermission::Deny, None));
}

#[test]
fn listed_tools_are_made_safe_to_offer() {
    let tool = ListedTool::from_json(&json!({"name": "t", "description": "d".repeat(10_000),
        "inputSchema": {"properties": {"q": {"type": "string"}}}}))
    .unwrap();
    assert_eq!(tool.description.unwrap().chars().count(), MAX_DESCRIPTION_CHARS);
    assert_eq!(tool.input_schema, json!({"type": "object", "properties": {"q": {"type": "string"}}}));
    let huge = ListedTool::from_json(&json!({"name": "t", "inputSchema": {"type": "object",
        "description": "x".repeat(MAX_SCHEMA_BYTES)}}))
    .unwrap();
    assert_eq!(huge.input_schema, json!({"type": "object"}));
    assert!(ListedTool::from_json(&json!({"description": "no name"})).is_none());
}

#[test]
fn a_listing_cannot_make_the_offered_tools_unbounded() {
    // A name past the limit is no tool of ours.
    let long = json!({"name": "n".repeat(MAX_LISTED_NAME_CHARS + 1)});
    assert!(ListedTool::from_json(&long).is_none());
    // Twenty servers of 128 tools with schemas near the limit would make a
    // request of about 80 MB: the definitions stop at MAX_OFFERED_BYTES.
    let schema = json!({"type": "object", "description": "x".repeat(MAX_SCHEMA_BYTES - 100)});
    let tools: Vec<ListedTool> = (0..MAX_TOOLS_PER_SERVER)
        .map(|n| ListedTool { name: format!("t{n}"), description: None, input_schema: schema.clone() })
        .collect();
    let servers: Vec<String> = (0..20).map(|n| format!("s{n}")).collect();
    let agent_tools = resolve_tools(
        &servers.iter().map(|s| json!({"type": "mcp_toolset", "mcp_server_name": s})).collect::<Vec<_>>(),
    )
    .unwrap();
    let offered = offer(&agent_tools, servers.iter().map(|s| (s.as_str(), &tools[..])));
    let bytes: usize = offered.definitions.iter().map(|d| d.to_string().len()).sum();
    assert!(bytes <= MAX_OFFERED_BYTES, "{bytes}");
    assert!(offered.definitions.len() > 100, "{}", offered.definitions.len());
    // Every listed tool still has its name, so a call of one is recognised.
    assert_eq!(offered.names.len(), 20 * MAX_TOOLS_PER_SERVER);
}

#[test]
fn top_level_combinators_become_one_object_schema() {
    let schema = |input_schema| ListedTool::from_json(&json!({"name": "t", "inputSchema": input_schema})).unwrap();
    // oneOf: every branch's properties; required only what every branch requires.
    let one_of = schema(json!({"oneOf": [
        {"type": "object", "properties": {"id": {"type": "string"}, "all": {"type": "boolean"}}, "required": ["id", "all"]},
        {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path", "all"]}
    ]}));
    assert_eq!(
        one_of.input_schema,
        json!({"type": "object", "required": ["all"], "properties": {
            "id": {"type": "string"}, "all": {"type": "boolean"}, "path": {"type": "string"}}})
    );
    // allOf: every branch's requirements; the schema's own property wins.
    let all_of = schema(json!({"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"],
        "allOf": [{"properties": {"q": {"type": "number"}, "n": {"type": "integer"}}, "required": ["n"]}]}));
    assert_eq!(
        all_of.input_schema,
        json!({"type": "object", "required": ["n", "q"], "properties": {"q": {"type": "string"}, "n": {"type": "integer"}}})
    );
    // Without combinators nothing changes.
    assert_eq!(
        schema(json!({"type": "object", "required": ["z"]})).input_schema,
        json!({"type": "object", "required": ["z"]})
    );
}

#[test]
fn results_become_tool_result_content() {
    let result = json!({"content": [
        {"type": "text", "text": "hello"},
        {"type": "image", "data": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJ", "mimeType": "image/png"},
        {"type": "image", "data": "AAAA", "mimeType": "image/tiff"},
        {"type": "audio", "data": "AAAA", "mimeType": "audio/wav"},
        {"type": "resource", "resource": {"uri": "file:///a.txt", "text": "body"}},
        {"type": "resource", "resource": {"uri": "file:///a.pdf", "blob": "JVBERi0=", "mimeType": "application/pdf"}},
        {"type": "resource_link", "uri": "file:///b", "name": "b"}
    ], "isError": true});
    let outcome = outcome(&result);
    assert!(outcome.is_error);
    assert_eq!(
        outcome.content,
        vec![
            ContentBlock::Text { text: "hello".into() },
            ContentBlock::Image {
                source: ImageSource::Base64 {
                    media_type: "image/png".into(),
                    data: "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJ".into()
                }
            },
            ContentBlock::Text {
                text: "[image content of type image/tiff left out: tool results cannot carry it]".into()
            },
            ContentBlock::Text {
                text: "[audio content of type audio/wav left out: tool results cannot carry it]".into()
            },
            ContentBlock::Text { text: "[resource file:///a.txt]\nbody".into() },
            ContentBlock::Document {
                source: DocumentSource::Base64 { media_type: "application/pdf".into(), data: "JVBERi0=".into() },
                title: Some("file:///a.pdf".into()),
                context: None,
            },
            ContentBlock::Text { text: "[resource link: b <file:///b>]".into() },
        ]
    );
    let structured = super::outcome(&json!({"content": [], "structuredContent": {"n": 1}}));
    assert_eq!(structured, ToolOutcome::text("{\"n\":1}"));
    assert_eq!(super::outcome(&json!({})), ToolOutcome::text(NO_OUTPUT));
}

/// Defect (review): an MCP server's image is passed on as an image block
/// whatever its size. The Messages API refuses an image over 5 MiB of base64
/// (the cap the read tool applies, §8.3), so once such a result is in the
/// log every later request of the session is refused (400) and the session
/// cannot go on: one MCP response (up to `connect::MAX_RESPONSE_BYTES`, 16
/// MiB) wedges it. Method: a 6 MiB base64 PNG in a `tools/call` result; the
/// content must not carry an image block over 5 MiB (a note in its place, as
/// for the types tool results cannot carry).
#[test]
fn images_over_the_messages_api_limit_are_not_passed_on() {
    const MAX_IMAGE_BASE64_BYTES: usize = 5 * 1024 * 1024;
    let data = "A".repeat(6 * 1024 * 1024);
    let outcome = outcome(&json!({"content": [{"type": "image", "data": data, "mimeType": "image/png"}]}));
    let oversized: Vec<usize> = outcome
        .content
        .iter()
        .filter_map(|block| match block {
            ContentBlock::Image { source: ImageSource::Base64 { data, .. } } => Some(data.len()),
            ContentBlock::Image { .. }
            | ContentBlock::Text { .. }
            | ContentBlock::Document { .. }
            | ContentBlock::SearchResult { .. }
            | ContentBlock::Redacted => None,
        })
        .filter(|len| *len > MAX_IMAGE_BASE64_BYTES)
        .collect();
    assert!(oversized.is_empty(), "image blocks of {oversized:?} bytes of base64 reach the model's context");
}

/// Defect (review of efd98e2): the fix turns an MCP image the Messages API
/// would refuse into a note, but a PDF resource goes into the log as a
/// `document` block whatever its data: a `blob` that is not base64 is
/// passed on as it is (the fixture of `results_become_tool_result_content`,
/// `"JVBER"`, is one). The provider refuses every later request that holds
/// that block (400 invalid_request_error), so the session wedges exactly as
/// it did for images. Method: a `tools/call` result with a PDF resource whose
/// blob is not base64; the content must not carry it as a document block.
#[test]
fn a_pdf_resource_the_messages_api_would_refuse_is_not_passed_on() {
    use base64::Engine as _;
    let blob = "%PDF-1.7 this is not base64!";
    assert!(base64::engine::general_purpose::STANDARD.decode(blob).is_err());
    let outcome = outcome(&json!({"content": [
        {"type": "resource", "resource": {"uri": "file:///a.pdf", "blob": blob, "mimeType": "application/pdf"}}
    ]}));
    let invalid: Vec<&str> = outcome
        .content
        .iter()
        .filter_map(|block| match block {
            ContentBlock::Document { source: DocumentSource::Base64 { data, .. }, .. } => Some(data.as_str()),
            ContentBlock::Document { .. }
            | ContentBlock::Image { .. }
            | ContentBlock::Text { .. }
            | ContentBlock::SearchResult { .. }
            | ContentBlock::Redacted => None,
        })
        .filter(|data| base64::engine::general_purpose::STANDARD.decode(data).is_err())
        .collect();
    assert!(invalid.is_empty(), "document blocks whose data is not base64 reach the model's context: {invalid:?}");
}

/// Defect (review of efd98e2): an MCP image within 5 MiB of valid base64
/// is passed on whatever its dimensions, but the Messages API rejects an
/// image over 8,000 pixels on a side (Claude vision docs: "images larger
/// than 8000x8000 px will be rejected"); once in the log, every later
/// request of the session is refused. Method: a valid PNG header of
/// 9,000 x 10 pixels (a few bytes of base64); it must become a note.
#[test]
fn an_mcp_image_over_the_messages_api_dimensions_is_not_passed_on() {
    use base64::Engine as _;
    let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    png.extend_from_slice(&9_000u32.to_be_bytes());
    png.extend_from_slice(&10u32.to_be_bytes());
    png.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
    let data = base64::engine::general_purpose::STANDARD.encode(&png);
    let outcome = outcome(&json!({"content": [{"type": "image", "data": data, "mimeType": "image/png"}]}));
    assert!(
        !outcome.content.iter().any(|block| matches!(block, ContentBlock::Image { .. })),
        "a 9000-pixel-wide image reaches the model's context: {:?}",
        outcome.content
    );
}

/// Defect (review, tools): an MCP image is passed on with the media type
/// the server declared, whatever its bytes are. The Messages API refuses an
/// image whose data is not of its declared media type ("Image does not
/// match the provided media type"), which the read tool already knows (it
/// sends a `.png` that is really a JPEG as `image/jpeg`, `files/read.rs`).
/// Once such a block is in the log every later request of the session is
/// refused, the wedge the size and dimension checks above exist to prevent.
/// Method: a small, valid JPEG (a 10 x 10 start of frame) declared
/// `image/png`, and bytes that are no image at all declared `image/png`;
/// no image block may claim a media type its bytes do not have.
#[test]
fn an_mcp_image_whose_bytes_are_not_its_media_type_is_not_passed_on_as_it() {
    use base64::Engine as _;
    let mut jpeg = vec![0xff, 0xd8, 0xff, 0xe0, 0x00, 0x04, 0x00, 0x00];
    jpeg.extend_from_slice(&[0xff, 0xc0, 0x00, 0x11, 0x08, 0x00, 0x0a, 0x00, 0x0a]);
    let jpeg = base64::engine::general_purpose::STANDARD.encode(&jpeg);
    let text = base64::engine::general_purpose::STANDARD.encode(b"hello, this is not an image");
    let outcome = outcome(&json!({"content": [
        {"type": "image", "data": jpeg, "mimeType": "image/png"},
        {"type": "image", "data": text, "mimeType": "image/png"},
    ]}));
    let signature =
        |bytes: &[u8]| crate::tools::image::MediaType::of(bytes).map(crate::tools::image::MediaType::as_str);
    let mislabelled: Vec<(String, Option<&str>)> = outcome
        .content
        .iter()
        .filter_map(|block| match block {
            ContentBlock::Image { source: ImageSource::Base64 { media_type, data } } => {
                let bytes = base64::engine::general_purpose::STANDARD.decode(data).unwrap_or_default();
                let actual = signature(&bytes);
                (actual != Some(media_type.as_str())).then(|| (media_type.clone(), actual))
            }
            ContentBlock::Image { .. }
            | ContentBlock::Text { .. }
            | ContentBlock::Document { .. }
            | ContentBlock::SearchResult { .. }
            | ContentBlock::Redacted => None,
        })
        .collect();
    assert!(
        mislabelled.is_empty(),
        "image blocks whose bytes are not their media type reach the model's context (declared, actual): \
         {mislabelled:?}"
    );
}

#[test]
fn offered_schemas_have_only_property_names_the_messages_api_accepts() {
    // The Messages API refuses every request of the session (400 "tools.N.custom.input_schema.properties:
    // Property keys should match pattern '^[a-zA-Z0-9_.-]{1,64}$'") as soon as one offered tool has
    // such a property: servers generated from OpenAPI specs list `filter[id]`, `$select`, `StartTime<`.
    let tools = resolve_tools(&[json!({"type": "mcp_toolset", "mcp_server_name": "api"})]).unwrap();
    let listed = ListedTool::from_json(&json!({
        "name": "list_apps",
        "inputSchema": {"type": "object", "properties": {
            "filter[id]": {"type": "string"}, "$select": {"type": "string"}, "StartTime<": {"type": "string"},
            "page size": {"type": "integer"}, "p".repeat(65): {"type": "string"}, "ok.name-1": {"type": "string"}
        }}
    }))
    .unwrap();
    let offered = offer(&tools, [("api", std::slice::from_ref(&listed))]);
    let valid = |key: &str| {
        (1..=64).contains(&key.len()) && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    };
    for definition in &offered.definitions {
        let properties = definition["input_schema"].get("properties").and_then(serde_json::Value::as_object);
        let refused: Vec<&String> =
            properties.into_iter().flatten().map(|(key, _)| key).filter(|key| !valid(key)).collect();
        assert!(
            refused.is_empty(),
            "offered {} with property names the Messages API refuses: {refused:?}",
            definition["name"]
        );
    }
}

#[test]
fn offered_schemas_are_valid_json_schemas() {
    // The Messages API refuses every request of the session (400 "tools.N.custom.input_schema: JSON schema
    // is invalid. It must match JSON Schema draft 2020-12") as soon as one offered tool's schema is not a
    // valid schema; a server's listing is not to be trusted to be one.
    fn valid(schema: &serde_json::Value) -> bool {
        const TYPES: [&str; 7] = ["null", "boolean", "object", "array", "number", "string", "integer"];
        let Some(schema) = schema.as_object() else { return schema.is_boolean() };
        let type_ok = match schema.get("type") {
            None => true,
            Some(serde_json::Value::String(name)) => TYPES.contains(&name.as_str()),
            Some(serde_json::Value::Array(names)) => {
                names.iter().all(|n| n.as_str().is_some_and(|n| TYPES.contains(&n)))
            }
            Some(_) => false,
        };
        let required_ok =
            schema.get("required").is_none_or(|r| r.as_array().is_some_and(|r| r.iter().all(|n| n.is_string())));
        let properties_ok =
            schema.get("properties").is_none_or(|p| p.as_object().is_some_and(|p| p.values().all(valid)));
        type_ok && required_ok && properties_ok
    }
    let tools = resolve_tools(&[json!({"type": "mcp_toolset", "mcp_server_name": "api"})]).unwrap();
    let listed: Vec<ListedTool> = [
        json!({"name": "required_not_a_list", "inputSchema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": "q"}}),
        json!({"name": "no_such_type", "inputSchema": {"type": "object", "properties": {"q": {"type": "text"}}}}),
        json!({"name": "property_not_a_schema", "inputSchema": {"type": "object", "properties": {"q": "a string"}}}),
    ]
    .iter()
    .map(|tool| ListedTool::from_json(tool).unwrap())
    .collect();
    let offered = offer(&tools, [("api", &listed[..])]);
    let refused: Vec<&serde_json::Value> =
        offered.definitions.iter().filter(|definition| !valid(&definition["input_schema"])).collect();
    assert!(refused.is_empty(), "offered invalid schemas the Messages API refuses: {refused:#?}");
}

#[test]
fn a_result_of_many_images_does_not_flood_every_later_request() {
    // Goal: one MCP result cannot put more into the context than the platform's rule for a tool output
    // (`spill::MAX_INLINE_CHARS`), which the spill enforces on text only. A request carries at most
    // MAX_IMAGES images and every image past them becomes a note of about 100 characters in every later
    // request: 20,000 tiny images (3 MB of the 16 MB a response may be) become about 2 million characters,
    // more than the model's context, in every request of the session from then on.
    const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJ";
    let images: Vec<serde_json::Value> =
        (0..20_000).map(|_| json!({"type": "image", "data": PNG, "mimeType": "image/png"})).collect();
    let outcome = outcome(&json!({"content": images}));
    let content: Vec<serde_json::Value> =
        outcome.content.iter().map(|block| serde_json::to_value(block).unwrap()).collect();
    let mut messages = vec![
        json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": content}]}),
    ];
    crate::model::images::fit_images(&mut messages);
    let sent = messages[0]["content"][0]["content"].as_array().unwrap();
    let text_chars: usize =
        sent.iter().filter_map(|block| block["text"].as_str()).map(|text| text.chars().count()).sum();
    assert!(
        text_chars <= crate::tools::spill::MAX_INLINE_CHARS,
        "one MCP result puts {} blocks and {text_chars} characters of text into every later request",
        sent.len()
    );
}
