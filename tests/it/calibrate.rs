//! `tandem calibrate DIR`: the real binary against the real model server.
//!
//! It runs every image under DIR (recursively; other files are skipped with a note) through
//! the fast and the slow model, prints what each threshold would do (share escalated, the
//! skipped jobs' agreement with the slow model, slow compute saved), chooses the lowest
//! threshold whose skipped jobs agree at least `--target`, globally and per class (the fast
//! label) for classes with `--min-class-images` or more, and writes the thresholds file
//! (`--output`) and a PNG of the curve (`--plot`). Bad input exits 2 with a clear message.

use std::{collections::BTreeMap, path::Path, process::Output, time::Duration};

use image::ImageFormat;
use tandem_core::{escalation::Thresholds, model_client::ModelClient};

use crate::support::{
    model_server::spawn_model_server,
    process::service_binary,
    process::{assert_exit, stderr, stdout},
    workspace_root,
};

/// Longest a command may take (two models over a few dozen images on 2 busy cores).
const LIMIT: Duration = Duration::from_secs(180);
const FAST: &str = "efficientnet_lite0";
const SLOW: &str = "efficientnet_lite2";
const COLUMNS: [&str; 6] = [
    "threshold",
    "escalated",
    "skipped",
    "agreement",
    "slow_saved",
    "slow_saved_s",
];

/// Runs `tandem calibrate ARGS...` without the model settings' environment variables.
async fn calibrate(args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(service_binary("tandem"));
    command
        .arg("calibrate")
        .args(args)
        .current_dir(workspace_root())
        .env_remove("TANDEM_MODEL_SERVER_URL")
        .env_remove("TANDEM_FAST_MODEL")
        .env_remove("TANDEM_SLOW_MODEL")
        .kill_on_drop(true);
    tokio::time::timeout(LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("tandem calibrate {args:?} still running after {LIMIT:?}"))
        .expect("run tandem")
}

/// Crops, flips, turns and shrinks of the test photos (the shared generator,
/// `tandem_test_images::variants`), the espresso ones in a sub-folder, and a file that is not
/// an image.
fn calibration_set(dir: &Path) {
    std::fs::create_dir(dir.join("cups")).unwrap();
    for (photo, folder) in [
        ("chelsea.jpg", ""),
        ("coffee.jpg", "cups"),
        ("rocket.jpg", ""),
        ("astronaut.jpg", ""),
    ] {
        let variants =
            tandem_test_images::variants(&crate::support::photo(photo), ImageFormat::Png).unwrap();
        let stem = photo.trim_end_matches(".jpg");
        for (name, bytes) in variants {
            let path = dir.join(folder).join(format!("{stem}-{name}.png"));
            std::fs::write(&path, bytes).unwrap();
        }
    }
    std::fs::write(dir.join("notes.txt"), "not an image\n").unwrap();
}

/// One image as classified here: its fast label and score, and whether the slow model agrees.
#[derive(Debug)]
struct Answer {
    label: String,
    score: f32,
    agrees: bool,
}

/// Every image under `dir`, classified again here with both models.
async fn classify_again(url: &str, dir: &Path) -> Vec<Answer> {
    let client = ModelClient::new(url, Duration::from_secs(60)).unwrap();
    let mut answers = Vec::new();
    for folder in [dir.to_owned(), dir.join("cups")] {
        for entry in std::fs::read_dir(folder).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "png") {
                continue;
            }
            let image = bytes::Bytes::from(std::fs::read(&path).unwrap());
            let classify = |model| client.classify(model, image.clone(), 1, Default::default());
            let (fast, slow) = (classify(FAST).await.unwrap(), classify(SLOW).await.unwrap());
            answers.push(Answer {
                agrees: fast.label == slow.label,
                label: fast.label,
                score: fast.score,
            });
        }
    }
    answers
}

/// Whether the jobs `threshold` skips agree at least `target` (vacuously when none).
fn reaches(answers: &[&Answer], threshold: f32, target: f64) -> bool {
    let skipped: Vec<_> = answers.iter().filter(|a| a.score >= threshold).collect();
    let agreed = skipped.iter().filter(|a| a.agrees).count();
    skipped.is_empty() || agreed as f64 / skipped.len() as f64 >= target
}

/// The table's rows: the threshold as printed and the other cells.
fn table_rows(text: &str) -> Vec<(String, Vec<String>)> {
    let mut lines = text
        .lines()
        .skip_while(|line| line.split_whitespace().collect::<Vec<_>>() != COLUMNS);
    assert!(
        lines.next().is_some(),
        "no table header with {COLUMNS:?}:\n{text}"
    );
    lines
        .take_while(|line| !line.trim().is_empty())
        .map(|line| {
            let mut cells = line.split_whitespace().map(str::to_owned);
            (cells.next().unwrap(), cells.collect())
        })
        .collect()
}

/// The table: 0 to 1 by 0.05 and the chosen threshold, marked; each row's skipped jobs as
/// counted here.
fn check_table(text: &str, answers: &[Answer]) {
    let rows = table_rows(text);
    assert!((21..=22).contains(&rows.len()), "{text}");
    // (The chosen row's threshold is printed rounded: it is checked by the file.)
    let plain: Vec<_> = rows.iter().filter(|(_, cells)| cells.len() == 5).collect();
    assert_eq!(plain.len(), rows.len() - 1, "one row more, marked:\n{text}");
    assert_eq!(text.matches("<- chosen").count(), 1, "{text}");
    for (threshold, cells) in plain {
        let t: f32 = threshold.parse().unwrap();
        let skipped = answers.iter().filter(|a| a.score >= t).count();
        assert!(cells[0].ends_with('%') && cells[3].ends_with('%'), "{text}");
        assert_eq!(
            cells[1],
            skipped.to_string(),
            "threshold {threshold}:\n{text}"
        );
        assert_eq!(cells[2] == "n/a", skipped == 0, "{text}");
    }
}

