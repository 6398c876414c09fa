//! W3C trace context (`traceparent`, `tracestate`) across process boundaries: in the gRPC
//! metadata of every call (clients inject, the coordinator's server extracts), and in the
//! string maps of assignments and plans, which outlive any one call.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use opentelemetry::{Context, trace::TraceState};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::codegen::http::HeaderMap;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The W3C carrier naming `span` as the parent of whatever receives it.
pub fn carrier_of(span: &SpanContext) -> HashMap<String, String> {
    let mut carrier = HashMap::new();
    let context = Context::new().with_remote_span_context(span.clone());
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier
}

/// The span a carrier names, when it names a valid one in a well-formed `traceparent`.
pub fn span_in(carrier: &HashMap<String, String>) -> Option<SpanContext> {
    if !carrier
        .get("traceparent")
        .is_some_and(|value| well_formed(value))
    {
        return None;
    }
    let context = TraceContextPropagator::new().extract(carrier);
    let span = context.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// `version-traceid-spanid-flags` with the W3C lengths (2, 32, 16 and 2 hex digits); the
/// propagator alone would accept shorter ids.
fn well_formed(traceparent: &str) -> bool {
    let parts: Vec<&str> = traceparent.trim().split('-').collect();
    let lengths = parts.iter().map(|part| part.len()).collect::<Vec<_>>();
    lengths.starts_with(&[2, 32, 16, 2])
        && parts
            .iter()
            .all(|part| part.chars().all(|digit| digit.is_ascii_hexdigit()))
}

/// Makes `span` (not yet entered) a child of the span `carrier` names; a carrier without a
/// valid context leaves `span` a root.
pub fn continue_from(span: &tracing::Span, carrier: &HashMap<String, String>) {
    if span.is_disabled() {
        return;
    }
    if let Some(parent) = span_in(carrier) {
        adopt(span, parent);
    }
}

/// Makes `span` a child of the caller's span named in the request headers, when there is one.
pub fn continue_request(span: &tracing::Span, headers: &HeaderMap) {
    let traceparent = headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok());
    if span.is_disabled() || !traceparent.is_some_and(well_formed) {
        return;
    }
    let context = TraceContextPropagator::new().extract(&Headers(headers));
    let parent = context.span().span_context().clone();
    if parent.is_valid() {
        adopt(span, parent);
    }
}

fn adopt(span: &tracing::Span, parent: SpanContext) {
    let remote = SpanContext::new(
        parent.trace_id(),
        parent.span_id(),
        parent.trace_flags(),
        true,
        TraceState::default(),
    );
    // Fails only when traces are off (the span is disabled): nothing to adopt then.
    let _ = span.set_parent(Context::new().with_remote_span_context(remote));
}

/// Client side: puts the current span's context into every call's metadata, so the server's
/// span of the call joins the caller's trace.
#[derive(Debug, Clone, Copy, Default)]
pub struct PropagateContext;

impl tonic::service::Interceptor for PropagateContext {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if super::enabled() {
            let context = tracing::Span::current().context();
            if context.span().span_context().is_valid() {
                TraceContextPropagator::new()
                    .inject_context(&context, &mut Metadata(request.metadata_mut()));
            }
        }
        Ok(request)
    }
}

/// A gRPC client whose calls carry the caller's trace context.
pub type Traced<T> = tonic::service::interceptor::InterceptedService<T, PropagateContext>;

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

struct Metadata<'a>(&'a mut MetadataMap);

impl Injector for Metadata<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId};

    use super::*;

    fn sampled_span() -> SpanContext {
        SpanContext::new(
            TraceId::from_bytes([1; 16]),
            SpanId::from_bytes([2; 8]),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        )
    }

    #[test]
    fn a_carrier_holds_a_w3c_traceparent_that_reads_back() {
        let span = sampled_span();
        let carrier = carrier_of(&span);
        assert_eq!(
            carrier.get("traceparent").map(String::as_str),
            Some("00-01010101010101010101010101010101-0202020202020202-01")
        );
        let read = span_in(&carrier).expect("valid");
        assert_eq!(
            (read.trace_id(), read.span_id(), read.is_sampled()),
            (span.trace_id(), span.span_id(), true)
        );
    }

    #[test]
    fn an_empty_or_garbled_carrier_names_no_span() {
        assert!(span_in(&HashMap::new()).is_none());
        let garbled = HashMap::from([("traceparent".to_owned(), "00-abc-def-01".to_owned())]);
        assert!(span_in(&garbled).is_none());
    }

    #[test]
    fn request_headers_are_read_case_insensitively() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "Traceparent",
            "00-01010101010101010101010101010101-0202020202020202-01"
                .parse()
                .expect("header"),
        );
        let context = TraceContextPropagator::new().extract(&Headers(&headers));
        assert_eq!(
            context.span().span_context().span_id(),
            SpanId::from_bytes([2; 8])
        );
    }
}
