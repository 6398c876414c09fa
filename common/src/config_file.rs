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

/// Reads `path` as the TOML of `T`; `what` names the file for people ("agent configuration").
pub fn read_toml<T: DeserializeOwned>(path: &Path, what: &str) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| ConfigError::new(path, format!("cannot read the {what}: {error}")))?;
    toml::from_str(&text).map_err(|error| ConfigError {
        path: path.to_path_buf(),
        line: Some(
            error
                .span()
                .map_or(1, |span| text[..span.start].matches('\n').count() + 1),
        ),
        message: error.message().to_owned(),
    })
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
