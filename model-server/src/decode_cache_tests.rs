//! The decode cache: sharing, failures, the budget, and the scale as part of the key.

use super::*;
use crate::preprocess::{Crop, Layout, Scaling};

/// A model input of `side` x `side`, centre-cropped.
const fn need(side: u32) -> Preprocess {
    Preprocess {
        width: side,
        height: side,
        layout: Layout::Nchw,
        scaling: Scaling::Affine {
            scale: 1.0,
            offset: 0.0,
        },
        crop: Crop::Center,
    }
}

const NEED: Preprocess = need(2);

fn png(width: u32, height: u32, shade: u8) -> Bytes {
    let image = RgbImage::from_pixel(width, height, image::Rgb([shade, 0, 0]));
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Png).unwrap();
    Bytes::from(out.into_inner())
}

#[test]
fn the_same_bytes_are_decoded_once() {
    let cache = DecodeCache::new(1 << 20);
    let encoded = png(8, 8, 10);
    let first = cache.decode(&encoded, 0, 1000, &NEED).unwrap();
    // Another buffer with the same bytes, as a second request would bring.
    let again = cache
        .decode(&Bytes::from(encoded.to_vec()), 1, 1000, &NEED)
        .unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    let other = cache.decode(&png(8, 8, 20), 0, 1000, &NEED).unwrap();
    assert!(!Arc::ptr_eq(&first, &other));
    assert_eq!(other.get_pixel(0, 0).0, [20, 0, 0]);
}

#[test]
fn failures_are_not_shared_and_name_their_own_image() {
    let cache = DecodeCache::new(1 << 20);
    let junk = Bytes::from_static(b"not an image at all");
    for index in [0, 3] {
        match cache.decode(&junk, index, 1000, &NEED) {
            Err(ModelError::Undecodable { index: got, .. }) => assert_eq!(got, index),
            other => panic!("{other:?}"),
        }
    }
    assert!(
        cache.inner.lock().unwrap().entries.is_empty(),
        "junk is not held"
    );
}

#[test]
fn the_budget_bounds_what_is_kept() {
    // Room for five 8 x 8 images (192 bytes of pixels each, plus their encoded bytes); a
    // 16 x 16 image (768 bytes of pixels, over a quarter of the budget) is never kept.
    let images: Vec<Bytes> = (0..8).map(|i| png(8, 8, i)).collect();
    let largest = images.iter().map(Bytes::len).max().unwrap();
    let smallest = images.iter().map(Bytes::len).min().unwrap();
    let budget = 5 * (192 + largest) + 10;
    assert!(6 * (192 + smallest) > budget, "six never fit");
    let cache = DecodeCache::new(budget);
    for image in &images {
        cache.decode(image, 0, 1000, &NEED).unwrap();
    }
    let inner = cache.inner.lock().unwrap();
    assert!(inner.bytes <= budget, "{}", inner.bytes);
    assert_eq!(inner.entries.len(), 5);
    drop(inner);
    let first = cache.decode(&images[0], 0, 1000, &NEED).unwrap();
    let again = cache.decode(&images[0], 0, 1000, &NEED).unwrap();
    assert!(Arc::ptr_eq(&first, &again), "decoded again, and kept");
    let big = png(16, 16, 1);
    assert!(768 > budget / 4);
    let a = cache.decode(&big, 0, 1000, &NEED).unwrap();
    let b = cache.decode(&big, 0, 1000, &NEED).unwrap();
    assert!(!Arc::ptr_eq(&a, &b));
}

#[test]
fn a_zero_budget_turns_it_off() {
    let cache = DecodeCache::new(0);
    let encoded = png(4, 4, 1);
    let a = cache.decode(&encoded, 0, 1000, &NEED).unwrap();
    let b = cache.decode(&encoded, 0, 1000, &NEED).unwrap();
    assert!(!Arc::ptr_eq(&a, &b));
    assert!(cache.inner.lock().unwrap().entries.is_empty());
}

#[test]
fn a_model_never_gets_a_smaller_decode_than_it_needs() {
    // 256 x 200: the centre square is 200, 25 at 1/8 (twice 12), 50 at 1/4 (twice 25).
    let image = RgbImage::from_fn(256, 200, |x, y| image::Rgb([x as u8, y as u8, 90]));
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    let jpeg = Bytes::from(out.into_inner());
    let cache = DecodeCache::new(1 << 20);

    let small = cache.decode(&jpeg, 0, 100_000, &need(12)).unwrap();
    assert_eq!(small.dimensions(), (32, 25), "1/8");
    let large = cache.decode(&jpeg, 0, 100_000, &need(20)).unwrap();
    assert_eq!(large.dimensions(), (64, 50), "1/4, not the 1/8 decode");
    assert!(!Arc::ptr_eq(&small, &large));
    // Each scale is kept and shared with the next model of the same need...
    let again = cache.decode(&jpeg, 1, 100_000, &need(10)).unwrap();
    assert!(Arc::ptr_eq(&small, &again), "10 is covered at 1/8 too");
    let again = cache.decode(&jpeg, 1, 100_000, &need(25)).unwrap();
    assert!(Arc::ptr_eq(&large, &again));
    // ... and a need no scale covers gets every pixel.
    let full = cache.decode(&jpeg, 0, 100_000, &need(101)).unwrap();
    assert_eq!(full.dimensions(), (256, 200));
    assert_eq!(cache.inner.lock().unwrap().entries.len(), 3);
}
