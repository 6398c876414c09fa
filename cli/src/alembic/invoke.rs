//! Running the project's Alembic: its command, in its folder, with its virtualenv.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::RenderError;

/// The command that runs Alembic, and where.
#[derive(Debug, Clone)]
pub struct Alembic {
    /// The program and its leading arguments (`flask db`, `alembic -c other.ini`).
    pub words: Vec<String>,
    /// A virtualenv whose `bin/` comes first on `PATH`.
    pub venv: Option<PathBuf>,
    pub root: PathBuf,
}

/// What one invocation printed.
#[derive(Debug)]
pub struct Ran {
    pub succeeded: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Alembic {
    pub fn shown(&self) -> String {
        shlex::try_join(self.words.iter().map(String::as_str))
            .unwrap_or_else(|_| self.words.join(" "))
    }

    /// Runs the command with `arguments` after its own words and waits for it.
    pub fn run(&self, arguments: &[&str]) -> Result<Ran, RenderError> {
        let (program, leading) =
            self.words
                .split_first()
                .ok_or_else(|| RenderError::NoCommand {
                    command: String::new(),
                    hint: "the Alembic command is empty".to_owned(),
                })?;
        let mut command = std::process::Command::new(self.resolve(program));
        command
            .args(leading)
            .args(arguments)
            .current_dir(&self.root)
            // Rendering must not write bytecode into the team's project.
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null());
        if let Some(venv) = &self.venv {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut paths = vec![venv.join("bin")];
            paths.extend(std::env::split_paths(&path));
            let joined = std::env::join_paths(paths).map_err(|error| RenderError::NoCommand {
                command: self.shown(),
                hint: format!("the virtualenv path cannot go on PATH: {error}"),
            })?;
            command.env("PATH", joined).env("VIRTUAL_ENV", venv);
        }
        let output = command.output().map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => RenderError::NoCommand {
                command: self.shown(),
                hint: self.missing_hint(program),
            },
            _ => RenderError::Spawn {
                command: self.shown(),
                source: error,
            },
        })?;
        Ok(Ran {
            succeeded: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// A bare program name is looked up in the virtualenv first.
    fn resolve(&self, program: &str) -> PathBuf {
        let bare = !program.contains(std::path::MAIN_SEPARATOR);
        match &self.venv {
            Some(venv) if bare && venv.join("bin").join(program).is_file() => {
                venv.join("bin").join(program)
            }
            _ => PathBuf::from(program),
        }
    }

    fn missing_hint(&self, program: &str) -> String {
        let package = if program == "flask" {
            "Flask-Migrate (`pip install flask-migrate`)"
        } else {
            "Alembic (`pip install alembic`)"
        };
        match &self.venv {
            Some(venv) => format!(
                "{program} is not in {} nor on PATH; install {package} into that virtualenv",
                venv.join("bin").display()
            ),
            None => format!(
                "{program} is not on PATH; install {package} where the project's dependencies are and pass that virtualenv with --alembic-venv, or name the command with --alembic-command"
            ),
        }
    }
}

/// What went wrong, from what Alembic printed on stderr: its last line that is not a log line
/// (`FAILED: …` for Alembic's own errors, `SomeError: …` for a Python exception), and the
/// project file the traceback last passed through, with its line.
pub fn failure(stderr: &str, root: &Path) -> (String, Option<String>) {
    let detail = stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| {
            !line.is_empty()
                && !line.starts_with("INFO ")
                && !line.starts_with("WARNI")
                && !line.starts_with('^')
                && !line.starts_with('~')
        })
        .unwrap_or("it printed nothing on stderr")
        .trim_start_matches("FAILED: ")
        .to_owned();
    let file = stderr.lines().rev().find_map(|line| {
        let rest = line.trim().strip_prefix("File \"")?;
        let (path, rest) = rest.split_once('"')?;
        let relative = Path::new(path).strip_prefix(root).ok()?;
        let line = rest
            .trim_start_matches(", line ")
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap_or_default();
        Some(format!("{}:{line}", relative.display()))
    });
    (detail, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceback_gives_its_exception_and_the_projects_file() {
        let stderr = "INFO  [alembic.runtime.migration] Running upgrade  -> a1, first\n\
            Traceback (most recent call last):\n  \
            File \"/venv/lib/python3.11/site-packages/alembic/config.py\", line 10, in main\n    x()\n  \
            File \"/project/migrations/versions/a1_first.py\", line 7, in <module>\n    import geoalchemy2\n\
            ModuleNotFoundError: No module named 'geoalchemy2'\n";
        let (detail, file) = failure(stderr, Path::new("/project"));
        assert_eq!(detail, "ModuleNotFoundError: No module named 'geoalchemy2'");
        assert_eq!(file.as_deref(), Some("migrations/versions/a1_first.py:7"));
        let (detail, file) = failure(
            "FAILED: Multiple head revisions are present\n",
            Path::new("/project"),
        );
        assert_eq!(detail, "Multiple head revisions are present");
        assert_eq!(file, None);
    }
}
