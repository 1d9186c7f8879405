//! The gateway's replies checked against its OpenAPI document (`tandem_gateway::openapi::ApiDoc`),
//! so the two cannot drift: [`check_reply`] is called on every reply the suite's HTTP client
//! ([`super::gateway::ApiClient`]) gets from a gateway.
//!
//! A reply is accepted when its route (the path template matching the concrete path, exact
//! paths first), method and status (or `default`) are documented, its content type is one the
//! response documents, and, for JSON, its body validates against that content's schema (JSON
//! Schema 2020-12, as OpenAPI 3.1 uses; `$ref`s to `#/components/schemas/...` resolved,
//! `format`s such as `uuid` and `date-time` asserted). Other bodies (event streams, metrics,
//! HTML, images) are checked only for being documented with their content type.
//!
//! Requests the router does not route at all get the gateway's fallback, which no path of the
//! document can describe: a path matching no template may only answer 404 with an
//! `ErrorReply`, and a documented path asked with an undocumented method only 405.
//!
//! A mismatch panics in the test that got the reply. To survey a whole run instead (every
//! mismatch of every test, none stopping one), set `TANDEM_OPENAPI_DRIFT_LOG=<file>`: the
//! client then appends each mismatch there, with the test's name, and goes on.

use std::{collections::HashMap, fmt::Write as _, io::Write as _, sync::OnceLock};

use boon::{Compiler, Draft, SchemaIndex, Schemas};
use serde_json::{Map, Value};

/// The methods an OpenAPI path item may hold.
const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The document, as `GET /openapi.json` serves it.
pub fn document() -> &'static Value {
    &spec().doc
}

/// Panics, naming the request, the reply and every problem, unless the reply is documented and
/// matches its schema. `path` may carry a query; `content_type` is the `Content-Type` header.
pub fn check_reply(method: &str, path: &str, status: u16, content_type: Option<&str>, body: &[u8]) {
    reply_problems(method, path, status, content_type, body).unwrap_or_else(|p| panic!("{p}"));
}

/// [`check_reply`] for a reply whose body is not read (an event stream): its status and
/// content type must be documented.
pub fn check_streamed_reply(method: &str, path: &str, status: u16, content_type: Option<&str>) {
    check(method, path, status, content_type, None).unwrap_or_else(|p| panic!("{p}"));
}

/// The environment variable naming a file to append mismatches to instead of panicking.
pub const DRIFT_LOG_VAR: &str = "TANDEM_OPENAPI_DRIFT_LOG";

/// What the suite's client calls on each reply from a gateway: [`check_reply`] (or
/// [`check_streamed_reply`] when `body` is `None`; only the status is checked when
/// `content_type` is `None` too), or, with `TANDEM_OPENAPI_DRIFT_LOG` set, the same check with
/// any mismatch appended to that file.
pub fn check_client_reply(
    method: &str,
    path: &str,
    status: u16,
    content_type: Option<&str>,
    body: Option<&[u8]>,
) {
    let Err(problem) = check(method, path, status, content_type, body) else {
        return;
    };
    let Some(log) = std::env::var_os(DRIFT_LOG_VAR).filter(|v| !v.is_empty()) else {
        panic!("{problem}");
    };
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("an unnamed thread");
    let entry = format!("=== in {test}\n{problem}\n\n");
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .and_then(|mut file| file.write_all(entry.as_bytes()))
        .unwrap_or_else(|e| panic!("cannot append to {}: {e}", log.to_string_lossy()));
}

