//! The scaled JPEG path: `jpeg-decoder` decodes at 1/2, 1/4 or 1/8 scale in the DCT domain
//! (the image crate's decoder, zune-jpeg, cannot), so a 12-megapixel photo costs a fraction of
//! its full decode. Used only when the scale is below 1; the caller has already checked the
//! pixel limit and the end marker from the header and keeps the full decode as the fallback.

use std::io::Cursor;

use image::{DynamicImage, RgbImage, metadata::Orientation};
use jpeg_decoder::{CodingProcess, Decoder, ImageInfo, PixelFormat};

use super::{Scale, covers, swaps};
use crate::preprocess::Preprocess;

/// The smallest scale covering `need` (see `decode::scale_for`); `None` if `bytes` is not a
/// baseline or progressive 8-bit JPEG whose header reads.
pub(super) fn scale_for(bytes: &[u8], need: &Preprocess) -> Option<Scale> {
    if !bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return None;
    }
    let mut decoder = Decoder::new(Cursor::new(bytes));
    // Reads the segments up to the frame header: the EXIF segment comes before it.
    decoder.read_info().ok()?;
    let info = decoder.info()?;
    if !scalable(&info) {
        return None;
    }
    let (mut width, mut height) = (u32::from(info.width), u32::from(info.height));
    if swaps(orientation(&decoder)) {
        (width, height) = (height, width);
    }
    [8, 4, 2].into_iter().map(Scale::new).find(|scale| {
        let (w, h) = scale.of(width, height);
        covers(need, w, h)
    })
}

/// Lossless and 16-bit JPEGs have no DCT to scale in.
fn scalable(info: &ImageInfo) -> bool {
    info.coding_process != CodingProcess::Lossless && info.pixel_format != PixelFormat::L16
}

fn orientation(decoder: &Decoder<Cursor<&[u8]>>) -> Orientation {
    decoder
        .exif_data()
        .and_then(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms)
}

/// `bytes` (a JPEG of `full` pixels, as the header check read it) decoded at `scale` and
/// oriented; `None` if `jpeg-decoder` cannot, or would not give that size (the caller then
/// decodes in full, as before: its errors are the ones clients see).
pub(super) fn decode_scaled(
    bytes: &[u8],
    scale: Scale,
    full: (u32, u32),
    max_alloc: usize,
) -> Option<RgbImage> {
    let mut decoder = Decoder::new(Cursor::new(bytes));
    decoder.set_max_decoding_buffer_size(max_alloc);
    decoder.read_info().ok()?;
    let info = decoder.info()?;
    if (u32::from(info.width), u32::from(info.height)) != full || !scalable(&info) {
        return None;
    }
    let (width, height) = scale.of(full.0, full.1);
    let requested = (u16::try_from(width).ok()?, u16::try_from(height).ok()?);
    let got = decoder.scale(requested.0, requested.1).ok()?;
    if got != requested {
        return None;
    }
    let pixels = match decoder.decode() {
        Ok(pixels) => pixels,
        Err(e) => {
            tracing::debug!(error = %e, "scaled JPEG decode failed; decoding in full");
            return None;
        }
    };
    let format = decoder.info()?.pixel_format;
    let image = to_rgb8(&pixels, format, width, height)?;
    let mut image = DynamicImage::ImageRgb8(image);
    image.apply_orientation(orientation(&decoder));
    Some(image.into_rgb8())
}

/// `jpeg-decoder`'s output (`width` x `height` pixels of `format`) as RGB8; `None` if the
/// buffer does not hold exactly that.
pub(super) fn to_rgb8(
    pixels: &[u8],
    format: PixelFormat,
    width: u32,
    height: u32,
) -> Option<RgbImage> {
    let count = usize::try_from(u64::from(width) * u64::from(height)).ok()?;
    if pixels.len() != count.checked_mul(format.pixel_bytes())? {
        return None;
    }
    let rgb: Vec<u8> = match format {
        PixelFormat::RGB24 => pixels.to_vec(),
        PixelFormat::L8 => pixels.iter().flat_map(|&l| [l, l, l]).collect(),
        // Native-endian 16-bit samples; the high byte is the 8-bit value.
        PixelFormat::L16 => pixels
            .chunks_exact(2)
            .flat_map(|s| {
                let l = (u16::from_ne_bytes([s[0], s[1]]) >> 8) as u8;
                [l, l, l]
            })
            .collect(),
        PixelFormat::CMYK32 => pixels.chunks_exact(4).flat_map(cmyk_to_rgb).collect(),
    };
    RgbImage::from_raw(width, height, rgb)
}

/// One CMYK32 pixel as `jpeg-decoder` gives it (ink amounts, Adobe's inversion undone) to RGB,
/// as the image crate did when it used `jpeg-decoder`: `R = (255 - C) (255 - K) / 255`, etc.
fn cmyk_to_rgb(pixel: &[u8]) -> [u8; 3] {
    let k = 255 - u16::from(pixel[3]);
    let channel = |v: u8| ((255 - u16::from(v)) * k / 255) as u8;
    [channel(pixel[0]), channel(pixel[1]), channel(pixel[2])]
}
