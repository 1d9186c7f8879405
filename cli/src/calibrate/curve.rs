//! The calibration curve: what a threshold does to a set of images (a job escalates when its
//! fast score is below it, else it is skipped and the fast label stands), and the threshold
//! chosen for a target agreement, globally and per class.

use std::collections::BTreeMap;

/// One image's answers from both models.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub fast_label: String,
    pub fast_score: f32,
    pub slow_label: String,
    /// The slow model's round trip, in milliseconds.
    pub slow_ms: f64,
}

impl Sample {
    /// Whether the fast label is the slow one.
    pub fn agrees(&self) -> bool {
        self.fast_label == self.slow_label
    }
}

/// What one threshold does to the images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub threshold: f32,
    /// Every image.
    pub total: usize,
    /// Images whose fast score is at least the threshold: not escalated.
    pub skipped: usize,
    /// Skipped images whose fast label is the slow one.
    pub agreed: usize,
    /// The slow model's time on the skipped images, and on all, in milliseconds.
    pub saved_ms: f64,
    pub total_ms: f64,
}

impl Point {
    pub fn escalated(&self) -> usize {
        self.total - self.skipped
    }

    /// The share of jobs escalated (0 with no images).
    pub fn escalated_share(&self) -> f64 {
        share(self.escalated() as f64, self.total as f64)
    }

    /// The skipped jobs' agreement with the slow model; `None` when none is skipped.
    pub fn agreement(&self) -> Option<f64> {
        (self.skipped > 0).then(|| self.agreed as f64 / self.skipped as f64)
    }

    /// The share of the slow model's time the skipped jobs would save.
    pub fn saved_share(&self) -> f64 {
        share(self.saved_ms, self.total_ms)
    }

    /// Whether the skipped jobs agree at least `target` (vacuously when none is skipped).
    pub fn reaches(&self, target: f64) -> bool {
        self.agreement().is_none_or(|agreement| agreement >= target)
    }
}

fn share(part: f64, whole: f64) -> f64 {
    if whole > 0.0 { part / whole } else { 0.0 }
}

/// The threshold chosen for a target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    pub point: Point,
    /// Whether some threshold that skips jobs reaches the target; if not, the choice is 1.0,
    /// which escalates every job (but one scored exactly 1).
    pub reached: bool,
}

/// A set of images sorted by fast score, with the running sums that make [`Curve::at`] a
/// binary search.
#[derive(Debug, Clone)]
pub struct Curve {
    /// Fast scores, ascending.
    scores: Vec<f32>,
    /// `agreed_from[i]`: images `i..` that agree; `ms_from[i]`: their slow time.
    agreed_from: Vec<usize>,
    ms_from: Vec<f64>,
}

impl Curve {
    pub fn new<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Self {
        let mut sorted: Vec<&Sample> = samples.into_iter().collect();
        sorted.sort_by(|a, b| a.fast_score.total_cmp(&b.fast_score));
        let mut agreed_from = vec![0; sorted.len() + 1];
        let mut ms_from = vec![0.0; sorted.len() + 1];
        for (i, sample) in sorted.iter().enumerate().rev() {
            agreed_from[i] = agreed_from[i + 1] + usize::from(sample.agrees());
            ms_from[i] = ms_from[i + 1] + sample.slow_ms;
        }
        Self {
            scores: sorted.iter().map(|sample| sample.fast_score).collect(),
            agreed_from,
            ms_from,
        }
    }

    /// The fast scores, ascending.
    pub fn scores(&self) -> &[f32] {
        &self.scores
    }

    /// What `threshold` does.
    pub fn at(&self, threshold: f32) -> Point {
        let first_skipped = self.scores.partition_point(|&score| score < threshold);
        Point {
            threshold,
            total: self.scores.len(),
            skipped: self.scores.len() - first_skipped,
            agreed: self.agreed_from[first_skipped],
            saved_ms: self.ms_from[first_skipped],
            total_ms: self.ms_from[0],
        }
    }

