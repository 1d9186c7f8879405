//! The seed corpus, `fuzz/seeds/<target>/`, made from a photo in `tests/data`: a 24x16 and a
//! 64x48 thumbnail of `chelsea.jpg` in every supported format plus hand-made hostile files (a
//! truncated JPEG, a PNG header claiming 50000x50000), each wrapped in the framing its target
//! reads (see the harness modules). Small on purpose, so the fuzzer runs fast. The committed
//! files are written by `cargo test -p tandem-tests --test it write_fuzz_seeds -- --ignored`
//! (tests/it/fuzz_regressions.rs).

use std::io::Cursor;

use base64::Engine as _;
use image::{DynamicImage, ImageFormat, imageops::FilterType};

use tandem_test_images::png_claiming;

use crate::{CONTENT_TYPES, PREPROCESS_HEADER};

/// One seed: its target, its file name, its bytes.
#[derive(Debug)]
pub struct Seed {
    pub target: &'static str,
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Every target's seeds, from `photo` (the encoded `tests/data/chelsea.jpg`).
pub fn all(photo: &[u8]) -> image::ImageResult<Vec<Seed>> {
    let photo = image::load_from_memory(photo)?;
    let mut seeds = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        seeds.push(Seed {
            target,
            name: name.to_owned(),
            bytes,
        });
    };
    let small = photo.resize_exact(24, 16, FilterType::Triangle);
    let medium = photo.resize_exact(64, 48, FilterType::Triangle);
    let dot = photo.resize_exact(1, 1, FilterType::Triangle);

    let mut images: Vec<(&str, Vec<u8>)> = vec![
        ("small.jpg", encode(&small, ImageFormat::Jpeg)?),
        ("medium.jpg", encode(&medium, ImageFormat::Jpeg)?),
        ("small.png", encode(&small, ImageFormat::Png)?),
        (
            "small-grey.png",
            encode(&small.grayscale(), ImageFormat::Png)?,
        ),
        (
            "small-rgba16.png",
            encode(
                &DynamicImage::ImageRgba16(small.to_rgba16()),
                ImageFormat::Png,
            )?,
        ),
        ("small.webp", encode(&small, ImageFormat::WebP)?),
        (
            "small.gif",
            encode(&small.to_rgba8().into(), ImageFormat::Gif)?,
        ),
        ("small.bmp", encode(&small, ImageFormat::Bmp)?),
        ("small.tiff", encode(&small, ImageFormat::Tiff)?),
        ("dot.png", encode(&dot, ImageFormat::Png)?),
        ("bomb.png", png_claiming(50_000, 50_000)),
    ];
    let jpeg = encode(&small, ImageFormat::Jpeg)?;
    images.push(("truncated.jpg", jpeg[..jpeg.len() * 2 / 3].to_vec()));

    // decode_preprocess: settings, pixel-limit choice, image. Settings vary from seed to seed.
    for (i, (name, bytes)) in images.iter().enumerate() {
        let flags = (i % 8) as u8;
        let mut seed = vec![flags, 7, 5, 0x80, 0x40, 0x20, 0x10, 0x08, 0x04];
        assert_eq!(seed.len(), PREPROCESS_HEADER);
        seed.push(4); // 2^20 pixels
        seed.extend_from_slice(bytes);
        add("decode_preprocess", name, seed);
    }

    // preprocess_pixels: settings, width, height, pixel bytes.
    let rgb = small.to_rgb8().into_raw();
    let pixel_seeds: [(&str, u8, u16, u16, &[u8]); 4] = [
        ("photo-24x16", 0, 23, 15, &rgb),
        ("tall-one-colour", 2, 0, 599, &[200, 30, 90]),
        ("wide-nhwc-uncropped", 5, 799, 2, &rgb[..96]),
        ("model-size", 11, 639, 479, &rgb),
    ];
    for (name, flags, width, height, pixels) in pixel_seeds {
        let mut seed = vec![flags, 7, 5, 0, 4, 0, 0xf8, 1, 2];
        seed.extend_from_slice(&width.to_le_bytes());
        seed.extend_from_slice(&height.to_le_bytes());
        seed.extend_from_slice(pixels);
        add("preprocess_pixels", name, seed);
    }

