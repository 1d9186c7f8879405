//! What the benchmark sends, and model repositories with changed settings.

use std::{io::Cursor, path::Path};

use anyhow::Context;
use bytes::Bytes;
use image::{ImageFormat, RgbImage};
use tandem_test_images::{camera, encode_jpeg};

/// One image to send.
#[derive(Debug, Clone)]
pub struct Photo {
    /// Short name for tables (`chelsea`, `12mp`, `tiny`).
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub bytes: Bytes,
    /// `image/jpeg` or `image/png`.
    pub content_type: &'static str,
}

/// Makes every request's bytes different from the last: the model server decodes each image
/// once per process (`TANDEM_DECODED_CACHE_MB`), and a load generator repeating one file would
/// otherwise measure decoding it once.
static UNIQUE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Photo {
    /// The photo's bytes, made unique: a JPEG comment segment after its start marker, or (PNG)
    /// 8 bytes after its end, which decoders ignore. The pixels are the same.
    pub fn unique_bytes(&self) -> Bytes {
        let n = UNIQUE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut out = Vec::with_capacity(self.bytes.len() + 12);
        if self.bytes.starts_with(&[0xFF, 0xD8]) {
            out.extend_from_slice(&self.bytes[..2]);
            out.extend_from_slice(&[0xFF, 0xFE, 0x00, 0x0A]);
            out.extend_from_slice(&n.to_be_bytes());
            out.extend_from_slice(&self.bytes[2..]);
        } else {
            out.extend_from_slice(&self.bytes);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Bytes::from(out)
    }
}

/// `tests/data/chelsea.jpg` as it is.
pub fn chelsea(root: &Path) -> anyhow::Result<Photo> {
    let path = root.join("tests/data/chelsea.jpg");
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let (width, height) = image::load_from_memory(&bytes)?.to_rgb8().dimensions();
    Ok(Photo {
        name: "chelsea".into(),
        width,
        height,
        bytes: bytes.into(),
        content_type: "image/jpeg",
    })
}

/// A 4000 x 3000 JPEG (quality 90) like a phone camera's: `tests/data/astronaut.jpg` upscaled,
/// with grain so that the file size and decoding cost are a real photo's, not a smooth one's
/// (`tandem_test_images::camera`).
pub fn twelve_megapixel(root: &Path) -> anyhow::Result<Photo> {
    let path = root.join("tests/data/astronaut.jpg");
    let photo = image::open(&path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .to_rgb8();
    let mut big = camera::upscaled(&photo);
    camera::add_grain(&mut big);
    Ok(Photo {
        name: "12mp".into(),
        width: big.width(),
        height: big.height(),
        bytes: encode_jpeg(&big)?.into(),
        content_type: "image/jpeg",
    })
}

/// A 32 x 32 PNG: the null model's input, costing next to nothing to decode.
pub fn tiny() -> anyhow::Result<Photo> {
    let image = RgbImage::from_fn(32, 32, |x, y| {
        image::Rgb([(x * 8) as u8, (y * 8) as u8, 128])
    });
    let mut png = Vec::new();
    image.write_to(&mut Cursor::new(&mut png), ImageFormat::Png)?;
    Ok(Photo {
        name: "tiny".into(),
        width: 32,
        height: 32,
        bytes: png.into(),
        content_type: "image/png",
    })
}

/// A model repository in a temporary folder: the chosen models of `models`, their ONNX and
/// labels files linked, each `config.toml` copied with `key = value` lines replaced as
/// `overrides` (model, key, value) say.
pub fn variant_repository(
    models: &Path,
    only: &[&str],
    overrides: &[(&str, &str, &str)],
) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("tandem-bench-models-")
        .tempdir()?;
    for model in only {
        let from = models.join(model);
        let to = dir.path().join(model);
        std::fs::create_dir_all(&to)?;
        let config = std::fs::read_to_string(from.join("config.toml"))
            .with_context(|| format!("cannot read {}/config.toml", from.display()))?;
        std::fs::write(
            to.join("config.toml"),
            override_keys(&config, overrides, model),
        )?;
        for file in ["model.onnx", "labels.txt"] {
            if from.join(file).exists() {
                std::os::unix::fs::symlink(from.join(file).canonicalize()?, to.join(file))?;
            }
        }
    }
    Ok(dir)
}

/// `text` with each `key = ...` line of `model` replaced (or appended when missing).
fn override_keys(text: &str, overrides: &[(&str, &str, &str)], model: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for (_, key, value) in overrides.iter().filter(|(m, _, _)| *m == model) {
        let line = format!("{key} = {value}");
        match lines
            .iter_mut()
            .find(|l| l.split('=').next().is_some_and(|k| k.trim() == *key))
        {
            Some(existing) => *existing = line,
            None => lines.push(line),
        }
    }
    lines.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_bytes_differ_and_decode_to_the_same_pixels() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let chelsea = chelsea(&root).unwrap();
        let tiny = tiny().unwrap();
        for photo in [&chelsea, &tiny] {
            let (a, b) = (photo.unique_bytes(), photo.unique_bytes());
            assert_ne!(a, b);
            let original = image::load_from_memory(&photo.bytes).unwrap().to_rgb8();
            for bytes in [a, b] {
                let decoded = image::load_from_memory(&bytes).unwrap().to_rgb8();
                assert!(decoded == original, "{}: the same pixels", photo.name);
            }
        }
    }

    #[test]
    fn overrides_replace_or_append_keys_of_their_model_only() {
        let text = "name = \"m\"\nintra_op_threads = 2\n";
        let out = override_keys(
            text,
            &[
                ("m", "intra_op_threads", "1"),
                ("m", "max_queue_delay_us", "2000"),
                ("other", "width", "9"),
            ],
            "m",
        );
        assert_eq!(
            out,
            "name = \"m\"\nintra_op_threads = 1\nmax_queue_delay_us = 2000\n"
        );
    }

    #[test]
    fn variant_repositories_are_valid_model_repositories() {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
        let repo = variant_repository(
            &models,
            &["efficientnet_lite2", "null"],
            &[("efficientnet_lite2", "intra_op_threads", "1")],
        )
        .unwrap();
        let specs = tandem_model_server::repository::load_repository(repo.path()).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].name, "efficientnet_lite2");
        assert_eq!(specs[0].intra_op_threads, 1);
        assert_eq!(specs[0].num_classes(), 1000);
        assert_eq!(specs[1].name, "null");
    }

    #[test]
    fn the_tiny_image_is_a_png() {
        let tiny = tiny().unwrap();
        assert_eq!(image::guess_format(&tiny.bytes).unwrap(), ImageFormat::Png);
    }
}
