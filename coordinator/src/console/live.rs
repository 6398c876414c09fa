//! Rollouts followed live: the events `WatchRollout` (one plan) and `WatchEvents` (the fleet)
//! stream, as server-sent events. Each carries its sequence as its id, so a browser that
//! reconnects, here or on another replica's console, resumes after the last one it saw
//! (`Last-Event-ID`, or `since`). A stream that ends without an error (its plan ended, or the
//! replica's watch of the store did) sends `end`, which the page heeds only once it has seen
//! its plan end; one that ends with an error (the replica stops, the store failed) just ends.
//! Either way a page whose plan goes on reconnects.

use std::convert::Infallible;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use tokio::sync::mpsc;
use tonic::Status;

use super::api::to_json;
use super::{Console, Refusal, Viewer};
use crate::events::Sequence;
use crate::events::follow::{self, Scope, Watch};
use crate::store::Store;

/// `GET /api/v1/events` asks for one plan's events or the fleet's, after a sequence.
#[derive(Debug, Deserialize)]
pub struct Asked {
    plan: Option<String>,
    since: Option<u64>,
}

/// `GET /api/v1/events[?plan=<plan>][&since=<sequence>]`.
pub async fn events<S: Store + 'static>(
    State(console): State<Console<S>>,
    _viewer: Viewer,
    Query(asked): Query<Asked>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let resumed = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let since = resumed.or(asked.since).filter(|since| *since > 0);
    let watch = Watch {
        scope: asked.plan.map_or(Scope::Fleet, Scope::Plan),
        include_statements: true,
        since: since.map(Sequence::from_raw),
    };
    let events = follow::follow(console.fleet.events(), watch)
        .await
        .map_err(Status::from)?;
    Ok(Sse::new(sent(events))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The followed events as server-sent events, then `end` when the stream ended on its own.
fn sent(
    events: mpsc::Receiver<Result<fleetshift_common::proto::v1::RolloutEvent, Status>>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(Some(events), |events| async move {
        let mut events = events?;
        loop {
            match events.recv().await {
                Some(Ok(event)) => match to_json(&event) {
                    Ok(json) => {
                        let sent = Event::default()
                            .id(event.sequence.to_string())
                            .data(json.to_string());
                        return Some((Ok(sent), Some(events)));
                    }
                    Err(status) => {
                        tracing::warn!(error = %status.message(), "an event left out of the console's stream")
                    }
                },
                Some(Err(status)) => {
                    tracing::debug!(reason = %status.message(), "a console stream ends early");
                    return None;
                }
                // Browsers drop an event without data: it says what ended.
                None => return Some((Ok(Event::default().event("end").data("ended")), None)),
            }
        }
    })
}
