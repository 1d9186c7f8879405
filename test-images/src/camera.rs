//! A 12-megapixel photo like a phone camera's, made from a small one: the benchmark's `12mp`
//! input and `model-server/examples/preprocess_cost.rs` both build it here, so both measure the
//! same image.

use image::{RgbImage, imageops::FilterType};

/// A phone camera's 12 megapixels: 4000 x 3000.
pub const SIZE: (u32, u32) = (4000, 3000);

/// `photo` upscaled to [`SIZE`]: smooth, so its JPEG is small and quick to decode.
pub fn upscaled(photo: &RgbImage) -> RgbImage {
    image::imageops::resize(photo, SIZE.0, SIZE.1, FilterType::Triangle)
}

/// Adds grain (±12 per channel, the same every time) so that the JPEG's size and decoding cost
/// are a camera photo's, not an upscaled one's.
pub fn add_grain(image: &mut RgbImage) {
    // xorshift64: reproducible, and no random-number crate for this.
    let mut state = 0x2545_F491_4F6C_DD1D_u64;
    for value in image.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *value = value.saturating_add_signed((state % 25) as i8 - 12);
    }
}