/// What [`check_reply`] would panic with, if anything.
pub fn reply_problems(
    method: &str,
    path: &str,
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(), String> {
    check(method, path, status, content_type, Some(body))
}

/// Validates `value` against `#/components/schemas/<name>` (e.g. an event's data against
/// `JobView`); the errors when it does not match.
pub fn schema_problems(name: &str, value: &Value) -> Result<(), String> {
    let key = format!("#/components/schemas/{name}");
    let problems = spec().validate(&key, value);
    problems.unwrap_or_else(|| Err(format!("no schema {key} in the OpenAPI document")))
}

/// The document and its compiled schemas.
struct Spec {
    doc: Value,
    set: Schemas,
    /// The compiled schemas, by name: each response's JSON content's as `GET /job/{id} 200
    /// application/json` (method, path template, status key, media type), and each of the
    /// components' as `#/components/schemas/<name>`.
    named: HashMap<String, SchemaIndex>,
}

/// Where the compiled schemas live: `{"components": <the document's>, "x-replies": [...]}`,
/// so each schema's `#/components/schemas/...` references resolve as in the document.
const LOCATION: &str = "https://tandem.invalid/openapi-replies.json";

fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        // `GET /openapi.json`'s handler: `Json(ApiDoc::openapi())`, ready at once (this way
        // the tests need no `utoipa` of their own for the `OpenApi` trait).
        let served = futures::executor::block_on(tandem_gateway::openapi::serve());
        let doc = serde_json::to_value(&served.0).expect("the OpenAPI document serialises");
        Spec::new(doc)
    })
}

impl Spec {
    fn new(doc: Value) -> Self {
        let mut named = Vec::new();
        for (template, item) in entries(&doc["paths"]) {
            for (method, operation) in entries(item).filter(|(m, _)| METHODS.contains(&m.as_str()))
            {
                for (status, response) in entries(&operation["responses"]) {
                    for (media, content) in entries(&resolve(&doc, response)["content"]) {
                        if is_json(&media_type(media)) && content.get("schema").is_some() {
                            let method = method.to_ascii_uppercase();
                            let name = format!("{method} {template} {status} {media}");
                            named.push((name, content["schema"].clone()));
                        }
                    }
                }
            }
        }
        for (name, _) in entries(&doc["components"]["schemas"]) {
            let reference = format!("#/components/schemas/{name}");
            named.push((reference.clone(), serde_json::json!({ "$ref": reference })));
        }
        let (names, replies): (Vec<_>, Vec<_>) = named.into_iter().unzip();
        // JSON Schema 2020-12, as OpenAPI 3.1 uses, next to the document's components.
        let resource = serde_json::json!({ "components": doc["components"], "x-replies": replies });
        let mut compiler = Compiler::new();
        compiler.set_default_draft(Draft::V2020_12);
        compiler.enable_format_assertions();
        compiler
            .add_resource(LOCATION, resource)
            .expect("the schema resource is added");
        let mut set = Schemas::new();
        let mut named = HashMap::new();
        for (i, name) in names.into_iter().enumerate() {
            let location = format!("{LOCATION}#/x-replies/{i}");
            let index = compiler.compile(&location, &mut set).unwrap_or_else(|e| {
                panic!("the OpenAPI document's schema #{i} does not compile: {e:#}")
            });
            named.insert(name, index);
        }
        Self { doc, set, named }
    }

    /// Validates `value` against the schema named `name` (see [`Spec::named`]): the errors, one
    /// per line, when it fails; `None` when there is no such schema.
    fn validate(&self, name: &str, value: &Value) -> Option<Result<(), String>> {
        let index = *self.named.get(name)?;
        let problems = self.set.validate(value, index);
        Some(problems.map_err(|e| format!("{e:#}")))
    }
}

/// The members of a JSON object (none for anything else).
fn entries(value: &Value) -> impl Iterator<Item = (&String, &Value)> {
    value.as_object().into_iter().flatten()
}

/// The names of a JSON object's members, for messages: `a, b, c`.
fn listed(value: &Value) -> String {
    let names: Vec<&str> = entries(value).map(|(k, _)| k.as_str()).collect();
    names.join(", ")
}

/// A response object, or the one its `$ref` names.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    let reference = value.get("$ref").and_then(Value::as_str);
    let pointer = reference.and_then(|reference| reference.strip_prefix('#'));
    pointer
        .and_then(|pointer| doc.pointer(pointer))
        .unwrap_or(value)
}

/// `application/json`, or any `+json` type.
fn is_json(media: &str) -> bool {
    media == "application/json" || media.ends_with("+json")
}

/// The media type of a `Content-Type` (lower case, without parameters).
fn media_type(content_type: &str) -> String {
    let media = content_type.split(';').next().unwrap_or_default();
    media.trim().to_ascii_lowercase()
}

