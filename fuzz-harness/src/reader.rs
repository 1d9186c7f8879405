//! What a harness answers, and the reader of the fuzzer's bytes every harness uses.

use bytes::Bytes;
use tandem_model_server::error::ModelError;
use tandem_proto::{InferParameter, InferTensorContents, infer_parameter::ParameterChoice};

/// What a harness did with an input that broke no promise: `Ok` when Tandem accepted it,
/// `Err` naming the refusal (the gateway's error code, the model server's error variant).
pub type Outcome = Result<(), String>;

/// The name of a model-server error's variant (`Undecodable`, `TooLarge`, ...).
pub(crate) fn variant(error: &ModelError) -> String {
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
