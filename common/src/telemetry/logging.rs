//! Structured logs on stderr (text or JSON, levels from `RUST_LOG`, default `info`), and the
//! trace exporter beside them when the OpenTelemetry environment asks for one.

use std::io::IsTerminal;

use tracing_subscriber::filter::{FilterExt as _, LevelFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use super::traces::{TraceExport, TraceSetupError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The logging flag both binaries take.
#[derive(Debug, Clone, clap::Args)]
pub struct LogOptions {
    /// Log format on stderr (levels from RUST_LOG, default info).
    #[arg(
        id = "log_format",
        long = "log-format",
        value_name = "LOG_FORMAT",
        global = true,
        value_enum,
        default_value = "text",
        env = "FLEETSHIFT_LOG_FORMAT"
    )]
    pub format: LogFormat,
}

/// A layer of the process's own beside logs and traces (one that turns events into metrics).
pub type ExtraLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Sets up the process's logs, and its traces as [`TraceExport::install`] describes, and
/// `extra` when given. `default_level` applies when RUST_LOG is unset; `service` names the
/// process in traces. Must run inside the tokio runtime (the exporter's channel lives on it).
pub fn init(
    format: LogFormat,
    default_level: &str,
    service: &'static str,
    extra: Option<ExtraLayer>,
) -> Result<Option<TraceExport>, TraceSetupError> {
    let traces = TraceExport::install(service)?;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},sqlx=warn")));
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colours only for a person watching; log files and collectors get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    // Log lines are events only: spans are for traces, and carry nothing a line lacks. One
    // combined filter, so every callsite's interest is decided once (never, for the chatty
    // trace events of h2 and tonic) and the level hint stays RUST_LOG's.
    let events_only = filter_fn(|metadata| metadata.is_event())
        .with_max_level_hint(LevelFilter::TRACE)
        .and(filter);
    let lines = match format {
        LogFormat::Text => lines.compact().with_filter(events_only).boxed(),
        LogFormat::Json => lines
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_filter(events_only)
            .boxed(),
    };
    let spans = traces.as_ref().map(TraceExport::layer);
    let layers: Vec<ExtraLayer> = std::iter::once(lines).chain(extra).collect();
    tracing_subscriber::registry()
        .with(layers)
        .with(spans)
        .init();
    Ok(traces)
}