/// Whether a documented content key (`image/*`, `text/plain; version=0.0.4`) covers `media`.
fn covers(documented: &str, media: &str) -> bool {
    let documented = media_type(documented);
    if documented == media || documented == "*/*" {
        return true;
    }
    match (documented.split_once('/'), media.split_once('/')) {
        (Some((kind, "*")), Some((media_kind, _))) => kind == media_kind,
        _ => false,
    }
}

/// The path item whose template matches `path`: the exact path first, else the template with
/// the most literal segments among those matching (`{x}` matches one non-empty segment).
fn find_path<'a>(paths: &'a Value, path: &str) -> Option<(&'a str, &'a Value)> {
    let paths = paths.as_object().expect("the document has paths");
    if let Some((template, item)) = paths.get_key_value(path) {
        return Some((template, item));
    }
    let is_param = |part: &str| part.starts_with('{') && part.ends_with('}');
    let segments: Vec<&str> = path.split('/').collect();
    let matching = paths.iter().filter_map(|(template, item)| {
        let parts: Vec<&str> = template.split('/').collect();
        let matches = parts.len() == segments.len()
            && (parts.iter().zip(&segments))
                .all(|(part, segment)| part == segment || (is_param(part) && !segment.is_empty()));
        let literal = parts.iter().filter(|part| !is_param(part)).count();
        matches.then_some((literal, template.as_str(), item))
    });
    let (_, template, item) = matching.max_by_key(|(literal, _, _)| *literal)?;
    Some((template, item))
}

/// A reply to check, and the request it answers: `method` in lower case, `path` without a
/// query, `body` `None` when it was not read.
struct Reply<'a> {
    method: String,
    path: &'a str,
    status: u16,
    content_type: Option<&'a str>,
    body: Option<&'a [u8]>,
}

impl Reply<'_> {
    /// The panic message for a mismatch: the request, the reply, `why`, and the body if read.
    fn mismatch(&self, why: &str) -> String {
        let (path, status) = (self.path, self.status);
        let mut message = format!(
            "the reply does not match the OpenAPI document: {} {path} -> {status} ({})\n{why}",
            self.method.to_ascii_uppercase(),
            self.content_type.unwrap_or("no content type"),
        );
        if let Some(body) = self.body {
            let text = String::from_utf8_lossy(body);
            // All of a JSON body (up to a point); the start of anything else.
            let json = self.content_type.is_some_and(|ct| is_json(&media_type(ct)));
            let shown: String = text.chars().take(if json { 4000 } else { 300 }).collect();
            let more = if shown.len() < text.len() { " ..." } else { "" };
            let _ = write!(message, "\nbody ({} bytes): {shown}{more}", body.len());
        }
        message
    }
}

/// The check itself; `body` is `None` when it was not read.
fn check(
    method: &str,
    path: &str,
    status: u16,
    content_type: Option<&str>,
    body: Option<&[u8]>,
) -> Result<(), String> {
    let reply = Reply {
        method: method.to_ascii_lowercase(),
        path: path.split(['?', '#']).next().unwrap_or_default(),
        status,
        content_type,
        body,
    };
    check_documented(&reply).map_err(|why| reply.mismatch(&why))
}

/// Finds the path, method and status the reply answers in the document and checks its content
/// against that response; a reply of the router's fallback is checked as such.
fn check_documented(reply: &Reply) -> Result<(), String> {
    let paths = &spec().doc["paths"];
    let Some((template, item)) = find_path(paths, reply.path) else {
        // Not routed: the router's fallback.
        let (path, documented) = (reply.path, listed(paths));
        let why = format!("no path of the document matches {path} (documented: {documented})");
        return check_fallback(reply, 404, why);
    };
    // HEAD is answered as GET, without a body.
    let (method, operation) = match item.get(&reply.method) {
        Some(operation) => (reply.method.as_str(), operation),
        None if reply.method == "head" && item.get("get").is_some() => ("get", &item["get"]),
        None => {
            let documented = METHODS.iter().filter(|m| item.get(**m).is_some());
            let documented = documented.copied().collect::<Vec<_>>().join(", ");
            let method = reply.method.to_ascii_uppercase();
            let why =
                format!("{method} is not documented for {template} (documented: {documented})");
            return check_fallback(reply, 405, why);
        }
    };
    // `GET /job/{id}`, for messages.
    let operation_name = format!("{} {template}", method.to_ascii_uppercase());
    let responses = &operation["responses"];
    let Some((status_key, response)) = find_response(responses, reply.status) else {
        let status = reply.status;
        return Err(format!(
            "status {status} is not documented for {operation_name} (documented: {})",
            listed(responses)
        ));
    };
    let response = resolve(&spec().doc, response);
    check_content(reply, &format!("{operation_name} {status_key}"), response)
}

