//! squawk's settings as squawk users give them: flags, and `.squawk.toml` from the current
//! directory or the nearest one above (the keys fleetshift understands; the rest is squawk's
//! business). Flags add to (rules, paths) or override (version, transaction) the file.

use std::path::{Path, PathBuf};

use fleetshift_coordinator::lint::LintSettings;

use super::LintArgs;

pub(super) fn parse_pg_version(text: &str) -> Result<squawk_linter::Version, String> {
    text.parse()
        .map_err(|error| format!("{error}; give a version such as 13.0 or 16"))
}

/// squawk's `.squawk.toml`, the keys fleetshift reads (others are squawk's business).
#[derive(Debug, Default, serde::Deserialize)]
struct SquawkConfig {
    pg_version: Option<String>,
    #[serde(default)]
    excluded_rules: Vec<String>,
    assume_in_transaction: Option<bool>,
    #[serde(default)]
    excluded_paths: Vec<String>,
}

impl SquawkConfig {
    /// `explicit`, else `.squawk.toml` in the current directory or the nearest one above.
    fn find(explicit: Option<&Path>) -> Result<Option<(PathBuf, Self)>, String> {
        let path = match explicit {
            Some(path) => path.to_path_buf(),
            None => {
                let here = std::env::current_dir()
                    .map_err(|error| format!("cannot read the current directory: {error}"))?;
                let found = here
                    .ancestors()
                    .map(|directory| directory.join(".squawk.toml"))
                    .find(|candidate| candidate.is_file());
                match found {
                    Some(path) => path,
                    None => return Ok(None),
                }
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|error| {
            format!(
                "{}: cannot read squawk's configuration: {error}",
                path.display()
            )
        })?;
        let config = toml::from_str(&text).map_err(|error: toml::de::Error| {
            let line = error
                .span()
                .map_or(1, |span| text[..span.start].matches('\n').count() + 1);
            format!("{}:{line}: {}", path.display(), error.message())
        })?;
        Ok(Some((path, config)))
    }
}

/// The settings a lint runs with: flags over squawk's configuration file.
pub(super) struct Configured {
    pub(super) settings: LintSettings,
    pub(super) in_transaction: bool,
    excluded_paths: Vec<glob::Pattern>,
}

impl Configured {
    pub(super) fn from(arguments: &LintArgs) -> Result<Self, String> {
        let (source, config) = SquawkConfig::find(arguments.config.as_deref())?
            .map_or((None, SquawkConfig::default()), |(path, config)| {
                (Some(path), config)
            });
        let at = |key: &str| match &source {
            Some(path) => format!("{}: {key}", path.display()),
            None => key.to_owned(),
        };
        let pg_version = match (arguments.pg_version, &config.pg_version) {
            (Some(version), _) => Some(version),
            (None, Some(text)) => Some(
                parse_pg_version(text).map_err(|error| format!("{}: {error}", at("pg_version")))?,
            ),
            (None, None) => None,
        };
        let mut excluded_rules = config.excluded_rules.clone();
        excluded_rules.extend(arguments.exclude.iter().cloned());
        for rule in &excluded_rules {
            LintSettings::check_rule(rule)
                .map_err(|error| format!("{}: {error}", at("excluded rules")))?;
        }
        let excluded_paths = config
            .excluded_paths
            .iter()
            .chain(&arguments.exclude_path)
            .map(|pattern| {
                glob::Pattern::new(pattern).map_err(|error| {
                    format!(
                        "{}: {pattern:?} is not a valid pattern: {error}",
                        at("excluded paths")
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            settings: LintSettings {
                pg_version,
                excluded_rules,
            },
            in_transaction: arguments.assume_in_transaction
                || config.assume_in_transaction.unwrap_or(false),
            excluded_paths,
        })
    }

    /// Whether `path`, as given, is excluded from linting (squawk matches the same way).
    pub(super) fn skips(&self, path: &Path) -> bool {
        self.excluded_paths
            .iter()
            .any(|pattern| pattern.matches_path(path))
    }
}
