//! The shard's maintenance windows, asked before each revision: a revision starts only while a
//! window is open and, when its duration is estimated, only if it would end before the window
//! closes. A revision that has started always finishes.

use std::collections::HashMap;
use std::time::Duration;

use fleetshift_common::executor::RevisionGate;
use fleetshift_common::proto::v1::RevisionDuration;
use fleetshift_common::source::Revision;
use fleetshift_common::window::{self, Standing, WindowError, Windows};
use jiff::Timestamp;

/// Windows and estimates, from the assignment.
#[derive(Debug)]
pub struct WindowGate {
    windows: Windows,
    /// Per version: the expected duration and where it comes from.
    estimates: HashMap<String, (Duration, String)>,
    /// The moment it is now; the system clock but in tests.
    clock: fn() -> Timestamp,
}

impl WindowGate {
    /// The gate of an assignment with `windows`; none when it has none.
    pub fn new(
        windows: &[String],
        estimates: &[RevisionDuration],
    ) -> Result<Option<Self>, WindowError> {
        let windows = Windows::parse(windows)?;
        if windows.is_empty() {
            return Ok(None);
        }
        let estimates = estimates
            .iter()
            .filter_map(|estimate| {
                let duration = Duration::try_from(estimate.duration?).ok()?;
                Some((
                    estimate.version.clone(),
                    (duration, estimate.source.clone()),
                ))
            })
            .collect();
        Ok(Some(Self {
            windows,
            estimates,
            clock: Timestamp::now,
        }))
    }

    /// Why `version` may not start at `now`, if it may not.
    fn refusal(&self, version: &str, now: Timestamp) -> Option<String> {
        match self.windows.standing(now) {
            Standing::Unrestricted => None,
            Standing::Closed { opens } => Some(match opens {
                Some(opens) => format!(
                    "the shard's maintenance window is closed (the next opens in {})",
                    window::humane_until(now, opens)
                ),
                None => "the shard's maintenance windows are over".to_owned(),
            }),
            Standing::Open { closes } => {
                let (expected, source) = self.estimates.get(version)?;
                let left = closes.duration_since(now);
                let left = Duration::try_from(left).unwrap_or_default();
                (*expected > left).then(|| {
                    format!(
                        "it is expected to take {} ({source}) and the maintenance window closes in {}",
                        window::humane(*expected),
                        window::humane_until(now, closes)
                    )
                })
            }
        }
    }
}

impl RevisionGate for WindowGate {
    fn admit(&self, revision: &Revision) -> Result<(), String> {
        match self.refusal(revision.version.as_str(), (self.clock)()) {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    fn estimate(version: &str, seconds: i64) -> RevisionDuration {
        RevisionDuration {
            version: version.to_owned(),
            duration: Some(prost_types::Duration { seconds, nanos: 0 }),
            source: "fleet".to_owned(),
        }
    }

    #[test]
    fn a_revision_starts_only_in_a_window_with_time_enough_for_it() {
        let gate = WindowGate::new(&["Sat 02:00-04:00 UTC".to_owned()], &[estimate("2", 1800)])
            .expect("readable")
            .expect("a gate");
        // 2026-12-05 is a Saturday.
        assert_eq!(
            gate.refusal("1", at("2026-12-05T01:00:00Z")).as_deref(),
            Some("the shard's maintenance window is closed (the next opens in 1h00m)")
        );
        assert_eq!(
            gate.refusal("1", at("2026-12-05T03:45:00Z")),
            None,
            "no estimate"
        );
        assert_eq!(
            gate.refusal("2", at("2026-12-05T03:00:00Z")),
            None,
            "an hour left"
        );
        assert_eq!(
            gate.refusal("2", at("2026-12-05T03:45:00Z")).as_deref(),
            Some("it is expected to take 30m (fleet) and the maintenance window closes in 15m")
        );
        assert!(
            WindowGate::new(&[], &[])
                .expect("nothing to read")
                .is_none(),
            "no windows, no gate"
        );
        assert!(WindowGate::new(&["Sat 02:00 UTC".to_owned()], &[]).is_err());
    }
}
