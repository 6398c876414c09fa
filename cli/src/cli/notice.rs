//! `fleetshift plan notice PLAN`: a maintenance notification rendered from the plan with a
//! Jinja-compatible engine (minijinja): the built-in template (markdown or text), a user's
//! template, or the context itself as JSON (see [`context`] for the variables).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use fleetshift_common::error::ErrorKind;
use fleetshift_common::proto::v1::{GetPlanRequest, ListShardsRequest};
use serde_json::Value;

use super::fleet::{Connection, client, refused};
use super::{Output, render};
use crate::exit;
use context::{Announcement, context};

mod context;
mod facts;
mod schedule;

const MARKDOWN: &str = include_str!("notice/notice.md.j2");
const TEXT: &str = include_str!("notice/notice.txt.j2");

#[derive(Debug, Args)]
pub struct NoticeArgs {
    #[command(flatten)]
    connection: Connection,
    /// The plan to announce.
    plan: String,
    /// A Jinja template of your own instead of the built-in one.
    #[arg(long)]
    template: Option<PathBuf>,
    /// The built-in template's flavour, or the template context as JSON.
    #[arg(long, value_enum, default_value = "markdown")]
    format: NoticeFormat,
    /// When the maintenance starts, as you want it printed.
    #[arg(long)]
    start: Option<String>,
    /// How long it is expected to take, as you want it printed.
    #[arg(long)]
    duration: Option<String>,
    /// When it ends, as you want it printed.
    #[arg(long)]
    end: Option<String>,
    /// Who to contact with questions.
    #[arg(long, env = "FLEETSHIFT_SUPPORT_CONTACT")]
    support_contact: Option<String>,
    /// Who to call when it goes wrong.
    #[arg(long, env = "FLEETSHIFT_EMERGENCY_CONTACT")]
    emergency_contact: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum NoticeFormat {
    Text,
    Markdown,
    Json,
}

pub async fn run(arguments: NoticeArgs) -> ExitCode {
    let output = if arguments.format == NoticeFormat::Json {
        Output::Json
    } else {
        Output::Human
    };
    let template = match &arguments.template {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(error) => {
                let message = format!("{}: cannot read the template: {error}", path.display());
                render::failure(output, &message, ErrorKind::BadInput);
                return ExitCode::from(exit::BAD_INPUT);
            }
        },
        None => None,
    };
    let mut client = match client(&arguments.connection, output).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let plan = match client
        .get_plan(GetPlanRequest {
            plan_id: arguments.plan.clone(),
        })
        .await
    {
        Ok(response) => response.into_inner(),
        Err(status) => return refused(&arguments.connection, output, &status),
    };
    // The shards as their agents announce them now: engines, servers, versions, URLs.
    let shards = match client.list_shards(ListShardsRequest::default()).await {
        Ok(response) => response.into_inner().shards,
        Err(status) => return refused(&arguments.connection, output, &status),
    };
    let announcement = Announcement {
        start: arguments.start,
        duration: arguments.duration,
        end: arguments.end,
        support_contact: arguments.support_contact,
        emergency_contact: arguments.emergency_contact,
    };
    let context = context(&plan, &shards, &announcement);
    let source = match (&template, arguments.format) {
        (_, NoticeFormat::Json) => {
            println!("{context}");
            return ExitCode::from(exit::OK);
        }
        (Some(text), _) => text.as_str(),
        (None, NoticeFormat::Markdown) => MARKDOWN,
        (None, NoticeFormat::Text) => TEXT,
    };
    match notice(source, &context) {
        Ok(text) => {
            print!("{text}");
            ExitCode::from(exit::OK)
        }
        Err(message) => {
            render::failure(output, &message, ErrorKind::BadInput);
            ExitCode::from(exit::BAD_INPUT)
        }
    }
}

/// Renders `source` with `context`; template mistakes come back with their line.
fn notice(source: &str, context: &Value) -> Result<String, String> {
    minijinja::Environment::new()
        .render_str(source, minijinja::value::Serde(context))
        .map_err(|error| match error.line() {
            Some(line) => format!("the notice template, line {line}: {error}"),
            None => format!("the notice template: {error}"),
        })
}

#[cfg(test)]
mod tests;
