//! `DecodeCache`: the cache of recently decoded images, so each image is decoded once per process.
//!
//! The fast model's request and the slow worker's request carry the same encoded image, a few
//! milliseconds apart at light load. Both models' inputs are cut from the same RGB pixels, so
//! the second request takes the first one's decoded image instead of decoding again; while the
//! first is still decoding, the second waits for it rather than decoding alongside it.
//!
//! Entries are keyed by the encoded bytes themselves (their CRC-32 finds the candidate, an equality
//! check makes sure: a hash collision can never hand one client's pixels to another) and by the
//! scale a JPEG is decoded at (`decode::scale_for`, from each model's input size and crop): a
//! model whose need calls for a larger decode than the other's gets its own, never a smaller
//! one; at the usual photo sizes both models' needs call for the same scale and share. The cache
//! holds at most `budget` bytes of pixels, oldest out first, and nothing older than [`MAX_AGE`];
//! images whose pixels take more than a quarter of the budget are not kept.

use std::{
    collections::{HashMap, VecDeque},
    hash::{DefaultHasher, Hash as _, Hasher as _},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use bytes::Bytes;
use image::RgbImage;

use crate::{
    decode::{self, Scale},
    error::ModelError,
    preprocess::Preprocess,
};

/// How long a decoded image is kept at most: the slow request comes soon after the fast one or,
/// behind a long queue, long after anything could be kept for it.
pub const MAX_AGE: Duration = Duration::from_secs(10);

/// The outcome of one decode, shared by every request that waits for it; `None` if it failed
/// (each request then decodes on its own, for its own error message).
type Slot = Arc<OnceLock<Option<Arc<RgbImage>>>>;

struct Entry {
    encoded: Bytes,
    scale: Scale,
    slot: Slot,
    added: Instant,
    /// Pixel bytes charged to the budget (0 until decoded).
    size: usize,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<u64, Entry>,
    /// Keys, oldest first.
    order: VecDeque<u64>,
    bytes: usize,
}

/// Recently decoded images, shared by every model of the process.
pub struct DecodeCache {
    budget: usize,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for DecodeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodeCache")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl DecodeCache {
    /// A cache of at most `budget` bytes of pixels; 0 turns it off.
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Image `index` of a request, decoded to RGB8 for `need` (at `decode::scale_for`) by this
    /// call or by an earlier one for the same bytes at the same scale. Blocking: run it on the
    /// blocking pool.
    pub fn decode(
        &self,
        encoded: &Bytes,
        index: usize,
        max_pixels: u64,
        need: &Preprocess,
    ) -> Result<Arc<RgbImage>, ModelError> {
        let scale = decode::scale_for(encoded, need);
        let decode_here =
            || decode::decode_rgb8_at(encoded, index, max_pixels, scale).map(Arc::new);
        let Some((key, slot)) = self.slot(encoded, scale) else {
            return decode_here();
        };
        let mut mine = None;
        let shared = slot.get_or_init(|| {
            let decoded = decode_here();
            let shared = decoded.as_ref().ok().cloned();
            mine = Some(decoded);
            shared
        });
        match (mine, shared) {
            (Some(decoded), _) => {
                // A failure is not kept: each request gets its own error, and junk is not held.
                let size = decoded
                    .as_ref()
                    .map_or(usize::MAX, |image| image.as_raw().len() + encoded.len());
                self.charge(key, &slot, size);
                decoded
            }
            (None, Some(image)) => {
                metrics::counter!("tandem_model_decode_cache_hits_total").increment(1);
                Ok(image.clone())
            }
            (None, None) => decode_here(),
        }
    }

    /// The slot for `encoded` at `scale`, new or found; `None` when the cache is off.
    fn slot(&self, encoded: &Bytes, scale: Scale) -> Option<(u64, Slot)> {
        if self.budget == 0 {
            return None;
        }
        // CRC-32 runs at memory speed (SipHash over a 5 MB photo took 3 ms of each request);
        // a collision costs only the cache hit, as below.
        let mut hasher = DefaultHasher::new();
        (crc32fast::hash(encoded), encoded.len(), scale).hash(&mut hasher);
        let key = hasher.finish();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.expire(Instant::now());
        if let Some(entry) = inner.entries.get(&key) {
            // Same hash, different bytes: decode without the cache rather than mix them up.
            let same = entry.encoded == *encoded && entry.scale == scale;
            return same.then(|| (key, entry.slot.clone()));
        }
        let slot = Slot::default();
        inner.entries.insert(
            key,
            Entry {
                encoded: encoded.clone(),
                scale,
                slot: slot.clone(),
                added: Instant::now(),
                size: 0,
            },
        );
        inner.order.push_back(key);
        Some((key, slot))
    }

    /// Counts a decoded image (its pixels and encoded bytes) against the budget, evicting the
    /// oldest to make room; an image too big to keep (or a failure, `usize::MAX`) is dropped.
    fn charge(&self, key: u64, slot: &Slot, size: usize) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = inner.entries.get_mut(&key) else {
            return;
        };
        if !Arc::ptr_eq(&entry.slot, slot) {
            return;
        }
        if size > self.budget / 4 {
            inner.remove(key);
            return;
        }
        entry.size = size;
        inner.bytes += size;
        while inner.bytes > self.budget {
            let Some(oldest) = inner.order.front().copied() else {
                break;
            };
            inner.remove(oldest);
        }
    }
}

impl Inner {
    fn remove(&mut self, key: u64) {
        if let Some(entry) = self.entries.remove(&key) {
            self.bytes -= entry.size;
            self.order.retain(|k| *k != key);
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&oldest) = self.order.front() {
            let expired = self
                .entries
                .get(&oldest)
                .is_none_or(|e| now.duration_since(e.added) > MAX_AGE);
            if !expired {
                break;
            }
            self.order.pop_front();
            if let Some(entry) = self.entries.remove(&oldest) {
                self.bytes -= entry.size;
            }
        }
    }
}

#[cfg(test)]
#[path = "decode_cache_tests.rs"]
mod tests;
