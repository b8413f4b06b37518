//! A stop in named phases, within one deadline.
//!
//! The phases, in order, each finishing before the next begins:
//! 1. [`Phase::Intake`]: the telemetry connection stops routing (messages
//!    still with the broker stay unacknowledged, so it keeps them) and the
//!    model watcher stops;
//! 2. [`Phase::Workers`]: each pipeline worker scores the batch in hand and
//!    its committer commits what is queued (or gives up at the commits'
//!    deadline, when the disk keeps failing);
//! 3. [`Phase::Sinks`]: the sinks publish what is left until the publishing
//!    deadline, then `offline` (or NDEATH) and DISCONNECT;
//! 4. [`Phase::Acker`]: the acknowledgements the committers released go out,
//!    then the telemetry connection's DISCONNECT;
//! 5. [`Phase::Connections`]: the connection tasks end on their DISCONNECT;
//! 6. [`Phase::Services`]: HTTP, the watchdog and the forwarders stop.
//!
//! Each phase has a token (a child of the stop's root, so that a root
//! cancel reaches every task) that tells its tasks to finish, and a
//! `TaskTracker` of those tasks (threads are tracked by a blocking join).
//! The whole stop keeps `state.drain_timeout_secs` from the signal: commits
//! that keep failing are given up halfway, publishing ends in time for the
//! farewell to fit, and a phase that overruns is not waited for further.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Deadline;
use crate::ops::events::daemon::DaemonEvents;

/// The phases of a stop, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Intake,
    Workers,
    Sinks,
    Acker,
    Connections,
    Services,
}

const PHASES: [Phase; 6] =
    [Phase::Intake, Phase::Workers, Phase::Sinks, Phase::Acker, Phase::Connections, Phase::Services];

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Intake => "intake",
            Phase::Workers => "pipelines",
            Phase::Sinks => "sinks",
            Phase::Acker => "acknowledgements",
            Phase::Connections => "connections",
            Phase::Services => "services",
        }
    }
}

pub(crate) struct Stop {
    root: CancellationToken,
    tokens: [CancellationToken; 6],
    trackers: [TaskTracker; 6],
    drain: Duration,
    commits: Deadline,
    publishing: Deadline,
}

impl Stop {
    /// A stop that will keep `drain` (`state.drain_timeout_secs`).
    pub(crate) fn new(drain: Duration) -> Stop {
        let root = CancellationToken::new();
        Stop {
            tokens: std::array::from_fn(|_| root.child_token()),
            trackers: std::array::from_fn(|_| TaskTracker::new()),
            root,
            drain,
            commits: Deadline::default(),
            publishing: Deadline::default(),
        }
    }

    fn at(p: Phase) -> usize {
        PHASES.iter().position(|q| *q == p).expect("every phase is listed")
    }

    /// Cancelled when the stop reaches `phase`.
    pub(crate) fn token(&self, phase: Phase) -> CancellationToken {
        self.tokens[Self::at(phase)].clone()
    }

    /// A task that `phase` waits for.
    pub(crate) fn spawn(&self, phase: Phase, task: impl Future<Output = ()> + Send + 'static) {
        self.trackers[Self::at(phase)].spawn(task);
    }

    /// A thread that `phase` waits for.
    pub(crate) fn thread(&self, phase: Phase, thread: std::thread::JoinHandle<()>) {
        self.trackers[Self::at(phase)].spawn_blocking(move || {
            let _ = thread.join();
        });
    }

    /// When committers give up on commits that keep failing (armed by [`Stop::run`]).
    pub(crate) fn commits_deadline(&self) -> Deadline {
        self.commits.clone()
    }

    /// When the sinks stop publishing (armed by [`Stop::run`]).
    pub(crate) fn publishing_deadline(&self) -> Deadline {
        self.publishing.clone()
    }

    /// What the farewell (`offline`, DISCONNECT) and the last deletes may
    /// take: a second, less for a short drain.
    pub(crate) fn farewell(&self) -> Duration {
        (self.drain / 4).min(Duration::from_secs(1))
    }

    /// The stop: every phase in turn, all within the drain from now.
    pub(crate) async fn run(self) {
        let until = Instant::now() + self.drain;
        self.commits.arm(self.drain / 2);
        self.publishing.arm(self.drain.saturating_sub(2 * self.farewell()));
        for (i, phase) in PHASES.iter().enumerate() {
            self.tokens[i].cancel();
            self.trackers[i].close();
            let left = until.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, self.trackers[i].wait()).await.is_err() {
                DaemonEvents.phase_overran(phase.name());
            }
        }
        self.root.cancel();
    }
}
