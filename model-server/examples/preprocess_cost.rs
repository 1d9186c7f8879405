//! What preprocessing costs for a 12-megapixel JPEG, stage by stage.
//!
//! Makes 4000 x 3000 JPEGs (quality 90) by upscaling `tests/data/astronaut.jpg`: one as is
//! (smooth, small file), one with added grain (a camera photo's file size), both with full-size
//! chroma (4:4:4, what the `image` crate writes and the benchmark sends), and the grainy one
//! again with half-size chroma (4:2:0, what phone cameras write). Then times decode, centre
//! crop + resize, and scale + layout for both vendored models' input sizes.
//!
//! ```text
//! cargo run --release --example preprocess_cost -p tandem-model-server [-- ITERATIONS]
//! ```

use std::{
    path::Path,
    time::{Duration, Instant},
};

use fast_image_resize::Resizer;
use image::{ImageFormat, RgbImage};
use tandem_model_server::{
    decode::decode_rgb8,
    preprocess::{Crop, Layout, Preprocess, Scaling},
};
use tandem_test_images::{camera, encode_jpeg};

fn main() -> anyhow::Result<()> {
    let iterations: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(10);
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/astronaut.jpg");
    let photo = image::open(&source)?.to_rgb8();
    // The benchmark's `12mp` photo is `grainy` as a 4:4:4 JPEG.
    let smooth = camera::upscaled(&photo);
    let mut grainy = smooth.clone();
    camera::add_grain(&mut grainy);
    println!("{iterations} iterations, one thread; median (min) per image");
    let variants = [
        ("smooth, 4:4:4", encode_jpeg(&smooth)?),
        ("grainy, 4:4:4", encode_jpeg(&grainy)?),
        ("grainy, 4:2:0", jpeg_420(&grainy)?),
    ];
    for (name, jpeg) in variants {
        debug_assert_eq!(image::guess_format(&jpeg)?, ImageFormat::Jpeg);
        println!(
            "\n{name} {}x{} JPEG, quality 90, {:.1} MB",
            camera::SIZE.0,
            camera::SIZE.1,
            jpeg.len() as f64 / 1e6
        );
        measure(&jpeg, iterations)?;
    }
    Ok(())
}

/// Chroma at half size each way, the usual camera layout (libjpeg's encoder, through `mozjpeg`,
/// with its baseline defaults rather than mozjpeg's slow progressive ones).
fn jpeg_420(image: &RgbImage) -> anyhow::Result<Vec<u8>> {
    let mut compress = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
    compress.set_fastest_defaults();
    compress.set_size(image.width() as usize, image.height() as usize);
    compress.set_quality(90.0);
    compress.set_chroma_sampling_pixel_sizes((2, 2), (2, 2));
    let mut started = compress.start_compress(Vec::new())?;
    started.write_scanlines(image.as_raw())?;
    Ok(started.finish()?)
}

fn measure(jpeg: &[u8], iterations: usize) -> anyhow::Result<()> {
    let decode = time(iterations, || decode_rgb8(jpeg, 0, 40_000_000).map(drop))?;
    println!("decode to RGB8:                {}", show(&decode));
    let decoded = decode_rgb8(jpeg, 0, 40_000_000)?;
    for side in [224, 260] {
        let preprocess = Preprocess {
            width: side,
            height: side,
            layout: Layout::Nchw,
            scaling: Scaling::Affine {
                scale: 1.0 / 128.0,
                offset: -127.0 / 128.0,
            },
            crop: Crop::Center,
        };
        let mut resizer = Resizer::new();
        let resize = time(iterations, || {
            preprocess.resize(&decoded, &mut resizer).map(drop)
        })?;
        let rgb = preprocess.resize(&decoded, &mut resizer)?;
        let mut out = vec![0.0; preprocess.image_len()];
        let scale = time(iterations, || {
            preprocess.write_tensor(&rgb, &mut out);
            anyhow::Ok(())
        })?;
        let whole = time(iterations, || {
            preprocess.prepare_encoded(jpeg, 0, 40_000_000).map(drop)
        })?;
        println!("{side}x{side} centre crop + resize: {}", show(&resize));
        println!("{side}x{side} scale + NCHW:         {}", show(&scale));
        println!("{side}x{side} all (prepare_encoded): {}", show(&whole));
    }
    Ok(())
}

fn time<E>(iterations: usize, mut f: impl FnMut() -> Result<(), E>) -> Result<Vec<Duration>, E> {
    f()?; // warm-up
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        f()?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times)
}

fn show(times: &[Duration]) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "{:8.2} ms ({:.2} ms)",
        ms(times[times.len() / 2]),
        ms(times[0])
    )
}