    /// The lowest threshold whose skipped jobs agree at least `target` (the most slow compute
    /// saved while agreement holds); 1.0, unreached, when none does. Only 0 and the observed
    /// scores are candidates: between two of them the skipped set does not change.
    pub fn choose(&self, target: f64) -> Choice {
        let mut previous = None;
        for (i, &score) in self.scores.iter().enumerate() {
            if previous == Some(score.to_bits()) {
                continue;
            }
            previous = Some(score.to_bits());
            let point = self.at(if i == 0 { 0.0 } else { score });
            if point.reaches(target) {
                return Choice {
                    point,
                    reached: true,
                };
            }
        }
        Choice {
            point: self.at(1.0),
            reached: false,
        }
    }
}

/// One class's threshold (by the fast model's label).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassChoice {
    pub label: String,
    pub images: usize,
    pub choice: Choice,
}

/// The classes by fast label: those with at least `min_images` get a threshold of their own
/// (the first list); the others use the global one (the second: label and image count).
pub fn per_class(
    samples: &[Sample],
    target: f64,
    min_images: usize,
) -> (Vec<ClassChoice>, Vec<(String, usize)>) {
    let mut classes: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    for sample in samples {
        classes.entry(&sample.fast_label).or_default().push(sample);
    }
    let (mut own, mut small) = (Vec::new(), Vec::new());
    for (label, members) in classes {
        if members.len() >= min_images {
            own.push(ClassChoice {
                label: label.to_owned(),
                images: members.len(),
                choice: Curve::new(members).choose(target),
            });
        } else {
            small.push((label.to_owned(), members.len()));
        }
    }
    (own, small)
}

/// Thresholds for the table: 0 to 1 by 0.05, with `extra` (the chosen one) in its place.
pub fn table_thresholds(extra: f32) -> Vec<f32> {
    let mut thresholds: Vec<f32> = (0..=20u8).map(|step| f32::from(step) / 20.0).collect();
    if !thresholds.iter().any(|&t| t.to_bits() == extra.to_bits()) {
        thresholds.push(extra);
        thresholds.sort_by(f32::total_cmp);
    }
    thresholds
}

