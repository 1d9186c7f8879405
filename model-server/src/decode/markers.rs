//! The JPEG checks made before any decoder runs: the file is complete, and it has no more scans
//! than [`MAX_SCANS`].
//!
//! The walk reads the file as a decoder does: marker segments are skipped by their length (so
//! an EXIF thumbnail's markers are not the image's), and after a scan its entropy-coded data is
//! searched for the next marker, where every `FF` byte is followed by a stuffed `00` or is a
//! restart marker. Before the first scan each marker must follow the previous segment, with
//! no stray or fill bytes between them, no second SOI and no standalone marker, and there is
//! one frame header: what the gateway's header reader (`imagesize`) can read, so that the
//! model server never decodes an image the gateway would refuse (each rule was found by
//! fuzzing, `fuzz/regressions/decode_preprocess`). The walk ends at the image's end-of-image
//! marker: what follows (a phone's motion photo video, a gain map) is not the image and is not
//! read. For a 5 MB grainy 12-megapixel JPEG (an `FF` byte every
//! 56 bytes) the walk takes about 1.5 ms, against about 75 ms to decode and preprocess it.

/// The most scans a JPEG may have. A progressive JPEG is refined scan by scan, each a pass
/// over the whole image, and a scan can be 15 bytes: a crafted file of a few hundred
/// kilobytes keeps a decoder busy for seconds (on this project's 2-core machine, libjpeg-turbo
/// took 405 ms at 1/4 scale for a 65 KB, 12-megapixel JPEG of 2,000 scans; a 20 MB body holds a
/// million). Encoders write 10 or fewer (libjpeg's progressive script has 10). The image
/// crate's decoder, zune-jpeg, refuses more than 100; the scaled path's libjpeg has no limit.
/// One limit for both, zune-jpeg's, means the same answer whichever decoder the size picks.
pub const MAX_SCANS: usize = 100;

/// Why a JPEG is refused before it is decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The file ends, or a segment's length points, before the end-of-image marker.
    Truncated(&'static str),
    /// The header is not a sequence of segments, one right after the other.
    Corrupt(&'static str),
    /// More than [`MAX_SCANS`] scans before the end of the image.
    TooManyScans,
}

const CUT: &str = "the JPEG ends before its end-of-image marker";
const STRAY: &str = "the JPEG header has stray bytes where a marker must be";
const FRAMES: &str = "the JPEG has more than one frame header (SOF marker)";
const MISPLACED: &str = "the JPEG header has a marker that belongs elsewhere (SOI, RST or TEM)";

/// Walks `bytes` (a JPEG: format detection has seen its start-of-image marker) to its
/// end-of-image marker; the number of scans on the way.
pub fn check(bytes: &[u8]) -> Result<usize, Refusal> {
    let mut pos = 2; // after SOI (FF D8)
    let mut scans = 0;
    let mut frames = 0;
    loop {
        let at = if scans == 0 {
            header_marker_at(bytes, pos)?
        } else {
            next_marker(bytes, pos).ok_or(Refusal::Truncated(CUT))?
        };
        let marker = bytes[at + 1];
        pos = at + 2;
        match marker {
            0xD9 if scans == 0 => {
                return Err(Refusal::Truncated("the JPEG ends before its first scan"));
            }
            0xD9 => return Ok(scans),
            // A second start of image, a restart or TEM marker has no place in the header, and
            // the gateway's header reader would read a length after it (or, after SOI, take
            // what follows for an embedded image's).
            0x01 | 0xD0..=0xD8 if scans == 0 => return Err(Refusal::Corrupt(MISPLACED)),
            0x01 | 0xD0..=0xD7 => continue, // standalone markers
            _ => {}
        }
        let (Some(&hi), Some(&lo)) = (bytes.get(pos), bytes.get(pos + 1)) else {
            return Err(Refusal::Truncated(CUT));
        };
        let length = usize::from(u16::from_be_bytes([hi, lo]));
        if length < 2 {
            return Err(Refusal::Truncated("the JPEG has a corrupt segment length"));
        }
        pos += length;
        if pos > bytes.len() {
            return Err(Refusal::Truncated(CUT));
        }
        // One frame header: decoders and the gateway's header reader would not agree on which
        // of two gives the size.
        if is_frame_header(marker) {
            frames += 1;
            if frames > 1 {
                return Err(Refusal::Corrupt(FRAMES));
            }
        }
        if marker == 0xDA {
            scans += 1;
            if scans > MAX_SCANS {
                return Err(Refusal::TooManyScans);
            }
        }
    }
}

/// Whether `marker` starts a frame header (SOF0 to SOF15: C0 to CF but DHT, JPG and DAC).
fn is_frame_header(marker: u8) -> bool {
    matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC)
}

/// `from`, where the header's next marker must be: right after the segment before it, with
/// no stray or fill bytes, as the gateway's header reader requires (a decoder would skip them).
fn header_marker_at(bytes: &[u8], from: usize) -> Result<usize, Refusal> {
    let (Some(&first), Some(&second)) = (bytes.get(from), bytes.get(from + 1)) else {
        return Err(Refusal::Truncated(CUT));
    };
    if first == 0xFF && second != 0xFF {
        Ok(from)
    } else {
        Err(Refusal::Corrupt(STRAY))
    }
}

