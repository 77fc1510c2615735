//! The lifecycle wing: the Auto Scaling lifecycle-hook consumer. It long-polls the SQS queue the
//! hooks notify (here), works each message with bounded workers ([`action`], over [`message`],
//! [`placement`] and [`eni`]), and sweeps interfaces left behind (`sweep`). Runs inside
//! `opsd daemon` when the config has a `[lifecycle]` section ([`settings`]); records each action
//! ([`history`]), exports the `opsd_lifecycle…` series ([`metrics`]), and answers
//! `opsd lifecycle status` ([`status`]).

pub mod action;
mod dead_letters;
pub mod eni;
pub mod history;
pub mod host_keys;
pub mod message;
pub mod metrics;
pub mod placement;
pub mod settings;
pub mod status;
mod sweep;

use crate::aws::call_error;
use crate::backoff::Backoff;
use crate::store::Store;
use action::{Ctx, Received};
use aws_config::SdkConfig;
use history::ActionHistory;
use metrics::LifecycleMetrics;
use settings::LifecycleSettings;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// SQS's long poll: the longest wait, the most messages per receive.
const WAIT_SECONDS: i32 = 20;
const MAX_MESSAGES: i32 = 10;
/// The visibility a message is received with, until its first heartbeat sets its lease from the
/// hook's timeout: half of the shortest heartbeat timeout AWS allows (30 s), so a crash before that
/// heartbeat never keeps the message hidden past the hook's own timeout.
const FIRST_LEASE: Duration = Duration::from_secs(15);
/// Backoff after a failed receive: doubles from the first to the last, reset by a success.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The AWS clients the consumer uses. SQS gets a per-attempt timeout above the long poll's 20 s.
pub fn clients(sdk: &SdkConfig) -> (aws_sdk_ec2::Client, aws_sdk_autoscaling::Client, aws_sdk_sqs::Client) {
    let sqs_timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(crate::aws::CONNECT_TIMEOUT)
        .operation_attempt_timeout(Duration::from_secs(WAIT_SECONDS as u64 + 10))
        .operation_timeout(Duration::from_secs(90))
        .build();
    // Every call is timed into the action it serves (the store's `aws_ms`).
    let timer = crate::aws::CallTimer;
    let sqs = aws_sdk_sqs::config::Builder::from(sdk).timeout_config(sqs_timeouts).interceptor(timer).build();
    let ec2 = aws_sdk_ec2::config::Builder::from(sdk).interceptor(timer).build();
    let asg = aws_sdk_autoscaling::config::Builder::from(sdk).interceptor(timer).build();
    (
        aws_sdk_ec2::Client::from_conf(ec2),
        aws_sdk_autoscaling::Client::from_conf(asg),
        aws_sdk_sqs::Client::from_conf(sqs),
    )
}

pub fn context(
    sdk: &SdkConfig,
    settings: &LifecycleSettings,
    store: Store,
    pins: Arc<dyn crate::ssh::KeyPins>,
    metrics: LifecycleMetrics,
    abort: CancellationToken,
) -> Arc<Ctx> {
    let (ec2, asg, sqs) = clients(sdk);
    Arc::new(Ctx {
        ec2: ec2.clone(),
        asg,
        sqs,
        queue_url: settings.queue_url.clone(),
        eni: settings.eni.clone(),
        settings: settings.clone(),
        visibility: settings.visibility_timeout.0,
        host_keys: settings.pin_host_keys.then(|| host_keys::Pinning {
            pins,
            console: Arc::new(crate::ssh::console::Aws(ec2.clone())),
            timeout: settings.pin_timeout.0,
        }),
        history: ActionHistory::new(store),
        metrics,
        abort,
    })
}

/// Receive and work messages until `stop`; then wait for the messages being worked (the daemon
/// bounds that wait with its shutdown grace and `ctx.abort`).
pub async fn run(ctx: Arc<Ctx>, settings: LifecycleSettings, stop: CancellationToken) {
    tracing::info!(queue = %ctx.queue_url, workers = settings.workers.0, "lifecycle consumer started");
    let workers = Arc::new(Semaphore::new(settings.workers.0));
    let tracker = TaskTracker::new();
    let sweeper =
        tokio::spawn(sweep::run(ctx.clone(), settings.sweep_interval.0, settings.sweep_grace.0, stop.clone()));
    let dead_letters = tokio::spawn(dead_letters::watch(ctx.clone(), dead_letters::EVERY, stop.clone()));
    let mut backoff = Backoff::new(BACKOFF_FIRST, BACKOFF_MAX);
    let visibility = settings.visibility_timeout.0.min(FIRST_LEASE).as_secs().max(1) as i32;
    loop {
        // Only receive what can be worked now: a message held but not worked would only time out.
        let first = tokio::select! {
            p = workers.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.cancelled() => break,
        };
        let free = (workers.available_permits() + 1).min(MAX_MESSAGES as usize) as i32;
        let receive = ctx
            .sqs
            .receive_message()
            .queue_url(&ctx.queue_url)
            .max_number_of_messages(free)
            .wait_time_seconds(WAIT_SECONDS)
            .visibility_timeout(visibility)
            .send();
        tokio::pin!(receive);
        // A long poll cut off would not return the messages SQS already handed to it: they would stay
        // hidden for their visibility timeout while their hooks tick. At shutdown the poll in flight
        // is let finish (20 s at most) and what it brings is released at once.
        let (out, stopping) = tokio::select! {
            r = &mut receive => (r, false),
            _ = stop.cancelled() => (receive.await, true),
        };
        let out = out.map_err(|e| call_error("ReceiveMessage", e));
        if stopping {
            if let Ok(o) = out {
                for m in o.messages() {
                    release(&ctx, m.receipt_handle().unwrap_or_default()).await;
                }
            }
            break;
        }
        let messages = match out {
            Ok(o) => {
                backoff.reset();
                o.messages.unwrap_or_default()
            }
            Err(e) => {
                let wait = backoff.fail();
                tracing::error!(queue = %ctx.queue_url, "{e}; retrying in {wait:?}");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => break,
                }
                continue;
            }
        };
        let mut permit = Some(first);
        for m in messages {
            let p = match permit.take() {
                Some(p) => p,
                None => match workers.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let received = Received {
                id: m.message_id.unwrap_or_default(),
                receipt: m.receipt_handle.unwrap_or_default(),
                body: m.body.unwrap_or_default(),
            };
            let ctx = ctx.clone();
            tracker.spawn(async move {
                let _p = p;
                action::handle(ctx, received).await;
            });
        }
    }
    tracker.close();
    if !tracker.is_empty() {
        tracing::info!("lifecycle consumer: no new messages; {} being worked", tracker.len());
    }
    tracker.wait().await;
    sweeper.abort();
    dead_letters.abort();
    tracing::info!("lifecycle consumer stopped");
}

/// Make a received message visible again at once.
async fn release(ctx: &Ctx, receipt: &str) {
    let r = ctx
        .sqs
        .change_message_visibility()
        .queue_url(&ctx.queue_url)
        .receipt_handle(receipt)
        .visibility_timeout(0)
        .send()
        .await;
    if let Err(e) = r.map_err(|e| call_error("ChangeMessageVisibility", e)) {
        tracing::warn!("returning a message to the queue: {e}; it returns after its visibility timeout");
    }
}
