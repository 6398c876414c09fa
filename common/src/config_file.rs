//! Reading a configuration file (TOML) and saying what is wrong with it: the file, the line when
//! known, and the problem. The coordinator's and the agent's loaders both start here.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a configuration file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl ConfigError {
    /// A problem with the file as a whole (no line).
    pub fn new(path: &Path, message: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            line: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(
                formatter,
                "{}:{line}: {}",
                self.path.display(),
                self.message
            ),
            None => write!(formatter, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// A key of a configuration file that an environment variable sets instead.
#[derive(Debug, Clone, Copy)]
pub struct EnvKey {
    pub variable: &'static str,
    /// The key's place in the file: `["backups", "keep"]` is `keep` in `[backups]`.
    pub path: &'static [&'static str],
    pub kind: EnvKind,
}

impl EnvKey {
    pub const fn new(variable: &'static str, path: &'static [&'static str], kind: EnvKind) -> Self {
        Self {
            variable,
            path,
            kind,
        }
    }
}

/// How a variable's text becomes the key's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvKind {
    /// As it is.
    Text,
    /// A whole number.
    Integer,
    /// Comma-separated items, each as it is (`a,b` is `["a", "b"]`).
    List,
    /// A TOML value: an array (`["a", "b"]`), an inline table, or an array of inline tables
    /// (`[{ id = "a", database_url_file = "/run/a" }]` for `[[shards]]`).
    Toml,
}

/// Reads `path` as the TOML of `T`; `what` names the file for people ("agent configuration").
pub fn read_toml<T: DeserializeOwned>(path: &Path, what: &str) -> Result<T, ConfigError> {
    read_toml_with_env(path, what, &[], |_| None)
}

/// Like [`read_toml`], with each of `keys` whose variable `lookup` finds set to that value
/// (it replaces the file's). A mistake in a variable names the variable.
pub fn read_toml_with_env<T: DeserializeOwned>(
    path: &Path,
    what: &str,
    keys: &[EnvKey],
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| ConfigError::new(path, format!("cannot read the {what}: {error}")))?;
    let in_file = |error: toml::de::Error| ConfigError {
        path: path.to_path_buf(),
        line: Some(
            error
                .span()
                .map_or(1, |span| text[..span.start].matches('\n').count() + 1),
        ),
        message: error.message().to_owned(),
    };
    let in_environment = |key: &EnvKey, problem: String| {
        ConfigError::new(path, format!("environment {}: {problem}", key.variable))
    };
    let mut overrides = Vec::new();
    for key in keys {
        if let Some(raw) = lookup(key.variable) {
            let value = env_value(key, &raw).map_err(|problem| in_environment(key, problem))?;
            overrides.push((key, value));
        }
    }
    if overrides.is_empty() {
        return toml::from_str(&text).map_err(in_file);
    }
    let mut table: toml::Table = toml::from_str(&text).map_err(in_file)?;
    let mut applied = Vec::with_capacity(overrides.len());
    for (key, value) in overrides {
        place(&mut table, key.path, value).map_err(|problem| in_environment(key, problem))?;
        applied.push(key.variable);
    }
    T::deserialize(table).map_err(|error| {
        ConfigError::new(
            path,
            format!(
                "{} (with the environment's {})",
                error.message(),
                applied.join(", ")
            ),
        )
    })
}

/// `raw` as the value `key` takes.
fn env_value(key: &EnvKey, raw: &str) -> Result<toml::Value, String> {
    match key.kind {
        EnvKind::Text => Ok(toml::Value::String(raw.to_owned())),
        EnvKind::Integer => raw
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("{raw:?} is not a whole number")),
        EnvKind::List => Ok(toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| toml::Value::String(item.to_owned()))
                .collect(),
        )),
        EnvKind::Toml => {
            let document = format!("value = {raw}");
            let mut parsed: toml::Table = toml::from_str(&document)
                .map_err(|error| format!("not a TOML value ({})", error.message()))?;
            parsed
                .remove("value")
                .ok_or_else(|| "not a TOML value".to_owned())
        }
    }
}

