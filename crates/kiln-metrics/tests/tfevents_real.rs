//! The event-file parser against files written by the real libraries jobs
//! use, tensorboardX and `torch.utils.tensorboard`: hand-built records only
//! prove the parser agrees with its own reading of the format.
//!
//! The writers come from the virtual environment that `scripts/test`
//! prepares and names in KILN_TEST_PYTHON; a run without it skips loudly,
//! and KILN_REQUIRE_TORCH makes that a failure instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_metrics::tfevents::{read_records, Scalar};

/// Writes the same curves with both libraries, old style (simple_value)
/// and new style (a one-element tensor, float and double), among summaries
/// the parser must skip. `add_scalars` puts each series in a sub-folder.
const WRITER: &str = r#"
import os, sys
import numpy as np
from tensorboardX import SummaryWriter as XWriter
from torch.utils.tensorboard import SummaryWriter as TWriter

root = sys.argv[1]
for name, Writer in (("tbx", XWriter), ("torch", TWriter)):
    w = Writer(os.path.join(root, name))
    for i in range(5):
        w.add_scalar("loss", 1.0 / (i + 1), i)
        w.add_scalar("accuracy", i / 10.0, i)
    w.add_scalar("timed", 0.5, 9, walltime=1234.5)
    w.add_histogram("weights", np.arange(10, dtype=np.float32), 0)
    w.add_text("note", "not a scalar", 0)
    w.add_image("picture", np.zeros((3, 4, 4), dtype=np.uint8), 0)
    w.add_scalars("pair", {"a": 1.5, "b": -1.5}, 3)
    if name == "torch":
        for i in range(3):
            w.add_scalar("new_style", 2.0 * i + 0.1, i, new_style=True)
            w.add_scalar("double", i + 0.1, i, new_style=True, double_precision=True)
    w.close()
"#;

fn test_python() -> Option<PathBuf> {
    match std::env::var_os("KILN_TEST_PYTHON") {
        Some(py) => Some(PathBuf::from(py)),
        None => {
            assert!(
                std::env::var_os("KILN_REQUIRE_TORCH").is_none(),
                "KILN_REQUIRE_TORCH is set but KILN_TEST_PYTHON is not"
            );
            eprintln!("SKIPPED: set KILN_TEST_PYTHON to a python with torch and tensorboardX (scripts/test does)");
            None
        }
    }
}

/// A fresh folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir =
            std::env::temp_dir().join(format!("kiln-tfevents-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir created");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn event_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            event_files(&path, out);
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("events.out.tfevents."))
        {
            out.push(path);
        }
    }
}

/// Every scalar of every event file, keyed by the file's folder relative
/// to `root` (each writer, and each `add_scalars` series, has its own).
fn read_tree(root: &Path) -> BTreeMap<String, Vec<Scalar>> {
    let mut files = Vec::new();
    event_files(root, &mut files);
    let mut by_dir = BTreeMap::new();
    for file in files {
        let bytes = std::fs::read(&file).expect("event file read");
        let (scalars, consumed) =
            read_records(&bytes, 0).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(
            consumed,
            bytes.len(),
            "{}: whole file consumed",
            file.display()
        );
        assert_eq!(
            read_in_chunks(&bytes),
            scalars,
            "{}: incremental reading",
            file.display()
        );
        let dir = file
            .parent()
            .and_then(|p| p.strip_prefix(root).ok())
            .expect("under root")
            .to_string_lossy()
            .into_owned();
        let previous = by_dir.insert(dir.clone(), scalars);
        assert!(previous.is_none(), "one event file per folder: {dir}");
    }
    by_dir
}

/// Reads the file as a poller would while it grows a few bytes at a time,
/// so records are found cut at every possible point.
fn read_in_chunks(bytes: &[u8]) -> Vec<Scalar> {
    let mut all = Vec::new();
    let mut offset = 0usize;
    for visible in (0..=bytes.len()).step_by(7).chain([bytes.len()]) {
        let (scalars, consumed) =
            read_records(&bytes[offset..visible], offset as u64).expect("valid prefix");
        all.extend(scalars);
        offset += consumed;
    }
    assert_eq!(offset, bytes.len());
    all
}

/// (tag, step, value) of each scalar, values compared at the writer's
/// single precision.
fn points(scalars: &[Scalar], tag: &str) -> Vec<(i64, f32)> {
    scalars
        .iter()
        .filter(|s| s.tag == tag)
        .map(|s| (s.step, s.value as f32))
        .collect()
}

fn expected(f: impl Fn(i64) -> f64, n: i64) -> Vec<(i64, f32)> {
    (0..n).map(|i| (i, f(i) as f32)).collect()
}

#[test]
fn scalars_written_by_tensorboardx_and_torch() {
    let Some(python) = test_python() else {
        return;
    };
    let tmp = TempDir::new();
    let output = std::process::Command::new(&python)
        .arg("-c")
        .arg(WRITER)
        .arg(&tmp.0)
        .output()
        .expect("python ran");
    assert!(
        output.status.success(),
        "writer script failed (torch.utils.tensorboard needs the `tensorboard` package):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let tree = read_tree(&tmp.0);
    let dirs: Vec<&str> = tree.keys().map(String::as_str).collect();
    assert_eq!(
        dirs,
        [
            "tbx",
            "tbx/pair/a",
            "tbx/pair/b",
            "torch",
            "torch/pair_a",
            "torch/pair_b"
        ]
    );

    for writer in ["tbx", "torch"] {
        let scalars = &tree[writer];
        assert_eq!(
            points(scalars, "loss"),
            expected(|i| 1.0 / (i + 1) as f64, 5),
            "{writer}"
        );
        assert_eq!(
            points(scalars, "accuracy"),
            expected(|i| i as f64 / 10.0, 5),
            "{writer}"
        );
        let timed: Vec<_> = scalars.iter().filter(|s| s.tag == "timed").collect();
        assert_eq!(timed.len(), 1, "{writer}");
        assert_eq!(
            (timed[0].step, timed[0].wall_time, timed[0].value),
            (9, 1234.5, 0.5)
        );
        // Real wall clock everywhere else.
        assert!(scalars
            .iter()
            .filter(|s| s.tag != "timed")
            .all(|s| s.wall_time > 1.5e9));
        // tensorboardX nests each series' folder, torch joins the names.
        let sep = if writer == "tbx" { "/" } else { "_" };
        for (series, value) in [("a", 1.5), ("b", -1.5)] {
            let dir = format!("{writer}/pair{sep}{series}");
            let pair = &tree[&dir];
            assert_eq!(points(pair, "pair"), vec![(3, value)], "{dir}");
            assert_eq!(pair.len(), 1);
        }
    }

    let tbx_tags: Vec<&str> = tree["tbx"].iter().map(|s| s.tag.as_str()).collect();
    assert_eq!(tbx_tags.len(), 11, "only the scalars: {tbx_tags:?}");

    let torch = &tree["torch"];
    assert_eq!(
        points(torch, "new_style"),
        expected(|i| 2.0 * i as f64 + 0.1, 3)
    );
    // Double precision survives whole.
    let double: Vec<(i64, f64)> = torch
        .iter()
        .filter(|s| s.tag == "double")
        .map(|s| (s.step, s.value))
        .collect();
    assert_eq!(double, vec![(0, 0.1), (1, 1.1), (2, 2.1)]);
    assert_eq!(torch.len(), 11 + 6, "only the scalars");
}