/// The global threshold reaches the target on these images, and no lower one does; classes
/// (by fast label) with enough images have their own, reaching the target within the class;
/// smaller ones are left to the global one.
fn check_thresholds(thresholds: &Thresholds, answers: &[Answer], target: f64, min_images: usize) {
    let all: Vec<_> = answers.iter().collect();
    assert!(reaches(&all, thresholds.global, target), "{thresholds:?}");
    let lower = answers.iter().map(|a| a.score).chain([0.0]);
    for t in lower.filter(|&t| t < thresholds.global) {
        assert!(
            !reaches(&all, t, target),
            "{t} reaches the target too: {thresholds:?}"
        );
    }

    let mut classes: BTreeMap<&str, Vec<&Answer>> = BTreeMap::new();
    for answer in answers {
        classes.entry(&answer.label).or_default().push(answer);
    }
    let small = classes.values().filter(|m| m.len() < min_images).count();
    assert!(small > 0 && small < classes.len(), "{classes:?}");
    for (label, members) in &classes {
        match thresholds.per_class.get(*label) {
            Some(&own) => {
                assert!(members.len() >= min_images, "{label}: {thresholds:?}");
                assert!(reaches(members, own, target), "{label}: {thresholds:?}");
            }
            None => assert!(members.len() < min_images, "{label}: {thresholds:?}"),
        }
    }
}

#[tokio::test]
async fn calibrate_prints_the_curve_and_writes_thresholds_that_reach_the_target() {
    let server = spawn_model_server().await;
    let dir = tempfile::tempdir().unwrap();
    calibration_set(dir.path());
    // Written beside DIR, not in it.
    let written = tempfile::tempdir().unwrap();
    let output_file = written.path().join("thresholds.json");
    let plot_file = written.path().join("curve.png");
    let output = calibrate(&[
        dir.path().to_str().unwrap(),
        "--model-server",
        &server.url(),
        "--fast-model",
        FAST,
        "--slow-model",
        SLOW,
        "--target",
        "0.9",
        "--min-class-images",
        "3",
        "--output",
        output_file.to_str().unwrap(),
        "--plot",
        plot_file.to_str().unwrap(),
    ])
    .await;
    assert_exit(&output, 0);
    let (text, notes) = (stdout(&output), stderr(&output));
    assert!(notes.contains("notes.txt: not an image file"), "{notes}");
    assert!(text.starts_with("32 images in "), "{text}");
    assert!(
        text.contains("skipped: 1 other file, 0 images refused"),
        "{text}"
    );

    let answers = classify_again(&server.url(), dir.path()).await;
    check_table(&text, &answers);
    // The file loads and names the models and the target.
    let thresholds = Thresholds::load(&output_file).unwrap();
    assert_eq!(thresholds.fast_model.as_deref(), Some(FAST));
    assert_eq!(thresholds.slow_model.as_deref(), Some(SLOW));
    assert_eq!(thresholds.target_agreement, Some(0.9));
    assert!(
        text.contains(&format!("global threshold {}", thresholds.global)),
        "{text}"
    );
    check_thresholds(&thresholds, &answers, 0.9, 3);

    // The plot is a PNG.
    let plot = image::open(&plot_file).unwrap();
    assert!(plot.width() >= 640 && plot.height() >= 400);
    assert!(text.contains("wrote the plot to"), "{text}");

    // A model the server does not have: named, with the server's URL.
    let output = calibrate(&[
        dir.path().to_str().unwrap(),
        "--model-server",
        &server.url(),
        "--slow-model",
        "no_such_model",
    ])
    .await;
    assert_exit(&output, 2);
    let message = stderr(&output);
    assert!(
        message.contains(&server.url()) && message.contains("no model \"no_such_model\""),
        "{message}"
    );
}

#[tokio::test]
async fn calibrate_refuses_bad_folders_targets_and_an_unreachable_model_server() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not an image\n").unwrap();
    let output = calibrate(&[dir.path().to_str().unwrap()]).await;
    assert_exit(&output, 2);
    let message = stderr(&output);
    assert!(message.contains("no image files in"), "{message}");
    assert!(
        message.contains("notes.txt: not an image file"),
        "{message}"
    );

    let missing = dir.path().join("missing");
    let output = calibrate(&[missing.to_str().unwrap()]).await;
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("cannot read the folder"),
        "{}",
        stderr(&output)
    );

    for target in ["0", "1.5", "-0.1", "high"] {
        let output = calibrate(&["tests/data", &format!("--target={target}")]).await;
        assert_exit(&output, 2);
        assert!(stderr(&output).contains("--target"), "{}", stderr(&output));
    }

    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let output = calibrate(&["tests/data", "--model-server", &url]).await;
    assert_exit(&output, 2);
    let message = stderr(&output);
    assert!(
        message.contains(&format!("the model server at {url}")) && message.contains("unreachable"),
        "{message}"
    );
}
