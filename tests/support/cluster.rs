//! What the cluster tests share: a table of the test's own (created with `opsd cluster init`),
//! replicas (real `opsd daemon` processes with their own state directories and names), and reading
//! what each replica recorded and what the table holds.

use super::daemon::Daemon;
use super::*;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;

/// A test's cluster: its config (with `[cluster]`), its table, and a DynamoDB client on the
/// sandbox's DynamoDB Local.
pub struct Cluster {
    pub ctx: Ctx,
    pub table: String,
    pub rt: tokio::runtime::Runtime,
    pub ddb: aws_sdk_dynamodb::Client,
}

impl Cluster {
    /// A new table (created by `opsd cluster init`) and the test's config pointing at it, plus `extra`.
    pub fn new(extra: &str) -> Cluster {
        Self::named("opsd-cluster", extra)
    }

    /// The same with a table named from `prefix` (`…-throttle30`: the sandbox's DynamoDB proxy
    /// refuses 30 % of its writes, as AWS refuses writes under load).
    pub fn named(prefix: &str, extra: &str) -> Cluster {
        Self::with(prefix, "", extra)
    }

    /// The same with `cluster` lines in `[cluster]`, and `extra` after it.
    pub fn with(prefix: &str, cluster: &str, extra: &str) -> Cluster {
        let table = unique(prefix);
        let ctx = Ctx::with_config_extra(&format!(
            "[cluster]\ntable = \"{table}\"\nheartbeat_interval = \"1s\"\nmember_timeout = \"5s\"\n{cluster}\n{extra}\n"
        ));
        let init = ctx.run(&["cluster", "init"]);
        assert!(init.status.success(), "opsd cluster init: {}", String::from_utf8_lossy(&init.stderr));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let sdk = sdk_config(&rt);
        let conf = aws_sdk_dynamodb::config::Builder::from(&sdk).endpoint_url(env("AWS_ENDPOINT_URL_DYNAMODB")).build();
        Cluster { ctx, table, rt, ddb: aws_sdk_dynamodb::Client::from_conf(conf) }
    }

    /// A replica: `opsd daemon` named `name`, with a state directory of its own.
    pub fn replica(&self, name: &str, envs: &[(&str, &str)]) -> Daemon {
        let state = self.state_dir(name);
        let mut all = vec![("OPSD_STATE_DIR", state.as_str()), ("OPSD_CLUSTER__REPLICA", name)];
        all.extend_from_slice(envs);
        Daemon::start(&self.ctx, &all)
    }

    pub fn state_dir(&self, replica: &str) -> String {
        path_str(&self.ctx.dir.path().join(format!("state-{replica}")))
    }

    /// The runs of `job` a replica recorded in its own store, oldest first.
    pub fn local_runs(&self, replica: &str, job: &str) -> Vec<serde_json::Value> {
        let out = self
            .ctx
            .opsd()
            .env("OPSD_STATE_DIR", self.state_dir(replica))
            .args(["history", job, "--local", "--limit", "100000", "--output", "json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "opsd history on {replica}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut runs = v["runs"].as_array().unwrap().clone();
        runs.reverse();
        runs
    }

    /// Every item of the table's partition `pk` (every page).
    pub fn items(&self, pk: &str) -> Vec<HashMap<String, AttributeValue>> {
        self.rt.block_on(async {
            let mut pages = self
                .ddb
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", AttributeValue::S(pk.into()))
                .consistent_read(true)
                .into_paginator()
                .items()
                .send();
            let mut items = Vec::new();
            while let Some(i) = pages.next().await {
                items.push(i.unwrap());
            }
            items
        })
    }

    /// The firings of `job` in the table: (scheduled instant, owner, state), in key order.
    pub fn firings(&self, job: &str) -> Vec<(String, String, String)> {
        let text = |i: &HashMap<String, AttributeValue>, k: &str| {
            i.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default()
        };
        self.items(&format!("job#{job}"))
            .iter()
            .filter(|i| text(i, "sk").starts_with("firing#"))
            .map(|i| (text(i, "scheduled_for"), text(i, "owner"), text(i, "state")))
            .collect()
    }
}

impl Cluster {
    /// The leases in the table: (name, holder, epoch).
    pub fn leases(&self) -> Vec<(String, String, u64)> {
        let text = |i: &HashMap<String, AttributeValue>, k: &str| {
            i.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default()
        };
        self.items("lease")
            .iter()
            .map(|i| {
                let epoch = i.get("epoch").and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok()).unwrap_or(0);
                (text(i, "sk"), text(i, "holder"), epoch)
            })
            .collect()
    }

    /// The holder of the only lease and its epoch ("" and 0 before anyone took it).
    pub fn leader(&self) -> (String, u64) {
        self.leases().first().map(|(_, h, e)| (h.clone(), *e)).unwrap_or_default()
    }

    /// The capacity decisions a replica recorded in its own store (`opsd capacity status`), newest first.
    pub fn decisions(&self, replica: &str) -> Vec<serde_json::Value> {
        self.status(replica, "capacity", "decisions")
    }

    /// The lifecycle actions a replica recorded in its own store (`opsd lifecycle status`), newest first.
    pub fn actions(&self, replica: &str) -> Vec<serde_json::Value> {
        self.status(replica, "lifecycle", "actions")
    }

    /// The list `key` of `opsd WING status --output json` on a replica's own store.
    fn status(&self, replica: &str, wing: &str, key: &str) -> Vec<serde_json::Value> {
        let out = self
            .ctx
            .opsd()
            .env("OPSD_STATE_DIR", self.state_dir(replica))
            .args([wing, "status", "--limit", "1000", "--output", "json"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{wing} status on {replica}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        v[key].as_array().cloned().unwrap_or_default()
    }
}
