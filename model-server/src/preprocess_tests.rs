//! Prepared tensors checked against values computed by hand on tiny synthetic images.

use image::{ImageFormat, Rgb};

use super::*;

/// 2x2: (0,0) = (255, 0, 127), (1,0) = (1, 2, 3), (0,1) = (127, 128, 129), (1,1) = (10, 20, 30).
fn two_by_two() -> RgbImage {
    let mut image = RgbImage::new(2, 2);
    image.put_pixel(0, 0, Rgb([255, 0, 127]));
    image.put_pixel(1, 0, Rgb([1, 2, 3]));
    image.put_pixel(0, 1, Rgb([127, 128, 129]));
    image.put_pixel(1, 1, Rgb([10, 20, 30]));
    image
}

fn spec(width: u32, height: u32, layout: Layout, scaling: Scaling, crop: Crop) -> Preprocess {
    Preprocess {
        width,
        height,
        layout,
        scaling,
        crop,
    }
}

const EFFICIENTNET: Scaling = Scaling::Affine {
    scale: 1.0 / 128.0,
    offset: -127.0 / 128.0,
};
const RAW: Scaling = Scaling::Affine {
    scale: 1.0,
    offset: 0.0,
};

fn prepared(preprocess: &Preprocess, image: &RgbImage) -> Vec<f32> {
    let mut out = vec![f32::NAN; preprocess.image_len()];
    preprocess
        .prepare(image, &mut Resizer::new(), &mut out)
        .unwrap();
    out
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() < 1e-5,
            "value {i}: got {g}, want {w}\n{got:?}"
        );
    }
}

#[test]
fn nchw_with_scale_and_offset() {
    // (x - 127) / 128, planes R, G, B, each row-major.
    let out = prepared(
        &spec(2, 2, Layout::Nchw, EFFICIENTNET, Crop::Center),
        &two_by_two(),
    );
    #[rustfmt::skip]
    let want = [
        1.0, -0.984375, 0.0, -0.9140625, // R: 255, 1, 127, 10
        -0.9921875, -0.9765625, 0.0078125, -0.8359375, // G: 0, 2, 128, 20
        0.0, -0.96875, 0.015625, -0.7578125, // B: 127, 3, 129, 30
    ];
    assert_close(&out, &want);
}

#[test]
fn nhwc_with_mean_and_std() {
    // (x / 255 - 0.5) / std with std = 0.25 (R), 0.5 (G), 1.0 (B); pixels one after another.
    let scaling = Scaling::MeanStd {
        mean: [0.5, 0.5, 0.5],
        std: [0.25, 0.5, 1.0],
    };
    let out = prepared(
        &spec(2, 2, Layout::Nhwc, scaling, Crop::None),
        &two_by_two(),
    );
    #[rustfmt::skip]
    let want = [
        2.0, -1.0, -0.001_960_78, // (255, 0, 127)
        -1.984_313_7, -0.984_313_7, -0.488_235_3, // (1, 2, 3)
        -0.007_843_14, 0.003_921_57, 0.005_882_35, // (127, 128, 129)
        -1.843_137_3, -0.843_137_3, -0.382_352_9, // (10, 20, 30)
    ];
    assert_close(&out, &want);
}

#[test]
fn torchvision_mean_std_of_white() {
    let scaling = Scaling::MeanStd {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
    // (1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225
    assert!((scaling.apply(0, 255) - 2.248_908).abs() < 1e-5);
    assert!((scaling.apply(1, 255) - 2.428_571).abs() < 1e-5);
    assert!((scaling.apply(2, 255) - 2.64).abs() < 1e-5);
}

#[test]
fn centre_crop_geometry() {
    let centre = spec(224, 224, Layout::Nchw, RAW, Crop::Center);
    let region = |w, h| {
        let r = centre.region(w, h);
        (r.left, r.top, r.width, r.height)
    };
    assert_eq!(region(4000, 3000), (500, 0, 3000, 3000));
    assert_eq!(region(3000, 4000), (0, 500, 3000, 3000));
    assert_eq!(region(7, 4), (1, 0, 4, 4), "odd margins round down");
    assert_eq!(region(3, 5), (0, 1, 3, 3));
    assert_eq!(region(5, 5), (0, 0, 5, 5));
    let stretch = spec(224, 224, Layout::Nchw, RAW, Crop::None);
    assert_eq!(stretch.region(4000, 3000).width, 4000);
}

/// R = 40 * column, G = 50 * row, B = 7.
fn gradient(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        Rgb([(40 * x) as u8, (50 * y) as u8, 7])
    })
}

