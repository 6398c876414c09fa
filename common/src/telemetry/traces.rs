//! OpenTelemetry traces, exported over OTLP/gRPC when the OpenTelemetry environment asks for it
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and off otherwise.
//! Off means no provider, no exporter and no span anywhere: the spans fleetshift opens are
//! disabled at their call sites, because no layer asks for them.
//!
//! The exporter follows the OpenTelemetry conventions for everything else (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`, `…_TIMEOUT`, `…_INSECURE`,
//! `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`), and adds `OTEL_EXPORTER_OTLP_CERTIFICATE` (a PEM file
//! of the collector's CA) for collectors behind a private CA.
//!
//! Spans reach the exporter two ways: as `tracing` spans through [`layer`], and as spans that
//! ended before anyone could hold them open ([`finished`]).

pub mod context;
pub mod finished;

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;

/// The instrumentation scope of every span fleetshift makes.
pub const SCOPE: &str = "fleetshift";

/// How long the last export may take when the process stops.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);

static ENABLED: OnceLock<bool> = OnceLock::new();

/// Whether this process exports traces (false until [`TraceExport::install`] succeeded).
pub fn enabled() -> bool {
    ENABLED.get().copied().unwrap_or(false)
}

/// Marks `span` failed, saying why (nothing when traces are off).
pub fn mark_failed(span: &tracing::Span, reason: &dyn std::fmt::Display) {
    if !span.is_disabled() {
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_description", reason.to_string());
    }
}

/// The span of one statement of a migration (`location` is `file:line`).
pub fn statement_span(location: &dyn std::fmt::Display) -> tracing::Span {
    tracing::info_span!(
        "statement",
        fleetshift.location = %location,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    )
}

/// A trace configuration fleetshift cannot follow; the process refuses to start rather than run
/// without the traces the operator asked for.
#[derive(Debug, thiserror::Error)]
pub enum TraceSetupError {
    #[error(
        "OTEL_EXPORTER_OTLP_PROTOCOL / OTEL_EXPORTER_OTLP_TRACES_PROTOCOL is {0:?}: fleetshift exports OTLP over gRPC only; set it to \"grpc\" or unset it, and point the endpoint at the collector's gRPC port (usually 4317)"
    )]
    Protocol(String),
    #[error("cannot read OTEL_EXPORTER_OTLP_CERTIFICATE {path}: {source}")]
    Certificate {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot set up the OTLP trace exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// The running exporter; [`TraceExport::shutdown`] sends what is still buffered.
#[derive(Debug)]
pub struct TraceExport {
    provider: SdkTracerProvider,
}

impl TraceExport {
    /// Installs the exporter when the environment names an endpoint; `None` when traces are
    /// off. Must run inside the tokio runtime: the gRPC channel lives on it.
    /// `service` is `service.name` unless `OTEL_SERVICE_NAME` says otherwise.
    pub fn install(service: &'static str) -> Result<Option<Self>, TraceSetupError> {
        let Some(settings) = Settings::from_environment(&|name| std::env::var(name).ok())? else {
            ENABLED.get_or_init(|| false);
            return Ok(None);
        };
        let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if let Some(path) = settings.certificate {
            let pem = std::fs::read(&path)
                .map_err(|source| TraceSetupError::Certificate { path, source })?;
            builder = builder.with_tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
            );
        }
        let exporter = builder
            .with_protocol(opentelemetry_otlp::Protocol::Grpc)
            .build()?;
        let mut resource = Resource::builder();
        if !settings.service_named {
            resource = resource.with_service_name(service);
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_id_generator(finished::PresetSpanIds::default())
            .with_resource(resource.build())
            .build();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        opentelemetry::global::set_tracer_provider(provider.clone());
        ENABLED.get_or_init(|| true);
        Ok(Some(Self { provider }))
    }

    /// The `tracing` layer that turns fleetshift's own spans into OpenTelemetry spans. Events
    /// stay in the logs: the layer sees spans only, and only fleetshift's.
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer(SCOPE))
            .with_location(false)
            .with_threads(false)
            .with_filter(
                filter_fn(|metadata| {
                    metadata.is_span()
                        && metadata.target().starts_with("fleetshift")
                        && *metadata.level() <= tracing::Level::INFO
                })
                .with_max_level_hint(tracing_subscriber::filter::LevelFilter::INFO),
            )
    }

    /// Exports what is still buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown_with_timeout(SHUTDOWN_LIMIT) {
            tracing::warn!(%error, "the last traces may not have reached the collector");
        }
    }
}

/// What the OpenTelemetry environment asks of the exporter, beyond what the exporter reads
/// itself.
#[derive(Debug, PartialEq, Eq)]
struct Settings {
    certificate: Option<String>,
    service_named: bool,
}

impl Settings {
    /// `None` when traces are off: no endpoint, `OTEL_SDK_DISABLED=true` or
    /// `OTEL_TRACES_EXPORTER=none`.
    fn from_environment(
        variable: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, TraceSetupError> {
        let set = |name: &str| variable(name).filter(|value| !value.trim().is_empty());
        let endpoint =
            set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or(set("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let disabled =
            set("OTEL_SDK_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true"));
        let no_exporter =
            set("OTEL_TRACES_EXPORTER").is_some_and(|value| value.eq_ignore_ascii_case("none"));
        if endpoint.is_none() || disabled || no_exporter {
            return Ok(None);
        }
        let protocol =
            set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or(set("OTEL_EXPORTER_OTLP_PROTOCOL"));
        if let Some(protocol) = protocol
            && protocol != "grpc"
        {
            return Err(TraceSetupError::Protocol(protocol));
        }
        Ok(Some(Self {
            certificate: set("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE")
                .or(set("OTEL_EXPORTER_OTLP_CERTIFICATE")),
            service_named: set("OTEL_SERVICE_NAME").is_some(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Option<Settings>, TraceSetupError> {
        let environment: HashMap<String, String> = pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        Settings::from_environment(&|name| environment.get(name).cloned())
    }

    #[test]
    fn traces_are_off_without_an_endpoint_or_when_disabled() {
        assert_eq!(settings(&[]).expect("valid"), None);
        assert_eq!(
            settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).expect("valid"),
            None
        );
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317");
        assert_eq!(
            settings(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")]).expect("valid"),
            None
        );
        assert_eq!(
            settings(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]).expect("valid"),
            None
        );
    }

    #[test]
    fn either_endpoint_turns_traces_on_with_the_certificate_and_service_name_noticed() {
        let on = settings(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "https://collector:4317",
        )])
        .expect("valid");
        assert_eq!(
            on,
            Some(Settings {
                certificate: None,
                service_named: false
            })
        );
        let on = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/otel/ca.pem"),
            ("OTEL_SERVICE_NAME", "fleet-eu"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ])
        .expect("valid");
        assert_eq!(
            on,
            Some(Settings {
                certificate: Some("/etc/otel/ca.pem".to_owned()),
                service_named: true
            })
        );
    }

    #[test]
    fn an_http_protocol_is_refused_with_what_to_do() {
        let refused = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ])
        .expect_err("refused");
        let message = refused.to_string();
        assert!(message.contains("gRPC only"), "{message}");
        assert!(message.contains("4317"), "{message}");
    }
}
