//! Migration directories written for one test.

use std::path::{Path, PathBuf};

/// A temporary migration directory; files are `(relative path, content)`.
pub fn migrations(files: &[(&str, &str)]) -> tempfile::TempDir {
    let directory = tempfile::Builder::new()
        .prefix("fleetshift-migrations-")
        .tempdir()
        .expect("temporary migration directory");
    for (relative, content) in files {
        write(directory.path(), relative, content);
    }
    directory
}

pub fn write(root: &Path, relative: &str, content: &str) {
    let path = root.join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create fixture directory");
    }
    std::fs::write(path, content).expect("write fixture");
}

/// crates.io's migration history (285 diesel revisions) from the shared corpora.
pub fn crates_io() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpora/crates.io/migrations")
}

/// A migration directory in the form an assignment ships it: every file (recursively), with
/// the set's format and digest.
pub fn shipped(directory: &Path) -> fleetshift_common::proto::v1::MigrationSet {
    let set =
        fleetshift_common::source::MigrationSet::load(directory, None).expect("migration set");
    let mut files = Vec::new();
    let mut pending = vec![directory.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).expect("read directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(fleetshift_common::proto::v1::MigrationFile {
                    path: path
                        .strip_prefix(directory)
                        .expect("inside")
                        .to_string_lossy()
                        .into_owned(),
                    content: std::fs::read(&path).expect("read file"),
                });
            }
        }
    }
    fleetshift_common::proto::v1::MigrationSet {
        format: set.format.name().to_owned(),
        digest: set.digest,
        files,
    }
}
