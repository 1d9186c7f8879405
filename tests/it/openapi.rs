//! `GET /openapi.json` describes every route the gateway serves, and only those.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::support::app::spawn_app;

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
