//! The cluster's DynamoDB table: its layout (one table, string keys `pk` and `sk`, TTL on
//! `expires`), creating it (`opsd cluster init`), checking it exists, and the few calls the cluster
//! makes, each retried with backoff while DynamoDB throttles (throttling never decides an outcome).
//!
//! Items (see ARCHITECTURE.md, "The cluster table"):
//! - `pk = "member"`, `sk = <replica>`: a replica's heartbeat.
//! - `pk = "job#<name>"`, `sk = "firing#<scheduled instant>"`: a firing's claim and its run's summary.

use crate::aws::{call_error, CallError};
use crate::backoff::Backoff;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValuesOnConditionCheckFailure,
    ScalarAttributeType, TimeToLiveSpecification,
};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

pub type Item = HashMap<String, AttributeValue>;

/// The key attributes and the TTL attribute (seconds since the epoch).
pub const PK: &str = "pk";
pub const SK: &str = "sk";
pub const EXPIRES: &str = "expires";

/// The first wait after a throttled call, doubling to [`THROTTLE_MAX_WAIT`].
const THROTTLE_FIRST_WAIT: Duration = Duration::from_millis(50);
const THROTTLE_MAX_WAIT: Duration = Duration::from_secs(2);
/// How long a call keeps retrying while throttled (beyond the SDK's own 3 attempts): longer than a
/// burst of throttling lasts on an on-demand table; a firing's claim is late, never doubled or lost.
const THROTTLE_PATIENCE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("the cluster table {0} does not exist; create it with `opsd cluster init` (or check [cluster] table and the region)")]
    Missing(String),
    #[error("the cluster table {table}: {source}; check opsd's DynamoDB permissions and AWS_ENDPOINT_URL_DYNAMODB")]
    Aws { table: String, source: CallError },
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
    name: String,
}

impl Table {
    pub fn new(sdk: &aws_config::SdkConfig, name: &str) -> Table {
        Table { client: aws_sdk_dynamodb::Client::new(sdk), name: name.to_string() }
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
        let r = self
            .client
            .create_table()
            .table_name(&self.name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr(PK).map_err(|e| self.aws(build_error(e)))?)
            .attribute_definitions(attr(SK).map_err(|e| self.aws(build_error(e)))?)
            .key_schema(key(PK, KeyType::Hash).map_err(|e| self.aws(build_error(e)))?)
            .key_schema(key(SK, KeyType::Range).map_err(|e| self.aws(build_error(e)))?)
            .send()
            .await;
        let created = match r.map_err(|e| call_error("CreateTable", e)) {
            Ok(_) => true,
            Err(e) if e.code_is("ResourceInUseException") => false,
            Err(e) => return Err(self.aws(e)),
        };
        self.wait_active().await?;
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

    /// The table exists (else [`TableError::Missing`], which names the command that creates it).
    pub async fn check(&self) -> Result<(), TableError> {
        self.client
            .describe_table()
            .table_name(&self.name)
            .send()
            .await
            .map_err(|e| self.aws(call_error("DescribeTable", e)))?;
        Ok(())
    }

    /// Run `call` again while DynamoDB throttles (with backoff, for [`THROTTLE_PATIENCE`]).
    async fn patiently<T, F, Fut>(&self, mut call: F) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, CallError>>,
    {
        let deadline = Instant::now() + THROTTLE_PATIENCE;
        let mut backoff = Backoff::new(THROTTLE_FIRST_WAIT, THROTTLE_MAX_WAIT);
        loop {
            match call().await {
                Err(e) if throttled(&e) && Instant::now() < deadline => {
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
            .patiently(|| async {
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

    /// Put `item`, replacing any.
    pub async fn put(&self, item: Item) -> Result<(), TableError> {
        self.patiently(|| async {
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
        let values: HashMap<String, AttributeValue> = values.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let names: HashMap<String, String> = names.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let r = self
            .patiently(|| async {
                self.client
                    .update_item()
                    .table_name(&self.name)
                    .key(PK, s(pk))
                    .key(SK, s(sk))
                    .update_expression(update)
                    .set_condition_expression(condition.map(str::to_string))
                    .set_expression_attribute_values((!values.is_empty()).then(|| values.clone()))
                    .set_expression_attribute_names((!names.is_empty()).then(|| names.clone()))
                    .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                    .send()
                    .await
                    .map(|_| Written::Done)
                    .or_else(|e| match e.as_service_error() {
                        Some(
                            aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(
                                c,
                            ),
                        ) => Ok(Written::Refused(c.item().cloned())),
                        _ => Err(call_error("UpdateItem", e)),
                    })
            })
            .await;
        r.map_err(|e| self.aws(e))
    }

    /// One item, read consistently (after a write of this or another replica, it is seen).
    pub async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, TableError> {
        let r = self
            .patiently(|| async {
                self.client
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
            .await;
        r.map_err(|e| self.aws(e))
    }

    /// The items of partition `pk` whose sort key starts with `prefix` (every item for `""`), newest
    /// (highest) first, at most `limit` (every page followed).
    pub async fn query(&self, pk: &str, prefix: &str, limit: usize) -> Result<Vec<Item>, TableError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        let (condition, mut values) = if prefix.is_empty() {
            ("pk = :pk", HashMap::new())
        } else {
            ("pk = :pk AND begins_with(sk, :prefix)", HashMap::from([(":prefix".to_string(), s(prefix))]))
        };
        values.insert(":pk".to_string(), s(pk));
        loop {
            let page = self
                .patiently(|| async {
                    self.client
                        .query()
                        .table_name(&self.name)
                        .key_condition_expression(condition)
                        .set_expression_attribute_values(Some(values.clone()))
                        .scan_index_forward(false)
                        .consistent_read(true)
                        .limit((limit - items.len()).clamp(1, 1000) as i32)
                        .set_exclusive_start_key(start.clone())
                        .send()
                        .await
                        .map_err(|e| call_error("Query", e))
                })
                .await
                .map_err(|e| self.aws(e))?;
            items.extend(page.items().iter().cloned());
            match page.last_evaluated_key() {
                Some(k) if items.len() < limit => start = Some(k.clone()),
                _ => return Ok(items),
            }
        }
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
        self.patiently(|| async {
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
        self.patiently(|| async {
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
