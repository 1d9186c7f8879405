//! The web page at `/`: a person picks or drops an image (or clicks a sample), sees the fast
//! label at once and the refined one when the slow model is done, without the page moving,
//! and who decided the label (the slow model; the fast model when the page's "Slow model"
//! choice is `never`).
//! Everything the page needs is in the gateway binary; nothing comes from elsewhere.
//!
//! The browser test drives Debian's Chromium with playwright-core (`tests/browser/`); it needs
//! `tests/browser/install.sh` to have run, and fails, saying so, when it has not.

use std::{path::PathBuf, process::Stdio, time::Duration};

use reqwest::{StatusCode, header};
use serde_json::Value;

use crate::support::{app::spawn_app, workspace_root};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Every `src`, `href` and `data-sample` attribute value in `html`.
fn links(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attribute in ["src=\"", "href=\"", "data-sample=\""] {
        let mut rest = html;
        while let Some(start) = rest.find(attribute) {
            rest = &rest[start + attribute.len()..];
            let end = rest.find('"').expect("closing quote");
            // In-page links (the skip link) fetch nothing.
            if !rest.starts_with('#') {
                found.push(rest[..end].to_owned());
            }
            rest = &rest[end..];
        }
    }
    found
}

fn content_type(response: &reqwest::Response) -> String {
    response.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned()
}

