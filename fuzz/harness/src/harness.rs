//! The fuzz harnesses: one function per target, each taking the fuzzer's bytes and panicking
//! only when Tandem breaks a promise (a panic inside Tandem, or an invariant below).
//!
//! The same functions run under libFuzzer (the `fuzz_targets/` of `fuzz/`, through
//! `tandem_fuzz`) and in the integration tests (`tests/it/fuzz_regressions.rs`), which replay the
//! committed seeds and every crashing input found so far.

use std::io::Cursor;

use bytes::Bytes;
use tandem_gateway::{error::ApiError, image_input};
use tandem_model_server::{
    decode,
    error::ModelError,
    preprocess::{Crop, Layout, Preprocess, Scaling},
    repository::ModelSpec,
    request::{self, IMAGE_INPUT, Input},
};
use tandem_proto::{
    ClassScore, InferParameter, InferTensorContents, ModelInferRequest, decode_raw_bytes,
    infer_parameter::ParameterChoice,
    model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
};

use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};

/// The gateway's default `TANDEM_MAX_IMAGE_PIXELS`.
const GATEWAY_MAX_PIXELS: u64 = 40_000_000;

/// Content types `gateway_extract` picks from with its first byte (low 7 bits); an index past
/// the end means "the content type is the input up to its first newline". `None`: no header.
pub const CONTENT_TYPES: [Option<&str>; 11] = [
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("multipart/form-data; boundary=XyZ"),
    Some("multipart/form-data; boundary=\"XyZ\""),
    Some("multipart/form-data"),
    Some("image/png"),
    Some("image/jpeg"),
    Some("IMAGE/WEBP"),
    Some("application/octet-stream"),
    Some("text/plain"),
    None,
];

/// Gateway request parsing (`image_input::extract`): byte 0 picks the content type (bit 7: a
/// 64-pixel limit instead of the default), the rest is the body. Accepted bytes must be in a
/// format the model server decodes and, if the decoders read their header, within the limit
/// (raw bodies untouched); every refusal must be a client error.
pub fn gateway_extract(data: &[u8]) -> Outcome {
    let Some((&selector, rest)) = data.split_first() else {
        return Err("no input".into());
    };
    let max_pixels = if selector & 0x80 != 0 {
        64
    } else {
        GATEWAY_MAX_PIXELS
    };
    let (content_type, body) = match CONTENT_TYPES.get(usize::from(selector & 0x7f)) {
        Some(content_type) => (content_type.map(|c| c.as_bytes().to_vec()), rest),
        None => match rest.iter().position(|&b| b == b'\n') {
            Some(end) => (Some(rest[..end].to_vec()), &rest[end + 1..]),
            None => (Some(rest.to_vec()), &[][..]),
        },
    };
    let mut headers = HeaderMap::new();
    if let Some(value) = content_type.and_then(|c| HeaderValue::from_bytes(&c).ok()) {
        headers.insert(CONTENT_TYPE, value);
    }
    let mime = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let raw = mime.starts_with("image/") || mime == "application/octet-stream";

    let extracted = futures::executor::block_on(image_input::extract(
        &headers,
        Bytes::copy_from_slice(body),
        max_pixels,
    ));
    match extracted {
        Ok(upload) => {
            let format = image::guess_format(&upload.bytes)
                .expect("the gateway accepted bytes that are not an image");
            // The gateway reads the size only (a PNG's IHDR, not the chunks after it), so the
            // decoders may still refuse what it accepts: the model server then does, a 422
            // with no job (`tests/it/hostile.rs`). What it must never do is let through an
            // image that the decoders read as larger than the limit.
            let header =
                image::ImageReader::with_format(Cursor::new(upload.bytes.as_ref()), format)
                    .into_dimensions();
            if let Ok((width, height)) = header {
                let pixels = u64::from(width) * u64::from(height);
                assert!(
                    (1..=max_pixels).contains(&pixels),
                    "the gateway accepted a {width}x{height} image (limit {max_pixels} pixels)"
                );
            }
            if raw {
                assert_eq!(upload.bytes, body, "a raw body must pass through untouched");
            }
            Ok(())
        }
        Err(error) => {
            let _ = error.to_string();
            assert!(
                matches!(
                    error,
                    ApiError::EmptyBody
                        | ApiError::UnsupportedMediaType(_)
                        | ApiError::InvalidJson(_)
                        | ApiError::MissingImageData
                        | ApiError::InvalidBase64(_)
                        | ApiError::InvalidMultipart(_)
                        | ApiError::NoFilePart
                        | ApiError::NotAnImage
                        | ApiError::CorruptImage(_)
                        | ApiError::ImageTooLarge { .. }
                ),
                "request parsing failed with {error:?} ({}), not a client error",
                error.code()
            );
            Err(error.code().into())
        }
    }
}

