//! How long every database connection took to acquire, across all of the agent's pools.
//!
//! sqlx 0.9 measures each acquisition itself (from asking the pool to holding a connection,
//! waiting for a free one or opening a new one) and reports it as an event (target
//! `sqlx::pool::acquire`, field `acquired_after_secs`) at the level the pool is built with
//! (`engine::ACQUIRE_EVENTS`). This layer turns those events into a histogram, so every
//! acquisition is timed, including the ones sqlx makes for a query run on the pool directly.
//! A tail in this histogram is time spent waiting for a connection.

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::Context;

const TARGET: &str = "sqlx::pool::acquire";
const FIELD: &str = "acquired_after_secs";

/// The histogram, shared by the layer that fills it and the registry that shows it.
#[derive(Debug, Clone)]
pub struct AcquireTimes {
    histogram: Histogram,
}

impl Default for AcquireTimes {
    fn default() -> Self {
        // 0.1 ms to about 13 s (the pools give up after 10 s).
        Self {
            histogram: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
        }
    }
}

impl AcquireTimes {
    pub fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "fleetshift_agent_db_pool_acquire_duration",
            "Time to acquire a database connection from an assignment's pool, waiting included",
            Unit::Seconds,
            self.histogram.clone(),
        );
    }

    /// The layer that reads sqlx's acquire events; it sees nothing else.
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        Recorder {
            histogram: self.histogram.clone(),
        }
        .with_filter(
            filter_fn(|metadata| metadata.is_event() && metadata.target() == TARGET)
                .with_max_level_hint(tracing_subscriber::filter::LevelFilter::TRACE),
        )
    }
}

struct Recorder {
    histogram: Histogram,
}

impl<S: tracing::Subscriber> Layer<S> for Recorder {
    fn on_event(&self, event: &tracing::Event<'_>, _context: Context<'_, S>) {
        let mut seconds = Seconds(None);
        event.record(&mut seconds);
        if let Some(seconds) = seconds.0 {
            self.histogram.observe(seconds);
        }
    }
}

struct Seconds(Option<f64>);

impl Visit for Seconds {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == FIELD {
            self.0 = Some(value);
        }
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {}
}

#[cfg(test)]
mod tests {
    use fleetshift_common::engine::{Connected, Timeouts, connect};
    use fleetshift_common::secrets::DatabaseUrl;
    use prometheus_client::encoding::text::encode;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// Guards against sqlx renaming its event: a real pool's acquisitions must land here.
    #[tokio::test]
    async fn every_acquisition_of_a_real_pool_is_timed() {
        let times = AcquireTimes::default();
        let subscriber = tracing_subscriber::registry().with(times.layer());
        let _installed = tracing::subscriber::set_default(subscriber);
        let directory = tempfile::tempdir().expect("directory");
        let url = format!("sqlite://{}", directory.path().join("shard.db").display());
        let Connected::Sqlite(engine) = connect(&DatabaseUrl::new(url), Timeouts::default())
            .await
            .expect("connect")
        else {
            panic!("not SQLite");
        };
        for _ in 0..3 {
            sqlx::query("SELECT 1")
                .execute(engine.pool())
                .await
                .expect("query");
        }
        let mut registry = Registry::default();
        times.register(&mut registry);
        let mut text = String::new();
        encode(&mut text, &registry).expect("encode");
        let count = text
            .lines()
            .find_map(|line| {
                line.strip_prefix("fleetshift_agent_db_pool_acquire_duration_seconds_count ")
            })
            .and_then(|value| value.trim().parse::<u64>().ok());
        assert!(count.is_some_and(|count| count >= 3), "{text}");
    }
}