fn cache_control(response: &reqwest::Response) -> String {
    response.headers()[header::CACHE_CONTROL]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_page_and_its_files_come_from_the_binary_with_types_and_cache_headers() {
    let app = spawn_app().await;

    let page = app.http.get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(content_type(&page), "text/html; charset=utf-8");
    assert_eq!(cache_control(&page), "no-cache");
    let csp = page.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    let etag = page.headers()[header::ETAG].clone();
    let html = page.text().await.unwrap();

    // What a person (and a screen reader) needs.
    for expected in [
        "<html lang=\"en\">",
        "<meta name=\"viewport\"",
        "<input class=\"visually-hidden\" type=\"file\" id=\"file\" name=\"image\" accept=\"image/*\"",
        "<label for=\"file\"",
        "Drop an image here",
        "id=\"fast-label\"",
        "id=\"slow-label\"",
        "id=\"slow-time\"",
        "id=\"fast-time\"",
        "role=\"status\" aria-live=\"polite\"",
        "id=\"history\"",
        "id=\"decided-by\"",
        "<label for=\"escalate\">",
        "<select id=\"escalate\" name=\"escalate\"",
        "<option value=\"never\">",
        "data-name=\"chelsea.jpg\"",
        "data-name=\"coffee.jpg\"",
        "data-name=\"rocket.jpg\"",
    ] {
        assert!(html.contains(expected), "the page lacks {expected:?}");
    }
    assert!(!html.contains("__ASSET_VERSION__"));

    // The page revalidates cheaply.
    let again = app
        .http
        .get(app.url("/"))
        .header(header::IF_NONE_MATCH, etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

    // Every file it links is served, versioned, with its type, cached for good, and refers to
    // nothing outside this origin.
    let linked = links(&html);
    assert!(linked.len() >= 7, "{linked:?}");
    for link in linked {
        assert!(
            link.starts_with('/') && !link.starts_with("//"),
            "the page links {link}, which is not on this origin"
        );
        let (path, query) = link.split_once('?').expect("versioned link");
        assert!(query.starts_with("v="), "{link}");
        let response = app.http.get(app.url(&link)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{link}");
        let expected_type = match path.rsplit_once('.').unwrap().1 {
            "css" => "text/css; charset=utf-8",
            "js" => "text/javascript; charset=utf-8",
            "svg" => "image/svg+xml",
            "jpg" => "image/jpeg",
            other => panic!("unexpected file type {other} in {link}"),
        };
        assert_eq!(content_type(&response), expected_type, "{link}");
        assert_eq!(
            cache_control(&response),
            "public, max-age=31536000, immutable",
            "{link}"
        );
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        let etag = response.headers()[header::ETAG].clone();
        let body = response.bytes().await.unwrap();
        assert!(!body.is_empty());
        if expected_type.starts_with("text/") {
            let text = std::str::from_utf8(&body).unwrap();
            assert!(
                !text.contains("http://")
                    && !text.contains("https://")
                    && !text.contains("@import"),
                "{link} refers to something outside this origin"
            );
        }
        if expected_type == "image/jpeg" {
            assert!(
                body.starts_with(&[0xff, 0xd8, 0xff]),
                "{link} is not a JPEG"
            );
            assert!(body.len() < 40_000, "{link} is {} bytes", body.len());
        }

        // Unversioned: revalidated each time; a matching ETag gets a bodiless 304.
        let plain = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(plain.status(), StatusCode::OK, "{path}");
        assert_eq!(cache_control(&plain), "no-cache", "{path}");
        let cached = app
            .http
            .get(app.url(path))
            .header(header::IF_NONE_MATCH, etag)
            .send()
            .await
            .unwrap();
        assert_eq!(cached.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert!(cached.bytes().await.unwrap().is_empty());
    }

    // Anything else under those folders is the API's usual 404.
    for missing in [
        "/assets/nope.js",
        "/samples/astronaut.jpg",
        "/assets/..%2Fsrc%2Flib.rs",
    ] {
        let response = app.http.get(app.url(missing)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{missing}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found");
    }

    // The small sample the page sends is still a cat to the fast model.
    let sample = app
        .http
        .get(app.url("/samples/chelsea.jpg"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let reply: Value = app
        .predict_raw(sample.to_vec(), "image/jpeg")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(reply["fast"]["label"], "Egyptian cat", "{reply}");
}

/// What the browser test needs, or a failure that says how to get it.
fn browser_prerequisites() -> PathBuf {
    let root = workspace_root();
    let install = "run tests/browser/install.sh (it installs Debian's chromium and, with npm ci, \
                   playwright-core into tests/browser/node_modules)";
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|out| out.status.success()),
        "node is not installed: the browser test needs Node.js 20 or later and npm; then {install}"
    );
    let chromium = std::env::var("TANDEM_CHROMIUM").unwrap_or_else(|_| CHROMIUM.to_owned());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "Chromium is not installed (no {chromium}): {install}"
    );
    assert!(
        root.join("tests/browser/node_modules/playwright-core/package.json")
            .exists(),
        "playwright-core is not installed: {install}"
    );
    root
}

#[tokio::test]
async fn in_a_browser_the_cat_gets_its_fast_label_then_the_refined_one_in_place() {
    let root = browser_prerequisites();
    let app = spawn_app().await;

    let screenshots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web_page");
    std::fs::create_dir_all(&screenshots).unwrap();
    let screenshot = screenshots.join("upload_cat.png");
    let _ = std::fs::remove_file(&screenshot);

    let run = tokio::process::Command::new("node")
        .arg(root.join("tests/browser/upload_cat.mjs"))
        .arg(&app.base)
        .arg(root.join("tests/data/chelsea.jpg"))
        .arg(&screenshot)
        .current_dir(&root)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(200), run)
        .await
        .expect("the browser test did not end within 200 s")
        .expect("could not run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let transcript = format!("--- stdout\n{stdout}--- stderr\n{stderr}");
    println!("{transcript}");

    assert!(
        output.status.success(),
        "the browser test failed ({}):\n{transcript}",
        output.status
    );
    assert!(stdout.contains("fast: Egyptian cat "), "{transcript}");
    assert!(stdout.contains("refined: Egyptian cat "), "{transcript}");
    assert!(stdout.contains("decided by: slow model"), "{transcript}");
    assert!(
        stdout.contains("never: fast Egyptian cat ") && stdout.contains("decided by fast model"),
        "{transcript}"
    );
    assert!(stdout.contains("PASS"), "{transcript}");
    let png = std::fs::read(&screenshot).unwrap_or_else(|e| {
        panic!(
            "no screenshot at {}: {e}\n{transcript}",
            screenshot.display()
        )
    });
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
}
