use std::time::{Duration, Instant};

use image::{DynamicImage, ImageFormat, Rgb, Rgba, RgbaImage};
use tandem_test_images::{png_chunk, png_claiming};

use super::*;
use crate::preprocess::Preprocess;

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

/// `tiff` with its ImageLength entry (257) moved into the slot of ResolutionUnit (296, which
/// decoding does not need) and its own slot zeroed: tag 0 of type 0, which no TIFF has, between
/// width and height. The decoder skips such an entry; the header reader the gateway uses stops
/// there.
fn with_odd_entry(mut tiff: Vec<u8>) -> Vec<u8> {
    assert_eq!(tiff[..4], *b"II*\0", "a little-endian TIFF");
    let directory = u32::from_le_bytes(tiff[4..8].try_into().unwrap()) as usize;
    let entries = u16::from_le_bytes([tiff[directory], tiff[directory + 1]]);
    let entry = |tiff: &[u8], tag: u16| {
        (0..usize::from(entries))
            .map(|i| directory + 2 + 12 * i)
            .find(|&at| tiff[at..at + 2] == tag.to_le_bytes())
            .unwrap_or_else(|| panic!("the TIFF has no entry {tag}"))
    };
    let (height, unit) = (entry(&tiff, 257), entry(&tiff, 296));
    tiff.copy_within(height..height + 12, unit);
    tiff[height..height + 12].fill(0);
    tiff
}

#[test]
fn an_image_whose_header_the_gateway_cannot_read_is_refused_too() {
    // Found by fuzzing: this TIFF decodes, and the gateway refused it as corrupt. Whichever of
    // the two a client reaches, the answer is now the same.
    let tiff = encode(&sample(), ImageFormat::Tiff);
    let odd = with_odd_entry(tiff.clone());
    assert!(decode_rgb8(&tiff, 0, LIMIT).is_ok());
    assert!(
        ImageReader::new(Cursor::new(&odd))
            .with_guessed_format()
            .unwrap()
            .decode()
            .is_ok(),
        "the image crate alone decodes it"
    );
    match decode_rgb8(&odd, 0, LIMIT) {
        Err(ModelError::Undecodable { reason, .. }) => {
            assert!(reason.contains("header does not read"), "{reason}");
        }
        other => panic!("expected Undecodable, got {other:?}"),
    }
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

/// A model input of `side` x `side`, centre-cropped (or stretched, `crop: None`).
fn need(side: u32, crop: crate::preprocess::Crop) -> Preprocess {
    Preprocess {
        width: side,
        height: side,
        layout: crate::preprocess::Layout::Nchw,
        scaling: crate::preprocess::Scaling::Affine {
            scale: 1.0,
            offset: 0.0,
        },
        crop,
    }
}

/// `tests/data/chelsea.jpg` upscaled to `width` x `height`, as a quality-90 JPEG.
fn big_jpeg(width: u32, height: u32) -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/chelsea.jpg");
    let photo = decode_rgb8(&std::fs::read(path).unwrap(), 0, LIMIT).unwrap();
    let mut big =
        fast_image_resize::images::Image::new(width, height, fast_image_resize::PixelType::U8x3);
    fast_image_resize::Resizer::new()
        .resize(&photo, &mut big, None)
        .unwrap();
    let big = RgbImage::from_raw(width, height, big.into_vec()).unwrap();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&big)
        .unwrap();
    jpeg
}

