//! Migration directories as the commands take them: an Alembic or Flask-Migrate project is
//! rendered to SQL first (see [`crate::alembic`]); every other layout is read as it is.

use std::path::{Path, PathBuf};

use clap::Args;
use fleetshift_common::source::{MigrationSet, Reading, SourceFormat, alembic::MANIFEST};

use crate::alembic::{self, Project};

/// How an Alembic or Flask-Migrate project is rendered.
#[derive(Debug, Clone, Args)]
pub struct AlembicArgs {
    /// Alembic projects: the command that runs the project's Alembic, e.g. "flask db" or
    /// "alembic -c deploy/alembic.ini" (default: `alembic`, or `flask db` for a Flask-Migrate
    /// project whose `alembic.ini` is inside `migrations/`).
    #[arg(long, env = "FLEETSHIFT_ALEMBIC_COMMAND", value_name = "COMMAND")]
    alembic_command: Option<String>,
    /// Alembic projects: the virtualenv holding the project's dependencies; its `bin/` is
    /// searched first.
    #[arg(long, env = "FLEETSHIFT_ALEMBIC_VENV", value_name = "DIR")]
    alembic_venv: Option<PathBuf>,
    /// Alembic projects: leave Alembic's version table alone. By default agents keep it
    /// current on shards that have one, so `alembic current` stays true beside fleetshift.
    #[arg(long)]
    alembic_leave_version_table: bool,
    /// Where rendered Alembic projects are kept (default: the user's cache folder).
    #[arg(long, env = "FLEETSHIFT_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

impl AlembicArgs {
    fn options(&self) -> Result<alembic::Options, String> {
        let command = match &self.alembic_command {
            None => None,
            Some(text) => match shlex::split(text) {
                Some(words) if !words.is_empty() => Some(words),
                _ => {
                    return Err(format!(
                        "--alembic-command {text:?} is not a command line (empty, or an unbalanced quote)"
                    ));
                }
            },
        };
        // Alembic runs in the project's folder: a relative virtualenv would be looked up there.
        let venv = match &self.alembic_venv {
            None => None,
            Some(venv) => Some(
                std::path::absolute(venv)
                    .map_err(|error| format!("--alembic-venv {}: {error}", venv.display()))?,
            ),
        };
        Ok(alembic::Options {
            command,
            venv,
            keep_version_table: !self.alembic_leave_version_table,
            cache: self.cache_dir.clone(),
        })
    }
}

/// The folder to read and its format: an Alembic project's rendered set, or `directory` as
/// it is. The error does not name `directory`.
pub fn readable(
    directory: &Path,
    format: Option<SourceFormat>,
    alembic: &AlembicArgs,
) -> Result<(PathBuf, Option<SourceFormat>), String> {
    let wants_alembic = matches!(format, None | Some(SourceFormat::Alembic));
    let project = wants_alembic.then(|| Project::find(directory)).flatten();
    match project {
        Some(project) => {
            let started = std::time::Instant::now();
            let rendition = alembic::render(&project, &alembic.options()?)
                .map_err(|error| error.to_string())?;
            tracing::info!(
                project = %project.root.display(),
                rendered = %rendition.directory.display(),
                cached = rendition.cached,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "Alembic project rendered to SQL"
            );
            Ok((rendition.directory, Some(SourceFormat::Alembic)))
        }
        None if format == Some(SourceFormat::Alembic) && !directory.join(MANIFEST).is_file() => {
            Err("no Alembic project here: expected alembic.ini (with its script folder holding env.py and versions/), a migrations/ folder with env.py and versions/ (Flask-Migrate), or such a script folder itself".to_owned())
        }
        None => Ok((directory.to_path_buf(), format)),
    }
}

/// The validated set at `directory`.
pub fn load(
    directory: &Path,
    format: Option<SourceFormat>,
    alembic: &AlembicArgs,
) -> Result<MigrationSet, String> {
    let (folder, format) = readable(directory, format, alembic)
        .map_err(|message| format!("{}: {message}", directory.display()))?;
    MigrationSet::load(&folder, format).map_err(|error| error.to_string())
}

/// `directory` as far as it can be read, for lint.
pub fn reading(
    directory: &Path,
    format: Option<SourceFormat>,
    alembic: &AlembicArgs,
) -> Result<(PathBuf, Reading), Vec<fleetshift_common::source::SourceProblem>> {
    let (folder, format) = readable(directory, format, alembic).map_err(|message| {
        vec![fleetshift_common::source::SourceProblem::new(
            directory, message,
        )]
    })?;
    Reading::of(&folder, format)
        .map(|reading| (folder, reading))
        .map_err(|error| error.problems)
}