/// Pixel limits `decode_preprocess` picks from.
pub const MAX_PIXELS: [u64; 6] = [1, 64, 4096, 1 << 16, 1 << 20, 1 << 22];

/// Model-server decoding and preprocessing: [`PREPROCESS_HEADER`] bytes of preprocessing
/// settings, one byte picking the pixel limit from [`MAX_PIXELS`], then the encoded image.
/// Decoding either succeeds within the limit (and then the gateway accepts the same bytes) or
/// fails with a client error; a decoded image is then prepared and checked.
pub fn decode_preprocess(data: &[u8]) -> Outcome {
    let mut input = Reader(data);
    let preprocess = preprocess_settings(&mut input);
    let max_pixels = MAX_PIXELS[usize::from(input.u8()) % MAX_PIXELS.len()];
    let encoded = input.rest();
    match decode::decode_rgb8(encoded, 7, max_pixels) {
        Ok(image) => {
            let pixels = u64::from(image.width()) * u64::from(image.height());
            assert!(
                (1..=max_pixels).contains(&pixels),
                "decoded {pixels} pixels"
            );
            if let Err(error) = image_input::check(Bytes::copy_from_slice(encoded), max_pixels) {
                panic!("the model server decodes this image but the gateway refuses it: {error:?}");
            }
            check_prepared(&preprocess, &image);
            let prepared = preprocess
                .prepare_encoded(encoded, 7, max_pixels)
                .expect("prepare_encoded fails on an image that decodes");
            assert_eq!(prepared.len(), preprocess.image_len());
            Ok(())
        }
        Err(error) => {
            let _ = error.to_string();
            assert!(
                matches!(
                    error,
                    ModelError::Undecodable { index: 7, .. }
                        | ModelError::Truncated { index: 7, .. }
                        | ModelError::TooLarge { index: 7, .. }
                ),
                "decoding failed with {error:?}, not a client error for image 7"
            );
            Err(variant(&error))
        }
    }
}

/// Largest source image `preprocess_pixels` builds.
const MAX_SOURCE_PIXELS: u32 = 1 << 16;

/// Preprocessing alone, on odd shapes decoding rarely yields: [`PREPROCESS_HEADER`] bytes of
/// settings, width and height (two bytes each, 1 to 1024, at most 2^16 pixels), then pixel bytes
/// (repeated to fill the image; none: black).
pub fn preprocess_pixels(data: &[u8]) -> Outcome {
    let mut input = Reader(data);
    let preprocess = preprocess_settings(&mut input);
    let width = 1 + u32::from(input.u16()) % 1024;
    let height = (1 + u32::from(input.u16()) % 1024).min(MAX_SOURCE_PIXELS / width);
    let pixels = input.rest();
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        let at = (y as usize * width as usize + x as usize) * 3;
        image::Rgb(std::array::from_fn(|c| {
            pixels
                .get((at + c) % pixels.len().max(1))
                .copied()
                .unwrap_or(0)
        }))
    });
    check_prepared(&preprocess, &image);
    Ok(())
}

