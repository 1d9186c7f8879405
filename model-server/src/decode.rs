//! Encoded image bytes to RGB8 pixels, refusing what should not be decoded.
//!
//! The format is guessed from the content (JPEG, PNG, WebP, GIF, BMP, TIFF). The header is read
//! first and its dimensions checked against the pixel limit *before* any pixel buffer is
//! allocated, so a small file that claims to be 50000 x 50000 costs nothing. `image::Limits`
//! bounds what the decoders themselves may allocate. The image crate's JPEG decoder fills a
//! truncated file with grey rather than failing, so JPEGs are checked for their end marker,
//! and a JPEG's scans are counted before any decoder runs (`markers`): each costs a pass over
//! the whole image, so a few kilobytes of scans would cost seconds. An image whose header the
//! decoder reads must also read as the gateway reads it (`tandem_core::image_header`), so the
//! two refuse the same images.
//!
//! The EXIF orientation (JPEG, WebP, TIFF) is applied before anything else sees the pixels, so
//! the crop is taken from the image as it is meant to be displayed.
//!
//! A model needs far fewer pixels than a camera photo has: a JPEG can be decoded at 1/2, 1/4 or
//! 1/8 scale in the DCT domain, skipping most of the work. [`scale_for`] picks the smallest
//! scale that still leaves twice the model's input size per side after its crop; `jpeg`
//! decodes at it.

use std::io::{Cursor, ErrorKind};

use image::{
    DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits, RgbImage,
    metadata::Orientation,
};

use crate::{error::ModelError, preprocess::Preprocess};

mod jpeg;
mod markers;

pub use markers::MAX_SCANS;
use markers::Refusal;

/// The fraction of each dimension a JPEG is decoded at: 1/1, 1/2, 1/4 or 1/8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scale {
    denominator: u8,
}

impl Scale {
    /// Every pixel (and the only scale of formats other than JPEG).
    pub const FULL: Self = Self { denominator: 1 };

    /// 1/`denominator`: 1, 2, 4 or 8 (anything else is [`Self::FULL`]).
    pub fn new(denominator: u8) -> Self {
        match denominator {
            2 | 4 | 8 => Self { denominator },
            _ => Self::FULL,
        }
    }

    /// 1 (full), 2, 4 or 8.
    pub fn denominator(self) -> u8 {
        self.denominator
    }

    /// A `width` x `height` image's size at this scale (rounded up, as the JPEG decoder does).
    pub fn of(self, width: u32, height: u32) -> (u32, u32) {
        let d = u32::from(self.denominator);
        (width.div_ceil(d), height.div_ceil(d))
    }
}

/// The scale to decode `bytes` at for `need`: the smallest whose result, after `need`'s crop,
/// is still at least [`OVERSAMPLING`] times `need`'s input size per side. Reads only the JPEG's
/// header; [`Scale::FULL`] for other formats and anything the header does not tell (the decode
/// then reports the error).
pub fn scale_for(bytes: &[u8], need: &Preprocess) -> Scale {
    jpeg::scale_for(bytes, need).unwrap_or(Scale::FULL)
}

/// Pixels per side a scaled decode keeps, after the crop, for each pixel of the model's input:
/// the resize then still averages real pixels. At 1 (the least that covers the input), a
/// 12-megapixel photo is decoded at 1/8, where libjpeg-turbo keeps only each 8 x 8 block's
/// mean: the top-1 label of one test photo (`chelsea.png`, upscaled) changed on Lite0; at 2
/// (1/4 for such a photo) none changes and scores move less (`tests/scaled_decode.rs`).
const OVERSAMPLING: u32 = 2;

/// Whether a `width` x `height` image (as displayed) still covers `need` after its crop, with
/// [`OVERSAMPLING`] pixels per side for each of the model's.
fn covers(need: &Preprocess, width: u32, height: u32) -> bool {
    let region = need.region(width, height);
    region.width >= need.width * OVERSAMPLING && region.height >= need.height * OVERSAMPLING
}

