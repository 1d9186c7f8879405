//! Triton's classification extension: the top-k classes of each row of scores, as strings.

use tandem_proto::ClassScore;

use crate::repository::OutputKind;

/// Softmax of one row, computed stably (the maximum is subtracted first).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The `k` best classes of one row, best first (ties: lower index first).
/// Logits go through softmax so scores are probabilities; `k` is capped at the row length.
pub fn top_k(row: &[f32], k: usize, kind: OutputKind, labels: &[String]) -> Vec<ClassScore> {
    let scores = match kind {
        OutputKind::Logits => softmax(row),
        OutputKind::Probabilities => row.to_vec(),
    };
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|index| ClassScore {
            score: scores[index],
            index,
            label: labels.get(index).cloned().unwrap_or_default(),
        })
        .collect()
}

/// Classification strings for a `[rows, classes]` output: `rows * min(k, classes)` entries
/// `score:index:label`, row after row.
pub fn classify_rows(
    output: &[f32],
    classes: usize,
    k: usize,
    kind: OutputKind,
    labels: &[String],
) -> Vec<String> {
    output
        .chunks_exact(classes.max(1))
        .flat_map(|row| top_k(row, k, kind, labels))
        .map(|score| score.to_wire())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("class {i}")).collect()
    }

    #[test]
    fn softmax_matches_hand_computed_values() {
        // e^0 : e^ln3 = 1 : 3
        let p = softmax(&[0.0, 3f32.ln()]);
        assert!(
            (p[0] - 0.25).abs() < 1e-6 && (p[1] - 0.75).abs() < 1e-6,
            "{p:?}"
        );
        // Large logits do not overflow.
        let p = softmax(&[1000.0, 1000.0]);
        assert!((p[0] - 0.5).abs() < 1e-6, "{p:?}");
    }

    #[test]
    fn top_k_orders_best_first_and_caps_k() {
        let row = [0.1, 0.5, 0.2, 0.2];
        let top = top_k(&row, 3, OutputKind::Probabilities, &labels(4));
        let indices: Vec<usize> = top.iter().map(|s| s.index).collect();
        assert_eq!(indices, [1, 2, 3], "ties keep index order");
        assert_eq!(top[0].score, 0.5);
        assert_eq!(top[0].label, "class 1");
        assert_eq!(
            top_k(&row, 10, OutputKind::Probabilities, &labels(4)).len(),
            4
        );
    }

    #[test]
    fn logits_become_probabilities() {
        let top = top_k(&[0.0, 3f32.ln()], 2, OutputKind::Logits, &labels(2));
        assert_eq!(top[0].index, 1);
        assert!((top[0].score - 0.75).abs() < 1e-6);
    }

    #[test]
    fn rows_are_formatted_as_triton_does() {
        let out = classify_rows(
            &[0.25, 0.75, 1.0, 0.0],
            2,
            1,
            OutputKind::Probabilities,
            &["cat".into(), "espresso".into()],
        );
        assert_eq!(out, ["0.75:1:espresso", "1:0:cat"]);
    }
}
