//! `GET /openapi.json` describes every route the gateway serves, and only those.
//! And every reply the suite gets is checked against it (`support::openapi`, called by the
//! suite's client): the check accepts real replies and rejects what does not match.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::support::{
    app::spawn_app,
    openapi::{check_reply, reply_problems, schema_problems},
    photo,
};

/// Every route of `tandem_gateway::router()`, with its methods.
const ROUTES: &[(&str, &[&str])] = &[
    ("/", &["get"]),
    ("/assets/{file}", &["get"]),
    ("/samples/{file}", &["get"]),
    ("/predict", &["post"]),
    ("/job/{id}", &["get", "delete"]),
    ("/job/{id}/events", &["get"]),
    ("/healthz", &["get"]),
    ("/readyz", &["get"]),
    ("/metrics", &["get"]),
    ("/openapi.json", &["get"]),
];

fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                if key == "$ref" {
                    out.push(inner.as_str().unwrap().to_owned());
                }
                refs(inner, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_parses_and_lists_every_route() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();

    let mut documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "delete", "patch"].contains(&k.as_str()))
                .map(move |method| (path.clone(), method.clone()))
        })
        .collect();
    documented.sort();
    let mut expected: Vec<(String, String)> = ROUTES
        .iter()
        .flat_map(|(path, methods)| {
            methods
                .iter()
                .map(|m| ((*path).to_owned(), (*m).to_owned()))
        })
        .collect();
    expected.sort();
    assert_eq!(documented, expected);

    // Each documented route exists on the live gateway (not the fallback's 404/405).
    for (path, method) in &documented {
        let concrete = path
            .replace("{id}", "00000000-0000-4000-8000-000000000000")
            .replace("/assets/{file}", "/assets/app.js")
            .replace("/samples/{file}", "/samples/chelsea.jpg");
        let url = app.url(&concrete);
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let response = app.http.request(method.clone(), &url).send().await.unwrap();
        assert_ne!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        if response.status() == StatusCode::NOT_FOUND {
            let body: Value = response.json().await.unwrap();
            assert_ne!(
                body["error"]["code"], "not_found",
                "{method} {path} is not routed"
            );
        }
    }

    // Every schema a route refers to is defined; every error response uses the error schema.
    let mut all_refs = Vec::new();
    refs(&doc, &mut all_refs);
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for reference in &all_refs {
        let name = reference.trim_start_matches("#/components/schemas/");
        assert!(schemas.contains_key(name), "{reference} is not defined");
    }
    let predict = &doc["paths"]["/predict"]["post"];
    let forms = predict["requestBody"]["content"].as_object().unwrap();
    for form in ["application/json", "multipart/form-data", "image/*"] {
        assert!(forms.contains_key(form), "POST /predict documents {form}");
    }
    for status in ["400", "413", "415", "422", "429", "503"] {
        let schema = &predict["responses"][status]["content"]["application/json"]["schema"]["$ref"];
        assert_eq!(schema, "#/components/schemas/ErrorReply", "{status}");
    }
    assert!(schemas["JobRecord"]["properties"]["status"].is_object());
}

/// A problem `reply_problems` must find, with `needle` in its message.
fn rejected(method: &str, path: &str, status: u16, content_type: &str, body: &Value, needle: &str) {
    let bytes = serde_json::to_vec(body).unwrap();
    let problem = reply_problems(method, path, status, Some(content_type), &bytes)
        .expect_err("the reply must be rejected");
    assert!(problem.contains(needle), "{needle:?} not in: {problem}");
    // The message names the request and shows the body.
    let head = format!("{} {path} -> {status}", method.to_uppercase());
    assert!(problem.contains(&head), "{problem}");
    assert!(problem.contains("body ("), "{problem}");
}

/// `reply_problems` must accept the reply.
fn accepted(method: &str, path: &str, status: u16, content_type: &str, body: &[u8]) {
    reply_problems(method, path, status, Some(content_type), body)
        .unwrap_or_else(|problem| panic!("a good reply is rejected: {problem}"));
}

const JSON: &str = "application/json";

/// Real replies pass the check every reply of the suite goes through; the same replies, broken
/// so that they no longer match their schema, fail it.
#[tokio::test]
async fn real_replies_match_the_document_and_broken_ones_do_not() {
    let app = spawn_app().await;
    // These came through the suite's client, so they are checked already; check them again by
    // hand, to be sure the check accepts what the gateway really answers.
    let response = app.predict_raw(photo("chelsea.jpg"), "image/jpeg").await;
    assert_eq!(response.status(), StatusCode::OK);
    let predict: Value = response.json().await.unwrap();
    let id = predict["job_id"].as_str().unwrap().to_owned();
    let job = app
        .wait_final(&id, std::time::Duration::from_secs(60))
        .await;
    let job_path = format!("/job/{id}");
    accepted(
        "post",
        "/predict",
        200,
        JSON,
        &serde_json::to_vec(&predict).unwrap(),
    );
    accepted(
        "get",
        &job_path,
        200,
        JSON,
        &serde_json::to_vec(&job).unwrap(),
    );
    // A query is not part of the path.
    let query = format!("{job_path}?pretty=1");
    accepted("get", &query, 200, JSON, &serde_json::to_vec(&job).unwrap());
    schema_problems("JobView", &job).unwrap();

    // A PredictReply without its job id.
    let mut broken = predict.clone();
    broken.as_object_mut().unwrap().remove("job_id");
    rejected("post", "/predict", 200, JSON, &broken, "job_id");
    // A fast prediction whose score is not a number.
    let mut broken = predict.clone();
    broken["fast"]["score"] = "high".into();
    rejected("post", "/predict", 200, JSON, &broken, "/fast/score");
    // A job in a state that does not exist, and one whose id is not a UUID.
    let mut broken = job.clone();
    broken["status"] = "bogus".into();
    rejected("get", &job_path, 200, JSON, &broken, "/status");
    assert!(schema_problems("JobView", &broken).is_err());
    let mut broken = job.clone();
    broken["id"] = "not-a-uuid".into();
    rejected("get", &job_path, 200, JSON, &broken, "/id");
    // A body that is not JSON at all.
    let problem = reply_problems("get", &job_path, 200, Some(JSON), b"{\"id\": ").unwrap_err();
    assert!(problem.contains("not JSON"), "{problem}");
}

