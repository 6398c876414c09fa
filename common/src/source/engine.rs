//! The database engines fleetshift runs revisions on. Most layouts give every engine the same
//! scripts; pop's dialect files give each engine its own.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    Postgres,
    Sqlite,
}

impl Engine {
    pub const ALL: [Engine; 2] = [Self::Postgres, Self::Sqlite];

    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}
