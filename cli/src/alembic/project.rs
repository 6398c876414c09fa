//! Finding an Alembic project: where Alembic runs, which command runs it, and the files whose
//! content decides what it renders.

use std::path::{Path, PathBuf};

/// An Alembic or Flask-Migrate project found at a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// Where the command runs: the folder holding `alembic.ini`, or the application's folder
    /// for Flask-Migrate.
    pub root: PathBuf,
    /// The folder holding `env.py` and `versions/`.
    pub scripts: PathBuf,
    /// `alembic.ini` when the project has one at its root.
    pub ini: Option<PathBuf>,
    pub kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `alembic.ini` at the root: plain Alembic.
    Alembic,
    /// A `migrations/` folder with `env.py` (and its own `alembic.ini`): Flask-Migrate.
    FlaskMigrate,
}

impl Kind {
    /// The command that runs Alembic for such a project, when none is configured.
    pub fn default_command(self) -> &'static [&'static str] {
        match self {
            Self::Alembic => &["alembic"],
            Self::FlaskMigrate => &["flask", "db"],
        }
    }
}

fn is_script_folder(folder: &Path) -> bool {
    folder.join("env.py").is_file() && folder.join("versions").is_dir()
}

impl Project {
    /// The project at `directory`: a folder with `alembic.ini`, a Flask application folder
    /// with `migrations/env.py`, or a script folder itself (`env.py` and `versions/`), whose
    /// parent then is the root. `None` when it is none of these.
    pub fn find(directory: &Path) -> Option<Self> {
        let ini = directory.join("alembic.ini");
        if is_script_folder(directory) {
            let root = directory.parent().unwrap_or(directory).to_path_buf();
            let root_ini = root.join("alembic.ini");
            let kind = if root_ini.is_file() {
                Kind::Alembic
            } else {
                Kind::FlaskMigrate
            };
            return Some(Self {
                ini: root_ini.is_file().then_some(root_ini),
                root,
                scripts: directory.to_path_buf(),
                kind,
            });
        }
        if ini.is_file() {
            let scripts = script_location(&ini, directory)
                .filter(|folder| is_script_folder(folder))
                .or_else(|| first_script_folder(directory))?;
            return Some(Self {
                root: directory.to_path_buf(),
                scripts,
                ini: Some(ini),
                kind: Kind::Alembic,
            });
        }
        let migrations = directory.join("migrations");
        is_script_folder(&migrations).then(|| Self {
            root: directory.to_path_buf(),
            scripts: migrations,
            ini: None,
            kind: Kind::FlaskMigrate,
        })
    }

    /// Every file whose content can change what Alembic renders: `alembic.ini` and the script
    /// folder (bytecode caches aside), in a stable order, with paths relative to the root.
    pub fn inputs(&self) -> std::io::Result<Vec<(String, PathBuf)>> {
        let mut files = Vec::new();
        if let Some(ini) = &self.ini {
            files.push(ini.clone());
        }
        let mut pending = vec![self.scripts.clone()];
        while let Some(folder) = pending.pop() {
            for entry in std::fs::read_dir(&folder)? {
                let path = entry?.path();
                let name = path
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned());
                let Some(name) = name else { continue };
                if name == "__pycache__" || name.starts_with('.') || name.ends_with(".pyc") {
                    continue;
                }
                if path.is_dir() {
                    pending.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        let mut named: Vec<(String, PathBuf)> = files
            .into_iter()
            .map(|path| (self.relative(&path), path))
            .collect();
        named.sort();
        Ok(named)
    }

    /// `path` relative to the root, with `/` separators, when it lies under it.
    pub fn relative(&self, path: &Path) -> String {
        let relative = path.strip_prefix(&self.root).unwrap_or(path);
        relative
            .components()
            .map(|component| component.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// `script_location` of an `alembic.ini`, with `%(here)s` resolved; relative paths are
/// relative to the folder Alembic runs in.
fn script_location(ini: &Path, root: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(ini).ok()?;
    let here = ini.parent().unwrap_or(root).to_string_lossy().into_owned();
    text.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "script_location").then(|| {
            let value = value.trim().replace("%(here)s", &here);
            root.join(value)
        })
    })
}

/// A folder of `root` holding `env.py` and `versions/`, when `alembic.ini` does not say (or
/// names a package rather than a folder).
fn first_script_folder(root: &Path) -> Option<PathBuf> {
    let mut folders: Vec<PathBuf> = std::fs::read_dir(root)
        .ok()?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| is_script_folder(path))
        .collect();
    folders.sort();
    folders.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script_folder(folder: &Path) {
        std::fs::create_dir_all(folder.join("versions")).expect("versions");
        std::fs::write(folder.join("env.py"), "").expect("env.py");
    }

    #[test]
    fn alembic_flask_migrate_and_a_bare_script_folder_are_found() {
        let home = tempfile::tempdir().expect("tempdir");
        let plain = home.path().join("plain");
        script_folder(&plain.join("alembic"));
        std::fs::write(
            plain.join("alembic.ini"),
            "[alembic]\nscript_location = %(here)s/alembic\n",
        )
        .expect("ini");
        let found = Project::find(&plain).expect("alembic project");
        assert_eq!(found.kind, Kind::Alembic);
        assert_eq!(found.scripts, plain.join("alembic"));

        let flask = home.path().join("flask");
        script_folder(&flask.join("migrations"));
        std::fs::write(flask.join("migrations/alembic.ini"), "[alembic]\n").expect("ini");
        let found = Project::find(&flask).expect("flask project");
        assert_eq!(found.kind, Kind::FlaskMigrate);
        assert_eq!(found.root, flask);
        assert_eq!(Kind::FlaskMigrate.default_command(), ["flask", "db"]);
        let pointed = Project::find(&flask.join("migrations")).expect("script folder");
        assert_eq!(
            pointed,
            Project {
                ini: None,
                ..found.clone()
            }
        );

        std::fs::write(found.scripts.join("versions/a1_x.py"), "").expect("revision");
        std::fs::create_dir_all(found.scripts.join("versions/__pycache__")).expect("cache");
        std::fs::write(found.scripts.join("versions/__pycache__/a1_x.pyc"), "").expect("pyc");
        let inputs: Vec<String> = found
            .inputs()
            .expect("inputs")
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(
            inputs,
            [
                "migrations/alembic.ini",
                "migrations/env.py",
                "migrations/versions/a1_x.py"
            ]
        );

        assert_eq!(Project::find(home.path()), None);
    }
}