/// Whether `orientation` swaps width and height.
fn swaps(orientation: Orientation) -> bool {
    matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

/// Decodes image `index` of a request to RGB8 (alpha dropped, grey expanded, 16-bit narrowed),
/// every pixel, oriented as displayed.
pub fn decode_rgb8(bytes: &[u8], index: usize, max_pixels: u64) -> Result<RgbImage, ModelError> {
    decode_rgb8_at(bytes, index, max_pixels, Scale::FULL)
}

/// As [`decode_rgb8`], at the scale `need` calls for ([`scale_for`]).
pub fn decode_rgb8_for(
    bytes: &[u8],
    index: usize,
    max_pixels: u64,
    need: &Preprocess,
) -> Result<RgbImage, ModelError> {
    decode_rgb8_at(bytes, index, max_pixels, scale_for(bytes, need))
}

/// As [`decode_rgb8`], a JPEG at `scale` (other formats, and JPEGs the scaled decoder cannot
/// read, in full). The pixel limit applies to the full size, as without scaling.
pub fn decode_rgb8_at(
    bytes: &[u8],
    index: usize,
    max_pixels: u64,
    scale: Scale,
) -> Result<RgbImage, ModelError> {
    let undecodable = |reason: String| ModelError::Undecodable { index, reason };
    if bytes.is_empty() {
        return Err(undecodable("it is empty (0 bytes)".into()));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| undecodable(e.to_string()))?;
    let Some(format) = reader.format() else {
        return Err(undecodable(
            "not a recognised image format (expected JPEG, PNG, WebP, GIF, BMP or TIFF)".into(),
        ));
    };
    if format == ImageFormat::Jpeg {
        markers::check(bytes).map_err(|refusal| match refusal {
            Refusal::Truncated(reason) => ModelError::Truncated {
                index,
                reason: reason.into(),
            },
            Refusal::Corrupt(reason) => undecodable(reason.into()),
            Refusal::TooManyScans => undecodable(format!(
                "the JPEG has more than {MAX_SCANS} scans (progressive JPEGs have about 10); \
                 the server decodes at most {MAX_SCANS}"
            )),
        })?;
    }
    let mut limits = Limits::default();
    // Enough for the largest allowed image at 16 bits per channel with alpha, plus slack.
    let max_alloc = max_pixels.saturating_mul(8).saturating_add(64 << 20);
    limits.max_alloc = Some(max_alloc);
    reader.limits(limits);

    // Reads only the header.
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| classify(e, index, max_pixels))?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels == 0 {
        return Err(undecodable(format!("it has no pixels ({width}x{height})")));
    }
    if pixels > max_pixels {
        return Err(ModelError::TooLarge {
            index,
            width,
            height,
            pixels,
            max: max_pixels,
        });
    }
    // The gateway's reading of the header must agree (`tandem_core::image_header`): what
    // one refuses, the other does too, whichever a client reaches.
    tandem_core::image_header::size(bytes).map_err(|e| undecodable(e.to_string()))?;
    if format == ImageFormat::Jpeg
        && scale != Scale::FULL
        && let Some(image) = jpeg::decode_scaled(bytes, scale, (width, height))
    {
        return Ok(image);
    }
    // A missing or unreadable orientation is no reason to refuse the pixels.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut image =
        DynamicImage::from_decoder(decoder).map_err(|e| classify(e, index, max_pixels))?;
    image.apply_orientation(orientation);
    Ok(image.into_rgb8())
}

fn classify(error: ImageError, index: usize, max_pixels: u64) -> ModelError {
    match error {
        ImageError::IoError(e) if e.kind() == ErrorKind::UnexpectedEof => ModelError::Truncated {
            index,
            reason: "the data ends before the image does".into(),
        },
        ImageError::Limits(e) => ModelError::Undecodable {
            index,
            reason: format!("{e} (the server allows at most {max_pixels} pixels)"),
        },
        other => {
            let reason = other.to_string();
            if reason.to_ascii_lowercase().contains("end of file")
                || reason.to_ascii_lowercase().contains("eof")
            {
                ModelError::Truncated { index, reason }
            } else {
                ModelError::Undecodable { index, reason }
            }
        }
    }
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