    // gateway_extract: content-type choice, body.
    let content_type = |wanted: Option<&str>| -> u8 {
        CONTENT_TYPES
            .iter()
            .position(|c| *c == wanted)
            .map(|i| i as u8)
            .unwrap_or_else(|| panic!("no content type {wanted:?}"))
    };
    let find = |name: &str| -> Vec<u8> {
        images
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| b.clone())
            .unwrap_or_default()
    };
    let png = find("small.png");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    let wrapped = b64
        .as_bytes()
        .chunks(60)
        .map(|l| std::str::from_utf8(l).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\\n");
    let multipart = |preamble: &str, name: &str, file: Option<&str>, body: &[u8]| -> Vec<u8> {
        let file = file
            .map(|f| format!("; filename=\"{f}\""))
            .unwrap_or_default();
        let mut out = format!(
            "--XyZ\r\n{preamble}Content-Disposition: form-data; name=\"{name}\"{file}\r\n\
             Content-Type: image/png\r\n\r\n"
        )
        .into_bytes();
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n--XyZ--\r\n");
        out
    };
    let gateway_seeds: Vec<(&str, u8, Vec<u8>)> = vec![
        ("raw-png", content_type(Some("image/png")), png.clone()),
        (
            "raw-jpeg",
            content_type(Some("image/jpeg")),
            find("small.jpg"),
        ),
        (
            "raw-webp",
            content_type(Some("IMAGE/WEBP")),
            find("small.webp"),
        ),
        (
            "raw-gif-octets",
            content_type(Some("application/octet-stream")),
            find("small.gif"),
        ),
        (
            "raw-bomb",
            content_type(Some("image/png")),
            find("bomb.png"),
        ),
        (
            "raw-over-64-pixels",
            content_type(Some("image/png")) | 0x80,
            png.clone(),
        ),
        ("no-content-type", content_type(None), png.clone()),
        (
            "text-plain",
            content_type(Some("text/plain")),
            b"hello".to_vec(),
        ),
        (
            "json",
            content_type(Some("application/json")),
            format!("{{\"image_data\": \"{b64}\"}}").into_bytes(),
        ),
        (
            "json-data-url-lines",
            content_type(Some("application/json; charset=utf-8")),
            format!("{{\"image_data\": \"data:image/png;base64,{wrapped}\"}}").into_bytes(),
        ),
        (
            "json-missing-field",
            content_type(Some("application/json")),
            br#"{"image": 1}"#.to_vec(),
        ),
        (
            "multipart-image",
            content_type(Some("multipart/form-data; boundary=XyZ")),
            multipart("", "image", Some("cat.png"), &png),
        ),
        (
            "multipart-quoted-fallback",
            content_type(Some("multipart/form-data; boundary=\"XyZ\"")),
            multipart("", "upload", Some("cat.png"), &png),
        ),
        (
            "multipart-no-boundary",
            content_type(Some("multipart/form-data")),
            multipart("", "image", None, &png),
        ),
        (
            "custom-content-type",
            0x7f,
            [&b"image/bmp; q=1\n"[..], &find("small.bmp")].concat(),
        ),
    ];
    for (name, selector, body) in gateway_seeds {
        add("gateway_extract", name, [&[selector][..], &body].concat());
    }

    // oip_request: see `tandem_fuzz::oip_request` for the order of the fields.
    let dot = find("dot.png");
    let chunk = |bytes: &[u8]| -> Vec<u8> {
        let len = u8::try_from(bytes.len()).unwrap_or_else(|_| panic!("{} bytes", bytes.len()));
        [&[len][..], bytes].concat()
    };
    let floats = |n: usize| -> Vec<u8> {
        (0..n)
            .flat_map(|i| (i as f32 * 0.5 - 1.0).to_le_bytes())
            .collect()
    };
    let oip_seeds: Vec<(&str, Vec<u8>)> = vec![
        (
            "images-in-contents",
            [
                &[0, 1, 0, 0, 1, 2, 2, 2][..],
                &chunk(&dot),
                &chunk(&dot),
                &[0, 0, 0],
                &floats(6),
            ]
            .concat(),
        ),
        (
            "images-in-raw-classification",
            [
                &[0, 1, 0, 0, 2, 2, 1, 0, 1][..],
                &chunk(&tandem_proto::encode_raw_bytes([&dot[..], &dot[..]])),
                &[0, 1, 2],
            ]
            .concat(),
        ),
        (
            "nchw-tensor-top-k-on-output",
            [
                &[0, 1, 1, 1, 4, 1, 3, 2, 2, 3, 12][..],
                &floats(12),
                &[0, 1, 0, 1, 5, 0],
                &floats(3),
            ]
            .concat(),
        ),
        (
            "nhwc-tensor-raw",
            [
                &[1, 1, 1, 1, 4, 2, 2, 2, 3, 0, 1, 96][..],
                &floats(24),
                &[0, 0],
            ]
            .concat(),
        ),
        (
            "two-inputs",
            vec![0, 2, 0, 0, 1, 1, 0, 1, 1, 4, 1, 3, 2, 2, 0, 0, 0, 0],
        ),
    ];
    for (name, seed) in oip_seeds {
        add("oip_request", name, seed);
    }
    Ok(seeds)
}

fn encode(image: &DynamicImage, format: ImageFormat) -> image::ImageResult<Vec<u8>> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format)?;
    Ok(out.into_inner())
}
