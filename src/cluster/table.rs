//! The cluster's DynamoDB table: its layout (one table, string keys `pk` and `sk`, TTL on
//! `expires`), creating it (`opsd cluster init`), checking it exists, and the few calls the cluster
//! makes, each retried with backoff while DynamoDB throttles (throttling never decides an outcome).
//!
//! Items are in ARCHITECTURE.md ("The cluster table"). Work a replica holds (a claim still going, a
//! running marker) carries `active = <owner>`, which puts it in the sparse index `active`: the
//! sweep scans that index (it holds only work in progress) for work whose owner is gone.

use super::metrics::ClusterMetrics;
use crate::aws::{call_error, CallError};
use crate::backoff::Backoff;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TimeToLiveSpecification,
};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

pub type Item = HashMap<String, AttributeValue>;

/// The key attributes and the TTL attribute (seconds since the epoch).
pub const PK: &str = "pk";
pub const SK: &str = "sk";
pub const EXPIRES: &str = "expires";
/// The attribute, and the index on it, that holds work in progress (see the module's comment).
pub const ACTIVE: &str = "active";

/// The first wait after a throttled call, doubling to [`THROTTLE_MAX_WAIT`].
const THROTTLE_FIRST_WAIT: Duration = Duration::from_millis(50);
const THROTTLE_MAX_WAIT: Duration = Duration::from_secs(2);
/// How long a call keeps retrying while throttled or unanswered (beyond the SDK's own 3 attempts):
/// longer than a burst of throttling lasts on an on-demand table. Every call here is safe to repeat
/// (idempotent, conditional on what it wrote, or read back by its caller).
const THROTTLE_PATIENCE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("the cluster table {0} does not exist; create it with `opsd cluster init` (or check [cluster] table and the region)")]
    Missing(String),
    #[error("the cluster table {table}: {source}; check opsd's DynamoDB permissions and AWS_ENDPOINT_URL_DYNAMODB")]
    Aws { table: String, source: CallError },
    #[error("the cluster table {0} has no index `active` (an older `opsd cluster init` made it); run `opsd cluster init` again to add it")]
    NoIndex(String),
}

/// A string attribute.
pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// A number attribute.
pub fn n(v: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A string attribute of an item.
pub fn get_s<'a>(item: &'a Item, key: &str) -> Option<&'a str> {
    item.get(key).and_then(|v| v.as_s().ok()).map(String::as_str)
}

