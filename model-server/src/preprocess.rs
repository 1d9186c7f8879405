//! From RGB8 pixels to the model's input tensor: crop, resize, scale, lay out.
//!
//! Each image is cropped (centre square, or not at all), resized with `fast_image_resize`
//! (SIMD, bilinear convolution: antialiased when shrinking, as PIL's bilinear), and written
//! straight into its slot of the batch's one `f32` buffer, scaled through a per-channel lookup
//! table and laid out as NCHW or NHWC. Decoding is in `decode` (a JPEG at the smallest DCT
//! scale that still covers [`Preprocess::region`] at twice the input size); both run on tokio's
//! blocking pool.

use bytes::Bytes;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer, images::Image};
use image::RgbImage;
use serde::Deserialize;

use crate::{decode, error::ModelError};

/// Order of the input tensor's dimensions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Layout {
    /// `[batch, channels, height, width]` (PyTorch, ONNX exports of torchvision).
    #[default]
    #[serde(rename = "NCHW")]
    Nchw,
    /// `[batch, height, width, channels]` (TensorFlow, TFLite conversions).
    #[serde(rename = "NHWC")]
    Nhwc,
}

/// What part of the image is resized to the model's input size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Crop {
    /// The centred square of side `min(width, height)`, then resized (keeps the aspect ratio).
    #[default]
    Center,
    /// The whole image, stretched to the input size.
    None,
}

/// How an 8-bit value `x` becomes the model's input value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scaling {
    /// torchvision style, per channel (R, G, B): `(x / 255 - mean) / std`.
    MeanStd { mean: [f32; 3], std: [f32; 3] },
    /// One affine map for every channel: `x * scale + offset`.
    Affine { scale: f32, offset: f32 },
}

impl Scaling {
    /// The value of `x` (0..=255) in `channel` (0 = R, 1 = G, 2 = B).
    pub fn apply(&self, channel: usize, x: u8) -> f32 {
        match *self {
            Self::MeanStd { mean, std } => (f32::from(x) / 255.0 - mean[channel]) / std[channel],
            Self::Affine { scale, offset } => f32::from(x) * scale + offset,
        }
    }

    fn lookup_table(&self) -> [[f32; 256]; 3] {
        let mut table = [[0.0; 256]; 3];
        for (channel, row) in table.iter_mut().enumerate() {
            for (x, value) in (0..=u8::MAX).zip(row.iter_mut()) {
                *value = self.apply(channel, x);
            }
        }
        table
    }
}

/// A square (or whole-image) region of the source, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub left: u32,
    pub top: u32,
    pub width: u32,
    pub height: u32,
}

/// A model's preprocessing, from its `config.toml`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preprocess {
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    pub scaling: Scaling,
    pub crop: Crop,
}

impl Preprocess {
    /// Channels, height, width.
    pub fn chw(&self) -> [usize; 3] {
        [3, self.height as usize, self.width as usize]
    }

    /// Number of `f32` values one image takes in the input tensor.
    pub fn image_len(&self) -> usize {
        self.chw().iter().product()
    }

    /// The region of a `width` x `height` source that is resized.
    pub fn region(&self, width: u32, height: u32) -> Region {
        match self.crop {
            Crop::None => Region {
                left: 0,
                top: 0,
                width,
                height,
            },
            Crop::Center => {
                let side = width.min(height);
                Region {
                    left: (width - side) / 2,
                    top: (height - side) / 2,
                    width: side,
                    height: side,
                }
            }
        }
    }

    /// Crops and resizes to the model's size: RGB8, row-major, `height * width * 3` bytes.
    pub fn resize(&self, image: &RgbImage, resizer: &mut Resizer) -> Result<Vec<u8>, ModelError> {
        let region = self.region(image.width(), image.height());
        let mut dst = Image::new(self.width, self.height, PixelType::U8x3);
        let options = ResizeOptions::new()
            .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
            .crop(
                f64::from(region.left),
                f64::from(region.top),
                f64::from(region.width),
                f64::from(region.height),
            );
        resizer
            .resize(image, &mut dst, &options)
            .map_err(|e| ModelError::internal(format!("resize failed: {e}")))?;
        Ok(dst.into_vec())
    }

    /// Scales and lays out resized RGB8 pixels (`height * width * 3` bytes) into `out`
    /// (`image_len()` values).
    pub fn write_tensor(&self, rgb: &[u8], out: &mut [f32]) {
        let table = self.scaling.lookup_table();
        let plane = self.width as usize * self.height as usize;
        debug_assert_eq!(rgb.len(), plane * 3);
        debug_assert_eq!(out.len(), plane * 3);
        match self.layout {
            Layout::Nhwc => {
                for (i, (x, value)) in rgb.iter().zip(out.iter_mut()).enumerate() {
                    *value = table[i % 3][usize::from(*x)];
                }
            }
            Layout::Nchw => {
                let (red, rest) = out.split_at_mut(plane);
                let (green, blue) = rest.split_at_mut(plane);
                for (pixel, ((r, g), b)) in rgb
                    .chunks_exact(3)
                    .zip(red.iter_mut().zip(green.iter_mut()).zip(blue.iter_mut()))
                {
                    *r = table[0][usize::from(pixel[0])];
                    *g = table[1][usize::from(pixel[1])];
                    *b = table[2][usize::from(pixel[2])];
                }
            }
        }
    }

    /// Crops, resizes, scales and lays out one decoded image into `out`.
    pub fn prepare(
        &self,
        image: &RgbImage,
        resizer: &mut Resizer,
        out: &mut [f32],
    ) -> Result<(), ModelError> {
        let rgb = self.resize(image, resizer)?;
        self.write_tensor(&rgb, out);
        Ok(())
    }

    /// Decodes image `index` of a request (a JPEG at the smallest scale that still covers twice
    /// the model's input: `decode::scale_for`) and prepares its `image_len()` values.
    /// Blocking: run it on the blocking pool.
    pub fn prepare_encoded(
        &self,
        encoded: &[u8],
        index: usize,
        max_pixels: u64,
    ) -> Result<Vec<f32>, ModelError> {
        let image = decode::decode_rgb8_for(encoded, index, max_pixels, self)?;
        self.prepare_decoded(&image)
    }

    /// Prepares one decoded image's `image_len()` values. Blocking.
    pub fn prepare_decoded(&self, image: &RgbImage) -> Result<Vec<f32>, ModelError> {
        let mut out = vec![0.0; self.image_len()];
        self.prepare(image, &mut Resizer::new(), &mut out)?;
        Ok(out)
    }

    /// Decodes and prepares every image, one after another, into one batch tensor
    /// (`images.len() * image_len()` values). Blocking.
    pub fn prepare_batch(&self, images: &[Bytes], max_pixels: u64) -> Result<Vec<f32>, ModelError> {
        let mut tensor = Vec::with_capacity(images.len() * self.image_len());
        for (index, encoded) in images.iter().enumerate() {
            tensor.extend(self.prepare_encoded(encoded, index, max_pixels)?);
        }
        Ok(tensor)
    }
}

#[cfg(test)]
#[path = "preprocess_tests.rs"]
mod tests;
