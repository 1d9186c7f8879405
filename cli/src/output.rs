//! Output: result lines on stdout, notes and errors on stderr, and a progress line on stderr
//! when it is a terminal; plus the text forms of predictions and job records.

use std::{
    cell::RefCell,
    fmt::Write as _,
    io::{IsTerminal as _, Write as _},
};

use serde_json::Value;

/// Counts shown on the progress line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub total: usize,
    /// Images with a fast label.
    pub fast: usize,
    /// Images with a slow label.
    pub refined: usize,
    /// Images that failed (request refused, job failed, connection lost).
    pub failed: usize,
}

#[derive(Debug)]
struct ProgressLine {
    counts: Counts,
    wait: bool,
    drawn: bool,
}

/// Where everything is printed. Single-threaded: one task prints, whatever future asks.
#[derive(Debug)]
pub struct Out {
    progress: RefCell<Option<ProgressLine>>,
}

impl Out {
    /// Plain output: no progress line.
    pub fn plain() -> Self {
        Self {
            progress: RefCell::new(None),
        }
    }

    /// With a progress line for `total` images, when stderr is a terminal and there are
    /// several; `wait` counts slow labels too.
    pub fn with_progress(total: usize, wait: bool) -> Self {
        let mut progress = (total > 1 && std::io::stderr().is_terminal()).then_some(ProgressLine {
            counts: Counts {
                total,
                ..Counts::default()
            },
            wait,
            drawn: false,
        });
        if let Some(line) = progress.as_mut() {
            draw(line);
        }
        Self {
            progress: RefCell::new(progress),
        }
    }

    /// A result line on stdout.
    pub fn line(&self, text: &str) {
        self.around_progress(|| {
            let mut stdout = std::io::stdout().lock();
            // A closed stdout (`| head`) is not worth a panic.
            let _ = writeln!(stdout, "{text}");
            let _ = stdout.flush();
        });
    }

    /// One JSON object on one stdout line.
    pub fn json(&self, value: &Value) {
        self.line(&value.to_string());
    }

    /// A note or an error on stderr, prefixed `tandem: `.
    pub fn note(&self, text: &str) {
        self.around_progress(|| {
            let _ = writeln!(std::io::stderr().lock(), "tandem: {text}");
        });
    }

    /// Updates the progress counts (and the line, if shown).
    pub fn count(&self, update: impl FnOnce(&mut Counts)) {
        let mut progress = self.progress.borrow_mut();
        if let Some(line) = progress.as_mut() {
            update(&mut line.counts);
            draw(line);
        }
    }

    /// Clears the progress line for good.
    pub fn finish(&self) {
        let mut progress = self.progress.borrow_mut();
        if let Some(line) = progress.as_mut() {
            clear(line);
        }
        *progress = None;
    }

    fn around_progress(&self, write: impl FnOnce()) {
        let mut progress = self.progress.borrow_mut();
        match progress.as_mut() {
            Some(line) => {
                clear(line);
                write();
                draw(line);
            }
            None => write(),
        }
    }
}

