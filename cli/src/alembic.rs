//! Alembic and Flask-Migrate projects: rendered to SQL by the project's own Alembic in
//! offline mode, into a folder agents run as it is (see
//! [`fleetshift_common::source::alembic`]).
//!
//! Three invocations, run side by side, render a whole project: `history --verbose` (files,
//! messages, heads), `upgrade base:head --sql` and `downgrade head:base --sql`, each split at
//! the markers Alembic writes between revisions. A downgrade that raises makes its revision
//! irreversible, and rendering goes on below it. The result is kept by the digest of the
//! project's files and the command, so planning again starts at once.

mod cache;
mod history;
mod invoke;
mod offline;
mod project;
mod render;

use std::path::PathBuf;

pub use project::Project;

/// How to run a project's Alembic, and what the rendered set asks of agents.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The command and its leading arguments; the project kind's default when `None`.
    pub command: Option<Vec<String>>,
    pub venv: Option<PathBuf>,
    /// Agents keep the version table current where it exists.
    pub keep_version_table: bool,
    /// Where rendered sets are kept; the user's cache folder when `None`.
    pub cache: Option<PathBuf>,
}

/// A rendered set's folder, and whether it came from the cache.
#[derive(Debug)]
pub struct Rendition {
    pub directory: PathBuf,
    pub cached: bool,
}

/// Why a project could not be rendered; nothing has run on any database.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot run the Alembic command `{command}`: {hint}")]
    NoCommand { command: String, hint: String },
    #[error("cannot start the Alembic command `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error(
        "`{command} history` failed{at}: {detail}\nnext: install what the project imports into the interpreter Alembic runs with (--alembic-venv), or fix the file named"
    )]
    History {
        command: String,
        at: String,
        detail: String,
    },
    #[error("the project has {} heads ({}); fleetshift rolls out one line of history, as `alembic upgrade head` does\nnext: merge them with `alembic merge heads` (or `flask db merge heads`)", .heads.len(), .heads.join(", "))]
    MultipleHeads { heads: Vec<String> },
    #[error(
        "revision {id} ({file}) cannot be rendered to SQL offline: {detail}\nnext: a revision that reads data through the connection cannot be rolled out as SQL; write what it does with op.execute(…) so Alembic can render it"
    )]
    Upgrade {
        id: String,
        file: String,
        detail: String,
    },
    #[error("`{command}` failed before rendering any revision{at}: {detail}")]
    Environment {
        command: String,
        at: String,
        detail: String,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the rendered set to {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Renders `project`, or finds it rendered.
pub fn render(project: &Project, options: &Options) -> Result<Rendition, RenderError> {
    let words = options.command.clone().unwrap_or_else(|| {
        project
            .kind
            .default_command()
            .iter()
            .map(|word| (*word).to_owned())
            .collect()
    });
    let cache_root = cache::root(options.cache.as_deref());
    let key = cache::key(
        project,
        &words,
        options.venv.as_deref(),
        options.keep_version_table,
    )?;
    if let Some(directory) = cache::lookup(&cache_root, &key) {
        return Ok(Rendition {
            directory,
            cached: true,
        });
    }
    let alembic = invoke::Alembic {
        words,
        venv: options.venv.clone(),
        root: project.root.clone(),
    };
    let rendered = render::run(project, &alembic)?;
    let directory = rendered.store(&cache_root, &key, options.keep_version_table)?;
    Ok(Rendition {
        directory,
        cached: false,
    })
}
