//! The `Content-Type` of an image file: from its first bytes, else its extension.

use std::path::Path;

/// What `POST /predict` is told the body is. The file's magic bytes win over its name (a PNG
/// saved as `.jpg` is still a PNG); `application/octet-stream` when neither says, and the
/// gateway, which checks every image, has the last word.
pub fn content_type(path: &Path, head: &[u8]) -> &'static str {
    sniff(head)
        .or_else(|| by_extension(path))
        .unwrap_or("application/octet-stream")
}

/// The image format the first bytes announce (12 are enough).
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    let starts = |magic: &[u8]| head.starts_with(magic);
    if starts(b"\xFF\xD8\xFF") {
        Some("image/jpeg")
    } else if starts(b"\x89PNG\r\n\x1A\n") {
        Some("image/png")
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        Some("image/gif")
    } else if head.len() >= 12 && starts(b"RIFF") && &head[8..12] == b"WEBP" {
        Some("image/webp")
    } else if starts(b"II*\0") || starts(b"MM\0*") {
        Some("image/tiff")
    } else if starts(b"BM") && head.len() >= 14 {
        Some("image/bmp")
    } else {
        None
    }
}

fn by_extension(path: &Path) -> Option<&'static str> {
    let extension = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match extension.as_str() {
        "jpg" | "jpeg" | "jpe" | "jfif" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "tif" | "tiff" => "image/tiff",
        "bmp" | "dib" => "image/bmp",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes_win_over_the_name_and_the_name_decides_otherwise() {
        let cases: [(&str, &[u8], &str); 9] = [
            ("cat.jpg", b"\x89PNG\r\n\x1A\n\0\0\0\rIHDR", "image/png"),
            ("x", b"\xFF\xD8\xFF\xE0\0\x10JFIF", "image/jpeg"),
            ("x", b"RIFF\x10\0\0\0WEBPVP8 ", "image/webp"),
            ("x", b"GIF89a..", "image/gif"),
            ("x", b"MM\0*....", "image/tiff"),
            ("a/b.JPEG", b"", "image/jpeg"),
            ("b.webp", b"??", "image/webp"),
            ("notes.txt", b"hello", "application/octet-stream"),
            ("noext", b"", "application/octet-stream"),
        ];
        for (path, head, expected) in cases {
            assert_eq!(content_type(Path::new(path), head), expected, "{path}");
        }
    }
}