#[test]
fn centre_crop_keeps_the_middle_square() {
    // 6x4 landscape: columns 1..=4 survive, all rows.
    let nhwc = spec(4, 4, Layout::Nhwc, RAW, Crop::Center);
    let out = prepared(&nhwc, &gradient(6, 4));
    let reds: Vec<f32> = out.chunks(3).take(4).map(|p| p[0]).collect();
    let greens: Vec<f32> = out.chunks(3).step_by(4).map(|p| p[1]).collect();
    assert_eq!(reds, [40.0, 80.0, 120.0, 160.0]);
    assert_eq!(greens, [0.0, 50.0, 100.0, 150.0]);

    // 4x6 portrait: rows 1..=4 survive, all columns.
    let out = prepared(&nhwc, &gradient(4, 6));
    let reds: Vec<f32> = out.chunks(3).take(4).map(|p| p[0]).collect();
    let greens: Vec<f32> = out.chunks(3).step_by(4).map(|p| p[1]).collect();
    assert_eq!(reds, [0.0, 40.0, 80.0, 120.0]);
    assert_eq!(greens, [50.0, 100.0, 150.0, 200.0]);
}

#[test]
fn stretch_resize_is_bilinear_and_antialiased() {
    // Columns 0, 0, 200, 200 shrunk to 2: the triangle filter widens to 2 source pixels.
    // Output 0 is centred at 1.0: taps 0.5, 1.5, 2.5 weigh 0.75, 0.75, 0.25 -> 50 / 1.75 = 28.6.
    // Output 1 is centred at 3.0: taps 1.5, 2.5, 3.5 weigh 0.25, 0.75, 0.75 -> 300 / 1.75 = 171.4.
    let image = RgbImage::from_fn(4, 2, |x, _| Rgb([if x < 2 { 0 } else { 200 }, 0, 0]));
    let out = prepared(&spec(2, 2, Layout::Nchw, RAW, Crop::None), &image);
    let red = &out[..4];
    for (got, want) in red.iter().zip([28.6, 171.4, 28.6, 171.4]) {
        assert!((got - want).abs() <= 1.0, "got {red:?}");
    }
    assert!(out[4..].iter().all(|&v| v == 0.0), "green and blue stay 0");
}

#[test]
fn a_uniform_image_stays_uniform_at_any_size() {
    let image = RgbImage::from_pixel(37, 23, Rgb([12, 34, 56]));
    let out = prepared(&spec(5, 3, Layout::Nhwc, RAW, Crop::Center), &image);
    for pixel in out.chunks(3) {
        assert_eq!(pixel, [12.0, 34.0, 56.0]);
    }
}

fn png(image: &RgbImage) -> Bytes {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, ImageFormat::Png).unwrap();
    Bytes::from(bytes.into_inner())
}

#[test]
fn a_batch_is_prepared_image_after_image() {
    let preprocess = spec(2, 2, Layout::Nchw, EFFICIENTNET, Crop::Center);
    let second = RgbImage::from_pixel(4, 4, Rgb([255, 255, 255]));
    let tensor = preprocess
        .prepare_batch(&[png(&two_by_two()), png(&second)], 1000)
        .unwrap();
    assert_eq!(tensor.len(), 2 * 12);
    assert_close(&tensor[..12], &prepared(&preprocess, &two_by_two()));
    assert!(tensor[12..].iter().all(|&v| v == 1.0), "white is 1.0");

    let err = preprocess
        .prepare_batch(&[png(&second), Bytes::from_static(b"hello")], 1000)
        .unwrap_err();
    assert!(
        err.to_string().starts_with("image 1 could not be decoded"),
        "{err}"
    );
}