/// The position of the next marker at or after `from`: an `FF` followed by anything but a
/// stuffed `00`, a fill `FF` or a restart marker (the data between those is entropy-coded data,
/// or garbage a decoder skips too).
fn next_marker(bytes: &[u8], from: usize) -> Option<usize> {
    // One iterator for the whole search: a camera JPEG has an FF about every 50 bytes.
    memchr::memchr_iter(0xFF, bytes.get(from..)?)
        .map(|i| from + i)
        .find(|&at| !matches!(bytes.get(at + 1), Some(0x00 | 0xFF | 0xD0..=0xD7)))
        .filter(|&at| at + 1 < bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOI: [u8; 2] = [0xFF, 0xD8];
    const EOI: [u8; 2] = [0xFF, 0xD9];
    /// A start-of-scan segment (length 3) and two bytes of entropy-coded data, one of them a
    /// stuffed FF, followed by a restart marker and one more byte.
    const SCAN: [u8; 11] = [0xFF, 0xDA, 0, 3, 9, 0xFF, 0x00, 0x55, 0xFF, 0xD3, 0x66];

    fn jpeg(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn a_complete_jpeg_walks_to_its_end_marker_and_counts_its_scans() {
        let app0: &[u8] = &[0xFF, 0xE0, 0, 4, 1, 2];
        assert_eq!(check(&jpeg(&[&SOI, app0, &SCAN, &EOI])), Ok(1));
        let dht: &[u8] = &[0xFF, 0xC4, 0, 3, 7];
        assert_eq!(check(&jpeg(&[&SOI, &SCAN, dht, &SCAN, &SCAN, &EOI])), Ok(3));
    }

    #[test]
    fn a_cut_or_corrupt_jpeg_is_truncated() {
        let complete = jpeg(&[&SOI, &SCAN, &EOI]);
        for cut in 2..complete.len() {
            assert!(
                matches!(check(&complete[..cut]), Err(Refusal::Truncated(_))),
                "cut at {cut}"
            );
        }
        assert_eq!(
            check(&jpeg(&[&SOI, &EOI])),
            Err(Refusal::Truncated("the JPEG ends before its first scan"))
        );
        assert_eq!(
            check(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 1]),
            Err(Refusal::Truncated("the JPEG has a corrupt segment length"))
        );
    }

    #[test]
    fn markers_inside_a_segment_are_not_the_images() {
        // An EOI inside an APP1 segment (a thumbnail's) does not end the image.
        let app1: &[u8] = &[0xFF, 0xE1, 0, 4, 0xFF, 0xD9];
        assert!(check(&jpeg(&[&SOI, app1, &SCAN])).is_err());
        assert_eq!(check(&jpeg(&[&SOI, app1, &SCAN, &EOI])), Ok(1));
        // Scans in a segment's payload are not counted.
        let many_sos_in_a_comment = [&[0xFF, 0xFE, 0x02, 0x02][..], &[0xFF, 0xDA].repeat(256)];
        let comment = many_sos_in_a_comment.concat();
        assert_eq!(check(&jpeg(&[&SOI, &comment, &SCAN, &EOI])), Ok(1));
    }

    #[test]
    fn stray_bytes_are_refused_in_the_header_and_skipped_after_a_scan() {
        let app0: &[u8] = &[0xFF, 0xE0, 0, 4, 1, 2];
        let stray: &[u8] = &[0x4D, 0x01, 0x00];
        let fill: &[u8] = &[0xFF, 0xFF];
        for between in [stray, fill] {
            assert_eq!(
                check(&jpeg(&[&SOI, app0, between, &SCAN, &EOI])),
                Err(Refusal::Corrupt(STRAY))
            );
            assert_eq!(check(&jpeg(&[&SOI, app0, &SCAN, between, &EOI])), Ok(1));
        }
    }

    #[test]
    fn a_second_start_of_image_or_a_standalone_marker_in_the_header_is_refused() {
        for marker in [0xD8, 0xD0, 0xD7, 0x01] {
            let misplaced: &[u8] = &[0xFF, marker, 0, 16];
            assert_eq!(
                check(&jpeg(&[&SOI, misplaced, &SCAN, &EOI])),
                Err(Refusal::Corrupt(MISPLACED)),
                "FF {marker:02X}"
            );
        }
    }

    #[test]
    fn a_second_frame_header_is_refused() {
        let sof0: &[u8] = &[0xFF, 0xC0, 0, 3, 8];
        let sof14: &[u8] = &[0xFF, 0xCE, 0, 3, 8];
        let dht: &[u8] = &[0xFF, 0xC4, 0, 3, 8];
        assert_eq!(check(&jpeg(&[&SOI, sof0, dht, &SCAN, &EOI])), Ok(1));
        assert_eq!(
            check(&jpeg(&[&SOI, sof14, sof0, &SCAN, &EOI])),
            Err(Refusal::Corrupt(FRAMES))
        );
    }

    #[test]
    fn what_follows_the_end_marker_is_not_read() {
        // A motion photo: the JPEG, then a video whose bytes may hold many FF DA pairs.
        let trailer = [0xFF, 0xDA, 0, 2].repeat(MAX_SCANS * 2);
        assert_eq!(check(&jpeg(&[&SOI, &SCAN, &EOI, &trailer])), Ok(1));
    }

    #[test]
    fn more_than_max_scans_are_refused() {
        let at_most = [&SOI[..], &SCAN.repeat(MAX_SCANS), &EOI].concat();
        assert_eq!(check(&at_most), Ok(MAX_SCANS));
        let over = [&SOI[..], &SCAN.repeat(MAX_SCANS + 1), &EOI].concat();
        assert_eq!(check(&over), Err(Refusal::TooManyScans));
        // Refused at the 101st scan, even if the file is cut after it.
        assert_eq!(check(&over[..over.len() - 2]), Err(Refusal::TooManyScans));
    }
}
