//! Agent session timing: every interval derived from ONE base interval, and the lease as the
//! agent measures it on its own monotonic clock.
//!
//! The coordinator renews the session's etcd lease when a heartbeat arrives, some time after
//! the agent sent it. So the agent measures validity from the moment it SENT the heartbeat that
//! was acknowledged: the lease cannot lapse before `sent + ttl`. It stops issuing statements a
//! safety margin earlier still, which also covers clock-rate drift between hosts.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Every interval of an agent session, derived from the heartbeat interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionIntervals {
    /// How often the agent sends a heartbeat (the base).
    pub heartbeat: Duration,
    /// The lease's time to live: three heartbeats, so two may be lost without losing it.
    pub lease_ttl: Duration,
    /// The agent stops issuing statements this long before its lease may lapse.
    pub safety_margin: Duration,
}

impl SessionIntervals {
    pub fn from_heartbeat(heartbeat: Duration) -> Self {
        Self {
            heartbeat,
            lease_ttl: heartbeat * 3,
            safety_margin: heartbeat,
        }
    }

    /// How long work may go on after a heartbeat sent at `sent` is acknowledged.
    pub fn work_window(&self) -> Duration {
        self.lease_ttl.saturating_sub(self.safety_margin)
    }
}

impl Default for SessionIntervals {
    fn default() -> Self {
        Self::from_heartbeat(Duration::from_secs(2))
    }
}

/// The lease as the agent sees it: heartbeats sent, acknowledgements received.
#[derive(Debug)]
pub struct LeaseClock {
    intervals: SessionIntervals,
    /// Heartbeats not yet acknowledged, oldest first.
    in_flight: VecDeque<(u64, Instant)>,
    /// Until when statements may be issued; `None` before the first acknowledgement.
    work_until: Option<Instant>,
}

impl LeaseClock {
    pub fn new(intervals: SessionIntervals) -> Self {
        Self {
            intervals,
            in_flight: VecDeque::new(),
            work_until: None,
        }
    }

    pub fn heartbeat_sent(&mut self, sequence: u64, at: Instant) {
        self.in_flight.push_back((sequence, at));
    }

    /// Extends the window from the acknowledged heartbeat's send time; returns false for an
    /// acknowledgement of a heartbeat this clock does not know (stale or duplicate).
    pub fn acknowledged(&mut self, sequence: u64) -> bool {
        let Some(position) = self
            .in_flight
            .iter()
            .position(|(sent, _)| *sent == sequence)
        else {
            return false;
        };
        let (_, sent_at) = self.in_flight[position];
        // Older heartbeats can no longer extend anything.
        self.in_flight.drain(..=position);
        let candidate = sent_at + self.intervals.work_window();
        self.work_until = Some(
            self.work_until
                .map_or(candidate, |current| current.max(candidate)),
        );
        true
    }

    /// Whether statements may be issued at `now`.
    pub fn may_work(&self, now: Instant) -> bool {
        self.work_until.is_some_and(|until| now < until)
    }

    /// The instant after which no statement may be issued (for a timer that cancels work).
    pub fn work_until(&self) -> Option<Instant> {
        self.work_until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock() -> LeaseClock {
        LeaseClock::new(SessionIntervals::from_heartbeat(Duration::from_secs(2)))
    }

    #[test]
    fn every_interval_derives_from_the_heartbeat() {
        let intervals = SessionIntervals::from_heartbeat(Duration::from_secs(2));
        assert_eq!(intervals.lease_ttl, Duration::from_secs(6));
        assert_eq!(intervals.work_window(), Duration::from_secs(4));
        assert!(intervals.safety_margin < intervals.lease_ttl);
    }

    #[tokio::test(start_paused = true)]
    async fn no_work_before_the_first_acknowledgement() {
        let clock = clock();
        assert!(!clock.may_work(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_runs_from_the_send_time_not_the_acknowledgement() {
        let mut clock = clock();
        let sent = Instant::now();
        clock.heartbeat_sent(1, sent);
        // The acknowledgement arrives late (a slow coordinator or network).
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(clock.acknowledged(1));
        assert_eq!(clock.work_until(), Some(sent + Duration::from_secs(4)));
        assert!(clock.may_work(Instant::now()));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            !clock.may_work(Instant::now()),
            "stops a safety margin before the lease may lapse"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stale_or_duplicate_acknowledgements_extend_nothing() {
        let mut clock = clock();
        let start = Instant::now();
        clock.heartbeat_sent(1, start);
        tokio::time::advance(Duration::from_secs(2)).await;
        clock.heartbeat_sent(2, Instant::now());
        assert!(clock.acknowledged(2));
        let window = clock.work_until();
        assert!(!clock.acknowledged(1), "heartbeat 1 was superseded");
        assert!(!clock.acknowledged(2), "already acknowledged");
        assert!(!clock.acknowledged(9), "never sent");
        assert_eq!(clock.work_until(), window);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_coordinator_stops_the_work() {
        let mut clock = clock();
        clock.heartbeat_sent(1, Instant::now());
        assert!(clock.acknowledged(1));
        // Heartbeats keep going out, nothing comes back (partition, paused coordinator).
        for sequence in 2..5 {
            tokio::time::advance(Duration::from_secs(2)).await;
            clock.heartbeat_sent(sequence, Instant::now());
        }
        assert!(!clock.may_work(Instant::now()));
    }
}
