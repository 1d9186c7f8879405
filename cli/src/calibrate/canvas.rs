//! A small raster canvas for the plot: thick and dashed lines, filled rectangles and text in
//! the 8x8 bitmap font of `font8x8` (scaled up), encoded as PNG by `image`.

use std::io::Cursor;

use font8x8::legacy::BASIC_LEGACY;
use image::{ImageFormat, Rgb, RgbImage};

pub type Color = Rgb<u8>;

/// Pixels per glyph side at scale 1.
const GLYPH: u32 = 8;

#[derive(Debug)]
pub struct Canvas {
    image: RgbImage,
}

impl Canvas {
    pub fn new(width: u32, height: u32, background: Color) -> Self {
        Self {
            image: RgbImage::from_pixel(width, height, background),
        }
    }

    /// A filled rectangle; what falls outside the canvas is dropped.
    pub fn fill(&mut self, x: i64, y: i64, width: i64, height: i64, color: Color) {
        let (w, h) = (
            i64::from(self.image.width()),
            i64::from(self.image.height()),
        );
        for py in y.max(0)..(y + height).min(h) {
            for px in x.max(0)..(x + width).min(w) {
                // In range by the bounds above.
                if let (Ok(px), Ok(py)) = (u32::try_from(px), u32::try_from(py)) {
                    self.image.put_pixel(px, py, color);
                }
            }
        }
    }

    /// A straight line `thickness` pixels wide.
    pub fn line(&mut self, from: (f64, f64), to: (f64, f64), thickness: u32, color: Color) {
        self.dashed(from, to, thickness, color, None);
    }

    /// A line drawn in dashes of `dash` pixels and gaps as long; solid with `None`.
    pub fn dashed(
        &mut self,
        from: (f64, f64),
        to: (f64, f64),
        thickness: u32,
        color: Color,
        dash: Option<f64>,
    ) {
        let (dx, dy) = (to.0 - from.0, to.1 - from.1);
        let length = dx.hypot(dy);
        let steps = length.ceil().max(1.0);
        let side = i64::from(thickness.max(1));
        let mut step = 0.0;
        while step <= steps {
            let along = step / steps * length;
            if dash.is_none_or(|dash| ((along / dash) as u64).is_multiple_of(2)) {
                let (x, y) = (from.0 + dx * step / steps, from.1 + dy * step / steps);
                let (x, y) = (x.round() as i64 - side / 2, y.round() as i64 - side / 2);
                self.fill(x, y, side, side, color);
            }
            step += 1.0;
        }
    }

    /// The width of `text` at `scale`, in pixels.
    pub fn text_width(text: &str, scale: u32) -> i64 {
        i64::try_from(text.chars().count()).unwrap_or(i64::MAX / 16) * i64::from(GLYPH * scale)
    }

    /// The height of a line of text at `scale`.
    pub fn text_height(scale: u32) -> i64 {
        i64::from(GLYPH * scale)
    }

    /// `text` with its top left corner at (`x`, `y`); characters outside ASCII show as `?`.
    pub fn text(&mut self, x: i64, y: i64, text: &str, scale: u32, color: Color) {
        let size = i64::from(scale);
        for (n, c) in (0i64..).zip(text.chars()) {
            let glyph = BASIC_LEGACY
                .get(c as usize)
                .unwrap_or(&BASIC_LEGACY[usize::from(b'?')]);
            let left = x + n * i64::from(GLYPH) * size;
            for (row, bits) in (0i64..).zip(glyph) {
                for column in 0..8 {
                    // Bit 0 is the leftmost pixel.
                    if bits & (1 << column) != 0 {
                        let px = left + i64::from(column) * size;
                        self.fill(px, y + row * size, size, size, color);
                    }
                }
            }
        }
    }

    /// `text` centred on `x`.
    pub fn text_centred(&mut self, x: i64, y: i64, text: &str, scale: u32, color: Color) {
        self.text(x - Self::text_width(text, scale) / 2, y, text, scale, color);
    }

    /// `text` ending at `x`.
    pub fn text_right(&mut self, x: i64, y: i64, text: &str, scale: u32, color: Color) {
        self.text(x - Self::text_width(text, scale), y, text, scale, color);
    }

    /// The image as PNG bytes.
    pub fn png(&self) -> Vec<u8> {
        let mut bytes = Cursor::new(Vec::new());
        // Encoding an RGB8 image in memory does not fail.
        let _ = self.image.write_to(&mut bytes, ImageFormat::Png);
        bytes.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHITE: Color = Rgb([255, 255, 255]);
    const BLACK: Color = Rgb([0, 0, 0]);

    fn dark_pixels(canvas: &Canvas) -> usize {
        canvas.image.pixels().filter(|p| p.0[0] < 128).count()
    }

    #[test]
    fn text_lines_and_rectangles_are_drawn_within_the_canvas() {
        let mut canvas = Canvas::new(100, 40, WHITE);
        canvas.text(0, 0, "A", 2, BLACK);
        let a = dark_pixels(&canvas);
        assert!(a > 20, "an A has pixels: {a}");
        // Off the canvas: clipped, no panic.
        canvas.text(-40, 30, "clip", 2, BLACK);
        canvas.fill(90, 35, 50, 50, BLACK);
        canvas.line((0.0, 39.0), (99.0, 39.0), 1, BLACK);
        assert!(dark_pixels(&canvas) > a);
        assert_eq!(Canvas::text_width("abc", 2), 48);
    }

    #[test]
    fn a_dashed_line_has_gaps() {
        let mut solid = Canvas::new(100, 5, WHITE);
        solid.line((0.0, 2.0), (99.0, 2.0), 1, BLACK);
        let mut dashed = Canvas::new(100, 5, WHITE);
        dashed.dashed((0.0, 2.0), (99.0, 2.0), 1, BLACK, Some(5.0));
        let (s, d) = (dark_pixels(&solid), dark_pixels(&dashed));
        assert_eq!(s, 100);
        assert!((40..=60).contains(&d), "{d}");
    }

    #[test]
    fn the_png_decodes() {
        let canvas = Canvas::new(30, 20, WHITE);
        let decoded = image::load_from_memory(&canvas.png()).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (30, 20));
    }
}
