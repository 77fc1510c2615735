//! The lifecycle wing's Prometheus series: messages by kind and outcome, actions by result, the
//! dead-letter queue's depth, action durations, heartbeats, and the interfaces opsd created,
//! deleted and swept.

use super::history::MessageOutcome;
use super::message::Transition;
use crate::metrics::{Labels, Registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

crate::vocabulary! {
    /// What a queue message was (the `kind` label).
    pub enum MessageKind {
        Launch = "launch",
        Terminate = "terminate",
        /// `autoscaling:TEST_NOTIFICATION`.
        Test = "test",
        /// Not a lifecycle notification opsd can parse.
        Malformed = "malformed",
    }
}

impl From<Transition> for MessageKind {
    fn from(t: Transition) -> MessageKind {
        match t {
            Transition::Launching => MessageKind::Launch,
            Transition::Terminating => MessageKind::Terminate,
        }
    }
}

crate::vocabulary! {
    /// What happened to an interface opsd made (the `op` label).
    pub enum EniOp {
        Created = "created",
        /// At termination, or after a failed launch.
        Deleted = "deleted",
        /// An orphan found by the sweep.
        Swept = "swept",
    }
}

fn action_buckets() -> Histogram {
    // 0.1 s .. ~55 min: an attach takes seconds; a slow interface can take minutes.
    Histogram::new(exponential_buckets(0.1, 2.0, 16))
}

/// The lifecycle wing's series; cheap to clone.
#[derive(Clone)]
pub struct LifecycleMetrics {
    messages: Family<Labels, Counter>,
    results: Family<Labels, Counter>,
    dead_letters: prometheus_client::metrics::gauge::Gauge,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
    heartbeats: Counter,
    enis: Family<Labels, Counter>,
}

impl LifecycleMetrics {
    pub fn register(registry: &mut Registry) -> LifecycleMetrics {
        let m = LifecycleMetrics {
            messages: Family::default(),
            results: Family::default(),
            dead_letters: Default::default(),
            duration: Family::new_with_constructor(action_buckets),
            heartbeats: Counter::default(),
            enis: Family::default(),
        };
        registry.register(
            "lifecycle_messages",
            "Lifecycle queue messages by kind (launch, terminate, test, malformed) and outcome",
            m.messages.clone(),
        );
        registry.register(
            "lifecycle_actions",
            "Lifecycle actions completed, by kind and result (CONTINUE, ABANDON)",
            m.results.clone(),
        );
        registry.register(
            "lifecycle_dead_letter_messages",
            "Messages in the lifecycle queue's dead-letter queue (its RedrivePolicy), read every minute",
            m.dead_letters.clone(),
        );
        registry.register(
            "lifecycle_action_duration_seconds",
            "From receipt to completion of a lifecycle action, by kind",
            m.duration.clone(),
        );
        registry.register(
            "lifecycle_heartbeats",
            "RecordLifecycleActionHeartbeat calls that succeeded",
            m.heartbeats.clone(),
        );
        registry.register(
            "lifecycle_enis",
            "Interfaces opsd created, deleted (termination, failed launch) and swept (orphans)",
            m.enis.clone(),
        );
        m
    }

    pub fn message(&self, kind: impl Into<MessageKind>, outcome: MessageOutcome) {
        let kind = kind.into();
        self.messages.get_or_create(&vec![("kind", kind.to_string()), ("outcome", outcome.to_string())]).inc();
    }

    /// An action completed with `result` (`CONTINUE` or `ABANDON`).
    pub fn completed(&self, kind: impl Into<MessageKind>, result: impl std::fmt::Display) {
        self.results.get_or_create(&vec![("kind", kind.into().to_string()), ("result", result.to_string())]).inc();
    }

    pub fn set_dead_letters(&self, n: i64) {
        self.dead_letters.set(n);
    }

    pub fn action_duration(&self, kind: impl Into<MessageKind>, seconds: f64) {
        self.duration.get_or_create(&vec![("kind", kind.into().to_string())]).observe(seconds);
    }

    pub fn heartbeat(&self) {
        self.heartbeats.inc();
    }

    pub fn eni(&self, op: EniOp) {
        self.enis.get_or_create(&vec![("op", op.to_string())]).inc();
    }
}
