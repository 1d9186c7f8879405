//! Variants of a photo: mirrored, flipped, turned, cropped and shrunk copies, each encoded
//! again. The calibration test (`tests/it/calibrate.rs`) and the benchmark's escalation row
//! (`bench/src/escalation.rs`) build their mixed sets of images from the test photos with
//! this one generator, so both see the same images.

use std::io::Cursor;

use image::{
    DynamicImage, GenericImageView, ImageFormat, ImageResult, PixelWithColorType,
    codecs::jpeg::JpegEncoder,
};

/// The names of [`variants`], in order.
pub const VARIANT_NAMES: [&str; 8] = [
    "original",
    "mirrored",
    "upside-down",
    "turned",
    "centre",
    "left",
    "right",
    "small",
];

/// Quality of the JPEG variants (a camera's usual setting).
pub const JPEG_QUALITY: u8 = 90;

/// The eight variants of `photo`, by name ([`VARIANT_NAMES`]): as it is, mirrored, upside
/// down, turned a quarter, its centre (the middle three fifths each way), its left and right
/// two thirds, and shrunk to a third; as 8-bit RGB.
pub fn variant_images(photo: &DynamicImage) -> Vec<(&'static str, DynamicImage)> {
    let (w, h) = (photo.width(), photo.height());
    let images = [
        photo.clone(),
        photo.fliph(),
        photo.flipv(),
        photo.rotate90(),
        photo.crop_imm(w / 5, h / 5, w * 3 / 5, h * 3 / 5),
        photo.crop_imm(0, 0, w * 2 / 3, h),
        photo.crop_imm(w / 3, 0, w * 2 / 3, h),
        photo.thumbnail(w / 3, h / 3),
    ];
    VARIANT_NAMES
        .into_iter()
        .zip(images)
        .map(|(name, image)| (name, DynamicImage::ImageRgb8(image.to_rgb8())))
        .collect()
}

/// The eight variants of the encoded photo `photo` (any format `image` reads), each encoded
/// as `format` (JPEG at quality [`JPEG_QUALITY`]), by name ([`VARIANT_NAMES`]).
///
/// # Errors
///
/// When `photo` does not decode, or a variant cannot be encoded as `format`.
pub fn variants(photo: &[u8], format: ImageFormat) -> ImageResult<Vec<(&'static str, Vec<u8>)>> {
    let photo = image::load_from_memory(photo)?;
    variant_images(&photo)
        .into_iter()
        .map(|(name, image)| Ok((name, encode(&image, format)?)))
        .collect()
}

/// `image` encoded as `format` (JPEG at quality [`JPEG_QUALITY`]).
///
/// # Errors
///
/// When `image` cannot be encoded as `format`.
pub fn encode(image: &DynamicImage, format: ImageFormat) -> ImageResult<Vec<u8>> {
    if format == ImageFormat::Jpeg {
        return encode_jpeg(image);
    }
    let mut out = Vec::new();
    image.write_to(&mut Cursor::new(&mut out), format)?;
    Ok(out)
}

/// `image` as a JPEG at quality [`JPEG_QUALITY`] (any image type: no copy into a
/// [`DynamicImage`] first).
///
/// # Errors
///
/// When `image` cannot be encoded as JPEG.
pub fn encode_jpeg<I>(image: &I) -> ImageResult<Vec<u8>>
where
    I: GenericImageView,
    I::Pixel: PixelWithColorType,
{
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut Cursor::new(&mut out), JPEG_QUALITY).encode_image(image)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo() -> Vec<u8> {
        let image =
            image::RgbImage::from_fn(60, 30, |x, y| image::Rgb([x as u8 * 4, y as u8 * 8, 9]));
        encode(&DynamicImage::ImageRgb8(image), ImageFormat::Png).unwrap()
    }

    #[test]
    fn eight_named_variants_of_the_expected_sizes() {
        let variants = variants(&photo(), ImageFormat::Png).unwrap();
        let names: Vec<_> = variants.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, VARIANT_NAMES);
        let sizes: Vec<_> = variants
            .iter()
            .map(|(_, bytes)| {
                let image = image::load_from_memory(bytes).unwrap();
                (image.width(), image.height())
            })
            .collect();
        assert_eq!(
            sizes,
            [
                (60, 30),
                (60, 30),
                (60, 30),
                (30, 60),
                (36, 18),
                (40, 30),
                (40, 30),
                (20, 10)
            ]
        );
    }

    #[test]
    fn jpeg_variants_are_jpeg_and_bad_input_is_an_error() {
        for (_, bytes) in variants(&photo(), ImageFormat::Jpeg).unwrap() {
            assert_eq!(image::guess_format(&bytes).unwrap(), ImageFormat::Jpeg);
        }
        assert!(variants(b"not an image", ImageFormat::Jpeg).is_err());
    }
}
