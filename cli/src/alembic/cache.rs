//! Rendered sets kept by the digest of what rendered them: the project's files and the
//! command. A set is written to a folder of its own and renamed into place when complete,
//! so a reader never sees half of one.

use std::path::{Path, PathBuf};

use fleetshift_common::source::alembic::{MANIFEST, Manifest, SCRIPTS};
use sha2::{Digest, Sha256};

use super::RenderError;
use super::project::Project;

/// Bumped when the renderer's output changes for the same project.
const RENDERER: &str = "fleetshift-alembic-renderer 1";

/// The folder rendered sets are kept in: `FLEETSHIFT_CACHE_DIR`, else the user's cache folder.
pub fn root(configured: Option<&Path>) -> PathBuf {
    if let Some(folder) = configured {
        return folder.to_path_buf();
    }
    let home_cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")));
    home_cache
        .unwrap_or_else(std::env::temp_dir)
        .join("fleetshift")
}

/// The digest of everything that decides what a render gives.
pub fn key(
    project: &Project,
    command: &[String],
    venv: Option<&Path>,
    keep_version_table: bool,
) -> Result<String, RenderError> {
    let mut hasher = Sha256::new();
    hasher.update(format!("{RENDERER}\0{}\0", command.join("\0")).as_bytes());
    hasher.update(format!("{:?}\0{keep_version_table}\n", venv).as_bytes());
    let inputs = project.inputs().map_err(|source| RenderError::Read {
        path: project.scripts.clone(),
        source,
    })?;
    for (name, path) in inputs {
        let content = std::fs::read(&path).map_err(|source| RenderError::Read {
            path: path.clone(),
            source,
        })?;
        hasher.update(format!("{name}\0{}\n", content.len()).as_bytes());
        hasher.update(&content);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The folder of the set rendered under `key`, when it is complete.
pub fn lookup(root: &Path, key: &str) -> Option<PathBuf> {
    let folder = root.join("alembic").join(key);
    folder.join(MANIFEST).is_file().then_some(folder)
}

/// One revision's scripts, as written beside the manifest.
pub struct Scripts<'a> {
    pub id: &'a str,
    pub up: &'a str,
    pub down: Option<&'a str>,
}

/// Writes the set and renames it into place under `key`; returns its folder.
pub fn store(
    root: &Path,
    key: &str,
    manifest: &Manifest,
    scripts: &[Scripts<'_>],
) -> Result<PathBuf, RenderError> {
    let sets = root.join("alembic");
    let folder = sets.join(key);
    let partial = sets.join(format!("{key}.partial-{}", std::process::id()));
    let write = |path: &Path, content: &[u8]| {
        std::fs::write(path, content).map_err(|source| RenderError::Write {
            path: path.to_path_buf(),
            source,
        })
    };
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(partial.join(SCRIPTS)).map_err(|source| RenderError::Write {
        path: partial.clone(),
        source,
    })?;
    for script in scripts {
        write(
            &Manifest::up_path(&partial, script.id),
            script.up.as_bytes(),
        )?;
        if let Some(down) = script.down {
            write(&Manifest::down_path(&partial, script.id), down.as_bytes())?;
        }
    }
    let text = toml::to_string(manifest).map_err(|error| RenderError::Write {
        path: partial.join(MANIFEST),
        source: std::io::Error::other(error),
    })?;
    let header = "# Rendered by fleetshift from an Alembic project in offline mode; agents run these\n# files as they are. Render again rather than edit.\n";
    write(
        &partial.join(MANIFEST),
        format!("{header}{text}").as_bytes(),
    )?;
    match std::fs::rename(&partial, &folder) {
        Ok(()) => Ok(folder),
        // Another render of the same content finished first: its set is the same.
        Err(_) if lookup(root, key).is_some() => {
            let _ = std::fs::remove_dir_all(&partial);
            Ok(folder)
        }
        Err(source) => Err(RenderError::Write {
            path: folder,
            source,
        }),
    }
}
