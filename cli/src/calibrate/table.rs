//! What `calibrate` prints: the table of thresholds and the choices made.

use std::fmt::Write as _;

use super::curve::{Choice, ClassChoice, Curve, Point, table_thresholds};

/// The column names, in order.
pub const COLUMNS: [&str; 6] = [
    "threshold",
    "escalated",
    "skipped",
    "agreement",
    "slow_saved",
    "slow_saved_s",
];

/// The table: one row per threshold of [`table_thresholds`], the chosen one marked.
pub fn render(curve: &Curve, chosen: f32) -> String {
    let mut text = format!(
        "{:>9}  {:>9}  {:>7}  {:>9}  {:>10}  {:>12}\n",
        COLUMNS[0], COLUMNS[1], COLUMNS[2], COLUMNS[3], COLUMNS[4], COLUMNS[5]
    );
    for threshold in table_thresholds(chosen) {
        let point = curve.at(threshold);
        let mark = if threshold.to_bits() == chosen.to_bits() {
            "  <- chosen"
        } else {
            ""
        };
        let _ = writeln!(text, "{}{mark}", row(&point));
    }
    text
}

fn row(point: &Point) -> String {
    let agreement = point.agreement().map_or_else(|| "n/a".to_owned(), percent2);
    format!(
        "{:>9.3}  {:>9}  {:>7}  {:>9}  {:>10}  {:>12.3}",
        point.threshold,
        percent(point.escalated_share()),
        point.skipped,
        agreement,
        percent(point.saved_share()),
        point.saved_ms / 1000.0
    )
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn percent2(share: f64) -> String {
    format!("{:.2}%", share * 100.0)
}

/// What a choice means, in one sentence.
pub fn describe(choice: &Choice, target: f64) -> String {
    let point = &choice.point;
    let effect = format!(
        "escalates {} of {} jobs ({}), saves {} of the slow model's time ({:.3} s)",
        point.escalated(),
        point.total,
        percent(point.escalated_share()),
        percent(point.saved_share()),
        point.saved_ms / 1000.0
    );
    match (choice.reached, point.agreement()) {
        (true, Some(agreement)) => format!(
            "threshold {}: the {} skipped jobs agree {} (target {}); {effect}",
            point.threshold,
            point.skipped,
            percent2(agreement),
            percent2(target)
        ),
        _ => format!(
            "threshold {}: no threshold that skips a job reaches the target {}, so every job \
             escalates; {effect}",
            point.threshold,
            percent2(target)
        ),
    }
}

/// The per-class lines: each class with its own threshold, then how many use the global one.
pub fn classes(own: &[ClassChoice], small: &[(String, usize)], min_images: usize) -> String {
    let mut text = String::new();
    if own.is_empty() {
        let _ = writeln!(
            text,
            "no class (by fast label) has {min_images} images or more: every class uses the \
             global threshold"
        );
    } else {
        let _ = writeln!(
            text,
            "per class (fast label, {min_images} images or more): {}",
            count(own.len(), "class")
        );
        let width = own
            .iter()
            .map(|c| c.label.chars().count())
            .max()
            .unwrap_or(0);
        for class in own {
            let point = &class.choice.point;
            let agreement = point.agreement().map_or_else(|| "n/a".to_owned(), percent2);
            let unreached = if class.choice.reached {
                ""
            } else {
                " (target not reached: every job escalates)"
            };
            let _ = writeln!(
                text,
                "  {:<width$}  {:>5} images  threshold {:.4}  escalated {:>6}  agreement {:>7}{unreached}",
                class.label,
                class.images,
                point.threshold,
                percent(point.escalated_share()),
                agreement,
            );
        }
    }
    if !small.is_empty() {
        let images: usize = small.iter().map(|(_, n)| n).sum();
        let _ = writeln!(
            text,
            "{} with fewer than {min_images} images ({}) use the global threshold",
            count(small.len(), "class"),
            count(images, "image")
        );
    }
    text
}

/// "1 image", "2 images", "3 classes".
pub fn count(n: usize, noun: &str) -> String {
    let plural = match (n, noun.ends_with('s')) {
        (1, _) => "",
        (_, true) => "es",
        (_, false) => "s",
    };
    format!("{n} {noun}{plural}")
}

#[cfg(test)]
mod tests {
    use super::super::curve::Sample;
    use super::*;

    fn curve() -> Curve {
        let sample = |score, slow: &str| Sample {
            fast_label: "cat".into(),
            fast_score: score,
            slow_label: slow.into(),
            slow_ms: 500.0,
        };
        Curve::new(&[sample(0.9, "cat"), sample(0.42, "dog")])
    }

    #[test]
    fn the_table_has_a_row_per_threshold_and_marks_the_chosen_one() {
        let text = render(&curve(), 0.42);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), COLUMNS);
        assert_eq!(lines.len(), 1 + 22);
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["0.000", "0.0%", "2", "50.00%", "100.0%", "1.000"]
        );
        let chosen: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.contains("<- chosen"))
            .collect();
        assert_eq!(chosen.len(), 1);
        assert!(chosen[0].trim_start().starts_with("0.420"), "{text}");
        // Nothing skipped: no agreement to speak of.
        assert!(lines[22].contains("n/a"), "{text}");
        assert!(lines[22].trim_start().starts_with("1.000"), "{text}");
    }

    #[test]
    fn a_choice_says_what_it_does_or_that_the_target_is_out_of_reach() {
        let curve = curve();
        let text = describe(&curve.choose(0.99), 0.99);
        assert!(
            text.starts_with("threshold 0.9: the 1 skipped jobs agree 100.00%"),
            "{text}"
        );
        assert!(text.contains("escalates 1 of 2 jobs (50.0%)"), "{text}");
        let never = Curve::new(&[Sample {
            fast_label: "a".into(),
            fast_score: 0.5,
            slow_label: "b".into(),
            slow_ms: 1.0,
        }]);
        let text = describe(&never.choose(0.9), 0.9);
        assert!(
            text.contains("no threshold that skips a job reaches"),
            "{text}"
        );
    }
}