/// Bytes of preprocessing settings at the start of `decode_preprocess` and `preprocess_pixels`.
pub const PREPROCESS_HEADER: usize = 9;

/// Settings from [`PREPROCESS_HEADER`] bytes: flags (bit 0: NHWC, bit 1: mean/std scaling,
/// bit 2: no crop, bit 3: a real model's size, 200 to 327, instead of 1 to 64), width, height,
/// then six scaling bytes (mean and std per channel, or scale and offset).
pub fn preprocess_settings(input: &mut Reader<'_>) -> Preprocess {
    let flags = input.u8();
    let side = |b: u8| {
        if flags & 8 != 0 {
            200 + u32::from(b) / 2
        } else {
            1 + u32::from(b) % 64
        }
    };
    let width = side(input.u8());
    let height = side(input.u8());
    let s: [u8; 6] = std::array::from_fn(|_| input.u8());
    let scaling = if flags & 2 != 0 {
        Scaling::MeanStd {
            mean: [0, 1, 2].map(|c| f32::from(s[c]) / 255.0),
            std: [3, 4, 5].map(|c| (1.0 + f32::from(s[c])) / 128.0),
        }
    } else {
        Scaling::Affine {
            scale: f32::from(i16::from_le_bytes([s[0], s[1]])) / 1024.0,
            offset: f32::from(i16::from_le_bytes([s[2], s[3]])) / 64.0,
        }
    };
    Preprocess {
        width,
        height,
        layout: if flags & 1 != 0 {
            Layout::Nhwc
        } else {
            Layout::Nchw
        },
        scaling,
        crop: if flags & 4 != 0 {
            Crop::None
        } else {
            Crop::Center
        },
    }
}

/// Prepares `image` in both layouts and checks the tensors against the resized pixels: each
/// value is `scaling.apply` of its pixel, NCHW is the transpose of NHWC, a one-colour image
/// stays (within rounding) one colour.
fn check_prepared(preprocess: &Preprocess, image: &image::RgbImage) {
    let (width, height) = image.dimensions();
    let region = preprocess.region(width, height);
    assert!(
        region.width >= 1
            && region.height >= 1
            && region.left + region.width <= width
            && region.top + region.height <= height,
        "{region:?} is not inside a {width}x{height} image"
    );
    let rgb = preprocess
        .resize(image, &mut Default::default())
        .expect("resizing failed");
    let plane = preprocess.width as usize * preprocess.height as usize;
    assert_eq!(rgb.len(), plane * 3);
    if let Some(first) = image.pixels().next()
        && image.pixels().all(|p| p == first)
    {
        for (i, &value) in rgb.iter().enumerate() {
            assert!(
                value.abs_diff(first.0[i % 3]) <= 1,
                "a one-colour {width}x{height} image {:?} resized to {value} at {i}",
                first.0
            );
        }
    }
    let layouts = [Layout::Nhwc, Layout::Nchw].map(|layout| {
        let preprocess = Preprocess {
            layout,
            ..*preprocess
        };
        let mut out = vec![f32::NAN; preprocess.image_len()];
        preprocess
            .prepare(image, &mut Default::default(), &mut out)
            .expect("preparing failed");
        out
    });
    let [nhwc, nchw] = &layouts;
    // Every value of a small tensor; about 4096 spread over a large one (a step that is not a
    // multiple of 3 visits every channel), which keeps model-sized inputs fast enough to fuzz.
    let step = match rgb.len() / 4096 {
        0 => 1,
        n if n % 3 == 0 => n + 1,
        n => n,
    };
    for i in (0..rgb.len()).step_by(step) {
        let (x, pixel, channel) = (rgb[i], i / 3, i % 3);
        let want = preprocess.scaling.apply(channel, x);
        assert!(
            want.is_finite(),
            "scaling {:?} gave {want}",
            preprocess.scaling
        );
        assert_eq!(nhwc[i].to_bits(), want.to_bits(), "NHWC value {i}");
        assert_eq!(
            nchw[channel * plane + pixel].to_bits(),
            want.to_bits(),
            "NCHW value for pixel {pixel}, channel {channel}"
        );
    }
}