/// The response documented for `status`: its own, its class's (`4XX`), or `default`.
fn find_response(responses: &Value, status: u16) -> Option<(String, &Value)> {
    let class = status / 100;
    [
        status.to_string(),
        format!("{class}XX"),
        format!("{class}xx"),
        "default".into(),
    ]
    .into_iter()
    .find_map(|key| responses.get(&key).map(|response| (key, response)))
}

/// Checks the reply's content type against those `response` (named `name`, as in `GET
/// /job/{id} 200`) documents, then a JSON body against its schema.
fn check_content(reply: &Reply, name: &str, response: &Value) -> Result<(), String> {
    if reply.content_type.is_none() && reply.body.is_none() {
        // Only the status is known (an event stream opened elsewhere).
        return Ok(());
    }
    let content = response["content"].as_object();
    let documented_types = || match content {
        Some(_) => listed(&response["content"]),
        None => "none".to_owned(),
    };
    let Some(content_type) = reply.content_type.filter(|ct| !ct.trim().is_empty()) else {
        // No body at all is fine where none is documented, and for HEAD.
        if reply.body.is_none_or(<[u8]>::is_empty)
            && (reply.method == "head" || content.is_none_or(Map::is_empty))
        {
            return Ok(());
        }
        let types = documented_types();
        return Err(format!(
            "the reply has no Content-Type; {name} documents: {types}"
        ));
    };
    let media = media_type(content_type);
    let entry = content.and_then(|c| {
        (c.keys().find(|key| media_type(key) == media))
            .or_else(|| c.keys().find(|key| covers(key, &media)))
    });
    let Some(documented_media) = entry else {
        let types = documented_types();
        return Err(format!(
            "content type {media} is not documented for {name} (documented: {types})"
        ));
    };
    match reply.body {
        Some(body) if is_json(&media) && reply.method != "head" => {
            let schema = &response["content"][documented_media]["schema"];
            check_json_body(body, &format!("{name} {documented_media}"), schema)
        }
        _ => Ok(()),
    }
}

/// Validates a JSON body against `schema`, compiled as `name` (`GET /job/{id} 200
/// application/json`), if there is one.
fn check_json_body(body: &[u8], name: &str, schema: &Value) -> Result<(), String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    // `None`: documented as JSON without a schema (the document itself): any JSON.
    let problems = spec().validate(name, &value).unwrap_or(Ok(()));
    problems.map_err(|errors| {
        let schema = schema.get("$ref").and_then(Value::as_str);
        let schema = schema.unwrap_or("an inline schema");
        format!("it does not match the schema of {name} ({schema}):\n{errors}")
    })
}

/// A reply the router's fallback may have given (`status`: 404 for an unrouted path, 405 for an
/// unrouted method) with no body or an `ErrorReply`; any other status is `undocumented`.
fn check_fallback(reply: &Reply, status: u16, undocumented: String) -> Result<(), String> {
    if reply.status != status {
        return Err(undocumented);
    }
    let Some(body) = reply.body.filter(|b| !b.is_empty()) else {
        return Ok(());
    };
    let media = reply.content_type.map(media_type).unwrap_or_default();
    if !is_json(&media) {
        let why = format!("the router's fallback answered with {media:?}, not an ErrorReply");
        return Err(why);
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| format!("the fallback's body is not JSON: {e}"))?;
    schema_problems("ErrorReply", &value)
        .map_err(|errors| format!("the fallback's body is not an ErrorReply:\n{errors}"))
}