/// Thresholds for the plot: 0 to 1 by 0.002, plus each observed score and the value just
/// above it (where that image starts to escalate), so that every step of the curve shows.
pub fn plot_thresholds(curve: &Curve) -> Vec<f32> {
    let mut thresholds: Vec<f32> = (0..=500u16).map(|step| f32::from(step) / 500.0).collect();
    for &score in curve.scores() {
        thresholds.push(score);
        if score < 1.0 {
            thresholds.push(f32::from_bits(score.to_bits() + 1));
        }
    }
    thresholds.sort_by(f32::total_cmp);
    thresholds.dedup_by(|a, b| a.to_bits() == b.to_bits());
    thresholds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(fast: &str, score: f32, slow: &str, ms: f64) -> Sample {
        Sample {
            fast_label: fast.into(),
            fast_score: score,
            slow_label: slow.into(),
            slow_ms: ms,
        }
    }

    /// Four cats (the one scored 0.3 wrong) and two cups (the one scored 0.5 wrong).
    fn samples() -> Vec<Sample> {
        vec![
            sample("cat", 0.9, "cat", 10.0),
            sample("cat", 0.8, "cat", 10.0),
            sample("cat", 0.3, "dog", 10.0),
            sample("cat", 0.6, "cat", 10.0),
            sample("cup", 0.5, "bowl", 30.0),
            sample("cup", 0.7, "cup", 30.0),
        ]
    }

    #[test]
    fn a_threshold_escalates_the_jobs_scored_below_it() {
        let curve = Curve::new(&samples());
        let all = curve.at(0.0);
        assert_eq!((all.total, all.skipped, all.agreed), (6, 6, 4));
        assert_eq!(all.agreement(), Some(4.0 / 6.0));
        assert_eq!((all.saved_share(), all.escalated_share()), (1.0, 0.0));

        // A score equal to the threshold is skipped, as the gateway does.
        let point = curve.at(0.6);
        assert_eq!((point.skipped, point.agreed, point.escalated()), (4, 4, 2));
        assert_eq!(point.agreement(), Some(1.0));
        assert_eq!(point.saved_ms, 60.0);
        assert!((point.saved_share() - 0.6).abs() < 1e-12);

        let none = curve.at(0.95);
        assert_eq!(
            (none.skipped, none.agreement(), none.saved_share()),
            (0, None, 0.0)
        );
        assert!(none.reaches(1.0), "nothing skipped agrees vacuously");
    }

    #[test]
    fn the_lowest_threshold_that_reaches_the_target_is_chosen() {
        let curve = Curve::new(&samples());
        // Skipping everything agrees 4/6: enough for 0.6.
        assert_eq!(curve.choose(0.6).point.threshold, 0.0);
        // Without the 0.3 job: 4/5 = 0.8.
        let choice = curve.choose(0.8);
        assert_eq!((choice.point.threshold, choice.reached), (0.5, true));
        // Without the 0.5 one too: all agree.
        let choice = curve.choose(0.99);
        assert_eq!((choice.point.threshold, choice.point.skipped), (0.6, 4));
        assert!(choice.point.agreement().unwrap() >= 0.99);
    }

    #[test]
    fn the_lowest_reaching_threshold_wins_even_when_agreement_dips_above_it() {
        // Agreement is not monotonic: 0.2 reaches 2/3, 0.5 only 1/2, 0.9 again 1.
        let curve = Curve::new(&[
            sample("a", 0.2, "a", 1.0),
            sample("a", 0.5, "b", 1.0),
            sample("a", 0.9, "a", 1.0),
        ]);
        assert_eq!(curve.choose(0.6).point.threshold, 0.0);
        assert_eq!(curve.choose(0.7).point.threshold, 0.9);
    }

    #[test]
    fn an_unreachable_target_escalates_everything() {
        let curve = Curve::new(&[sample("a", 0.9, "b", 5.0), sample("a", 0.4, "b", 5.0)]);
        let choice = curve.choose(0.5);
        assert!(!choice.reached);
        assert_eq!((choice.point.threshold, choice.point.skipped), (1.0, 0));
    }

    #[test]
    fn equal_scores_are_skipped_together() {
        let curve = Curve::new(&[
            sample("a", 0.5, "a", 1.0),
            sample("a", 0.5, "b", 1.0),
            sample("a", 0.7, "a", 1.0),
        ]);
        let choice = curve.choose(0.9);
        assert_eq!((choice.point.threshold, choice.point.skipped), (0.7, 1));
        assert_eq!(curve.choose(0.6).point.threshold, 0.0);
    }

    #[test]
    fn classes_with_enough_images_get_their_own_threshold() {
        let (own, small) = per_class(&samples(), 0.99, 3);
        assert_eq!(small, vec![("cup".to_owned(), 2)]);
        assert_eq!(own.len(), 1);
        assert_eq!((own[0].label.as_str(), own[0].images), ("cat", 4));
        assert_eq!(own[0].choice.point.threshold, 0.6);

        let (own, small) = per_class(&samples(), 0.99, 2);
        assert!(small.is_empty());
        assert_eq!(own[1].label, "cup");
        assert_eq!(own[1].choice.point.threshold, 0.7);
    }

    #[test]
    fn table_and_plot_thresholds_cover_zero_to_one_and_the_scores() {
        let table = table_thresholds(0.37);
        assert_eq!(table.len(), 22);
        assert_eq!((table[0], table[21]), (0.0, 1.0));
        assert!(table.windows(2).all(|w| w[0] < w[1]));
        assert!(table.contains(&0.37));
        assert_eq!(table_thresholds(0.25).len(), 21);

        let curve = Curve::new(&samples());
        let plot = plot_thresholds(&curve);
        assert!(plot.windows(2).all(|w| w[0] < w[1]));
        for &score in curve.scores() {
            let at = plot.iter().position(|&t| t == score).unwrap();
            // Just above a score, that image escalates.
            assert_eq!(curve.at(plot[at + 1]).skipped + 1, curve.at(score).skipped);
        }
    }
}
