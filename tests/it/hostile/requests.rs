//! Hostile requests beside the body: bad job ids, other methods, malformed HTTP.

use reqwest::StatusCode;

use super::{app_with, assert_error, assert_still_serves, connections, refused};

#[tokio::test]
async fn bad_job_ids_get_a_json_404_or_400_on_every_job_route() {
    let app = app_with(&[]).await;
    let long = "7".repeat(5000);
    for (id, status, code) in [
        ("abc123", StatusCode::NOT_FOUND, "job_not_found"),
        (long.as_str(), StatusCode::NOT_FOUND, "job_not_found"),
        (
            "..%2F..%2Fetc%2Fpasswd",
            StatusCode::NOT_FOUND,
            "job_not_found",
        ),
        ("a%00b", StatusCode::NOT_FOUND, "job_not_found"),
        ("a/b", StatusCode::NOT_FOUND, "not_found"),
        ("%FF%FE", StatusCode::BAD_REQUEST, "bad_request"),
    ] {
        let job = app.url(&format!("/job/{id}"));
        for request in [
            app.http.get(&job),
            app.http.delete(&job),
            app.http.get(format!("{job}/events")),
        ] {
            let body = refused(request, status, code).await;
            // A hostile id is not echoed back in full.
            assert!(body.to_string().len() < 400, "{body}");
        }
    }
    assert_still_serves(&app).await;
}

#[tokio::test]
async fn another_method_on_a_known_route_gets_a_json_405() {
    let app = app_with(&[]).await;
    for (method, path) in [
        (reqwest::Method::PUT, "/predict"),
        (reqwest::Method::GET, "/predict"),
        (reqwest::Method::POST, "/job/abc"),
        (reqwest::Method::DELETE, "/healthz"),
    ] {
        let response = app
            .http
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert!(response.headers().contains_key("allow"), "{method} {path}");
        let status = response.status();
        assert_error(
            status,
            &response.text().await.unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        );
    }
    assert_still_serves(&app).await;
}

#[tokio::test]
async fn requests_that_are_not_valid_http_get_a_bare_4xx_from_the_http_layer() {
    let app = app_with(&[]).await;
    let many_headers: String = (0..150).map(|n| format!("X-H{n}: {n}\r\n")).collect();
    for (head, want) in [
        ("HELLO THERE\r\n\r\n".to_owned(), StatusCode::BAD_REQUEST),
        (
            "GET /healthz HTTP/1.1\r\nHost: tandem\r\nBad Header\r\n\r\n".to_owned(),
            StatusCode::BAD_REQUEST,
        ),
        // A path too long for any route (HTTP clients refuse to send one).
        (
            format!(
                "GET /job/{} HTTP/1.1\r\nHost: tandem\r\n\r\n",
                "7".repeat(70_000)
            ),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nHost: tandem\r\n{many_headers}\r\n"),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        ),
        (
            format!(
                "GET /healthz HTTP/1.1\r\nHost: tandem\r\nX-Big: {}\r\n\r\n",
                "b".repeat(500_000)
            ),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        ),
    ] {
        let (status, _) = connections::exchange(&app, head.as_bytes(), &[]).await;
        assert_eq!(
            status,
            want,
            "{} ({} bytes)",
            &head[..head.len().min(60)],
            head.len()
        );
    }
    assert_still_serves(&app).await;
}

#[tokio::test]
async fn a_body_that_breaks_off_is_unreadable_whatever_its_content_type() {
    let app = app_with(&[]).await;
    for content_type in [
        "application/json",
        "image/jpeg",
        "multipart/form-data; boundary=x",
    ] {
        // A chunked body whose second chunk-size line is not hexadecimal.
        let head = format!(
            "POST /predict HTTP/1.1\r\nHost: tandem\r\nContent-Type: {content_type}\r\n\
             Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\nZZ\r\n"
        );
        let (status, body) = connections::exchange(&app, head.as_bytes(), &[]).await;
        let error = assert_error(status, &body, StatusCode::BAD_REQUEST, "unreadable_body");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("could not be read")),
            "{content_type}: {error}"
        );
    }
    assert_still_serves(&app).await;
}
