//! The charts, as PNG: `/predict` latency against concurrency, one panel per image; and the
//! soak's RSS and latency over time (row s).

use std::path::Path;

use anyhow::{Context, anyhow};
use plotters::{prelude::*, style::FontStyle};

use crate::{fast::FAST, report::Results, soak::Soak};

/// TrueType fonts tried for the chart's text, in order.
const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 480;

fn register_font() -> anyhow::Result<()> {
    let path = FONTS
        .iter()
        .find(|p| Path::new(p).is_file())
        .with_context(|| format!("no TrueType font for the chart's text (looked for {FONTS:?})"))?;
    let bytes: &'static [u8] = Vec::leak(std::fs::read(path)?);
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{path} is not a usable font"))
}

/// Draws p50/p90/p99 of every shipped `/predict` point, per image, to `path`.
pub fn draw(results: &Results, path: &Path) -> anyhow::Result<()> {
    register_font()?;
    let mut images: Vec<&str> = Vec::new();
    for p in results.predict.iter().filter(|p| p.variant == "shipped") {
        if !images.contains(&p.image.as_str()) {
            images.push(&p.image);
        }
    }
    anyhow::ensure!(!images.is_empty(), "no /predict points to draw");
    let floor = results
        .floor
        .as_ref()
        .and_then(|f| f.of(FAST))
        .map(|f| f.latency.p50_ms);

    let mut pixels = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let panels = root.split_evenly((1, images.len()));
        for (panel, image) in panels.iter().zip(&images) {
            draw_panel(panel, results, image, floor).map_err(|e| anyhow!("{e}"))?;
        }
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    let png = image::RgbImage::from_raw(WIDTH, HEIGHT, pixels).context("chart buffer size")?;
    png.save(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// log4 of a concurrency: 1, 4, 16, 64 are evenly spaced.
fn x_of(concurrency: usize) -> f64 {
    (concurrency as f64).log(4.0)
}

fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    results: &Results,
    image: &str,
    floor: Option<f64>,
) -> Result<(), Box<dyn std::error::Error>> {
    let points: Vec<_> = results
        .predict
        .iter()
        .filter(|p| p.variant == "shipped" && p.image == image && p.latency.n > 0)
        .collect();
    let max_x = points
        .iter()
        .map(|p| x_of(p.concurrency))
        .fold(0.0, f64::max);
    let max_y = points.iter().map(|p| p.latency.p99_ms).fold(1.0, f64::max) * 1.5;
    let min_y = points
        .iter()
        .map(|p| p.latency.p50_ms)
        .chain(floor.filter(|_| image == "chelsea"))
        .fold(max_y, f64::min)
        * 0.7;
    let title = match image {
        "chelsea" => "chelsea.jpg (451 x 300)".to_owned(),
        "12mp" => "12-megapixel JPEG (4000 x 3000)".to_owned(),
        other => other.to_owned(),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("POST /predict latency: {title}"),
            ("sans-serif", 20),
        )
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.2..max_x + 0.2, (min_y.max(0.01)..max_y).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients (keep-alive); failed requests are not plotted")
        .y_desc("latency, ms (log scale)")
        .x_labels(16)
        .x_label_formatter(&|x| {
            let k = x.round();
            if (x - k).abs() < 1e-6 && k >= 0.0 {
                format!("{}", 4f64.powf(k))
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(("sans-serif", 14))
        .draw()?;
    let series = [
        ("p50", BLUE, 0usize),
        ("p90", RGBColor(230, 140, 0), 1),
        ("p99", RED, 2),
    ];
    for (name, color, which) in series {
        let data: Vec<(f64, f64)> = points
            .iter()
            .map(|p| {
                let l = &p.latency;
                (x_of(p.concurrency), [l.p50_ms, l.p90_ms, l.p99_ms][which])
            })
            .collect();
        chart
            .draw_series(LineSeries::new(data.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(
            data.into_iter()
                .map(|xy| Circle::new(xy, 3, color.filled())),
        )?;
    }
    if let Some(floor) = floor.filter(|_| image == "chelsea") {
        let grey = RGBColor(120, 120, 120);
        chart
            .draw_series(LineSeries::new(
                vec![(-0.2, floor), (max_x + 0.2, floor)],
                grey.stroke_width(1),
            ))?
            .label(format!("{FAST} floor (ORT, batch 1)"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    Ok(())
}

/// Type of the charts' drawing areas.
type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// Draws the soak's RSS of each process (top) and its latency per interval (bottom) over time.
pub fn draw_soak(soak: &Soak, path: &Path) -> anyhow::Result<()> {
    register_font()?;
    anyhow::ensure!(soak.samples.len() > 1, "no soak samples to draw");
    let (width, height) = (WIDTH, HEIGHT * 2);
    let mut pixels = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let panels = root.split_evenly((2, 1));
        soak_rss(&panels[0], soak).map_err(|e| anyhow!("{e}"))?;
        soak_latency(&panels[1], soak).map_err(|e| anyhow!("{e}"))?;
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    let png = image::RgbImage::from_raw(width, height, pixels).context("chart buffer size")?;
    png.save(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Line colours of the soak's series, in turn.
const COLOURS: [RGBColor; 6] = [
    BLUE,
    RED,
    RGBColor(0, 150, 0),
    RGBColor(230, 140, 0),
    RGBColor(140, 0, 160),
    RGBColor(90, 90, 90),
];

fn soak_rss(area: &Area<'_>, soak: &Soak) -> Result<(), Box<dyn std::error::Error>> {
    let end = soak.samples.last().map_or(1.0, |s| s.t_secs).max(1.0);
    // Log scale: the model server's hundreds of MiB and the others' tens on one panel, each
    // growth as readable as the others'.
    let rss = || {
        soak.samples
            .iter()
            .flat_map(|s| s.rss_mib.values().copied())
    };
    let max_y = rss().fold(1.0, f64::max) * 1.3;
    let min_y = rss().fold(max_y, f64::min).max(0.5) * 0.7;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "Soak: RSS of each process ({} jobs, {} clients, null model)",
                soak.completed, soak.clients
            ),
            ("sans-serif", 20),
        )
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, (min_y..max_y).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("seconds since the load started")
        .y_desc("VmRSS, MiB (log scale)")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .light_line_style(WHITE)
        .label_style(("sans-serif", 14))
        .draw()?;
    for (p, color) in soak.processes.iter().zip(COLOURS.iter().cycle()) {
        let data: Vec<(f64, f64)> = soak
            .samples
            .iter()
            .filter_map(|s| Some((s.t_secs, *s.rss_mib.get(&p.name)?)))
            .collect();
        chart
            .draw_series(LineSeries::new(data, color.stroke_width(2)))?
            .label(p.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    if let Some(t) = soak.warmup_end_secs {
        let grey = RGBColor(120, 120, 120);
        chart
            .draw_series(LineSeries::new(vec![(t, min_y), (t, max_y)], grey))?
            .label("end of the warm-up (RSS baseline)")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
    }
    legend(&mut chart, SeriesLabelPosition::MiddleRight)
}

fn soak_latency(area: &Area<'_>, soak: &Soak) -> Result<(), Box<dyn std::error::Error>> {
    let end = soak.samples.last().map_or(1.0, |s| s.t_secs).max(1.0);
    let series = |f: fn(&crate::soak::Sample) -> Option<f64>| -> Vec<(f64, f64)> {
        soak.samples
            .iter()
            .filter_map(|s| Some((s.t_secs, f(s)?)))
            .collect()
    };
    let (p50, p99) = (series(|s| s.p50_ms), series(|s| s.p99_ms));
    let max_y = p99.iter().map(|(_, y)| *y).fold(1.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Soak: submit -> SSE `succeeded` latency of each interval",
            ("sans-serif", 20),
        )
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..max_y)?;
    chart
        .configure_mesh()
        .x_desc(format!(
            "seconds since the load started ({} s intervals)",
            soak.interval_secs
        ))
        .y_desc("latency, ms")
        .label_style(("sans-serif", 14))
        .draw()?;
    for (name, data, color) in [("p50", p50, BLUE), ("p99", p99, RED)] {
        chart
            .draw_series(LineSeries::new(data, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)
}

/// The series' legend of a soak panel, at `position`.
fn legend<'a, 'b: 'a, C: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'b>, C>,
    position: SeriesLabelPosition,
) -> Result<(), Box<dyn std::error::Error>> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    Ok(())
}
