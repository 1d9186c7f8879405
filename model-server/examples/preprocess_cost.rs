//! What preprocessing costs for a 12-megapixel JPEG, stage by stage.
//!
//! Makes two 4000 x 3000 JPEGs (quality 90) by upscaling `tests/data/astronaut.jpg`, one as is
//! (smooth, small file) and one with added grain (a camera photo's file size), then times
//! decode, centre crop + resize, and scale + layout for both vendored models' input sizes.
//!
//! ```text
//! cargo run --release --example preprocess_cost -p tandem-model-server [-- ITERATIONS]
//! ```

use std::{
    io::Cursor,
    path::Path,
    time::{Duration, Instant},
};

use fast_image_resize::Resizer;
use image::{ImageFormat, codecs::jpeg::JpegEncoder, imageops::FilterType};
use tandem_model_server::{
    decode::decode_rgb8,
    preprocess::{Crop, Layout, Preprocess, Scaling},
};

fn main() -> anyhow::Result<()> {
    let iterations: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(10);
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/astronaut.jpg");
    let photo = image::open(&source)?.to_rgb8();
    let smooth = image::imageops::resize(&photo, 4000, 3000, FilterType::Triangle);
    // Upscaling leaves no fine detail, so the JPEG is small and quick to decode; grain makes it
    // closer to a camera's 12-megapixel photo.
    let mut grainy = smooth.clone();
    let mut state = 0x2545_F491_4F6C_DD1D_u64;
    for value in grainy.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *value = value.saturating_add_signed((state % 25) as i8 - 12);
    }
    println!("{iterations} iterations, one thread; median (min) per image");
    for (name, image) in [("smooth", smooth), ("grainy", grainy)] {
        let mut jpeg = Vec::new();
        JpegEncoder::new_with_quality(&mut Cursor::new(&mut jpeg), 90).encode_image(&image)?;
        debug_assert_eq!(image::guess_format(&jpeg)?, ImageFormat::Jpeg);
        println!(
            "\n{name} {}x{} JPEG, quality 90, {:.1} MB",
            image.width(),
            image.height(),
            jpeg.len() as f64 / 1e6
        );
        measure(&jpeg, iterations)?;
    }
    Ok(())
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
