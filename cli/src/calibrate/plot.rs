//! `--plot`: the curve as a PNG chart. x: the threshold; y: the skipped jobs' agreement with
//! the slow model, the share of slow compute saved and the share of jobs escalated; the target
//! and the chosen threshold as dashed lines.

use image::Rgb;

use super::{
    canvas::{Canvas, Color},
    curve::{Curve, plot_thresholds},
};

const WIDTH: u32 = 960;
const HEIGHT: u32 = 580;
/// The plot area, in pixels: left, top, right, bottom.
const AREA: (f64, f64, f64, f64) = (90.0, 70.0, 910.0, 430.0);
/// Text scale: 16-pixel glyphs.
const SCALE: u32 = 2;

const WHITE: Color = Rgb([255, 255, 255]);
const INK: Color = Rgb([30, 30, 30]);
const GRID: Color = Rgb([225, 225, 225]);
const AGREEMENT: Color = Rgb([31, 119, 180]);
const SAVED: Color = Rgb([230, 120, 20]);
const ESCALATED: Color = Rgb([140, 140, 140]);
const TARGET: Color = Rgb([200, 40, 40]);
const CHOSEN: Color = Rgb([40, 150, 60]);

/// What the chart shows besides the curve.
#[derive(Debug)]
pub struct Labels<'a> {
    pub fast_model: &'a str,
    pub slow_model: &'a str,
    pub target: f64,
    pub chosen: f32,
}

/// The chart as PNG bytes.
pub fn render(curve: &Curve, labels: &Labels<'_>) -> Vec<u8> {
    let mut canvas = Canvas::new(WIDTH, HEIGHT, WHITE);
    axes(&mut canvas);
    let title = format!(
        "{} vs {}: {} images",
        labels.fast_model,
        labels.slow_model,
        curve.scores().len()
    );
    canvas.text_centred(i64::from(WIDTH) / 2, 16, &title, SCALE, INK);

    let target = labels.target.clamp(0.0, 1.0);
    canvas.dashed(at(0.0, target), at(1.0, target), 2, TARGET, Some(8.0));
    let chosen = f64::from(labels.chosen);
    canvas.dashed(at(chosen, 0.0), at(chosen, 1.0), 2, CHOSEN, Some(8.0));

    let points: Vec<_> = plot_thresholds(curve)
        .into_iter()
        .map(|t| curve.at(t))
        .collect();
    let series: [(Color, Vec<Option<f64>>); 3] = [
        (
            ESCALATED,
            points.iter().map(|p| Some(p.escalated_share())).collect(),
        ),
        (
            SAVED,
            points.iter().map(|p| Some(p.saved_share())).collect(),
        ),
        (AGREEMENT, points.iter().map(|p| p.agreement()).collect()),
    ];
    for (color, values) in &series {
        polyline(
            &mut canvas,
            &points
                .iter()
                .map(|p| f64::from(p.threshold))
                .collect::<Vec<_>>(),
            values,
            *color,
        );
    }
    legend(&mut canvas, labels);
    canvas.png()
}

/// The pixel of (threshold, share).
fn at(x: f64, y: f64) -> (f64, f64) {
    let (left, top, right, bottom) = AREA;
    (left + x * (right - left), bottom - y * (bottom - top))
}

fn axes(canvas: &mut Canvas) {
    let (left, top, right, bottom) = AREA;
    let glyph = Canvas::text_height(SCALE);
    for tick in 0..=10u8 {
        let value = f64::from(tick) / 10.0;
        let (x, _) = at(value, 0.0);
        canvas.line((x, top), (x, bottom), 1, GRID);
        canvas.line((x, bottom), (x, bottom + 6.0), 2, INK);
        let label = format!("{value:.1}");
        canvas.text_centred(x as i64, bottom as i64 + 12, &label, SCALE, INK);
    }
    for tick in 0..=5u8 {
        let value = f64::from(tick) / 5.0;
        let (_, y) = at(0.0, value);
        canvas.line((left, y), (right, y), 1, GRID);
        canvas.line((left - 6.0, y), (left, y), 2, INK);
        let label = format!("{:.0}%", value * 100.0);
        canvas.text_right(left as i64 - 10, y as i64 - glyph / 2, &label, SCALE, INK);
    }
    canvas.line((left, top), (left, bottom), 2, INK);
    canvas.line((left, bottom), (right, bottom), 2, INK);
    let x_label = "threshold (fast model's top-1 score)";
    canvas.text_centred(
        ((left + right) / 2.0) as i64,
        bottom as i64 + 40,
        x_label,
        SCALE,
        INK,
    );
    canvas.text(left as i64 - 70, top as i64 - 30, "share", SCALE, INK);
}

/// Connects the points that have a value; a gap where one has none.
fn polyline(canvas: &mut Canvas, xs: &[f64], ys: &[Option<f64>], color: Color) {
    let mut previous: Option<(f64, f64)> = None;
    for (&x, y) in xs.iter().zip(ys) {
        let point = y.map(|y| at(x, y));
        if let (Some(from), Some(to)) = (previous, point) {
            canvas.line(from, to, 3, color);
        }
        previous = point;
    }
}

/// The legend under the x axis: a swatch and a name per series, wrapped to the width.
fn legend(canvas: &mut Canvas, labels: &Labels<'_>) {
    let entries = [
        (AGREEMENT, false, "agreement of skipped jobs".to_owned()),
        (SAVED, false, "slow compute saved".to_owned()),
        (ESCALATED, false, "jobs escalated".to_owned()),
        (TARGET, true, format!("target {}", labels.target)),
        (CHOSEN, true, format!("chosen {:.3}", labels.chosen)),
    ];
    let glyph = Canvas::text_height(SCALE);
    let (left, right) = (40, i64::from(WIDTH) - 40);
    let (mut x, mut y) = (left, AREA.3 as i64 + 80);
    for (color, dashed, name) in entries {
        let width = 40 + 10 + Canvas::text_width(&name, SCALE);
        if x > left && x + width > right {
            (x, y) = (left, y + glyph + 16);
        }
        let middle = (y + glyph / 2) as f64;
        let dash = dashed.then_some(8.0);
        canvas.dashed(
            (x as f64, middle),
            ((x + 40) as f64, middle),
            3,
            color,
            dash,
        );
        canvas.text(x + 50, y, &name, SCALE, INK);
        x += width + 30;
    }
}

#[cfg(test)]
mod tests {
    use super::super::curve::Sample;
    use super::*;

    #[test]
    fn the_chart_is_a_png_of_the_set_size() {
        let samples: Vec<Sample> = (0..20u8)
            .map(|i| Sample {
                fast_label: "a".into(),
                fast_score: f32::from(i) / 20.0,
                slow_label: if i % 3 == 0 { "b" } else { "a" }.into(),
                slow_ms: 10.0,
            })
            .collect();
        let labels = Labels {
            fast_model: "fast",
            slow_model: "slow",
            target: 0.9,
            chosen: 0.45,
        };
        let png = render(&Curve::new(&samples), &labels);
        let image = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(image.dimensions(), (WIDTH, HEIGHT));
        // Each series left its colour somewhere.
        for color in [AGREEMENT, SAVED, ESCALATED, TARGET, CHOSEN] {
            assert!(image.pixels().any(|p| *p == color), "{color:?}");
        }
    }
}