/// Every error is an `ErrorReply`: `{"error": {"code", "message"}}`, with the 409's
/// `job_id`/`cancelled`/`status` or the 429/503's fast answer beside it. The router's own
/// answers to what it does not route (404, 405) are `ErrorReply`s too.
#[tokio::test]
async fn error_replies_match_the_document() {
    let app = spawn_app().await;
    // Through the suite's client: each is checked as it arrives.
    let (status, missing) = app.job("6f3a3a4e-0c1b-4e53-9a51-1d2b8c0a7e11").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get_json("/nowhere").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let response = app.http.put(app.url("/predict")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);

    // The other shapes of an error.
    let id = "6f3a3a4e-0c1b-4e53-9a51-1d2b8c0a7e11";
    let too_late = serde_json::json!({
        "error": {"code": "too_late", "message": "too late to cancel: the job has already succeeded"},
        "job_id": id, "cancelled": false, "status": "succeeded",
    });
    accepted(
        "delete",
        &format!("/job/{id}"),
        409,
        JSON,
        &serde_json::to_vec(&too_late).unwrap(),
    );
    let prediction = serde_json::json!({
        "model": "efficientnet_lite0", "label": "tabby", "score": 0.5,
        "top_k": [{"label": "tabby", "score": 0.5, "index": 281}], "inference_ms": 3.5,
    });
    let busy = serde_json::json!({
        "error": {"code": "queue_full", "message": "busy"},
        "efficientnet_lite0": "tabby", "fast": prediction,
    });
    accepted(
        "post",
        "/predict",
        429,
        JSON,
        &serde_json::to_vec(&busy).unwrap(),
    );

    // An error without its code; a 409 whose `cancelled` is not a boolean.
    let mut broken = missing.clone();
    broken["error"].as_object_mut().unwrap().remove("code");
    rejected("get", "/job/x", 404, JSON, &broken, "code");
    let mut broken = too_late.clone();
    broken["cancelled"] = "no".into();
    rejected(
        "delete",
        &format!("/job/{id}"),
        409,
        JSON,
        &broken,
        "/cancelled",
    );
    // The fallback's body must be an ErrorReply too.
    rejected(
        "get",
        "/nowhere",
        404,
        JSON,
        &serde_json::json!({"oops": 1}),
        "ErrorReply",
    );
}

/// A status, method, route or content type the document does not list is drift too.
#[test]
fn undocumented_replies_are_rejected() {
    let error = serde_json::json!({"error": {"code": "teapot", "message": "short and stout"}});
    rejected(
        "get",
        "/job/abc",
        418,
        JSON,
        &error,
        "status 418 is not documented",
    );
    rejected(
        "post",
        "/predict",
        201,
        JSON,
        &error,
        "status 201 is not documented",
    );
    rejected(
        "get",
        "/nowhere",
        200,
        JSON,
        &error,
        "no path of the document matches",
    );
    rejected(
        "put",
        "/predict",
        200,
        JSON,
        &error,
        "PUT is not documented for /predict",
    );
    rejected(
        "get",
        "/metrics",
        200,
        JSON,
        &error,
        "application/json is not documented",
    );
    rejected(
        "get",
        "/samples/x.jpg",
        200,
        JSON,
        &error,
        "application/json is not documented",
    );
    let problem = reply_problems("get", "/healthz", 200, None, b"ok").unwrap_err();
    assert!(problem.contains("no Content-Type"), "{problem}");

    // Non-JSON replies are checked for their content type only.
    accepted(
        "get",
        "/metrics",
        200,
        "text/plain; version=0.0.4",
        b"# TYPE x counter\n",
    );
    accepted(
        "get",
        "/",
        200,
        "text/html; charset=utf-8",
        b"<!doctype html>",
    );
    accepted(
        "get",
        "/samples/chelsea.jpg",
        200,
        "image/jpeg",
        b"\xff\xd8\xff",
    );
}

#[test]
#[should_panic(expected = "the reply does not match the OpenAPI document: POST /predict -> 200")]
fn check_reply_panics_on_a_reply_that_does_not_match() {
    check_reply(
        "post",
        "/predict",
        200,
        Some(JSON),
        br#"{"status": "queued"}"#,
    );
}
