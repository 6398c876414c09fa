//! Dry runs: exactly the SQL a run would send, in order, with its transaction framing and the
//! statements fleetshift adds, for one database (`migrate up --dry-run`) or for groups of
//! shards at the same version (`plan --sql`).

use fleetshift_common::engine::Timeouts;
use fleetshift_common::executor::Direction;
use fleetshift_common::source::Revision;
use serde_json::json;

use super::Output;

/// What runs on `target` (a shard, or a group of them): `revisions` in order, each with the
/// statements of its script in `direction`.
#[derive(Debug, Clone, Copy)]
pub struct DryRun<'a> {
    pub target: &'a str,
    pub revisions: &'a [&'a Revision],
    pub direction: Direction,
    pub timeouts: Timeouts,
}

impl DryRun<'_> {
    fn scripts(&self) -> Vec<(&Revision, Vec<&str>)> {
        self.revisions
            .iter()
            .map(|revision| {
                let script = match self.direction {
                    Direction::Up => Some(&revision.up),
                    Direction::Down => revision.down.as_ref(),
                };
                let statements = script
                    .map(|script| {
                        script
                            .statements()
                            .iter()
                            .map(|statement| statement.sql.as_str())
                            .collect()
                    })
                    .unwrap_or_default();
                (*revision, statements)
            })
            .collect()
    }

    /// The revisions as JSON: version, name, mode and statements of each.
    pub fn revisions_json(&self) -> serde_json::Value {
        let revisions: Vec<_> = self
            .scripts()
            .into_iter()
            .map(|(revision, statements)| {
                json!({
                    "version": revision.version.as_str(),
                    "name": revision.name,
                    "transactional": revision.transactional,
                    "statements": statements,
                })
            })
            .collect();
        serde_json::Value::Array(revisions)
    }

    /// The SQL as text, each revision framed as it runs.
    pub fn print_sql(&self) {
        println!(
            "-- dry run on {}: {} revision(s), nothing is executed",
            self.target,
            self.revisions.len()
        );
        for (revision, statements) in self.scripts() {
            println!();
            if revision.transactional {
                println!("-- {} (one transaction)", revision.label());
                println!("BEGIN;");
                println!(
                    "SET LOCAL lock_timeout = '{}ms';",
                    self.timeouts.lock_timeout.as_millis()
                );
                println!(
                    "SET LOCAL statement_timeout = '{}ms';",
                    self.timeouts.statement_timeout.as_millis()
                );
                println!("-- fleetshift: fence check-and-set and ledger check");
                for statement in statements {
                    println!("{statement};");
                }
                println!("-- fleetshift: ledger record");
                println!("COMMIT;");
            } else {
                println!(
                    "-- {} (outside a transaction: each statement commits on its own)",
                    revision.label()
                );
                println!("-- fleetshift: fenced `started` record");
                for statement in statements {
                    println!("{statement};");
                }
                println!("-- fleetshift: fenced completion record");
            }
        }
    }

    /// One database's dry run, as text or one JSON document.
    pub fn print(&self, output: Output) {
        match output {
            Output::Json => super::render::print_json(&json!({
                "shard": self.target,
                "direction": format!("{:?}", self.direction).to_lowercase(),
                "revisions": self.revisions_json(),
            })),
            Output::Human => self.print_sql(),
        }
    }
}
