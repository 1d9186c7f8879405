//! `decode_preprocess` and `preprocess_pixels`: the model server's decoding, cropping, resizing
//! and scaling into the model's tensor.

use bytes::Bytes;
use tandem_gateway::image_input;
use tandem_model_server::{
    decode,
    error::ModelError,
    preprocess::{Crop, Layout, Preprocess, Scaling},
};

use crate::{Outcome, Reader, variant};

/// Pixel limits `decode_preprocess` picks from.
pub const MAX_PIXELS: [u64; 6] = [1, 64, 4096, 1 << 16, 1 << 20, 1 << 22];

/// Model-server decoding and preprocessing: [`PREPROCESS_HEADER`] bytes of preprocessing
/// settings, one byte picking the pixel limit from [`MAX_PIXELS`], then the encoded image.
/// Decoding either succeeds within the limit (and then the gateway accepts the same bytes) or
/// fails with a client error; a decoded image is then prepared and checked.
pub fn decode_preprocess(data: &[u8]) -> Outcome {
    let mut input = Reader(data);
    let preprocess = preprocess_settings(&mut input);
    let max_pixels = MAX_PIXELS[usize::from(input.u8()) % MAX_PIXELS.len()];
    let encoded = input.rest();
    match decode::decode_rgb8(encoded, 7, max_pixels) {
        Ok(image) => {
            let pixels = u64::from(image.width()) * u64::from(image.height());
            assert!(
                (1..=max_pixels).contains(&pixels),
                "decoded {pixels} pixels"
            );
            if let Err(error) = image_input::check(Bytes::copy_from_slice(encoded), max_pixels) {
                panic!("the model server decodes this image but the gateway refuses it: {error:?}");
            }
            check_prepared(&preprocess, &image);
            let prepared = preprocess
                .prepare_encoded(encoded, 7, max_pixels)
                .expect("prepare_encoded fails on an image that decodes");
            assert_eq!(prepared.len(), preprocess.image_len());
            Ok(())
        }
        Err(error) => {
            let _ = error.to_string();
            assert!(
                matches!(
                    error,
                    ModelError::Undecodable { index: 7, .. }
                        | ModelError::Truncated { index: 7, .. }
                        | ModelError::TooLarge { index: 7, .. }
                ),
                "decoding failed with {error:?}, not a client error for image 7"
            );
            Err(variant(&error))
        }
    }
}

/// Largest source image `preprocess_pixels` builds.
const MAX_SOURCE_PIXELS: u32 = 1 << 16;

/// Preprocessing alone, on odd shapes decoding rarely yields: [`PREPROCESS_HEADER`] bytes of
/// settings, width and height (two bytes each, 1 to 1024, at most 2^16 pixels), then pixel bytes
/// (repeated to fill the image; none: black).
pub fn preprocess_pixels(data: &[u8]) -> Outcome {
    let mut input = Reader(data);
    let preprocess = preprocess_settings(&mut input);
    let width = 1 + u32::from(input.u16()) % 1024;
    let height = (1 + u32::from(input.u16()) % 1024).min(MAX_SOURCE_PIXELS / width);
    let pixels = input.rest();
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        let at = (y as usize * width as usize + x as usize) * 3;
        image::Rgb(std::array::from_fn(|c| {
            pixels
                .get((at + c) % pixels.len().max(1))
                .copied()
                .unwrap_or(0)
        }))
    });
    check_prepared(&preprocess, &image);
    Ok(())
}

/// Bytes of preprocessing settings at the start of `decode_preprocess` and `preprocess_pixels`.
pub const PREPROCESS_HEADER: usize = 9;

/// Settings from [`PREPROCESS_HEADER`] bytes: flags (bit 0: NHWC, bit 1: mean/std scaling,
/// bit 2: no crop, bit 3: a real model's size, 200 to 327, instead of 1 to 64), width, height,
/// then six scaling bytes (mean and std per channel, or scale and offset).
pub fn preprocess_settings(input: &mut Reader<'_>) -> Preprocess {
    let flags = input.u8();
    let side = |b: u8| {
        if flags & 8 != 0 {
            200 + u32::from(b) / 2
        } else {
            1 + u32::from(b) % 64
        }
    };
    let width = side(input.u8());
    let height = side(input.u8());
    let s: [u8; 6] = std::array::from_fn(|_| input.u8());
    let scaling = if flags & 2 != 0 {
        Scaling::MeanStd {
            mean: [0, 1, 2].map(|c| f32::from(s[c]) / 255.0),
            std: [3, 4, 5].map(|c| (1.0 + f32::from(s[c])) / 128.0),
        }
    } else {
        Scaling::Affine {
            scale: f32::from(i16::from_le_bytes([s[0], s[1]])) / 1024.0,
            offset: f32::from(i16::from_le_bytes([s[2], s[3]])) / 64.0,
        }
    };
    Preprocess {
        width,
        height,
        layout: if flags & 1 != 0 {
            Layout::Nhwc
        } else {
            Layout::Nchw
        },
        scaling,
        crop: if flags & 4 != 0 {
            Crop::None
        } else {
            Crop::Center
        },
    }
}

/// Prepares `image` in both layouts and checks the tensors against the resized pixels: each
/// value is `scaling.apply` of its pixel, NCHW is the transpose of NHWC, a one-colour image
/// stays (within rounding) one colour.
fn check_prepared(preprocess: &Preprocess, image: &image::RgbImage) {
    let (width, height) = image.dimensions();
    let region = preprocess.region(width, height);
    assert!(
        region.width >= 1
            && region.height >= 1
            && region.left + region.width <= width
            && region.top + region.height <= height,
        "{region:?} is not inside a {width}x{height} image"
    );
    let rgb = preprocess
        .resize(image, &mut Default::default())
        .expect("resizing failed");
    let plane = preprocess.width as usize * preprocess.height as usize;
    assert_eq!(rgb.len(), plane * 3);
    if let Some(first) = image.pixels().next()
        && image.pixels().all(|p| p == first)
    {
        for (i, &value) in rgb.iter().enumerate() {
            assert!(
                value.abs_diff(first.0[i % 3]) <= 1,
                "a one-colour {width}x{height} image {:?} resized to {value} at {i}",
                first.0
            );
        }
    }
    let layouts = [Layout::Nhwc, Layout::Nchw].map(|layout| {
        let preprocess = Preprocess {
            layout,
            ..*preprocess
        };
        let mut out = vec![f32::NAN; preprocess.image_len()];
        preprocess
            .prepare(image, &mut Default::default(), &mut out)
            .expect("preparing failed");
        out
    });
    let [nhwc, nchw] = &layouts;
    // Every value of a small tensor; about 4096 spread over a large one (a step that is not a
    // multiple of 3 visits every channel), which keeps model-sized inputs fast enough to fuzz.
    let step = match rgb.len() / 4096 {
        0 => 1,
        n if n % 3 == 0 => n + 1,
        n => n,
    };
    for i in (0..rgb.len()).step_by(step) {
        let (x, pixel, channel) = (rgb[i], i / 3, i % 3);
        let want = preprocess.scaling.apply(channel, x);
        assert!(
            want.is_finite(),
            "scaling {:?} gave {want}",
            preprocess.scaling
        );
        assert_eq!(nhwc[i].to_bits(), want.to_bits(), "NHWC value {i}");
        assert_eq!(
            nchw[channel * plane + pixel].to_bits(),
            want.to_bits(),
            "NCHW value for pixel {pixel}, channel {channel}"
        );
    }
}
