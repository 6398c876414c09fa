//! Spans recorded once they have ended, with ids chosen beforehand.
//!
//! A rollout outlives any one coordinator: its plan, waves and shard tasks start under one
//! leader and may end under another, so no process can hold their spans open. Their ids are
//! fixed in advance instead (stored with the plan, or derived from it), children point at them
//! from the start (an agent's run names its shard task as parent in the assignment), and the
//! leader that commits the end records the span, with its start and end times, exactly once.
//!
//! The SDK draws every span id from the provider's id generator. [`PresetSpanIds`] hands out
//! an id chosen for the span being built on this thread, and random ones otherwise.

use std::cell::Cell;
use std::time::SystemTime;

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

thread_local! {
    static PRESET_SPAN: Cell<Option<SpanId>> = const { Cell::new(None) };
    static PRESET_TRACE: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// Random ids, except for the span [`record`] is building on this thread (a root span draws
/// its trace id too).
#[derive(Debug, Default)]
pub struct PresetSpanIds {
    random: RandomIdGenerator,
}

impl IdGenerator for PresetSpanIds {
    fn new_trace_id(&self) -> TraceId {
        PRESET_TRACE
            .take()
            .unwrap_or_else(|| self.random.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        PRESET_SPAN
            .take()
            .unwrap_or_else(|| self.random.new_span_id())
    }
}

/// A fresh trace and the id of its root span, for a rollout about to be planned.
pub fn new_root() -> SpanContext {
    let random = RandomIdGenerator::default();
    SpanContext::new(
        random.new_trace_id(),
        random.new_span_id(),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    )
}

/// A span that has ended: `id` is its own context, `parent` the span it belongs under (none
/// for a trace's root).
#[derive(Debug, Clone)]
pub struct FinishedSpan {
    pub name: &'static str,
    pub id: SpanContext,
    pub parent: Option<SpanId>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<KeyValue>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// Hands `span` to the exporter; nothing happens when traces are off.
pub fn record(span: FinishedSpan) {
    if super::enabled() {
        record_with(&opentelemetry::global::tracer(super::SCOPE), span);
    }
}

/// Builds `span` through `tracer`, whose provider must draw ids from [`PresetSpanIds`].
fn record_with<T: Tracer>(tracer: &T, span: FinishedSpan) {
    let parent = match span.parent {
        Some(parent) => Context::new().with_remote_span_context(SpanContext::new(
            span.id.trace_id(),
            parent,
            span.id.trace_flags(),
            true,
            TraceState::default(),
        )),
        None => Context::new(),
    };
    let builder = tracer
        .span_builder(span.name)
        .with_kind(SpanKind::Internal)
        .with_start_time(span.start)
        .with_attributes(span.attributes);
    PRESET_SPAN.set(Some(span.id.span_id()));
    PRESET_TRACE.set(Some(span.id.trace_id()));
    let mut built = tracer.build_with_context(builder, &parent);
    // Cleared: a span with a parent draws no trace id, and a dropped span may draw nothing.
    PRESET_SPAN.set(None);
    PRESET_TRACE.set(None);
    built.set_status(match span.error {
        Some(reason) => Status::error(reason),
        None => Status::Ok,
    });
    built.end_with_timestamp(span.end);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

    use super::*;

    fn exporting() -> (SdkTracerProvider, InMemorySpanExporter) {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .with_id_generator(PresetSpanIds::default())
            .build();
        (provider, exporter)
    }

    #[test]
    fn a_recorded_root_and_child_keep_their_chosen_ids_times_and_parent() {
        let (provider, exporter) = exporting();
        let tracer = provider.tracer("test");
        let root = new_root();
        let child = SpanContext::new(
            root.trace_id(),
            SpanId::from_bytes([9; 8]),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let end = start + Duration::from_secs(5);
        record_with(
            &tracer,
            FinishedSpan {
                name: "rollout",
                id: root.clone(),
                parent: None,
                start,
                end,
                attributes: vec![KeyValue::new("fleetshift.plan", "p1")],
                error: None,
            },
        );
        record_with(
            &tracer,
            FinishedSpan {
                name: "wave",
                id: child.clone(),
                parent: Some(root.span_id()),
                start,
                end,
                attributes: Vec::new(),
                error: Some("halted".to_owned()),
            },
        );
        let spans = exporter.get_finished_spans().expect("spans");
        assert_eq!(spans.len(), 2);
        let (rollout, wave) = (&spans[0], &spans[1]);
        assert_eq!(rollout.span_context.trace_id(), root.trace_id());
        assert_eq!(rollout.span_context.span_id(), root.span_id());
        assert_eq!(rollout.parent_span_id, SpanId::INVALID);
        assert_eq!((rollout.start_time, rollout.end_time), (start, end));
        assert_eq!(wave.span_context.trace_id(), root.trace_id());
        assert_eq!(wave.span_context.span_id(), child.span_id());
        assert_eq!(wave.parent_span_id, root.span_id());
        assert_eq!(wave.status, Status::error("halted"));
        // Spans built the usual way afterwards draw random ids again.
        let mut other = tracer.start("other");
        assert_ne!(other.span_context().span_id(), child.span_id());
        other.end();
    }

    #[test]
    fn the_preset_id_is_used_once_and_random_ids_follow() {
        let generator = PresetSpanIds::default();
        let chosen = SpanId::from_bytes([7; 8]);
        PRESET_SPAN.set(Some(chosen));
        assert_eq!(generator.new_span_id(), chosen);
        let next = generator.new_span_id();
        assert_ne!(next, chosen);
        assert_ne!(next, SpanId::INVALID);
    }

    #[test]
    fn a_new_root_is_valid_sampled_and_local() {
        let root = new_root();
        assert!(root.is_valid());
        assert!(root.is_sampled());
        assert!(!root.is_remote());
        assert_ne!(new_root().trace_id(), root.trace_id());
    }
}
