//! Image bytes for the tests, the fuzz seeds and the benchmark: one PNG chunk builder and the
//! PNG whose header claims any size (the model server's decode tests, the integration tests and
//! the fuzz seeds all build their hostile PNGs here), and the variants of a photo
//! ([`variants`]: the calibration test's and the escalation benchmark's mixed images), and
//! the 12-megapixel camera-like photo ([`camera`]).

pub mod camera;
mod variants;

pub use variants::{JPEG_QUALITY, VARIANT_NAMES, encode, encode_jpeg, variant_images, variants};

/// The eight bytes every PNG file starts with.
pub const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// One PNG chunk: its data's length, its kind (`IHDR`, `IDAT`, `IEND`, ...), the data, and the
/// CRC-32 of kind and data.
///
/// # Panics
///
/// If `data` is 4 GiB or more (a chunk's length is 32 bits).
pub fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let length = u32::try_from(data.len()).expect("a PNG chunk holds less than 4 GiB");
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    let mut chunk = Vec::with_capacity(12 + data.len());
    chunk.extend_from_slice(&length.to_be_bytes());
    chunk.extend_from_slice(kind);
    chunk.extend_from_slice(data);
    chunk.extend_from_slice(&crc.finalize().to_be_bytes());
    chunk
}

/// A valid-looking PNG of a few dozen bytes whose header claims `width` x `height` 8-bit RGB
/// pixels: a decompression bomb's header, without the bomb. Its one `IDAT` chunk is an empty
/// zlib stream, so decoding it would allocate `width * height * 3` bytes and then find no
/// pixels.
pub fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    // 8 bits per sample, RGB, deflate, no filter, no interlace.
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = PNG_SIGNATURE.to_vec();
    png.extend(png_chunk(b"IHDR", &ihdr));
    png.extend(png_chunk(
        b"IDAT",
        &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    png.extend(png_chunk(b"IEND", &[]));
    png
}
