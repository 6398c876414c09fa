//! The live display of a followed rollout in a terminal, redrawn in place as cargo's and
//! indicatif's are: one bar per wave with its shards counted by state, the shards running now
//! with their revision and how long they have run, and how many are throttled or wait for a
//! window. What an operator must read (the plan's state changes, failed shards, failed checks,
//! rollbacks, outages, throttles) scrolls above it as lines. Anything but a terminal, and
//! `--output json`, get the line-per-event log instead.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::{Duration, Instant};

use fleetshift_common::proto::v1::progress_event::Event as Progress;
use fleetshift_common::proto::v1::rollout_event::Event;
use fleetshift_common::proto::v1::{
    BackfillProgress, Plan, PlanState, ProgressEvent, RolloutEvent, ShardState,
};
use fleetshift_common::rollout_names::{plan_state_name, shard_state_name};
use fleetshift_coordinator::rollout::{task_ended, waves};

use tokio::sync::mpsc;

use super::resume::Resumable;
use super::{backfill, bar, pacing, progress_line};

/// Running shards named on the display; the rest are counted.
const RUNNING_SHOWN: usize = 6;

/// A shard running now: its revision (once one started) and since when.
#[derive(Debug, Clone)]
struct Running {
    revision: Option<String>,
    since: Instant,
}

/// What the display shows, and how many lines of the terminal it took last time.
#[derive(Debug)]
pub struct Live {
    waves: BTreeMap<u32, BTreeMap<String, ShardState>>,
    running: BTreeMap<String, Running>,
    throttled: BTreeSet<String>,
    waiting: BTreeSet<String>,
    /// Each backfilling shard's latest progress.
    backfills: BTreeMap<String, BackfillProgress>,
    /// Columns of the terminal; longer lines are cut so each takes one row.
    width: usize,
    drawn: usize,
}

impl Live {
    /// The display of `plan`; `waiting` are the shards that cannot start yet.
    pub fn new(plan: &Plan, waiting: BTreeSet<String>, width: usize, now: Instant) -> Self {
        let mut waves_by_index = BTreeMap::new();
        let mut running = BTreeMap::new();
        for wave in &plan.waves {
            let shards: &mut BTreeMap<String, ShardState> =
                waves_by_index.entry(wave.index).or_default();
            for task in &wave.shards {
                let state = match task.state() {
                    ShardState::Unspecified => ShardState::Pending,
                    state => state,
                };
                shards.insert(task.shard_id.clone(), state);
                if task.state() == ShardState::Running {
                    running.insert(
                        task.shard_id.clone(),
                        Running {
                            revision: None,
                            since: now,
                        },
                    );
                }
            }
        }
        let throttled = waves::planned_tasks(plan)
            .filter(|task| task.throttled.is_some())
            .map(|task| task.shard_id.clone())
            .collect();
        Self {
            waves: waves_by_index,
            running,
            throttled,
            waiting,
            backfills: BTreeMap::new(),
            width: width.max(40),
            drawn: 0,
        }
    }

