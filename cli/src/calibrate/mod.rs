//! `tandem calibrate DIR`: every image under DIR through the fast and the slow model, then
//! what each escalation threshold would do (the table), the thresholds chosen for `--target`,
//! globally and per class, written with `--output`, and the curve drawn with `--plot`.
//!
//! `curve`: the math; `table`: what is printed; `classify`: the model server; `plot` and
//! `canvas`: the chart.

mod canvas;
mod classify;
mod curve;
mod plot;
mod table;

use std::{
    io::Read as _,
    path::{Path, PathBuf},
};

use futures::StreamExt as _;
use tandem_core::escalation::Thresholds;

use crate::{
    args::CalibrateArgs,
    error::{CliError, EXIT_OK},
    media,
    output::Out,
};
use classify::{Models, Outcome};
use curve::{Curve, Sample};
use table::count;

/// A progress note on stderr every this many images.
const PROGRESS_EVERY: usize = 100;

/// Runs `calibrate`.
pub async fn run(args: CalibrateArgs) -> Result<u8, CliError> {
    let listing = list(&args.dir)?;
    if listing.images.is_empty() {
        return Err(CliError::Usage(format!(
            "no image files in {} ({} skipped)",
            args.dir.display(),
            count(listing.others, "other file")
        )));
    }
    let models = Models::new(&args.model_server, &args.fast_model, &args.slow_model)?;
    let (samples, rejected) = classify_all(&models, &listing.images, args.concurrency).await?;
    if samples.is_empty() {
        return Err(CliError::Usage(format!(
            "the model server refused all {} image files in {}",
            listing.images.len(),
            args.dir.display()
        )));
    }
    let out = Out::plain();
    out.line(&format!(
        "{} in {} (fast {}, slow {}, model server {}); skipped: {}, {} refused",
        count(samples.len(), "image"),
        args.dir.display(),
        args.fast_model,
        args.slow_model,
        args.model_server,
        count(listing.others, "other file"),
        count(rejected, "image"),
    ));
    report(&out, &args, &samples)
}

/// Prints the table and the choices; writes the thresholds file and the plot.
fn report(out: &Out, args: &CalibrateArgs, samples: &[Sample]) -> Result<u8, CliError> {
    let curve = Curve::new(samples);
    let all = curve.at(0.0);
    out.line(&format!(
        "fast and slow agree on {} of {} images ({:.2}%); the slow model took {:.3} s in all\n",
        all.agreed,
        all.total,
        all.agreement().unwrap_or(0.0) * 100.0,
        all.total_ms / 1000.0
    ));
    let global = curve.choose(args.target);
    out.line(&table::render(&curve, global.point.threshold));
    out.line(&format!("global {}", table::describe(&global, args.target)));
    let min_images = usize::try_from(args.min_class_images).unwrap_or(usize::MAX);
    let (own, small) = curve::per_class(samples, args.target, min_images);
    out.line(table::classes(&own, &small, min_images).trim_end());

    if let Some(path) = &args.output {
        let thresholds = Thresholds {
            fast_model: Some(args.fast_model.clone()),
            slow_model: Some(args.slow_model.clone()),
            target_agreement: Some(args.target),
            global: global.point.threshold,
            per_class: own
                .iter()
                .map(|class| (class.label.clone(), class.choice.point.threshold))
                .collect(),
        };
        write(path, thresholds.to_json().as_bytes())?;
        out.line(&format!("wrote the thresholds to {}", path.display()));
    }
    if let Some(path) = &args.plot {
        let labels = plot::Labels {
            fast_model: &args.fast_model,
            slow_model: &args.slow_model,
            target: args.target,
            chosen: global.point.threshold,
        };
        write(path, &plot::render(&curve, &labels))?;
        out.line(&format!("wrote the plot to {}", path.display()));
    }
    Ok(EXIT_OK)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    std::fs::write(path, bytes).map_err(|source| CliError::Io {
        path: path.to_owned(),
        source,
    })
}