#[test]
fn the_scale_is_the_smallest_that_covers_the_crop() {
    use crate::preprocess::Crop;
    let jpeg = big_jpeg(4000, 3000);
    // Centre square 3000: 375 at 1/8, 750 at 1/4, 1500 at 1/2; twice the input side is needed.
    assert_eq!(scale_for(&jpeg, &need(187, Crop::Center)), Scale::new(8));
    assert_eq!(scale_for(&jpeg, &need(224, Crop::Center)), Scale::new(4));
    assert_eq!(scale_for(&jpeg, &need(260, Crop::Center)), Scale::new(4));
    assert_eq!(scale_for(&jpeg, &need(400, Crop::Center)), Scale::new(2));
    assert_eq!(scale_for(&jpeg, &need(750, Crop::Center)), Scale::new(2));
    assert_eq!(scale_for(&jpeg, &need(751, Crop::Center)), Scale::FULL);
    // Not cropped: the shorter side decides too (3000 / 4 = 750 < 2 x 380).
    assert_eq!(scale_for(&jpeg, &need(375, Crop::None)), Scale::new(4));
    assert_eq!(scale_for(&jpeg, &need(380, Crop::None)), Scale::new(2));
    // Other formats are never scaled.
    let png = encode(&sample(), ImageFormat::Png);
    assert_eq!(scale_for(&png, &need(1, Crop::Center)), Scale::FULL);
    assert_eq!(Scale::new(8).of(4000, 3000), (500, 375));
    assert_eq!(Scale::new(3), Scale::FULL);
}

#[test]
fn a_big_jpeg_is_decoded_at_a_reduced_scale_within_the_same_limits() {
    use crate::preprocess::Crop;
    let jpeg = big_jpeg(4000, 3000);
    for side in [224, 260] {
        let need = need(side, Crop::Center);
        let image = decode_rgb8_for(&jpeg, 0, LIMIT, &need).unwrap();
        assert_eq!(image.dimensions(), (1000, 750), "1/4 for {side}");
        assert!(image.width().min(image.height()) >= 2 * side);
        // The same pixels as a full decode, shrunk: the centre is the cat's colours.
        let full = decode_rgb8(&jpeg, 0, LIMIT).unwrap();
        assert_eq!(full.dimensions(), (4000, 3000));
        let (a, b) = (image.get_pixel(500, 375).0, full.get_pixel(2000, 1500).0);
        assert!(
            a.iter().zip(b).all(|(x, y)| x.abs_diff(y) < 40),
            "{a:?} {b:?}"
        );
    }
    // The pixel limit is the full size's, checked from the header as before.
    let need = need(224, Crop::Center);
    assert!(decode_rgb8_for(&jpeg, 0, 12_000_000, &need).is_ok());
    match decode_rgb8_for(&jpeg, 2, 11_999_999, &need).unwrap_err() {
        ModelError::TooLarge {
            index,
            width,
            height,
            pixels,
            max,
        } => assert_eq!(
            (index, width, height, pixels, max),
            (2, 4000, 3000, 12_000_000, 11_999_999)
        ),
        other => panic!("expected TooLarge, got {other}"),
    }
}

#[test]
fn a_truncated_big_jpeg_is_refused_as_truncated() {
    let jpeg = big_jpeg(4000, 3000);
    let need = need(224, crate::preprocess::Crop::Center);
    for cut in [jpeg.len() - 2, jpeg.len() / 2, 1000] {
        let err = decode_rgb8_for(&jpeg[..cut], 0, LIMIT, &need).unwrap_err();
        assert!(
            matches!(err, ModelError::Truncated { index: 0, .. }),
            "cut at {cut}: {err}"
        );
    }
}

#[test]
fn grey_and_colour_jpegs_take_the_scaled_path_and_bad_headers_fall_back() {
    let colour = big_jpeg(1600, 1200);
    assert!(jpeg::decodes_scaled(&colour, Scale::new(8)));
    let grey = DynamicImage::ImageRgb8(decode_rgb8(&colour, 0, LIMIT).unwrap()).to_luma8();
    let grey = encode(&DynamicImage::ImageLuma8(grey), ImageFormat::Jpeg);
    assert!(jpeg::decodes_scaled(&grey, Scale::new(4)));
    let need = need(224, crate::preprocess::Crop::Center);
    let image = decode_rgb8_for(&grey, 0, LIMIT, &need).unwrap();
    assert_eq!(
        image.dimensions(),
        (800, 600),
        "1/2: 1/4 would leave 300 < 2 x 224"
    );
    let p = image.get_pixel(400, 300).0;
    assert!(p[0] == p[1] && p[1] == p[2], "grey stays grey: {p:?}");
    // libjpeg's fatal errors (here a frame header claiming 0 x 0) unwind inside the `mozjpeg`
    // crate: they end as "not scaled", never as a panic out of the decoder.
    let mut broken = colour.clone();
    let sof = broken
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("a baseline frame header");
    broken[sof + 5..sof + 9].fill(0);
    assert!(!jpeg::decodes_scaled(&broken, Scale::new(8)));
    assert_eq!(scale_for(&broken, &need), Scale::FULL);
    assert!(decode_rgb8_for(&broken, 0, LIMIT, &need).is_err());
}

