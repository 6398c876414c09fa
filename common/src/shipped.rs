//! A migration set as it travels: packed from its directory by the operator's CLI, pinned by
//! the coordinator, unpacked into a fresh directory by the agent. Both ends load it with the
//! same validation, and the unpacked set must hash to the digest the plan pinned.

use std::path::{Component, Path, PathBuf};

use crate::proto::v1;
use crate::source::{MigrationSet, SourceError, SourceFormat};

#[derive(Debug, thiserror::Error)]
pub enum ShippedError {
    #[error("the migration set names {0:?}, outside its directory; nothing was written")]
    OutsideDirectory(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Format(String),
    #[error(transparent)]
    Invalid(#[from] SourceError),
    #[error("the migration set hashes to {computed} but the plan pinned {pinned}; nothing ran")]
    DigestMismatch { computed: String, pinned: String },
}

impl ShippedError {
    /// Whether the set itself is at fault (as opposed to the local disk).
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, Self::Read { .. } | Self::Write { .. })
    }
}

/// Every file under the set's directory, with its format and digest.
pub fn pack(set: &MigrationSet) -> Result<v1::MigrationSet, ShippedError> {
    let mut files = Vec::new();
    let mut pending = vec![set.directory.clone()];
    while let Some(folder) = pending.pop() {
        let read = |source| ShippedError::Read {
            path: folder.clone(),
            source,
        };
        for entry in std::fs::read_dir(&folder).map_err(read)? {
            let path = entry.map_err(read)?.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let content = std::fs::read(&path).map_err(|source| ShippedError::Read {
                path: path.clone(),
                source,
            })?;
            let relative = path
                .strip_prefix(&set.directory)
                .unwrap_or(&path)
                .components()
                .map(|component| component.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            files.push(v1::MigrationFile {
                path: relative,
                content,
            });
        }
    }
    files.sort_by(|left, right| left.path.cmp(&right.path));
    Ok(v1::MigrationSet {
        format: set.format.name().to_owned(),
        digest: set.digest.clone(),
        files,
        origin: set.directory.to_string_lossy().into_owned(),
    })
}

/// Writes the shipped files under `directory`, loads them, and checks the digest. Scripts are
/// named under the set's origin (where the operator's repository keeps them), not `directory`.
pub fn unpack(shipped: &v1::MigrationSet, directory: &Path) -> Result<MigrationSet, ShippedError> {
    for file in &shipped.files {
        let relative = Path::new(&file.path);
        let inside = relative
            .components()
            .all(|component| matches!(component, Component::Normal(_)));
        if !inside || file.path.is_empty() {
            return Err(ShippedError::OutsideDirectory(file.path.clone()));
        }
    }
    for file in &shipped.files {
        let path = directory.join(&file.path);
        path.parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, &file.content))
            .map_err(|source| ShippedError::Write {
                path: file.path.clone(),
                source,
            })?;
    }
    let format: Option<SourceFormat> = match shipped.format.as_str() {
        "" => None,
        named => Some(named.parse().map_err(ShippedError::Format)?),
    };
    let mut set = MigrationSet::load(directory, format)?;
    if set.digest != shipped.digest {
        return Err(ShippedError::DigestMismatch {
            computed: set.digest,
            pinned: shipped.digest.clone(),
        });
    }
    set.name_scripts_under(directory, Path::new(&shipped.origin));
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Engine;

    fn write(directory: &Path, name: &str, content: &str) {
        std::fs::write(directory.join(name), content).expect("write");
    }

    #[test]
    fn a_packed_set_unpacks_to_the_same_digest() {
        let source = tempfile::tempdir().expect("dir");
        write(
            source.path(),
            "1_users.up.sql",
            "CREATE TABLE users (id int);",
        );
        write(source.path(), "1_users.down.sql", "DROP TABLE users;");
        let set = MigrationSet::load(source.path(), None).expect("load");
        let packed = pack(&set).expect("pack");
        assert_eq!(packed.files.len(), 2);
        let target = tempfile::tempdir().expect("dir");
        let unpacked = unpack(&packed, target.path()).expect("unpack");
        assert_eq!(unpacked.digest, set.digest);
    }

    #[test]
    fn unpacked_scripts_are_named_as_the_operator_named_them_not_by_the_copy() {
        let source = tempfile::tempdir().expect("dir");
        write(
            source.path(),
            "1_users.postgres.up.sql",
            "CREATE TABLE users (id uuid);",
        );
        write(
            source.path(),
            "1_users.sqlite3.up.sql",
            "CREATE TABLE users (id text);",
        );
        write(
            source.path(),
            "1_users.postgres.down.sql",
            "DROP TABLE users;",
        );
        let set = MigrationSet::load(source.path(), None).expect("load");
        let mut packed = pack(&set).expect("pack");
        assert_eq!(packed.origin, source.path().to_string_lossy());
        packed.origin = "db/migrations".to_owned();
        let target = tempfile::tempdir().expect("dir");
        let unpacked = unpack(&packed, target.path()).expect("unpack");
        let postgres = &unpacked.revisions[0];
        let statement = &postgres.up.statements()[0];
        assert_eq!(
            postgres.up.locate(statement),
            "db/migrations/1_users.postgres.up.sql:1"
        );
        let down = postgres.down.as_ref().expect("down");
        assert_eq!(
            down.path,
            Path::new("db/migrations/1_users.postgres.down.sql")
        );
        let sqlite = &unpacked.for_engine(Engine::Sqlite).revisions[0];
        assert_eq!(
            sqlite.up.path,
            Path::new("db/migrations/1_users.sqlite3.up.sql")
        );

        packed.origin = String::new();
        let target = tempfile::tempdir().expect("dir");
        let unpacked = unpack(&packed, target.path()).expect("unpack");
        assert_eq!(
            unpacked.revisions[0].up.path,
            Path::new("1_users.postgres.up.sql")
        );
    }

    #[test]
    fn a_pop_set_travels_with_every_engines_files_and_a_sqlite_only_change_is_caught() {
        let source = tempfile::tempdir().expect("dir");
        write(
            source.path(),
            "1_users.postgres.up.sql",
            "CREATE TABLE users (id uuid);",
        );
        write(
            source.path(),
            "1_users.sqlite3.up.sql",
            "CREATE TABLE users (id text);",
        );
        let set = MigrationSet::load(source.path(), None).expect("load");
        let packed = pack(&set).expect("pack");
        assert_eq!(packed.format, "pop");
        let target = tempfile::tempdir().expect("dir");
        let unpacked = unpack(&packed, target.path()).expect("unpack");
        let sqlite = &unpacked.for_engine(Engine::Sqlite).revisions[0];
        assert_eq!(sqlite.up.sql, "CREATE TABLE users (id text);");
        let mut tampered = packed.clone();
        let file = tampered
            .files
            .iter_mut()
            .find(|file| file.path.contains("sqlite3"))
            .expect("the sqlite3 file travels");
        file.content = b"DROP TABLE users;".to_vec();
        let target = tempfile::tempdir().expect("dir");
        assert!(matches!(
            unpack(&tampered, target.path()),
            Err(ShippedError::DigestMismatch { .. })
        ));
    }

    #[test]
    fn tampering_and_escaping_paths_are_refused() {
        let source = tempfile::tempdir().expect("dir");
        write(
            source.path(),
            "1_users.up.sql",
            "CREATE TABLE users (id int);",
        );
        let set = MigrationSet::load(source.path(), None).expect("load");
        let mut packed = pack(&set).expect("pack");
        packed.files[0].content = b"DROP TABLE users;".to_vec();
        let target = tempfile::tempdir().expect("dir");
        assert!(matches!(
            unpack(&packed, target.path()),
            Err(ShippedError::DigestMismatch { .. })
        ));
        packed.files[0].path = "../escape.up.sql".to_owned();
        let target = tempfile::tempdir().expect("dir");
        assert!(matches!(
            unpack(&packed, target.path()),
            Err(ShippedError::OutsideDirectory(_))
        ));
        assert!(
            !target.path().join("../escape.up.sql").exists(),
            "nothing written outside"
        );
    }
}