/// A note on stderr.
fn note(text: &str) {
    Out::plain().note(text);
}

/// Classifies every image, `concurrency` at a time; returns the samples and how many images
/// the model server refused (each with a note).
async fn classify_all(
    models: &Models,
    images: &[PathBuf],
    concurrency: u16,
) -> Result<(Vec<Sample>, usize), CliError> {
    let mut outcomes = futures::stream::iter(images)
        .map(|path| async move { (path, models.classify(path).await) })
        .buffer_unordered(usize::from(concurrency));
    let (mut samples, mut rejected) = (Vec::with_capacity(images.len()), 0);
    while let Some((path, outcome)) = outcomes.next().await {
        match outcome? {
            Outcome::Sample(sample) => samples.push(sample),
            Outcome::Rejected(reason) => {
                note(&format!("skipping {}: refused: {reason}", path.display()));
                rejected += 1;
            }
        }
        let done = samples.len() + rejected;
        if done.is_multiple_of(PROGRESS_EVERY) && done < images.len() {
            note(&format!("classified {done} of {} images", images.len()));
        }
    }
    Ok((samples, rejected))
}

/// The image files under a folder, and how many other files there were.
#[derive(Debug, Default)]
struct Listing {
    images: Vec<PathBuf>,
    others: usize,
}

/// Lists `dir` recursively, in name order, without following links to folders; a file is an
/// image when its first bytes say so (JPEG, PNG, WebP, GIF, BMP, TIFF). Each other file is
/// named on stderr.
fn list(dir: &Path) -> Result<Listing, CliError> {
    match std::fs::metadata(dir) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => {
            return Err(CliError::Usage(format!(
                "{} is not a folder",
                dir.display()
            )));
        }
        Err(source) => {
            return Err(CliError::Usage(format!(
                "cannot read the folder {}: {source}",
                dir.display()
            )));
        }
    }
    let mut listing = Listing::default();
    let mut folders = vec![dir.to_owned()];
    while let Some(folder) = folders.pop() {
        let io = |source| CliError::Io {
            path: folder.clone(),
            source,
        };
        let mut entries = std::fs::read_dir(&folder)
            .map_err(io)?
            .map(|entry| entry.map(|entry| entry.path()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(io)?;
        // Popped last first: sorted in reverse, the folders come out in name order.
        entries.sort_by(|a, b| b.cmp(a));
        for path in entries {
            let link = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
            if path.is_dir() {
                if !link {
                    folders.push(path);
                }
            } else if is_image(&path) {
                listing.images.push(path);
            } else {
                note(&format!("skipping {}: not an image file", path.display()));
                listing.others += 1;
            }
        }
    }
    listing.images.sort();
    Ok(listing)
}

/// Whether the file starts like an image (an unreadable file does not).
fn is_image(path: &Path) -> bool {
    let mut head = [0; 16];
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    let mut read = 0;
    while read < head.len() {
        match file.read(&mut head[read..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    media::sniff(&head[..read]).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_listed_recursively_and_files_that_are_not_images_counted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("cups")).unwrap();
        std::fs::write(dir.path().join("b.png"), b"\x89PNG\r\n\x1A\n\0\0\0\rIHDR").unwrap();
        std::fs::write(dir.path().join("cups/a.jpg"), b"\xFF\xD8\xFF\xE0\0\x10JFIF").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
        std::fs::write(dir.path().join("empty.jpg"), b"").unwrap();
        let listing = list(dir.path()).unwrap();
        let names: Vec<_> = listing
            .images
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().to_owned())
            .collect();
        assert_eq!(names, [PathBuf::from("b.png"), PathBuf::from("cups/a.jpg")]);
        assert_eq!(listing.others, 2);

        let missing = list(&dir.path().join("nope")).unwrap_err();
        assert!(
            missing.to_string().contains("cannot read the folder"),
            "{missing}"
        );
        let file = list(&dir.path().join("notes.txt")).unwrap_err();
        assert!(file.to_string().contains("is not a folder"), "{file}");
    }
}
