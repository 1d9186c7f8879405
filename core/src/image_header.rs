//! The one reading of an encoded image's header that Tandem accepts: a format the model server
//! decodes, by its exact signature, and a size the `imagesize` crate reads from the header alone.
//!
//! The gateway reads it to refuse decompression bombs without decoding (it has no decoder);
//! the model server reads it too, after its decoder has read the same header, so that an image
//! is accepted by both or by neither: decoders are more lenient than `imagesize` in places (a
//! TIFF directory entry of no known type, which the decoder skips), and an image the model
//! server decodes must not be one the gateway refuses.

/// Why a header does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// No signature of a format the model server decodes.
    #[error("not an image in a format the model server decodes (JPEG, PNG, WebP, GIF, BMP, TIFF)")]
    NotAnImage,
    /// The signature is there, the header does not read.
    #[error("its header does not read: {0}")]
    Corrupt(String),
}

/// The formats the model server decodes, by their exact signatures (what the decoders require;
/// `imagesize` alone accepts looser ones, such as any `GIF8` prefix).
fn is_served_format(bytes: &[u8]) -> bool {
    const SIGNATURES: [&[u8]; 8] = [
        b"\xFF\xD8\xFF",      // JPEG
        b"\x89PNG\r\n\x1a\n", // PNG
        b"GIF87a",            // GIF
        b"GIF89a",            // GIF
        b"BM",                // BMP
        b"II*\0",             // TIFF, little-endian
        b"MM\0*",             // TIFF, big-endian
        b"RIFF",              // WebP: RIFF, a size, then WEBP
    ];
    SIGNATURES
        .iter()
        .any(|signature| bytes.starts_with(signature))
        && (!bytes.starts_with(b"RIFF") || bytes.get(8..12) == Some(b"WEBP"))
}

/// Width and height as the header says (saturated to `u32`; neither 0), without decoding
/// anything.
pub fn size(bytes: &[u8]) -> Result<(u32, u32), HeaderError> {
    if !is_served_format(bytes) {
        return Err(HeaderError::NotAnImage);
    }
    let (width, height) = if bytes.starts_with(b"BM") {
        bmp_size(bytes)?
    } else {
        let size = imagesize::blob_size(bytes).map_err(|e| HeaderError::Corrupt(e.to_string()))?;
        (
            u32::try_from(size.width).unwrap_or(u32::MAX),
            u32::try_from(size.height).unwrap_or(u32::MAX),
        )
    };
    if width == 0 || height == 0 {
        return Err(HeaderError::Corrupt(format!(
            "it has no pixels ({width}x{height})"
        )));
    }
    Ok((width, height))
}

/// A BMP's size from its info header. `imagesize` reads the height as unsigned, so a top-down
/// BMP (a negative height, which the decoder reads) claimed 4 billion rows; and it misreads the
/// OS/2 core header's 16-bit sizes.
fn bmp_size(bytes: &[u8]) -> Result<(u32, u32), HeaderError> {
    let corrupt = |what: &str| HeaderError::Corrupt(format!("the BMP {what}"));
    let field = |at: usize, len: usize| {
        bytes
            .get(at..at + len)
            .ok_or_else(|| corrupt("header is cut short"))
    };
    let le32 = |at| field(at, 4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let le16 = |at| field(at, 2).map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])));
    // The info header follows the 14-byte file header and starts with its own length.
    if le32(14)? == 12 {
        return Ok((le16(18)?, le16(20)?));
    }
    let width = u32::try_from(le32(18)?).map_err(|_| corrupt("has a negative width"))?;
    // Negative: the rows are stored top to bottom.
    let height = le32(22)?.unsigned_abs();
    Ok((width, height))
}

#[cfg(test)]
mod tests {
    use tandem_test_images::png_claiming;

    use super::*;

    #[test]
    fn only_the_served_formats_exact_signatures_read() {
        for not_served in [
            // A format `imagesize` knows but the model server does not decode (Photoshop).
            &b"8BPS\x00\x01\x00\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x10\x00\x00\x00\x10"[..],
            // Looks like a GIF to `imagesize`, is not one.
            b"GIF89 is not enough: this is plain text",
            // RIFF, but not WebP (a WAV file's header).
            b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00",
            b"",
        ] {
            assert_eq!(
                size(not_served),
                Err(HeaderError::NotAnImage),
                "{not_served:?}"
            );
        }
    }

    #[test]
    fn a_header_of_no_pixels_does_not_read() {
        assert_eq!(
            size(&png_claiming(0, 5)),
            Err(HeaderError::Corrupt("it has no pixels (0x5)".into()))
        );
        assert_eq!(size(&png_claiming(7, 5)), Ok((7, 5)));
    }

    /// A BMP file header and the start of an info header of `header_len` bytes, then `dims`.
    fn bmp(header_len: u32, dims: &[u8]) -> Vec<u8> {
        let mut bmp = b"BM\0\0\0\0\0\0\0\0\x36\0\0\0".to_vec();
        bmp.extend_from_slice(&header_len.to_le_bytes());
        bmp.extend_from_slice(dims);
        bmp
    }

    #[test]
    fn a_bmp_stored_top_down_or_with_a_core_header_reads_its_real_size() {
        let le = |v: i32| v.to_le_bytes();
        let top_down = bmp(40, &[le(24), le(-9)].concat());
        assert_eq!(size(&top_down), Ok((24, 9)));
        assert_eq!(size(&bmp(40, &[le(24), le(9)].concat())), Ok((24, 9)));
        assert_eq!(size(&bmp(12, &[24, 0, 9, 0])), Ok((24, 9)));
        assert!(matches!(
            size(&bmp(40, &[le(-24), le(9)].concat())),
            Err(HeaderError::Corrupt(_))
        ));
        assert!(matches!(
            size(&bmp(40, &le(24))),
            Err(HeaderError::Corrupt(_))
        ));
    }

    #[test]
    fn a_tiff_directory_entry_of_no_known_type_does_not_read() {
        // Little-endian TIFF, its directory at 8: ImageWidth (LONG 24), then an entry of type 0.
        let mut tiff = b"II*\0\x08\0\0\0\x02\0".to_vec();
        tiff.extend_from_slice(&[0, 1, 4, 0, 1, 0, 0, 0, 24, 0, 0, 0]);
        tiff.extend_from_slice(&[0; 12]);
        tiff.extend_from_slice(&[0; 4]);
        assert!(
            matches!(size(&tiff), Err(HeaderError::Corrupt(_))),
            "{:?}",
            size(&tiff)
        );
    }
}