/// Sets `value` at `path` in `table`, making the tables on the way.
fn place(table: &mut toml::Table, path: &[&str], value: toml::Value) -> Result<(), String> {
    let Some((last, sections)) = path.split_last() else {
        return Err("names no key".to_owned());
    };
    let mut current = table;
    for section in sections {
        let entry = current
            .entry((*section).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{section}` in the file is not a table"))?;
    }
    current.insert((*last).to_owned(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[serde(rename = "name")]
        _name: String,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Layered {
        name: String,
        #[serde(default)]
        section: Section,
        #[serde(default)]
        items: Vec<Item>,
    }

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Section {
        keep: Option<i64>,
        hosts: Option<Vec<String>>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Item {
        id: String,
    }

    const KEYS: &[EnvKey] = &[
        EnvKey {
            variable: "NAME",
            path: &["name"],
            kind: EnvKind::Text,
        },
        EnvKey {
            variable: "KEEP",
            path: &["section", "keep"],
            kind: EnvKind::Integer,
        },
        EnvKey {
            variable: "HOSTS",
            path: &["section", "hosts"],
            kind: EnvKind::List,
        },
        EnvKey {
            variable: "ITEMS",
            path: &["items"],
            kind: EnvKind::Toml,
        },
    ];

    #[test]
    fn the_environment_sets_keys_of_any_kind_and_its_mistakes_name_the_variable() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("layered.toml");
        std::fs::write(&path, "name = \"file\"\n[section]\nkeep = 1\n").expect("write");
        let environment = |pairs: &'static [(&'static str, &'static str)]| {
            move |variable: &str| {
                pairs
                    .iter()
                    .find(|(name, _)| *name == variable)
                    .map(|(_, value)| (*value).to_owned())
            }
        };
        let read: Layered = read_toml_with_env(
            &path,
            "sample",
            KEYS,
            environment(&[
                ("NAME", "env"),
                ("KEEP", "7"),
                ("HOSTS", "a:1, b:2"),
                ("ITEMS", "[{ id = \"x\" }, { id = \"y\" }]"),
            ]),
        )
        .expect("read");
        assert_eq!(read.name, "env");
        assert_eq!(read.section.keep, Some(7));
        assert_eq!(
            read.section.hosts,
            Some(vec!["a:1".to_owned(), "b:2".to_owned()])
        );
        assert_eq!(read.items.len(), 2);
        assert_eq!(read.items[1].id, "y");

        let file_only: Layered =
            read_toml_with_env(&path, "sample", KEYS, environment(&[])).expect("read");
        assert_eq!(
            (file_only.name.as_str(), file_only.section.keep),
            ("file", Some(1))
        );

        let wrong =
            read_toml_with_env::<Layered>(&path, "sample", KEYS, environment(&[("KEEP", "many")]))
                .expect_err("not a number");
        assert!(
            wrong
                .to_string()
                .contains("environment KEEP: \"many\" is not a whole number"),
            "{wrong}"
        );
        let wrong = read_toml_with_env::<Layered>(
            &path,
            "sample",
            KEYS,
            environment(&[("ITEMS", "[{ nope = 1 }]")]),
        )
        .expect_err("unknown field");
        assert!(
            wrong.to_string().contains("with the environment's ITEMS"),
            "{wrong}"
        );
    }

    #[test]
    fn a_mistake_is_named_with_its_file_and_line() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("sample.toml");
        std::fs::write(&path, "\nname = \"a\"\nnmae = \"b\"\n").expect("write");
        let error = read_toml::<Sample>(&path, "sample").expect_err("unknown field");
        assert_eq!(error.line, Some(3));
        assert!(
            error
                .to_string()
                .starts_with(&format!("{}:3: ", path.display()))
        );
        let missing = read_toml::<Sample>(&directory.path().join("nope.toml"), "sample")
            .expect_err("no file");
        assert!(
            missing.to_string().contains("cannot read the sample"),
            "{missing}"
        );
    }
}