/// The model `oip_request` sends requests to: 2x2 input (NHWC when `nhwc`), three classes,
/// `max_batch_size` 4.
pub fn oip_spec(nhwc: bool) -> ModelSpec {
    let mut spec = ModelSpec::parse(
        std::path::Path::new("m/config.toml"),
        "m",
        "input_tensor = \"input\"\noutput_tensor = \"logits\"\nwidth = 2\nheight = 2\n\
         scaling = { scale = 1.0, offset = 0.0 }\nmax_batch_size = 4\n",
    )
    .expect("the fuzz model's configuration is valid");
    if nhwc {
        spec.preprocess.layout = Layout::Nhwc;
    }
    spec.labels = vec!["cat".into(), "dog".into(), "cup".into()];
    spec
}

/// Names an input may have: the image input, the model's tensor, anything else.
pub const INPUT_NAMES: [&str; 4] = [IMAGE_INPUT, "input", "other", ""];
/// Datatypes an input may have.
pub const DATATYPES: [&str; 4] = ["BYTES", "FP32", "UINT8", ""];
/// Names a requested output may have.
pub const OUTPUT_NAMES: [&str; 2] = ["logits", "other"];

/// The model server's OIP request handling (`request::plan`, then `request::response` on
/// scores taken from the input). The request is built from the bytes (see [`Reader`] methods'
/// order below: flags, inputs, raw contents, outputs, parameters, scores). A plan must be
/// consistent with the model; a refusal must be `INVALID_ARGUMENT`; the response must have the
/// planned shape.
pub fn oip_request(data: &[u8]) -> Outcome {
    let mut input = Reader(data);
    let spec = oip_spec(input.u8() & 1 != 0);
    let mut request = ModelInferRequest {
        model_name: spec.name.clone(),
        id: "fuzz".into(),
        ..Default::default()
    };
    for _ in 0..input.u8() % 3 {
        let tensor = InferInputTensor {
            name: INPUT_NAMES[usize::from(input.u8()) % INPUT_NAMES.len()].into(),
            datatype: DATATYPES[usize::from(input.u8()) % DATATYPES.len()].into(),
            shape: (0..input.u8() % 6).map(|_| input.dimension()).collect(),
            contents: input.contents(),
            ..Default::default()
        };
        request.inputs.push(tensor);
    }
    for _ in 0..input.u8() % 3 {
        request.raw_input_contents.push(input.chunk());
    }
    for _ in 0..input.u8() % 3 {
        let output = InferRequestedOutputTensor {
            name: OUTPUT_NAMES[usize::from(input.u8()) % OUTPUT_NAMES.len()].into(),
            parameters: input.parameters(),
        };
        request.outputs.push(output);
    }
    request.parameters = input.parameters();
    let sent = request.clone();

    let plan = match request::plan(&mut request, &spec) {
        Ok(plan) => plan,
        Err(error) => {
            let _ = error.to_string();
            assert!(
                matches!(
                    error,
                    ModelError::Inputs(_)
                        | ModelError::Datatype(_)
                        | ModelError::Shape(_)
                        | ModelError::ByteCount(_)
                        | ModelError::Parameter(_)
                        | ModelError::BatchTooLarge { .. }
                ),
                "planning failed with {error:?}, not INVALID_ARGUMENT"
            );
            return Err(variant(&error));
        }
    };
    assert!((1..=spec.max_batch_size).contains(&plan.batch), "{plan:?}");
    match &plan.input {
        Input::Images(images) => assert_eq!(images.len(), plan.batch),
        Input::Tensor(values) => {
            assert_eq!(values.len(), plan.batch * spec.preprocess.image_len());
        }
    }
    let classes = spec.num_classes();
    let scores = input.rest();
    let output: Vec<f32> = (0..plan.batch * classes)
        .map(|i| match scores.get(i * 4..i * 4 + 4) {
            Some(b) => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            None => 0.0,
        })
        .collect();
    let response = request::response(&sent, &spec, plan.batch, plan.classification, &output);
    assert_eq!(response.id, sent.id);
    let [tensor] = response.outputs.as_slice() else {
        panic!("{} outputs in the response", response.outputs.len());
    };
    let [raw] = response.raw_output_contents.as_slice() else {
        panic!("{} raw outputs", response.raw_output_contents.len());
    };
    let columns = match plan.classification {
        None => {
            assert_eq!(tensor.datatype, "FP32");
            assert_eq!(raw.len(), plan.batch * classes * 4);
            classes
        }
        Some(k) => {
            let columns = k.min(classes);
            assert_eq!(tensor.datatype, "BYTES");
            let elements = decode_raw_bytes(raw).expect("the response's BYTES do not decode");
            assert_eq!(elements.len(), plan.batch * columns);
            for element in elements {
                let text = std::str::from_utf8(element).expect("a class string is not UTF-8");
                let score = ClassScore::parse(text).expect("a class string does not parse");
                assert!(score.index < classes, "{text}");
            }
            columns
        }
    };
    assert_eq!(tensor.shape, [plan.batch as i64, columns as i64]);
    Ok(())
}

