//! The one place that builds the AWS SDK configuration: the standard chain (env, profile, role) for
//! region and credentials, the standard endpoint variables (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_EC2`…),
//! and a timeout on every call.

use crate::diag::Invalid;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use std::time::Duration;

/// A TCP connect to an AWS endpoint takes milliseconds; seconds mean it is unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// One attempt of one API call; DescribeInstances of a large page answers well within this.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
/// One API call including retries: bounds how long an unreachable AWS holds a command.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts per call in the SDK's adaptive mode (jittered exponential backoff for throttling and 5xx,
/// and a client-side rate limiter per service that slows every client of the process once AWS
/// throttles). Five attempts ride out a 10 % error rate (10⁻⁵ of calls fail all five); what fails
/// anyway is retried by the caller's own loop when [`CallError::is_final`] says it may pass.
pub const MAX_ATTEMPTS: u32 = 5;

/// Error codes AWS documents as passing: throttling, contention and server errors. A call refused
/// with one of these is retried, never taken as the answer.
pub const TRANSIENT_CODES: &[&str] = &[
    // Throttling (EC2, Auto Scaling, ECS, SQS, DynamoDB and the SDK's own list).
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "SlowDown",
    "EC2ThrottledException",
    "PriorRequestNotComplete",
    // Contention and server errors.
    "ResourceContention",
    "Unavailable",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "ServerInternal",
    "ServerException",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// `[aws]` in the config; anything unset falls back to the SDK's standard chain (env, profile,
/// instance role), and endpoints to `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>`.
#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AwsSettings {
    pub region: Option<String>,
    pub profile: Option<String>,
    /// DescribeInstances page size (MaxResults, 5..=1000): the largest page means the fewest calls.
    pub page_size: u16,
}

impl Default for AwsSettings {
    fn default() -> Self {
        AwsSettings { region: None, profile: None, page_size: 1000 }
    }
}

impl AwsSettings {
    /// What the section's types cannot say by themselves.
    pub fn check(&self) -> Vec<Invalid> {
        if (5..=1000).contains(&self.page_size) {
            return Vec::new();
        }
        let msg =
            format!("{} is outside DescribeInstances' 5..=1000; use 1000 unless AWS throttles you", self.page_size);
        vec![Invalid::new("page_size", msg)]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AwsConfigError {
    #[error("no AWS region is configured; set AWS_REGION, or region in the config's [aws] section, or a region in the AWS profile")]
    NoRegion,
}

/// Load the SDK configuration for opsd's settings.
pub async fn load(settings: &AwsSettings) -> Result<SdkConfig, AwsConfigError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        )
        .retry_config(RetryConfig::adaptive().with_max_attempts(MAX_ATTEMPTS));
    if let Some(r) = &settings.region {
        loader = loader.region(aws_config::Region::new(r.clone()));
    }
    if let Some(p) = &settings.profile {
        loader = loader.profile_name(p);
    }
    let cfg = loader.load().await;
    if cfg.region().is_none() {
        return Err(AwsConfigError::NoRegion);
    }
    Ok(cfg)
}

/// A readable one-line account of an SDK error, with its causes.
pub fn describe<E: std::error::Error>(e: &E) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = c.source();
    }
    s
}

/// A failed AWS call, with the service's error code when it answered (`ValidationError`,
/// `InvalidSubnetID.NotFound`, …) so callers can tell a final answer from a passing failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} failed{}: {message}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
pub struct CallError {
    pub operation: &'static str,
    /// The service's error code; `None` when no answer came (timeout, network, credentials).
    pub code: Option<String>,
    pub message: String,
}

impl CallError {
    pub fn code_is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// The call reached AWS and was refused for a reason that a retry does not change (not one of
    /// [`TRANSIENT_CODES`]; a call that got no answer is not final either).
    pub fn is_final(&self) -> bool {
        self.code.as_deref().is_some_and(|c| !TRANSIENT_CODES.contains(&c))
    }
}

/// Turn any SDK error into a [`CallError`] for `operation`.
pub fn call_error<E, R>(operation: &'static str, e: aws_smithy_runtime_api::client::result::SdkError<E, R>) -> CallError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_smithy_runtime_api::client::result::SdkError;
    match &e {
        SdkError::ServiceError(se) => CallError {
            operation,
            code: se.err().code().map(str::to_string),
            message: se.err().message().map(str::to_string).unwrap_or_else(|| describe(&e)),
        },
        _ => CallError { operation, code: None, message: describe(&e) },
    }
}

type Intervals = std::cell::RefCell<Vec<(std::time::Instant, std::time::Instant)>>;

tokio::task_local! {
    /// The AWS calls made by the task inside `timed`: when each started and ended.
    static AWS_CALLS: Intervals;
}

/// Runs `f`, noting when its AWS calls run (calls through clients built with [`CallTimer`]; calls
/// made by tasks it spawns are not counted).
pub async fn timed<F: std::future::Future>(f: F) -> F::Output {
    AWS_CALLS.scope(Intervals::default(), f).await
}

/// The time of the current `timed` scope so far during which at least one AWS call was in flight
/// (calls made at once count once). None outside a scope.
pub fn aws_time() -> Option<Duration> {
    AWS_CALLS
        .try_with(|calls| {
            let mut calls = calls.borrow().clone();
            calls.sort_unstable();
            let mut total = Duration::ZERO;
            let mut current: Option<(std::time::Instant, std::time::Instant)> = None;
            for (start, end) in calls {
                current = match current {
                    Some((s, e)) if start <= e => Some((s, e.max(end))),
                    Some((s, e)) => {
                        total += e - s;
                        Some((start, end))
                    }
                    None => Some((start, end)),
                };
            }
            total + current.map(|(s, e)| e - s).unwrap_or_default()
        })
        .ok()
}

/// An SDK interceptor that notes each call's start and end (retries included) in the `timed` scope
/// it runs in.
#[derive(Debug, Clone, Copy)]
pub struct CallTimer;

#[derive(Debug, Clone, Copy)]
struct CallStarted(std::time::Instant);

impl aws_smithy_types::config_bag::Storable for CallStarted {
    type Storer = aws_smithy_types::config_bag::StoreReplace<Self>;
}

impl aws_smithy_runtime_api::client::interceptors::Intercept for CallTimer {
    fn name(&self) -> &'static str {
        "CallTimer"
    }

    fn read_before_execution(
        &self,
        _context: &aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        cfg.interceptor_state().store_put(CallStarted(std::time::Instant::now()));
        Ok(())
    }

    fn read_after_execution(
        &self,
        _context: &aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef<'_>,
        _runtime_components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        if let Some(CallStarted(t)) = cfg.load::<CallStarted>() {
            let call = (*t, std::time::Instant::now());
            let _ = AWS_CALLS.try_with(|c| c.borrow_mut().push(call));
        }
        Ok(())
    }
}

#[cfg(test)]
mod timing_tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn overlapping_calls_count_once() {
        assert_eq!(aws_time(), None);
        let t = Instant::now();
        let ms = |n: u64| t + Duration::from_millis(n);
        let total = timed(async {
            // 0–100 and 50–120 overlap (120 ms), 200–210 apart (10 ms).
            AWS_CALLS.with(|c| c.borrow_mut().extend([(ms(200), ms(210)), (ms(0), ms(100)), (ms(50), ms(120))]));
            aws_time()
        })
        .await;
        assert_eq!(total, Some(Duration::from_millis(130)));
    }
}
