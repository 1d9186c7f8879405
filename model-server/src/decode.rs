//! Encoded image bytes to RGB8 pixels, refusing what should not be decoded.
//!
//! The format is guessed from the content (JPEG, PNG, WebP, GIF, BMP, TIFF). The header is read
//! first and its dimensions checked against the pixel limit *before* any pixel buffer is
//! allocated, so a small file that claims to be 50000 x 50000 costs nothing. `image::Limits`
//! bounds what the decoders themselves may allocate. The image crate's JPEG decoder fills a
//! truncated file with grey rather than failing, so JPEGs are checked for their end marker.

use std::io::{Cursor, ErrorKind};

use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits, RgbImage};

use crate::error::ModelError;

/// Decodes image `index` of a request to RGB8 (alpha dropped, grey expanded, 16-bit narrowed).
pub fn decode_rgb8(bytes: &[u8], index: usize, max_pixels: u64) -> Result<RgbImage, ModelError> {
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
        check_jpeg_complete(bytes).map_err(|reason| ModelError::Truncated {
            index,
            reason: reason.into(),
        })?;
    }
    let mut limits = Limits::default();
    // Enough for the largest allowed image at 16 bits per channel with alpha, plus slack.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(limits);

    // Reads only the header.
    let decoder = reader
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
    let image = DynamicImage::from_decoder(decoder).map_err(|e| classify(e, index, max_pixels))?;
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

/// Walks the JPEG's marker segments to the first scan, then requires an end-of-image marker
/// (`FF D9`) after it: entropy-coded data never contains one, so its absence means the file
/// was cut short. Segments before the scan (EXIF thumbnails included) are skipped by length.
pub fn check_jpeg_complete(bytes: &[u8]) -> Result<(), &'static str> {
    const CUT: &str = "the JPEG ends before its end-of-image marker";
    let mut pos = 2; // after SOI (FF D8), which format detection has seen
    loop {
        // Markers may be preceded by fill bytes (FF).
        while bytes.get(pos) == Some(&0xFF) && bytes.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        let (Some(&0xFF), Some(&marker)) = (bytes.get(pos), bytes.get(pos + 1)) else {
            return Err(CUT);
        };
        pos += 2;
        match marker {
            0xD9 => return Err("the JPEG ends before its first scan"),
            0x01 | 0xD0..=0xD7 => continue, // standalone markers
            _ => {}
        }
        let (Some(&hi), Some(&lo)) = (bytes.get(pos), bytes.get(pos + 1)) else {
            return Err(CUT);
        };
        let length = usize::from(u16::from_be_bytes([hi, lo]));
        if length < 2 {
            return Err("the JPEG has a corrupt segment length");
        }
        pos += length;
        if pos > bytes.len() {
            return Err(CUT);
        }
        if marker == 0xDA {
            // Start of scan: the image data follows; look for the end marker.
            return if bytes[pos..].windows(2).any(|w| w == [0xFF, 0xD9]) {
                Ok(())
            } else {
                Err(CUT)
            };
        }
    }
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