    /// Takes `event` in; the lines to print above the display.
    pub fn apply(&mut self, event: &RolloutEvent, now: Instant) -> Vec<String> {
        match &event.event {
            Some(Event::PlanState(changed)) => {
                let state = PlanState::try_from(changed.state).unwrap_or(PlanState::Unspecified);
                let reason = if changed.reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", changed.reason)
                };
                vec![format!(
                    "plan {}: {}{reason}",
                    event.plan_id,
                    plan_state_name(state)
                )]
            }
            Some(Event::ShardState(changed)) => {
                let state = changed.state();
                self.waves
                    .entry(changed.wave)
                    .or_default()
                    .insert(changed.shard_id.clone(), state);
                self.waiting.remove(&changed.shard_id);
                if state == ShardState::Running {
                    self.running
                        .entry(changed.shard_id.clone())
                        .or_insert(Running {
                            revision: None,
                            since: now,
                        });
                } else {
                    self.running.remove(&changed.shard_id);
                    self.throttled.remove(&changed.shard_id);
                }
                match &changed.error {
                    Some(error) if task_ended(state) => vec![format!(
                        "{} {}: {}",
                        changed.shard_id,
                        shard_state_name(state),
                        error.message
                    )],
                    _ => Vec::new(),
                }
            }
            Some(Event::Progress(progress)) => self.progress(progress, now),
            None => Vec::new(),
        }
    }

    /// Takes an agent's progress event in; the lines to print above the display.
    fn progress(&mut self, progress: &ProgressEvent, now: Instant) -> Vec<String> {
        let shard = progress.shard_id.clone();
        match &progress.event {
            Some(Progress::RevisionStarted(started)) => {
                let running = self.running.entry(shard).or_insert(Running {
                    revision: None,
                    since: now,
                });
                running.revision = Some(started.version.clone());
                Vec::new()
            }
            Some(Progress::BackfillProgress(backfill)) => {
                self.backfills.insert(shard, backfill.clone());
                Vec::new()
            }
            Some(Progress::Throttled(throttled)) => {
                // A wait begins with nothing waited yet; it ends with the whole wait.
                let began = throttled
                    .waited
                    .is_none_or(|waited| waited.seconds == 0 && waited.nanos == 0);
                if began {
                    self.throttled.insert(shard);
                } else {
                    self.throttled.remove(&shard);
                }
                notable(progress)
            }
            Some(
                Progress::PreflightCheck(_)
                | Progress::RollbackStarted(_)
                | Progress::DatabaseOutage(_),
            ) => notable(progress),
            _ => Vec::new(),
        }
    }

    /// The display's lines now.
    pub fn frame(&self, now: Instant) -> Vec<String> {
        let mut lines: Vec<String> = Vec::new();
        for (index, shards) in &self.waves {
            lines.push(wave_line(*index, shards));
            let backfilling: Vec<(&BackfillProgress, bool)> = shards
                .keys()
                .filter_map(|shard| {
                    let progress = self.backfills.get(shard)?;
                    Some((progress, self.running.contains_key(shard)))
                })
                .collect();
            if !backfilling.is_empty() {
                lines.push(backfill::wave_line(*index, &backfilling));
            }
        }
        if !self.running.is_empty() {
            let mut running: Vec<(&String, &Running)> = self.running.iter().collect();
            running.sort_by_key(|(_, running)| running.since);
            let named: Vec<String> = running
                .iter()
                .take(RUNNING_SHOWN)
                .map(|(shard, running)| {
                    let elapsed = now.saturating_duration_since(running.since);
                    match &running.revision {
                        Some(revision) => format!("{shard} {revision} {elapsed:.1?}"),
                        None => format!("{shard} {elapsed:.1?}"),
                    }
                })
                .collect();
            let more = running.len().saturating_sub(RUNNING_SHOWN);
            let more = if more > 0 {
                format!(", … {more} more")
            } else {
                String::new()
            };
            lines.push(format!("running: {}{more}", named.join(", ")));
        }
        if !self.throttled.is_empty() || !self.waiting.is_empty() {
            lines.push(format!(
                "throttled: {}  waiting to start: {}",
                self.throttled.len(),
                self.waiting.len()
            ));
        }
        lines
            .into_iter()
            .map(|line| cut(line, self.width))
            .collect()
    }

    /// Replaces the display on `out` with `log` above the frame at `now`.
    pub fn draw(&mut self, out: &mut impl Write, log: &[String], now: Instant) {
        let mut text = String::new();
        if self.drawn > 0 {
            // To the start of the first line drawn, then clear to the end of the screen.
            text.push_str(&format!("\x1b[{}F\x1b[J", self.drawn));
        }
        for line in log {
            text.push_str(line);
            text.push('\n');
        }
        let frame = self.frame(now);
        for line in &frame {
            text.push_str(line);
            text.push('\n');
        }
        self.drawn = frame.len();
        // A closed terminal is no reason to stop following the rollout.
        let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    }
}

/// How often the display is redrawn: events between two redraws cost one.
const REDRAW: Duration = Duration::from_millis(200);

/// Follows `events` of `plan` to their end on the live display, on stdout (a terminal).
pub async fn follow(plan: &Plan, events: &mut Resumable<'_>) -> Result<(), tonic::Status> {
    let now = jiff::Timestamp::now();
    let waiting = waves::planned_tasks(plan)
        .filter(|task| pacing::waiting(plan, task, now).is_some())
        .map(|task| task.shard_id.clone())
        .collect();
    let mut live = Live::new(plan, waiting, terminal_width(), Instant::now());
    let mut out = std::io::stdout();
    live.draw(&mut out, &[], Instant::now());
    let (sender, mut receiver) = mpsc::unbounded_channel();
    // Events are read on their own, so a redraw never interrupts a read.
    let reading = async move {
        let ended = loop {
            match events.next().await {
                Ok(Some(event)) => {
                    if sender.send(event).is_err() {
                        break Ok(());
                    }
                }
                Ok(None) => break Ok(()),
                Err(status) => break Err(status),
            }
        };
        drop(sender);
        ended
    };
    let showing = async {
        let mut redraw = tokio::time::interval(REDRAW);
        loop {
            tokio::select! {
                event = receiver.recv() => match event {
                    // Lines to read are printed at once; the display itself waits for the
                    // next tick, so a burst of events costs one redraw.
                    Some(event) => {
                        let log = live.apply(&event, Instant::now());
                        if !log.is_empty() {
                            live.draw(&mut out, &log, Instant::now());
                        }
                    }
                    None => break,
                },
                _ = redraw.tick() => live.draw(&mut out, &[], Instant::now()),
            }
        }
        live.draw(&mut out, &[], Instant::now());
    };
    let (read, ()) = tokio::join!(reading, showing);
    read
}

/// The terminal's columns (80 when it does not say).
fn terminal_width() -> usize {
    rustix::termios::tcgetwinsize(std::io::stdout())
        .ok()
        .map(|size| usize::from(size.ws_col))
        .filter(|columns| *columns > 0)
        .unwrap_or(80)
}