fn clear(line: &mut ProgressLine) {
    if std::mem::take(&mut line.drawn) {
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r\x1b[2K");
        let _ = stderr.flush();
    }
}

fn draw(line: &mut ProgressLine) {
    let Counts {
        total,
        fast,
        refined,
        failed,
    } = line.counts;
    let mut text = format!("{fast}/{total} fast");
    if line.wait {
        let _ = write!(text, ", {refined}/{total} refined");
    }
    if failed > 0 {
        let _ = write!(text, ", {failed} failed");
    }
    let mut stderr = std::io::stderr().lock();
    let _ = write!(stderr, "\r\x1b[2K{text}");
    let _ = stderr.flush();
    line.drawn = true;
}

/// `Egyptian cat (0.873)`, from a prediction `{"label", "score", ...}`.
pub fn label_score(prediction: &Value) -> String {
    let label = prediction["label"].as_str().unwrap_or("?");
    match prediction["score"].as_f64() {
        Some(score) => format!("{label} ({score:.3})"),
        None => label.to_owned(),
    }
}

/// `Egyptian cat 0.873, efficientnet_lite2, 812.4 ms`, then the rest of the top k.
fn prediction_lines(prediction: &Value) -> Vec<String> {
    let mut first = label_score(prediction);
    if let Some(model) = prediction["model"].as_str() {
        let _ = write!(first, "  {model}");
    }
    if let Some(ms) = prediction["inference_ms"].as_f64() {
        let _ = write!(first, "  {ms:.1} ms");
    }
    let mut lines = vec![first];
    let others: Vec<String> = prediction["top_k"]
        .as_array()
        .into_iter()
        .flatten()
        .skip(1)
        .map(label_score)
        .collect();
    if !others.is_empty() {
        lines.push(format!("then: {}", others.join(", ")));
    }
    lines
}

/// A job record for people: one `name  value` line per field that is there.
pub fn summary(record: &Value) -> String {
    let mut rows: Vec<(&str, String)> = Vec::new();
    let text = |key: &str| record[key].as_str().map(str::to_owned);
    if let Some(id) = text("id") {
        rows.push(("job", id));
    }
    if let Some(status) = text("status") {
        rows.push(("status", status));
    }
    // Who decided the label (records of gateways that escalate by policy say).
    if record["decided_by"].is_string() {
        rows.push(("decided", crate::predict::decided(record).0.to_owned()));
    }
    if let Some(reason) = record["escalation"]["reason"].as_str() {
        rows.push(("why", reason.to_owned()));
    }
    if let Some(deadline) = text("deadline_at") {
        rows.push(("deadline", deadline));
    }
    for key in ["fast", "slow"] {
        if record[key].is_object() {
            for (i, line) in prediction_lines(&record[key]).into_iter().enumerate() {
                rows.push((if i == 0 { key } else { "" }, line));
            }
        }
    }
    if let Some(error) = text("error") {
        rows.push(("error", error));
    }
    if let Some(attempts) = record["attempts"].as_u64() {
        rows.push(("attempts", attempts.to_string()));
    }
    for (key, name) in [
        ("submitted_at", "submitted"),
        ("started_at", "started"),
        ("finished_at", "finished"),
        ("updated_at", "updated"),
    ] {
        if let Some(at) = text(key) {
            rows.push((name, at));
        }
    }
    let mut out = String::new();
    for (name, value) in rows {
        let _ = writeln!(out, "{name:<10} {value}");
    }
    out.truncate(out.trim_end().len());
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn summaries_say_who_decided() {
        let record = json!({
            "id": "j2", "status": "succeeded", "decided_by": "fast", "cached": false,
            "escalation": {"policy": "auto", "reason": "fast score 0.940 >= threshold 0.900"},
            "fast": {"label": "espresso", "score": 0.94},
        });
        assert_eq!(
            summary(&record),
            "job        j2\n\
             status     succeeded\n\
             decided    fast model\n\
             why        fast score 0.940 >= threshold 0.900\n\
             fast       espresso (0.940)"
        );
        let cached = json!({"status": "succeeded", "decided_by": "slow", "cached": true});
        assert!(summary(&cached).contains("decided    cache"));
        let expired = json!({"status": "expired", "decided_by": "fast", "deadline_at": "2026-01-01T00:00:01Z"});
        assert!(
            summary(&expired).contains("decided    fast model\ndeadline   2026-01-01T00:00:01Z")
        );
    }

    #[test]
    fn summaries_show_what_is_there() {
        let record = json!({
            "id": "j1", "status": "succeeded", "attempts": 1,
            "fast": {"model": "m0", "label": "tabby", "score": 0.5, "inference_ms": 3.0,
                     "top_k": [{"label": "tabby", "score": 0.5}, {"label": "tiger cat", "score": 0.25}]},
            "slow": {"model": "m2", "label": "Egyptian cat", "score": 0.875, "inference_ms": 40.0, "top_k": []},
            "submitted_at": "2025-01-01T00:00:00Z",
        });
        assert_eq!(
            summary(&record),
            "job        j1\n\
             status     succeeded\n\
             fast       tabby (0.500)  m0  3.0 ms\n           \
             then: tiger cat (0.250)\n\
             slow       Egyptian cat (0.875)  m2  40.0 ms\n\
             attempts   1\n\
             submitted  2025-01-01T00:00:00Z"
        );
    }
}
