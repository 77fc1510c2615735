//! The capacity wing's Prometheus series: the cluster's reservation and unplaced tasks, the fleet's
//! target and fulfilled capacity, decisions by action and outcome, and whether this daemon leads.

use super::history::{DecisionKind, DecisionOutcome};
use crate::metrics::{Labels, Registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::AtomicU64;

/// The capacity wing's series; cheap to clone.
#[derive(Clone)]
pub struct CapacityMetrics {
    reservation: Gauge<f64, AtomicU64>,
    unplaced: Gauge,
    target: Gauge<f64, AtomicU64>,
    fulfilled: Gauge<f64, AtomicU64>,
    decisions: Family<Labels, Counter>,
    leader: Gauge,
}

impl CapacityMetrics {
    pub fn register(registry: &mut Registry) -> CapacityMetrics {
        let m = CapacityMetrics {
            reservation: Gauge::default(),
            unplaced: Gauge::default(),
            target: Gauge::default(),
            fulfilled: Gauge::default(),
            decisions: Family::default(),
            leader: Gauge::default(),
        };
        registry.register(
            "capacity_reservation_percent",
            "The cluster's reservation: the larger of CPU and memory, percent",
            m.reservation.clone(),
        );
        registry.register("capacity_unplaced_tasks", "Tasks that have no room in the cluster", m.unplaced.clone());
        registry.register("capacity_target_units", "The fleet's target capacity", m.target.clone());
        registry.register("capacity_fulfilled_units", "The fleet's fulfilled capacity", m.fulfilled.clone());
        registry.register(
            "capacity_decisions",
            "Capacity decisions by action (hold, scale_out, scale_in) and outcome",
            m.decisions.clone(),
        );
        registry.register(
            "capacity_leader",
            "1 while this daemon leads the capacity controller (always, without [cluster]), else 0",
            m.leader.clone(),
        );
        m
    }

    pub fn leading(&self, yes: bool) {
        self.leader.set(yes as i64);
    }

    pub fn observed(&self, reservation: f64, unplaced: usize, target: f64, fulfilled: f64) {
        self.reservation.set(reservation);
        self.unplaced.set(unplaced as i64);
        self.target.set(target);
        self.fulfilled.set(fulfilled);
    }

    pub fn decision(&self, action: DecisionKind, outcome: DecisionOutcome) {
        self.decisions.get_or_create(&vec![("action", action.to_string()), ("outcome", outcome.to_string())]).inc();
    }

    /// The cluster or fleet could not be observed: no decision was made.
    pub fn observe_failed(&self) {
        self.decisions.get_or_create(&vec![("action", "none".into()), ("outcome", "observe_failed".into())]).inc();
    }
}
