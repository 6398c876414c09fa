//! One render of a project: the three invocations, their outputs joined revision by revision.

use std::collections::HashMap;
use std::path::Path;

use fleetshift_common::source::alembic::{Manifest, ManifestRevision};

use super::RenderError;
use super::cache::{self, Scripts};
use super::history::{self, Listed};
use super::invoke::{self, Alembic, Ran};
use super::offline::{self, Direction, Section};
use super::project::Project;

/// A project's revisions as SQL, in the order Alembic applies them.
#[derive(Debug)]
pub struct Rendered {
    version_table: String,
    revisions: Vec<RenderedRevision>,
}

#[derive(Debug)]
struct RenderedRevision {
    entry: ManifestRevision,
    up: String,
    down: Option<String>,
}

/// Runs the project's Alembic and joins what it printed.
pub fn run(project: &Project, alembic: &Alembic) -> Result<Rendered, RenderError> {
    let (listing, upgrade, downgrade) = std::thread::scope(|scope| {
        let listing = scope.spawn(|| alembic.run(&["history", "--verbose"]));
        let downgrade = scope.spawn(|| alembic.run(&["downgrade", "head:base", "--sql"]));
        let upgrade = alembic.run(&["upgrade", "base:head", "--sql"]);
        (
            joined_thread(listing, alembic),
            upgrade,
            joined_thread(downgrade, alembic),
        )
    });
    let listing = listing?;
    if !listing.succeeded {
        let (detail, at) = invoke::failure(&listing.stderr, &project.root);
        return Err(RenderError::History {
            command: alembic.shown(),
            at: at.map(|at| format!(" in {at}")).unwrap_or_default(),
            detail,
        });
    }
    let listed: HashMap<String, Listed> = history::parse(&listing.stdout)
        .into_iter()
        .map(|entry| (entry.id.clone(), entry))
        .collect();
    let mut heads: Vec<String> = listed
        .values()
        .filter(|entry| entry.head)
        .map(|entry| entry.id.clone())
        .collect();
    if heads.len() > 1 {
        heads.sort();
        return Err(RenderError::MultipleHeads { heads });
    }
    let upgrade = upgrade?;
    let up = offline::split(&upgrade.stdout, Direction::Upgrade);
    if !upgrade.succeeded {
        let (detail, at) = invoke::failure(&upgrade.stderr, &project.root);
        return Err(match up.sections.last() {
            Some(failed) => RenderError::Upgrade {
                file: failing_file(source(project, listed.get(&failed.id)), at),
                id: failed.id.clone(),
                detail,
            },
            None => environment(alembic, detail, at),
        });
    }
    let mut downs = downgrades(project, alembic, &up.sections, downgrade?)?;
    let revisions = up
        .sections
        .into_iter()
        .map(|section| {
            let down = downs.remove(&section.id);
            let entry = listed.get(&section.id);
            joined(project, section, down, entry)
        })
        .collect();
    Ok(Rendered {
        version_table: up.version_table,
        revisions,
    })
}

/// A revision's downgrade: its SQL and whether it is transactional, or why it raised.
enum Down {
    Rendered(Section),
    Raised(String),
}

/// Every revision's downgrade. `first` rendered from the head down; where a revision raised,
/// the revisions below it are rendered by further invocations from the newest one left.
fn downgrades(
    project: &Project,
    alembic: &Alembic,
    ups: &[Section],
    first: Ran,
) -> Result<HashMap<String, Down>, RenderError> {
    let mut downs: HashMap<String, Down> = HashMap::new();
    let mut ran = first;
    loop {
        let mut sections = offline::split(&ran.stdout, Direction::Downgrade).sections;
        let before = downs.len();
        if !ran.succeeded {
            let (detail, at) = invoke::failure(&ran.stderr, &project.root);
            let Some(raised) = sections.pop() else {
                return Err(environment(alembic, detail, at));
            };
            downs.insert(raised.id, Down::Raised(detail));
        }
        for section in sections {
            downs
                .entry(section.id.clone())
                .or_insert(Down::Rendered(section));
        }
        let Some(newest_left) = ups.iter().rev().find(|up| !downs.contains_key(&up.id)) else {
            return Ok(downs);
        };
        if downs.len() == before {
            return Err(environment(
                alembic,
                format!("the downgrade from {} rendered nothing", newest_left.id),
                None,
            ));
        }
        let range = format!("{}:base", newest_left.id);
        ran = alembic.run(&["downgrade", &range, "--sql"])?;
    }
}

