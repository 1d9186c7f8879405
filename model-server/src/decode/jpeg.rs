//! The scaled JPEG path: libjpeg-turbo's decoder (through the `mozjpeg` crate, which builds it
//! from source with the C compiler: no system library, no assembler) decodes at 1/2, 1/4 or 1/8
//! scale in the DCT domain (the image crate's decoder, zune-jpeg, cannot). For a 12-megapixel
//! camera JPEG the entropy decoding dominates even then, and libjpeg-turbo's is about 1.6 times
//! faster than the pure-Rust `jpeg-decoder` this path used before (model-server/README.md).
//!
//! Used only when the scale is below 1; the caller has already checked the pixel limit and the
//! end marker from the header and keeps the full decode as the fallback: anything this path
//! cannot read (lossless or 12-bit JPEGs, CMYK, a fatal libjpeg error) is decoded in full, as
//! before, and its errors are the ones clients see.

use std::panic::{self, AssertUnwindSafe};

use image::{DynamicImage, RgbImage, metadata::Orientation};
use mozjpeg::{ColorSpace, Decompress, Marker};

use super::{Scale, covers, swaps};
use crate::preprocess::Preprocess;

/// What an APP1 segment holding EXIF data starts with.
const EXIF_HEADER: &[u8] = b"Exif\0\0";

/// The smallest scale covering `need` (see `decode::scale_for`); `None` if `bytes` is not a
/// JPEG this path decodes or its header does not read.
pub(super) fn scale_for(bytes: &[u8], need: &Preprocess) -> Option<Scale> {
    if !bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return None;
    }
    let (mut width, mut height, orientation) = guarded(|| {
        // Reads the segments up to the frame header: the EXIF segment comes before it.
        let decoder = header(bytes)?;
        Some((decoder.width(), decoder.height(), orientation(&decoder)))
    })?;
    if swaps(orientation) {
        (width, height) = (height, width);
    }
    let (width, height) = (u32::try_from(width).ok()?, u32::try_from(height).ok()?);
    [8, 4, 2].into_iter().map(Scale::new).find(|scale| {
        let (w, h) = scale.of(width, height);
        covers(need, w, h)
    })
}

/// `bytes` (a JPEG of `full` pixels, as the header check read it) decoded at `scale` and
/// oriented; `None` if libjpeg cannot, or would not give that size (the caller then decodes in
/// full).
pub(super) fn decode_scaled(bytes: &[u8], scale: Scale, full: (u32, u32)) -> Option<RgbImage> {
    let (width, height) = scale.of(full.0, full.1);
    let (pixels, orientation) = guarded(|| {
        let mut decoder = header(bytes)?;
        if (decoder.width(), decoder.height()) != (full.0 as usize, full.1 as usize) {
            return None;
        }
        let orientation = orientation(&decoder);
        // libjpeg scales by numerator / 8, rounding the size up as `Scale::of` does.
        decoder.scale(8 / scale.denominator());
        let mut started = decoder.to_colorspace(ColorSpace::JCS_RGB).ok()?;
        if (started.width(), started.height()) != (width as usize, height as usize) {
            return None;
        }
        let pixels = started.read_scanlines::<u8>().ok()?;
        started.finish().ok()?;
        Some((pixels, orientation))
    })?;
    let mut image = DynamicImage::ImageRgb8(RgbImage::from_raw(width, height, pixels)?);
    image.apply_orientation(orientation);
    Some(image.into_rgb8())
}

/// Runs `decode`, which calls into libjpeg: the `mozjpeg` crate reports libjpeg's fatal errors
/// (a bad header, an unsupported process) by unwinding, which ends here as `None`. Nothing
/// outlives the closure, so no broken state can be seen after an unwind.
fn guarded<T>(decode: impl FnOnce() -> Option<T>) -> Option<T> {
    panic::catch_unwind(AssertUnwindSafe(decode)).ok().flatten()
}

/// A decoder that has read `bytes`' header (and kept its APP1 segments); `None` for colour
/// spaces it cannot turn into RGB (CMYK, YCCK: the full decode handles them).
fn header(bytes: &[u8]) -> Option<Decompress<&[u8]>> {
    let decoder = Decompress::builder()
        .with_markers(&[Marker::APP(1)])
        .from_mem(bytes)
        .ok()?;
    let rgb_able = matches!(
        decoder.color_space(),
        ColorSpace::JCS_YCbCr | ColorSpace::JCS_GRAYSCALE | ColorSpace::JCS_RGB
    );
    rgb_able.then_some(decoder)
}

/// The EXIF orientation of a decoder's APP1 segments (none: as stored).
fn orientation(decoder: &Decompress<&[u8]>) -> Orientation {
    decoder
        .markers()
        .filter_map(|marker| marker.data.strip_prefix(EXIF_HEADER))
        .find_map(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms)
}

#[cfg(test)]
pub(super) fn decodes_scaled(bytes: &[u8], scale: Scale) -> bool {
    let full = guarded(|| header(bytes).map(|d| (d.width() as u32, d.height() as u32)));
    full.is_some_and(|full| decode_scaled(bytes, scale, full).is_some())
}