/// A number attribute of an item.
pub fn get_n<T: std::str::FromStr>(item: &Item, key: &str) -> Option<T> {
    item.get(key).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

/// What a conditional write came to.
#[derive(Debug)]
pub enum Written {
    Done,
    /// The condition was false; the item as it is (when it exists).
    Refused(Option<Item>),
}

#[derive(Clone)]
pub struct Table {
    client: aws_sdk_dynamodb::Client,
    /// The same without the SDK's own retries (whose backoff starts at a second), for calls that
    /// retry on a short clock of their own ([`Table::put_quick`]).
    quick: aws_sdk_dynamodb::Client,
    name: String,
    metrics: Option<ClusterMetrics>,
}

impl Table {
    pub fn new(sdk: &aws_config::SdkConfig, name: &str) -> Table {
        let quick = aws_sdk_dynamodb::config::Builder::from(sdk)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
            .build();
        // The standard mode, not the adaptive one every other client uses: claims, heartbeats and
        // the lease are deadline-bound and retry throttling on clocks of their own (`patiently`,
        // `put_quick`); the adaptive mode's client-side limiter would hold them back after a
        // throttled write, past their deadlines (a lease lost to a sleep in the SDK).
        let main = aws_sdk_dynamodb::config::Builder::from(sdk)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3))
            .build();
        Table {
            client: aws_sdk_dynamodb::Client::from_conf(main),
            quick: aws_sdk_dynamodb::Client::from_conf(quick),
            name: name.to_string(),
            metrics: None,
        }
    }

    /// The same, counting its requests in `metrics` (the daemon's).
    pub fn with_metrics(mut self, metrics: ClusterMetrics) -> Table {
        self.metrics = Some(metrics);
        self
    }

    /// A claim took `took` (for the daemon's series).
    pub fn claimed(&self, took: Duration) {
        if let Some(m) = &self.metrics {
            m.claimed(took);
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn aws(&self, source: CallError) -> TableError {
        if source.code_is("ResourceNotFoundException") {
            TableError::Missing(self.name.clone())
        } else {
            TableError::Aws { table: self.name.clone(), source }
        }
    }

    /// Create the table (on-demand billing, TTL on `expires`). Returns false when it existed.
    pub async fn create(&self) -> Result<bool, TableError> {
        let attr = |name: &str| {
            AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build()
        };
        let key = |name: &str, t| KeySchemaElement::builder().attribute_name(name).key_type(t).build();
        let built = |e| self.aws(build_error(e));
        let r = self
            .client
            .create_table()
            .table_name(&self.name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr(PK).map_err(built)?)
            .attribute_definitions(attr(SK).map_err(built)?)
            .attribute_definitions(attr(ACTIVE).map_err(built)?)
            .key_schema(key(PK, KeyType::Hash).map_err(built)?)
            .key_schema(key(SK, KeyType::Range).map_err(built)?)
            .global_secondary_indexes(active_index().map_err(built)?)
            .send()
            .await;
        let created = match r.map_err(|e| call_error("CreateTable", e)) {
            Ok(_) => true,
            Err(e) if e.code_is("ResourceInUseException") => false,
            Err(e) => return Err(self.aws(e)),
        };
        self.wait_active().await?;
        if !created && !self.has_index().await? {
            let update = aws_sdk_dynamodb::types::GlobalSecondaryIndexUpdate::builder()
                .create(
                    aws_sdk_dynamodb::types::CreateGlobalSecondaryIndexAction::builder()
                        .index_name(ACTIVE)
                        .key_schema(key(ACTIVE, KeyType::Hash).map_err(built)?)
                        .key_schema(key(SK, KeyType::Range).map_err(built)?)
                        .projection(Projection::builder().projection_type(ProjectionType::All).build())
                        .build()
                        .map_err(built)?,
                )
                .build();
            self.client
                .update_table()
                .table_name(&self.name)
                .attribute_definitions(attr(ACTIVE).map_err(built)?)
                .global_secondary_index_updates(update)
                .send()
                .await
                .map_err(|e| self.aws(call_error("UpdateTable", e)))?;
            self.wait_active().await?;
        }
        let ttl = TimeToLiveSpecification::builder()
            .attribute_name(EXPIRES)
            .enabled(true)
            .build()
            .map_err(|e| self.aws(build_error(e)))?;
        let r = self.client.update_time_to_live().table_name(&self.name).time_to_live_specification(ttl).send().await;
        match r.map_err(|e| call_error("UpdateTimeToLive", e)) {
            // Already enabled (a second `init`) is fine.
            Ok(_) => {}
            Err(e) if e.code_is("ValidationException") && e.message.contains("already enabled") => {}
            Err(e) => return Err(self.aws(e)),
        }
        Ok(created)
    }

    async fn wait_active(&self) -> Result<(), TableError> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let out = self.client.describe_table().table_name(&self.name).send().await;
            let status = out
                .map_err(|e| self.aws(call_error("DescribeTable", e)))?
                .table()
                .and_then(|t| t.table_status())
                .map(|s| s.as_str().to_string());
            if status.as_deref() == Some("ACTIVE") || Instant::now() >= deadline {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The table exists with its index (else [`TableError::Missing`] or [`TableError::NoIndex`],
    /// which name the command that fixes it).
    pub async fn check(&self) -> Result<(), TableError> {
        if self.has_index().await? {
            Ok(())
        } else {
            Err(TableError::NoIndex(self.name.clone()))
        }
    }

    async fn has_index(&self) -> Result<bool, TableError> {
        let out = self
            .client
            .describe_table()
            .table_name(&self.name)
            .send()
            .await
            .map_err(|e| self.aws(call_error("DescribeTable", e)))?;
        let indexes = out.table().map(|t| t.global_secondary_indexes()).unwrap_or_default();
        Ok(indexes.iter().any(|i| i.index_name() == Some(ACTIVE)))
    }

    /// Every item of the `active` index: the work in progress of every replica (every page).
    pub async fn active(&self) -> Result<Vec<Item>, TableError> {
        self.pages("Scan", usize::MAX, |start, _| async move {
            let page = self.client.scan().table_name(&self.name).index_name(ACTIVE).set_exclusive_start_key(start);
            page.send().await.map(|p| (p.items, p.last_evaluated_key)).map_err(|e| call_error("Scan", e))
        })
        .await
    }

    /// Up to `limit` items from `page` (given the key to start from and how many are still wanted),
    /// every page followed, each page retried as [`Table::patiently`] does.
    async fn pages<F, Fut>(&self, operation: &'static str, limit: usize, page: F) -> Result<Vec<Item>, TableError>
    where
        F: Fn(Option<Item>, usize) -> Fut,
        Fut: std::future::Future<Output = Result<(Option<Vec<Item>>, Option<Item>), CallError>>,
    {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let wanted = limit - items.len();
            let (got, next) =
                self.patiently(operation, || page(start.clone(), wanted)).await.map_err(|e| self.aws(e))?;
            items.extend(got.unwrap_or_default());
            match next {
                Some(k) if items.len() < limit => start = Some(k),
                _ => return Ok(items),
            }
        }
    }

    /// Run `call` again while DynamoDB throttles (with backoff, for [`THROTTLE_PATIENCE`]).
    async fn patiently<T, F, Fut>(&self, operation: &'static str, mut call: F) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, CallError>>,
    {
        let deadline = Instant::now() + THROTTLE_PATIENCE;
        let mut backoff = Backoff::new(THROTTLE_FIRST_WAIT, THROTTLE_MAX_WAIT);
        loop {
            let r = call().await;
            if let Some(m) = &self.metrics {
                let result = match &r {
                    Ok(_) => "ok",
                    Err(e) if throttled(e) => "throttled",
                    Err(_) => "error",
                };
                m.request(operation, result);
            }
            match r {
                Err(e) if (throttled(&e) || e.code.is_none()) && Instant::now() < deadline => {
                    let wait = backoff.fail();
                    tracing::debug!(table = %self.name, "{e}; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
                r => return r,
            }
        }
    }

    /// Put `item` unless an item with its key exists (`condition`, e.g. `attribute_not_exists(pk)`).
    /// A refusal returns the item that is there.
    pub async fn put_if(&self, item: Item, condition: &str) -> Result<Written, TableError> {
        let r = self
            .patiently("PutItem", || async {
                self.client
                    .put_item()
                    .table_name(&self.name)
                    .set_item(Some(item.clone()))
                    .condition_expression(condition)
                    .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                    .send()
                    .await
                    .map(|_| Written::Done)
                    .or_else(|e| match e.as_service_error() {
                        Some(aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(
                            c,
                        )) => Ok(Written::Refused(c.item().cloned())),
                        _ => Err(call_error("PutItem", e)),
                    })
            })
            .await;
        r.map_err(|e| self.aws(e))
    }

    /// Put `item` within `limit`, retrying throttling and silence only until then (a heartbeat that
    /// is late is better skipped than queued).
    pub async fn put_quick(
        &self,
        item: Item,
        condition: Option<&str>,
        values: &[(&str, AttributeValue)],
        limit: Duration,
    ) -> Result<Written, TableError> {
        let values: HashMap<String, AttributeValue> = values.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let call = self.patiently("PutItem", || async {
            let r = self
                .quick
                .put_item()
                .table_name(&self.name)
                .set_item(Some(item.clone()))
                .set_condition_expression(condition.map(str::to_string))
                .set_expression_attribute_values((!values.is_empty()).then(|| values.clone()))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send()
                .await;
            match r {
                Ok(_) => Ok(Written::Done),
                Err(e) => match e.as_service_error() {
                    Some(aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c)) => {
                        Ok(Written::Refused(c.item().cloned()))
                    }
                    _ => Err(call_error("PutItem", e)),
                },
            }
        });
        self.within(limit, "PutItem", call).await
    }

    /// Put `item`, replacing any.
    pub async fn put(&self, item: Item) -> Result<(), TableError> {
        self.patiently("PutItem", || async {
            self.client
                .put_item()
                .table_name(&self.name)
                .set_item(Some(item.clone()))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| call_error("PutItem", e))
        })
        .await
        .map_err(|e| self.aws(e))
    }

    /// Update an item with `update` (and `condition`, if any), `values` naming `:placeholders`.
    pub async fn update_if(
        &self,
        pk: &str,
        sk: &str,
        update: &str,
        condition: Option<&str>,
        values: &[(&str, AttributeValue)],
    ) -> Result<Written, TableError> {
        self.update_if_named(pk, sk, update, condition, values, &[]).await
    }

    /// [`Table::update_if`] with `#names` for attributes whose names DynamoDB reserves (`state`).
    pub async fn update_if_named(
        &self,
        pk: &str,
        sk: &str,
        update: &str,
        condition: Option<&str>,
        values: &[(&str, AttributeValue)],
        names: &[(&str, &str)],
    ) -> Result<Written, TableError> {
        let call = Update { pk, sk, update, condition, values, names };
        self.update_on(&self.client, call).await.map_err(|e| self.aws(e))
    }

    /// [`Table::update_if_named`] within `limit`, retrying throttling and silence only until then
    /// (a lease's write is worth nothing once the lease would have run out).
    pub async fn update_quick(&self, call: Update<'_>, limit: Duration) -> Result<Written, TableError> {
        self.within(limit, "UpdateItem", self.update_on(&self.quick, call)).await
    }

    /// `call` within `limit` (else a [`TableError::Aws`] saying no answer came in time).
    async fn within<T>(
        &self,
        limit: Duration,
        operation: &'static str,
        call: impl std::future::Future<Output = Result<T, CallError>>,
    ) -> Result<T, TableError> {
        match tokio::time::timeout(limit, call).await {
            Err(_) => {
                Err(self.aws(CallError { operation, code: None, message: format!("no answer within {limit:?}") }))
            }
            Ok(r) => r.map_err(|e| self.aws(e)),
        }
    }

    async fn update_on(&self, client: &aws_sdk_dynamodb::Client, u: Update<'_>) -> Result<Written, CallError> {
        let values: HashMap<String, AttributeValue> =
            u.values.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let names: HashMap<String, String> = u.names.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.patiently("UpdateItem", || async {
            client
                .update_item()
                .table_name(&self.name)
                .key(PK, s(u.pk))
                .key(SK, s(u.sk))
                .update_expression(u.update)
                .set_condition_expression(u.condition.map(str::to_string))
                .set_expression_attribute_values((!values.is_empty()).then(|| values.clone()))
                .set_expression_attribute_names((!names.is_empty()).then(|| names.clone()))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send()
                .await
                .map(|_| Written::Done)
                .or_else(|e| match e.as_service_error() {
                    Some(
                        aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c),
                    ) => Ok(Written::Refused(c.item().cloned())),
                    _ => Err(call_error("UpdateItem", e)),
                })
        })
        .await
    }

    /// One item, read consistently within `limit`.
    pub async fn get_quick(&self, pk: &str, sk: &str, limit: Duration) -> Result<Option<Item>, TableError> {
        self.within(limit, "GetItem", self.get_on(&self.quick, pk, sk)).await
    }

    /// One item, read consistently (after a write of this or another replica, it is seen).
    pub async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, TableError> {
        self.get_on(&self.client, pk, sk).await.map_err(|e| self.aws(e))
    }

    async fn get_on(&self, client: &aws_sdk_dynamodb::Client, pk: &str, sk: &str) -> Result<Option<Item>, CallError> {
        self.patiently("GetItem", || async {
            client
                .get_item()
                .table_name(&self.name)
                .key(PK, s(pk))
                .key(SK, s(sk))
                .consistent_read(true)
                .send()
                .await
                .map(|o| o.item)
                .map_err(|e| call_error("GetItem", e))
        })
        .await
    }

    /// The items of partition `pk` whose sort key starts with `prefix` (every item for `""`), newest
    /// (highest) first, at most `limit` (every page followed).
    pub async fn query(&self, pk: &str, prefix: &str, limit: usize) -> Result<Vec<Item>, TableError> {
        let (condition, mut values) = if prefix.is_empty() {
            ("pk = :pk", HashMap::new())
        } else {
            ("pk = :pk AND begins_with(sk, :prefix)", HashMap::from([(":prefix".to_string(), s(prefix))]))
        };
        values.insert(":pk".to_string(), s(pk));
        self.pages("Query", limit, |start, wanted| {
            let call = self
                .client
                .query()
                .table_name(&self.name)
                .key_condition_expression(condition)
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(false)
                .consistent_read(true)
                .limit(wanted.clamp(1, 1000) as i32)
                .set_exclusive_start_key(start);
            async move { call.send().await.map(|p| (p.items, p.last_evaluated_key)).map_err(|e| call_error("Query", e)) }
        })
        .await
    }

    /// Delete an item if `condition` holds (gone already, or refused, is fine: nothing to undo).
    pub async fn delete_if(
        &self,
        pk: &str,
        sk: &str,
        condition: &str,
        values: &[(&str, AttributeValue)],
        names: &[(&str, &str)],
    ) -> Result<(), TableError> {
        let values: HashMap<String, AttributeValue> = values.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let names: HashMap<String, String> = names.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.patiently("DeleteItem", || async {
            let r = self
                .client
                .delete_item()
                .table_name(&self.name)
                .key(PK, s(pk))
                .key(SK, s(sk))
                .condition_expression(condition)
                .set_expression_attribute_values(Some(values.clone()))
                .set_expression_attribute_names(Some(names.clone()))
                .send()
                .await;
            match r {
                Ok(_) => Ok(()),
                Err(e)
                    if matches!(
                        e.as_service_error(),
                        Some(
                            aws_sdk_dynamodb::operation::delete_item::DeleteItemError::ConditionalCheckFailedException(
                                _
                            )
                        )
                    ) =>
                {
                    Ok(())
                }
                Err(e) => Err(call_error("DeleteItem", e)),
            }
        })
        .await
        .map_err(|e| self.aws(e))
    }

    /// Delete an item (gone already is fine).
    pub async fn delete(&self, pk: &str, sk: &str) -> Result<(), TableError> {
        self.patiently("DeleteItem", || async {
            self.client
                .delete_item()
                .table_name(&self.name)
                .key(PK, s(pk))
                .key(SK, s(sk))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| call_error("DeleteItem", e))
        })
        .await
        .map_err(|e| self.aws(e))
    }
}

/// The sparse index of work in progress: `active` (the owner) and `sk`, every attribute projected.
fn active_index() -> Result<GlobalSecondaryIndex, aws_sdk_dynamodb::error::BuildError> {
    let key = |name: &str, t| KeySchemaElement::builder().attribute_name(name).key_type(t).build();
    GlobalSecondaryIndex::builder()
        .index_name(ACTIVE)
        .key_schema(key(ACTIVE, KeyType::Hash)?)
        .key_schema(key(SK, KeyType::Range)?)
        .projection(Projection::builder().projection_type(ProjectionType::All).build())
        .build()
}

/// The parts of an UpdateItem: the key, the update and condition expressions, and the values and
/// names they use.
pub struct Update<'a> {
    pub pk: &'a str,
    pub sk: &'a str,
    pub update: &'a str,
    pub condition: Option<&'a str>,
    pub values: &'a [(&'a str, AttributeValue)],
    pub names: &'a [(&'a str, &'a str)],
}

/// DynamoDB refused for load, not for the request: retried, never an answer.
fn throttled(e: &CallError) -> bool {
    e.code.as_deref().is_some_and(|c| {
        matches!(
            c,
            "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "Throttling"
                | "InternalServerError"
                | "ServiceUnavailable"
        )
    })
}

fn build_error(e: aws_sdk_dynamodb::error::BuildError) -> CallError {
    CallError { operation: "CreateTable", code: None, message: e.to_string() }
}
