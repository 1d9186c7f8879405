//! Where webhooks may go: only where the operator's allow list says (no SSRF), and nowhere
//! without one.

use super::*;

#[tokio::test]
async fn urls_the_operator_did_not_allow_are_refused() {
    // Any host name, but no private address: no CIDR.
    let app = webhook_app("*", &[]).await;
    for (url, code, says) in [
        ("http://127.0.0.1:9/hook", "webhook_refused", "loopback"),
        ("http://localhost:9/hook", "webhook_refused", "loopback"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "webhook_refused",
            "metadata",
        ),
        ("http://[fd00:ec2::254]/", "webhook_refused", "metadata"),
        ("http://10.1.2.3/hook", "webhook_refused", "private"),
        (
            "file:///etc/passwd",
            "invalid_webhook_url",
            "http and https",
        ),
        (
            "gopher://example.com/",
            "invalid_webhook_url",
            "http and https",
        ),
        ("not a url", "invalid_webhook_url", "not a valid URL"),
    ] {
        let message = refused(
            submit_json(&app, "chelsea.jpg", json!({"webhook": url})).await,
            code,
        )
        .await;
        assert!(message.contains(says), "{url}: {message}");
    }
    for (fields, code) in [
        (
            json!({"webhook": "https://example.com/", "webhook_events_filter": ["done"]}),
            "invalid_webhook_events_filter",
        ),
        (
            json!({"webhook": "https://example.com/", "webhook_events_filter": []}),
            "invalid_webhook_events_filter",
        ),
        (
            json!({"webhook": "https://example.com/", "webhook_events_filter": "fast"}),
            "webhook_refused", // a string list is accepted; example.com resolves nowhere here
        ),
        (
            json!({"webhook_events_filter": ["fast"]}),
            "invalid_webhook_events_filter",
        ),
        (json!({"webhook": 5}), "invalid_webhook_url"),
    ] {
        let response = submit_json(&app, "chelsea.jpg", fields.clone()).await;
        if response.status() == StatusCode::OK && code == "webhook_refused" {
            // A sandbox with DNS: example.com is public and allowed by `*`.
            continue;
        }
        refused(response, code).await;
    }
    // The query form is checked the same way.
    let response = app
        .http
        .post(predict_with(
            &app,
            &[
                ("webhook", "http://127.0.0.1:9/"),
                ("webhook_events_filter", "fast,nope"),
            ],
        ))
        .header("content-type", "image/jpeg")
        .body(photo("chelsea.jpg"))
        .send()
        .await
        .unwrap();
    refused(response, "invalid_webhook_events_filter").await;

    // A loopback CIDR allows 127.0.0.1 alone.
    let app = webhook_app("127.0.0.1/32", &[("TANDEM_WEBHOOK_MAX_ATTEMPTS", "2")]).await;
    refused(
        submit_json(
            &app,
            "chelsea.jpg",
            json!({"webhook": "http://127.0.0.2:9/"}),
        )
        .await,
        "webhook_refused",
    )
    .await;
    // A redirect to an address the receiver chose is not followed.
    let private = Receiver::start().await;
    let redirecting = Receiver::start().await;
    redirecting.answer(&[Answer::Redirect(private.url())]);
    let id =
        job_id(submit_json(&app, "chelsea.jpg", json!({"webhook": redirecting.url()})).await).await;
    let entry = delivery(&app, &id, "completed", "given up", |d| {
        d["attempts"] == 2
            && d["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("gave up"))
    })
    .await;
    assert_eq!(entry["delivered"], false);
    assert_eq!(entry["last_status"], 307);
    assert!(
        entry["last_error"]
            .as_str()
            .unwrap()
            .contains("redirects are not followed")
    );
    assert_eq!(redirecting.received().len(), 2);
    assert!(private.received().is_empty(), "the redirect was followed");
}

#[tokio::test]
async fn without_an_allow_list_webhooks_are_off() {
    let app = spawn_app().await;
    let message = refused(
        submit_json(
            &app,
            "chelsea.jpg",
            json!({"webhook": "https://example.com/hook"}),
        )
        .await,
        "webhooks_disabled",
    )
    .await;
    assert!(message.contains("TANDEM_WEBHOOK_ALLOW"), "{message}");
    // A job without a webhook has no webhook fields.
    let id = job_id(app.predict_json(&photo("chelsea.jpg")).await).await;
    let job = app.wait_final(&id, LONG).await;
    assert!(
        job.get("webhook").is_none() && job.get("webhooks").is_none(),
        "{job}"
    );
}