/// What a harness did with an input that broke no promise: `Ok` when Tandem accepted it,
/// `Err` naming the refusal (the gateway's error code, the model server's error variant).
pub type Outcome = Result<(), String>;

fn variant(error: &ModelError) -> String {
    let debug = format!("{error:?}");
    debug
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Reads the fuzzer's bytes front to back; past the end every read gives zeros.
#[derive(Debug)]
pub struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    /// One byte.
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    /// Two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }

    /// A length byte, then up to that many bytes.
    pub fn chunk(&mut self) -> Bytes {
        let len = usize::from(self.u8()).min(self.0.len());
        let (chunk, rest) = self.0.split_at(len);
        self.0 = rest;
        Bytes::copy_from_slice(chunk)
    }

    /// A tensor dimension: 0 to 7, or one of -1, `i64::MIN`, `i64::MAX`, 2^32.
    pub fn dimension(&mut self) -> i64 {
        match self.u8() {
            0xff => -1,
            0xfe => i64::MIN,
            0xfd => i64::MAX,
            0xfc => 1 << 32,
            b => i64::from(b % 8),
        }
    }

    /// Tensor contents: none, empty, BYTES elements (count, then chunks) or FP32 values
    /// (count, then four bytes each).
    pub fn contents(&mut self) -> Option<InferTensorContents> {
        match self.u8() % 4 {
            0 => None,
            1 => Some(InferTensorContents::default()),
            2 => Some(InferTensorContents {
                bytes_contents: (0..self.u8() % 6).map(|_| self.chunk()).collect(),
                ..Default::default()
            }),
            _ => Some(InferTensorContents {
                fp32_contents: (0..self.u8())
                    .map(|_| f32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()]))
                    .collect(),
                ..Default::default()
            }),
        }
    }

    /// Request or output parameters: none, or `classification` of some type and value.
    pub fn parameters(&mut self) -> std::collections::HashMap<String, InferParameter> {
        let choice = match self.u8() % 7 {
            0 => return Default::default(),
            1 => ParameterChoice::Int64Param(i64::from(self.u8() as i8)),
            2 => ParameterChoice::Int64Param(i64::MAX),
            3 => ParameterChoice::Uint64Param(u64::MAX - u64::from(self.u8())),
            4 => ParameterChoice::BoolParam(true),
            5 => ParameterChoice::StringParam("3".into()),
            _ => ParameterChoice::DoubleParam(2.0),
        };
        [(
            tandem_proto::CLASSIFICATION_PARAMETER.to_owned(),
            InferParameter {
                parameter_choice: Some(choice),
            },
        )]
        .into()
    }
}