/// A revision's manifest entry and scripts.
fn joined(
    project: &Project,
    up: Section,
    down: Option<Down>,
    listed: Option<&Listed>,
) -> RenderedRevision {
    let mut parents = up.parents;
    for dependency in listed
        .map(|entry| entry.depends_on.as_slice())
        .unwrap_or_default()
    {
        if !parents.contains(dependency) {
            parents.push(dependency.clone());
        }
    }
    let (down, down_transactional, irreversible) = match down {
        Some(Down::Rendered(section)) => (Some(section.sql), section.transactional, None),
        Some(Down::Raised(detail)) => (None, true, Some(detail)),
        None => (
            None,
            true,
            Some("Alembic rendered no downgrade for it".to_owned()),
        ),
    };
    RenderedRevision {
        entry: ManifestRevision {
            name: name(&up.id, listed),
            source: source(project, listed).unwrap_or_default(),
            id: up.id,
            parents,
            transactional: up.transactional && down_transactional,
            irreversible,
        },
        up: up.sql,
        down,
    }
}

impl Rendered {
    /// Writes the set into the cache under `key`; returns its folder.
    pub fn store(
        &self,
        cache_root: &Path,
        key: &str,
        keep_version_table: bool,
    ) -> Result<std::path::PathBuf, RenderError> {
        let manifest = Manifest {
            version_table: self.version_table.clone(),
            keep_version_table,
            revisions: self
                .revisions
                .iter()
                .map(|revision| revision.entry.clone())
                .collect(),
        };
        let scripts: Vec<Scripts<'_>> = self
            .revisions
            .iter()
            .map(|revision| Scripts {
                id: &revision.entry.id,
                up: &revision.up,
                down: revision.down.as_deref(),
            })
            .collect();
        cache::store(cache_root, key, &manifest, &scripts)
    }
}

/// An invocation's result; a thread that could not finish counts as a failed start.
fn joined_thread(
    handle: std::thread::ScopedJoinHandle<'_, Result<Ran, RenderError>>,
    alembic: &Alembic,
) -> Result<Ran, RenderError> {
    handle.join().unwrap_or_else(|_| {
        Err(RenderError::Spawn {
            command: alembic.shown(),
            source: std::io::Error::other("the thread running it panicked"),
        })
    })
}

fn environment(alembic: &Alembic, detail: String, at: Option<String>) -> RenderError {
    RenderError::Environment {
        command: alembic.shown(),
        at: at.map(|at| format!(" (in {at})")).unwrap_or_default(),
        detail,
    }
}

/// The revision's file, with the line the traceback names in it when it does.
fn failing_file(file: Option<String>, at: Option<String>) -> String {
    match (file, at) {
        (Some(file), Some(at)) if at.starts_with(&format!("{file}:")) => at,
        (Some(file), _) => file,
        (None, at) => at.unwrap_or_default(),
    }
}

/// The revision's file relative to the project, as `alembic history` names it.
fn source(project: &Project, listed: Option<&Listed>) -> Option<String> {
    listed.map(|entry| project.relative(&entry.path))
}

/// Its file name without the id (Alembic names files `<id>_<slug>.py`), else its message as
/// a slug.
fn name(id: &str, listed: Option<&Listed>) -> String {
    let from_file = listed
        .and_then(|entry| entry.path.file_stem())
        .map(|stem| stem.to_string_lossy().into_owned())
        .and_then(|stem| {
            stem.strip_prefix(id)
                .and_then(|rest| rest.strip_prefix('_'))
                .filter(|rest| !rest.is_empty())
                .map(str::to_owned)
        });
    from_file
        .or_else(|| listed.map(|entry| slug(&entry.message)))
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "revision".to_owned())
}

fn slug(message: &str) -> String {
    let mut slug = String::new();
    for character in message.chars() {
        if character.is_ascii_alphanumeric() {
            slug.push(character.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('_') {
            slug.push('_');
        }
    }
    slug.trim_end_matches('_').chars().take(60).collect()
}
