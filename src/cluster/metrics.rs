//! The cluster edge's Prometheus series: the DynamoDB requests opsd makes to the cluster table (by
//! operation and result: what the table costs, and how often it throttles), and how long a claim
//! takes (retries included).

use crate::metrics::{Labels, Registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use std::time::Duration;

#[derive(Clone)]
pub struct ClusterMetrics {
    requests: Family<Labels, Counter>,
    claim: Histogram,
}

impl ClusterMetrics {
    pub fn register(registry: &mut Registry) -> ClusterMetrics {
        // 1 ms to about 8 s: a claim is one conditional write, slower only while throttled.
        let m =
            ClusterMetrics { requests: Family::default(), claim: Histogram::new(exponential_buckets(0.001, 2.0, 14)) };
        registry.register(
            "cluster_requests",
            "DynamoDB requests to the cluster table, by operation and result (ok, throttled, error)",
            m.requests.clone(),
        );
        registry.register(
            "cluster_claim_seconds",
            "How long claiming a firing took, retries included",
            m.claim.clone(),
        );
        m
    }

    pub fn request(&self, operation: &'static str, result: &'static str) {
        self.requests.get_or_create(&vec![("operation", operation.to_string()), ("result", result.to_string())]).inc();
    }

    pub fn claimed(&self, took: Duration) {
        self.claim.observe(took.as_secs_f64());
    }
}
