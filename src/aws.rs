//! The one place that builds the AWS SDK configuration: the standard chain (env, profile, role) for
//! region and credentials, the standard endpoint variables (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_EC2`…),
//! and a timeout on every call.

use crate::config::AwsSettings;
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
/// The SDK's standard mode: three attempts with jittered backoff for throttling and 5xx.
pub const MAX_ATTEMPTS: u32 = 3;

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
        .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS));
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