/// The 12-megapixel decode, full against scaled (1/4 for a 224 x 224 input): run with
/// `cargo test -p tandem-model-server --lib -- --ignored --nocapture scaled_decode_time`.
#[test]
#[ignore = "a timing, not a check"]
fn scaled_decode_time() {
    let jpeg = big_jpeg(4000, 3000);
    let need = need(224, crate::preprocess::Crop::Center);
    let median = |f: &dyn Fn()| {
        let mut times: Vec<Duration> = (0..7)
            .map(|_| {
                let started = Instant::now();
                f();
                started.elapsed()
            })
            .collect();
        times.sort();
        times[3]
    };
    let full = median(&|| drop(decode_rgb8(&jpeg, 0, LIMIT).unwrap()));
    let scaled = median(&|| drop(decode_rgb8_for(&jpeg, 0, LIMIT, &need).unwrap()));
    let walk = median(&|| {
        std::hint::black_box(markers::check(std::hint::black_box(&jpeg)).unwrap());
    });
    eprintln!(
        "12 MP JPEG ({} bytes): full {full:?}, scaled (1/4) {scaled:?}, {:.1}x; marker walk {walk:?}",
        jpeg.len(),
        full.as_secs_f64() / scaled.as_secs_f64()
    );
}

/// A `width` x `height` progressive JPEG written by libjpeg-turbo (as the `mozjpeg` crate sets
/// it up: its usual progressive script).
fn progressive_jpeg(width: u32, height: u32) -> Vec<u8> {
    let pixels = RgbImage::from_fn(width, height, |x, y| {
        Rgb([(x * 3) as u8, (y * 5) as u8, 90])
    });
    let mut compress = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
    compress.set_size(width as usize, height as usize);
    compress.set_progressive_mode();
    let mut started = compress.start_compress(Vec::new()).unwrap();
    started.write_scanlines(pixels.as_raw()).unwrap();
    started.finish().unwrap()
}

#[test]
fn a_progressive_jpeg_decodes_and_one_with_too_many_scans_is_refused_before_decoding() {
    let jpeg = progressive_jpeg(64, 48);
    let scans = markers::check(&jpeg).unwrap();
    assert!((2..=MAX_SCANS).contains(&scans), "{scans} scans");
    let image = decode_rgb8(&jpeg, 0, 1 << 20).unwrap();
    assert_eq!(image.dimensions(), (64, 48));

    // The same file with its last scan repeated up to the limit still decodes; one more and
    // it is refused, saying why.
    let body = &jpeg[..jpeg.len() - 2]; // without EOI
    let last_scan = &body[body.windows(2).rposition(|w| w == [0xFF, 0xDA]).unwrap()..];
    let with_scans =
        |total: usize| [body, &last_scan.repeat(total - scans), &[0xFF, 0xD9]].concat();
    let at_limit = with_scans(MAX_SCANS);
    assert_eq!(markers::check(&at_limit), Ok(MAX_SCANS));
    assert_eq!(
        decode_rgb8(&at_limit, 0, 1 << 20).unwrap().dimensions(),
        (64, 48)
    );
    let over = with_scans(MAX_SCANS + 1);
    match decode_rgb8(&over, 3, 1 << 20) {
        Err(ModelError::Undecodable { index: 3, reason }) => {
            assert!(
                reason.contains(&format!("more than {MAX_SCANS} scans")),
                "{reason}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}