/// A progress event worth a line above the display.
fn notable(progress: &ProgressEvent) -> Vec<String> {
    progress_line(progress)
        .map(|line| vec![format!("{} {line}", progress.shard_id)])
        .unwrap_or_default()
}

/// `wave 0 ██████░░░░  6/20  succeeded 5, failed 1, running 3, pending 11`.
fn wave_line(index: u32, shards: &BTreeMap<String, ShardState>) -> String {
    let ended = shards.values().filter(|state| task_ended(**state)).count();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for state in shards.values() {
        *counts.entry(shard_state_name(*state)).or_default() += 1;
    }
    let counts: Vec<String> = counts
        .iter()
        .map(|(state, count)| format!("{state} {count}"))
        .collect();
    format!(
        "wave {index} {} {ended:>4}/{:<4} {}",
        bar(ended, shards.len()),
        shards.len(),
        counts.join(", ")
    )
}

/// `line` in at most `width` characters.
fn cut(line: String, width: usize) -> String {
    if line.chars().count() <= width {
        return line;
    }
    let mut kept: String = line.chars().take(width.saturating_sub(1)).collect();
    kept.push('…');
    kept
}

#[cfg(test)]
mod tests {
    use fleetshift_common::proto::v1::{
        ErrorDetail, ProgressEvent, RevisionStarted, ShardStateChanged, ShardTask, Wave,
    };

    use super::*;

    fn shard_event(shard: &str, wave: u32, state: ShardState, error: Option<&str>) -> RolloutEvent {
        RolloutEvent {
            plan_id: "p1".to_owned(),
            event: Some(Event::ShardState(ShardStateChanged {
                shard_id: shard.to_owned(),
                wave,
                state: state.into(),
                error: error.map(|message| ErrorDetail {
                    message: message.to_owned(),
                    ..ErrorDetail::default()
                }),
            })),
            ..RolloutEvent::default()
        }
    }

    fn plan() -> Plan {
        let tasks = |ids: &[&str]| -> Vec<ShardTask> {
            ids.iter()
                .map(|id| ShardTask {
                    shard_id: (*id).to_owned(),
                    ..ShardTask::default()
                })
                .collect()
        };
        Plan {
            plan_id: "p1".to_owned(),
            waves: vec![
                Wave {
                    index: 0,
                    shards: tasks(&["a"]),
                },
                Wave {
                    index: 1,
                    shards: tasks(&["b", "c", "d"]),
                },
            ],
            ..Plan::default()
        }
    }

    #[test]
    fn the_frame_counts_each_wave_and_names_the_running_shards_with_their_revision() {
        let start = Instant::now();
        let mut live = Live::new(&plan(), ["d".to_owned()].into(), 200, start);
        assert!(
            live.apply(&shard_event("a", 0, ShardState::Running, None), start)
                .is_empty()
        );
        let started = RolloutEvent {
            event: Some(Event::Progress(ProgressEvent {
                shard_id: "a".to_owned(),
                event: Some(Progress::RevisionStarted(RevisionStarted {
                    version: "3".to_owned(),
                    ..RevisionStarted::default()
                })),
                ..ProgressEvent::default()
            })),
            ..RolloutEvent::default()
        };
        live.apply(&started, start);
        let later = start + Duration::from_millis(2500);
        assert_eq!(
            live.frame(later),
            [
                "wave 0 ░░░░░░░░░░░░░░░░░░░░    0/1    running 1",
                "wave 1 ░░░░░░░░░░░░░░░░░░░░    0/3    pending 3",
                "running: a 3 2.5s",
                "throttled: 0  waiting to start: 1",
            ]
        );
        live.apply(&shard_event("a", 0, ShardState::Succeeded, None), later);
        let log = live.apply(
            &shard_event("b", 1, ShardState::Failed, Some("revision 2 failed")),
            later,
        );
        assert_eq!(log, ["b failed: revision 2 failed"]);
        let frame = live.frame(later);
        assert_eq!(
            frame[0],
            "wave 0 ████████████████████    1/1    succeeded 1"
        );
        assert_eq!(
            frame[1],
            "wave 1 ██████░░░░░░░░░░░░░░    1/3    failed 1, pending 2"
        );
        assert_eq!(frame.len(), 3, "nothing runs: {frame:?}");
    }

    #[test]
    fn each_draw_replaces_the_last_frame_and_lines_stay_within_the_terminal() {
        let start = Instant::now();
        let mut live = Live::new(&plan(), BTreeSet::new(), 40, start);
        let mut out = Vec::new();
        live.draw(&mut out, &[], start);
        let first = String::from_utf8(out.clone()).expect("utf-8");
        assert!(!first.contains('\x1b'), "nothing to replace yet: {first:?}");
        assert_eq!(first.lines().count(), 2);
        assert!(
            first.lines().all(|line| line.chars().count() <= 40),
            "{first}"
        );
        out.clear();
        live.draw(&mut out, &["plan p1: running".to_owned()], start);
        let second = String::from_utf8(out).expect("utf-8");
        assert!(
            second.starts_with("\x1b[2F\x1b[Jplan p1: running\nwave 0"),
            "{second:?}"
        );
    }
}
