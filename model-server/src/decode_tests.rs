use std::time::{Duration, Instant};

use image::{DynamicImage, ImageFormat, Rgb, Rgba, RgbaImage};
use tandem_test_images::{png_chunk, png_claiming};

use super::*;

const LIMIT: u64 = 40_000_000;

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, format).unwrap();
    bytes.into_inner()
}

fn sample() -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(8, 6, |x, y| {
        Rgb([(x * 30) as u8, (y * 40) as u8, 100])
    }))
}

#[test]
fn crc_matches_the_png_specification_example() {
    // The IEND chunk's CRC is fixed: AE 42 60 82.
    let iend = png_chunk(b"IEND", &[]);
    assert_eq!(iend[..8], *b"\0\0\0\0IEND");
    assert_eq!(iend[8..], 0xAE42_6082u32.to_be_bytes());
}

#[test]
fn every_supported_format_decodes_to_rgb8() {
    for format in [
        ImageFormat::Png,
        ImageFormat::Jpeg,
        ImageFormat::WebP,
        ImageFormat::Gif,
        ImageFormat::Bmp,
        ImageFormat::Tiff,
    ] {
        let source = if format == ImageFormat::WebP || format == ImageFormat::Gif {
            DynamicImage::ImageRgba8(sample().to_rgba8())
        } else {
            sample()
        };
        let bytes = encode(&source, format);
        let image = decode_rgb8(&bytes, 0, LIMIT).unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert_eq!(image.dimensions(), (8, 6), "{format:?}");
        if format == ImageFormat::Png || format == ImageFormat::Bmp {
            assert_eq!(image.get_pixel(7, 5), &Rgb([210, 200, 100]), "{format:?}");
        }
    }
}

#[test]
fn alpha_is_dropped_and_grey_expanded() {
    let rgba = RgbaImage::from_pixel(2, 2, Rgba([10, 20, 30, 0]));
    let image = decode_rgb8(&encode(&rgba.into(), ImageFormat::Png), 0, LIMIT).unwrap();
    assert_eq!(image.get_pixel(0, 0), &Rgb([10, 20, 30]));
    let grey = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(2, 2, image::Luma([77])));
    let image = decode_rgb8(&encode(&grey, ImageFormat::Png), 0, LIMIT).unwrap();
    assert_eq!(image.get_pixel(1, 1), &Rgb([77, 77, 77]));
}

#[test]
fn empty_and_unknown_bytes_are_refused() {
    let err = decode_rgb8(b"", 3, LIMIT).unwrap_err();
    assert!(
        matches!(err, ModelError::Undecodable { index: 3, .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "image 3 could not be decoded: it is empty (0 bytes)"
    );

    let err = decode_rgb8(b"this is not an image at all", 0, LIMIT).unwrap_err();
    assert!(
        err.to_string().contains("not a recognised image format"),
        "{err}"
    );
}

#[test]
fn truncated_images_are_refused() {
    let jpeg = encode(&sample(), ImageFormat::Jpeg);
    for cut in [jpeg.len() - 2, jpeg.len() / 2, 40, 3] {
        let err = decode_rgb8(&jpeg[..cut], 0, LIMIT).unwrap_err();
        assert!(
            matches!(err, ModelError::Truncated { index: 0, .. }),
            "JPEG cut at {cut}: {err}"
        );
    }
    let png = encode(&sample(), ImageFormat::Png);
    let err = decode_rgb8(&png[..png.len() - 20], 0, LIMIT).unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::Truncated { .. } | ModelError::Undecodable { .. }
        ),
        "{err}"
    );
}

#[test]
fn corrupt_data_is_refused_with_the_reason() {
    let mut png = encode(&sample(), ImageFormat::Png);
    let middle = png.len() / 2;
    png[middle..middle + 8].copy_from_slice(b"garbage!");
    let err = decode_rgb8(&png, 1, LIMIT).unwrap_err();
    assert!(err.to_string().starts_with("image 1 "), "{err}");
}

#[test]
fn a_huge_header_is_refused_before_decoding() {
    let bytes = png_claiming(50_000, 50_000);
    assert!(bytes.len() < 100);
    let started = Instant::now();
    let err = decode_rgb8(&bytes, 0, LIMIT).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "nothing was decoded"
    );
    match err {
        ModelError::TooLarge {
            width,
            height,
            pixels,
            max,
            ..
        } => assert_eq!(
            (width, height, pixels, max),
            (50_000, 50_000, 2_500_000_000, LIMIT)
        ),
        other => panic!("expected TooLarge, got {other}"),
    }
}

#[test]
fn the_pixel_limit_is_configurable() {
    let bytes = encode(&sample(), ImageFormat::Png); // 8 x 6 = 48 pixels
    assert!(decode_rgb8(&bytes, 0, 48).is_ok());
    let err = decode_rgb8(&bytes, 0, 47).unwrap_err();
    assert!(
        err.to_string().contains("over the limit of 47 pixels"),
        "{err}"
    );
}

#[test]
fn jpeg_completeness_walks_segments() {
    // SOI, APP0 (length 4), SOS (length 3), one data byte, EOI.
    let complete = [
        0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 1, 2, 0xFF, 0xDA, 0, 3, 9, 0x55, 0xFF, 0xD9,
    ];
    assert_eq!(check_jpeg_complete(&complete), Ok(()));
    assert!(check_jpeg_complete(&complete[..complete.len() - 1]).is_err());
    // An EOI inside an APP segment (a thumbnail) does not count.
    let thumbnail = [
        0xFF, 0xD8, 0xFF, 0xE1, 0, 4, 0xFF, 0xD9, 0xFF, 0xDA, 0, 3, 9, 0x55,
    ];
    assert!(check_jpeg_complete(&thumbnail).is_err());
    assert!(check_jpeg_complete(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 1]).is_err());
}
