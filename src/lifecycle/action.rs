//! One SQS message, worked to its end: parse; for a lifecycle action, heartbeat (hook and message
//! visibility) while the interface is created and attached (launch) or detached and deleted
//! (terminate), then complete with CONTINUE, or ABANDON after cleaning up on failure. The message is
//! deleted only once the action is completed, or AWS says it no longer exists.

use super::eni::{self, EniError, NewEni};
use super::history::{ActionHistory, ActionRecord, LifecycleResult, MessageOutcome};
use super::message::{self, Action, Notification, Transition};
use super::metrics::{EniOp, LifecycleMetrics, MessageKind};
use super::placement::{self, PlacementError};
use super::settings::EniSettings;
use crate::aws::{call_error, CallError};
use crate::backoff::Backoff;
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Cleanup after a failure runs on its own clock, not the (possibly cancelled) action's; short enough
/// to finish within the daemon's 30 s after the shutdown grace.
const CLEANUP_LIMIT: Duration = Duration::from_secs(20);
/// Attempts at CompleteLifecycleAction before the message is left for redelivery.
const COMPLETE_ATTEMPTS: u32 = 4;
/// The wait after the first failed attempt (doubling after each): throttling clears in this time.
const COMPLETE_FIRST_WAIT: Duration = Duration::from_millis(200);
/// Used when the hook cannot be described: AWS's minimum heartbeat timeout, so heartbeats come early enough.
const FALLBACK_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the hook may take to be described before the first heartbeat goes out without it.
const HOOK_FACTS_LIMIT: Duration = Duration::from_secs(5);
/// How long the first heartbeat is retried while AWS throttles or answers with a server error,
/// before the message is left for redelivery: well within the shortest message lease.
const VERIFY_PATIENCE: Duration = Duration::from_secs(20);
// (Each attempt of the first heartbeat renews the message's visibility too, so the retries outlive
// the 15 s first lease without the message coming back.)
/// How long a launch or terminate is retried while AWS throttles or answers with a passing error
/// (each retry resumes idempotently; heartbeats keep the action alive meanwhile).
const TRANSIENT_PATIENCE: Duration = Duration::from_secs(180);

/// What the workers share.
pub struct Ctx {
    pub ec2: aws_sdk_ec2::Client,
    pub asg: aws_sdk_autoscaling::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub eni: EniSettings,
    /// The `[lifecycle]` section, for the groups and hooks whose actions may be worked.
    pub settings: super::settings::LifecycleSettings,
    /// The visibility a message keeps while worked (set at receive, renewed by each heartbeat).
    pub visibility: Duration,
    /// With `pin_host_keys`: where a launching instance's host keys are read and pinned.
    pub host_keys: Option<super::host_keys::Pinning>,
    pub history: ActionHistory,
    pub metrics: LifecycleMetrics,
    /// Cancelled when opsd must stop working (after the shutdown grace).
    pub abort: CancellationToken,
}

/// A received message.
pub struct Received {
    pub id: String,
    pub receipt: String,
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error(transparent)]
    Placement(#[from] PlacementError),
    #[error(transparent)]
    Eni(#[from] EniError),
    #[error(transparent)]
    Aws(#[from] CallError),
    #[error("{0}")]
    HostKeys(String),
}

impl ActionError {
    fn cancelled(&self) -> bool {
        matches!(self, ActionError::Eni(EniError::Cancelled))
    }

    /// Throttling, contention, a server error or no answer: the same step may succeed later.
    fn passing(&self) -> bool {
        match self {
            ActionError::Aws(e) | ActionError::Eni(EniError::Aws(e)) => !e.is_final(),
            _ => false,
        }
    }
}

/// Work one message to its end.
pub async fn handle(ctx: Arc<Ctx>, m: Received) {
    match message::parse(&m.body) {
        Err(e) => {
            // Not deleted: after maxReceiveCount the queue's redrive policy moves it to the dead-letter queue.
            tracing::error!(message = %m.id, "lifecycle message {} cannot be parsed: {e}; left in the queue for its dead-letter queue", m.id);
            ctx.metrics.message(MessageKind::Malformed, MessageOutcome::Kept);
        }
        Ok(Notification::Test { group }) => {
            tracing::info!(message = %m.id, group = %group, "test notification from Auto Scaling group {group}: the hook reaches this queue");
            let outcome = if delete(&ctx, &m).await { MessageOutcome::Deleted } else { MessageOutcome::Kept };
            ctx.metrics.message(MessageKind::Test, outcome);
        }
        Ok(Notification::Action(a)) => {
            let span = tracing::info_span!(
                "lifecycle",
                transition = %a.transition,
                instance = %a.instance_id,
                group = %a.group,
                hook = %a.hook,
                message = %m.id,
            );
            crate::aws::timed(work(&ctx, &m, a)).instrument(span).await
        }
    }
}

async fn work(ctx: &Arc<Ctx>, m: &Received, a: Action) {
    let started = Utc::now();
    let clock = std::time::Instant::now();
    // Context (instance, hook, message) is in the span; the lines say what happened.
    tracing::info!("{} {}: started", a.transition, a.instance_id);
    let record = |result, outcome, eni_id, error| ActionRecord {
        message_id: m.id.clone(),
        group: a.group.clone(),
        hook: a.hook.clone(),
        instance_id: a.instance_id.clone(),
        transition: a.transition,
        result,
        outcome,
        eni_id,
        error,
        started_at: started,
        ended_at: Utc::now(),
        aws_ms: crate::aws::aws_time().map(|d| d.as_millis() as u64),
    };
    if !ctx.settings.allows(&a.group, &a.hook) {
        tracing::error!(
            "message {}: group {} / hook {} is not in [lifecycle] groups / hooks; nothing done, the message is left for the dead-letter queue (add them to the config if opsd should work them)",
            m.id, a.group, a.hook
        );
        ctx.metrics.message(a.transition, MessageOutcome::NotAllowed);
        save(
            ctx,
            record(LifecycleResult::None, MessageOutcome::NotAllowed, None, Some("group or hook not allowed".into())),
        )
        .await;
        return;
    }
    let hook = hook_facts(ctx, &a).await;
    let timeout = hook.timeout;
    let lease = lease(ctx.visibility, timeout);
    // The hook's clock started when the instance began to wait, perhaps long before this message was
    // received: the first heartbeat goes out at once. If the action is gone, there is nothing to do.
    // It is also the proof that the action is real: a message is only text anyone allowed to write
    // to the queue can forge, so nothing is created or attached for it unless AWS accepted this
    // heartbeat for its group, hook, token and instance.
    match first_beat(ctx, &a, &m.receipt, lease).await {
        Beat::Ok => {}
        Beat::Failed(e) => {
            let why = e.to_string();
            tracing::error!(
                "cannot verify the lifecycle action ({why}); nothing done: the message returns to the queue in {}, and goes to the dead-letter queue if this goes on",
                humantime::format_duration(lease)
            );
            ctx.metrics.message(a.transition, MessageOutcome::Unverified);
            save(ctx, record(LifecycleResult::None, MessageOutcome::Unverified, None, Some(why))).await;
            return;
        }
        Beat::NoAction(why) => {
            tracing::warn!(
                "the action is no longer active ({why}): already completed or timed out; deleting the message"
            );
            tidy(ctx, &a).await;
            delete(ctx, m).await;
            ctx.metrics.message(a.transition, MessageOutcome::Expired);
            save(ctx, record(LifecycleResult::None, MessageOutcome::Expired, None, Some(why))).await;
            return;
        }
    }
    let beat_stop = CancellationToken::new();
    let beats = tokio::spawn(
        heartbeats(ctx.clone(), a.clone(), m.receipt.clone(), timeout, lease, beat_stop.clone()).in_current_span(),
    );

    // The interface and the host keys at once: cloud-init prints the keys minutes after boot.
    let result = match (a.transition, &ctx.host_keys) {
        (Transition::Launching, Some(pinning)) => {
            // A launch whose interface failed is abandoned: the keys are not waited for.
            let stop_pinning = ctx.abort.child_token();
            let made = async {
                let r = patiently(ctx, &a).await;
                if r.is_err() {
                    stop_pinning.cancel();
                }
                r
            };
            let (made, pinned) = tokio::join!(made, pinning.pin(&a.instance_id, &stop_pinning));
            match (made, pinned) {
                (Ok(eni), Ok(())) => Ok(eni),
                (Ok(eni), Err(e)) => {
                    // The instance will be abandoned: the interface it was given goes with it.
                    if let Some(id) = &eni {
                        if !e.cancelled() {
                            cleanup(ctx, id, None).await;
                        }
                    }
                    Err((e, None))
                }
                (Err(e), _) => Err(e),
            }
        }
        _ => patiently(ctx, &a).await,
    };
    let (lifecycle_result, eni_id, error) = match result {
        Ok(eni) => (LifecycleResult::Continue, eni, None),
        Err((e, _)) if e.cancelled() => {
            beat_stop.cancel();
            let _ = beats.await;
            // Not completed and not deleted: visible again at once for the next opsd, which resumes
            // idempotently (the interface is found by its token).
            tracing::warn!("stopped by shutdown before completion; the message returns to the queue");
            release(ctx, m).await;
            ctx.metrics.message(a.transition, MessageOutcome::Interrupted);
            return;
        }
        Err((e, created)) => {
            tracing::error!("{} {} failed: {e}; cleaning up and completing with ABANDON", a.transition, a.instance_id);
            if let Some(id) = &created {
                cleanup(ctx, id, Some(&a.instance_id)).await;
            }
            (LifecycleResult::Abandon, None, Some(e.to_string()))
        }
    };
    let completion = complete(ctx, &a, lifecycle_result).await;
    beat_stop.cancel();
    let _ = beats.await;
    let outcome = match &completion {
        Completion::Done => {
            ctx.metrics.completed(a.transition, lifecycle_result);
            tracing::info!(
                "completed with {lifecycle_result}{}",
                eni_id.as_deref().map(|e| format!(" (interface {e})")).unwrap_or_default()
            );
            if delete(ctx, m).await {
                MessageOutcome::Completed
            } else {
                MessageOutcome::CompletedNotDeleted
            }
        }
        Completion::NoAction(why) => {
            tracing::warn!(
                "the action is no longer active ({why}): already completed or timed out; deleting the message"
            );
            tidy(ctx, &a).await;
            delete(ctx, m).await;
            MessageOutcome::Expired
        }
        Completion::Failed(e) => {
            tracing::error!("CompleteLifecycleAction failed: {e}; the message stays and will be redelivered");
            // Refused for good (access denied): the hook will time out into its default result.
            // With ABANDON that ends the instance, so what this launch made goes now.
            if e.is_final()
                && hook.abandons
                && a.transition == Transition::Launching
                && lifecycle_result == LifecycleResult::Continue
            {
                if let Some(id) = &eni_id {
                    tracing::warn!("the hook's default result is ABANDON: removing interface {id}, which the abandoned instance will not need");
                    cleanup(ctx, id, None).await;
                }
            }
            MessageOutcome::CompleteFailed
        }
    };
    ctx.metrics.message(a.transition, outcome);
    ctx.metrics.action_duration(a.transition, clock.elapsed().as_secs_f64());
    save(ctx, record(lifecycle_result, outcome, eni_id, error)).await;
}

async fn save(ctx: &Ctx, record: ActionRecord) {
    let instance = record.instance_id.clone();
    if let Err(e) = ctx.history.record(record).await {
        tracing::error!(instance = %instance, "cannot record the lifecycle action: {e}");
    }
}

/// How long a message stays hidden per renewal: the configured visibility, but at most half the
/// hook's timeout, so that after a crash the message comes back while the action can still be completed.
fn lease(visibility: Duration, hook_timeout: Duration) -> Duration {
    visibility.min(hook_timeout / 2).max(Duration::from_secs(1))
}

/// What the hook says of itself (DescribeLifecycleHooks).
struct HookFacts {
    /// HeartbeatTimeout.
    timeout: Duration,
    /// DefaultResult is ABANDON (AWS's default), what a timeout ends in.
    abandons: bool,
}

async fn hook_facts(ctx: &Ctx, a: &Action) -> HookFacts {
    let fallback = HookFacts { timeout: FALLBACK_HEARTBEAT_TIMEOUT, abandons: false };
    // Bounded well within the message's first lease (15 s): the first heartbeat, which renews it,
    // must not wait behind a throttled describe.
    let describe =
        ctx.asg.describe_lifecycle_hooks().auto_scaling_group_name(&a.group).lifecycle_hook_names(&a.hook).send();
    let Ok(r) = tokio::time::timeout(HOOK_FACTS_LIMIT, describe).await else {
        tracing::warn!(instance = %a.instance_id, "DescribeLifecycleHooks took longer than {HOOK_FACTS_LIMIT:?}; heartbeating as for {FALLBACK_HEARTBEAT_TIMEOUT:?}");
        return fallback;
    };
    match r.map_err(|e| call_error("DescribeLifecycleHooks", e)) {
        Ok(out) => match out.lifecycle_hooks().first() {
            Some(h) if h.heartbeat_timeout().is_some_and(|s| s > 0) => HookFacts {
                timeout: Duration::from_secs(h.heartbeat_timeout().unwrap_or_default() as u64),
                abandons: h.default_result().is_none_or(|r| r == "ABANDON"),
            },
            _ => {
                tracing::warn!(instance = %a.instance_id, "hook {} of {} not found or without a timeout; heartbeating as for {:?}", a.hook, a.group, FALLBACK_HEARTBEAT_TIMEOUT);
                fallback
            }
        },
        Err(e) => {
            tracing::warn!(instance = %a.instance_id, "{e}; heartbeating as for {FALLBACK_HEARTBEAT_TIMEOUT:?}");
            fallback
        }
    }
}

enum Beat {
    Ok,
    /// AWS has no active action for the token any more.
    NoAction(String),
    /// The heartbeat failed otherwise (access denied, throttling, no answer): the action is not
    /// known to be real.
    Failed(CallError),
}

/// The first heartbeat, retried while AWS throttles or fails in passing (for up to
/// [`VERIFY_PATIENCE`]): only a final answer or a lasting fault leaves the action unverified.
async fn first_beat(ctx: &Ctx, a: &Action, receipt: &str, lease: Duration) -> Beat {
    let start = tokio::time::Instant::now();
    let mut wait = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
    loop {
        match beat(ctx, a, receipt, lease).await {
            Beat::Failed(e) if !e.is_final() && start.elapsed() + wait.next_wait() < VERIFY_PATIENCE => {
                tracing::warn!("heartbeat: {e}; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait.fail()) => {}
                    _ = ctx.abort.cancelled() => return Beat::Failed(e),
                }
            }
            other => return other,
        }
    }
}

/// One heartbeat: RecordLifecycleActionHeartbeat and the message's visibility renewed for `lease`.
async fn beat(ctx: &Ctx, a: &Action, receipt: &str, lease: Duration) -> Beat {
    let hb = ctx
        .asg
        .record_lifecycle_action_heartbeat()
        .auto_scaling_group_name(&a.group)
        .lifecycle_hook_name(&a.hook)
        .lifecycle_action_token(&a.token)
        .instance_id(&a.instance_id)
        .send();
    let vis = ctx
        .sqs
        .change_message_visibility()
        .queue_url(&ctx.queue_url)
        .receipt_handle(receipt)
        .visibility_timeout(lease.as_secs().clamp(1, 43_200) as i32)
        .send();
    let (hb, vis) = tokio::join!(hb, vis);
    if let Err(e) = vis.map_err(|e| call_error("ChangeMessageVisibility", e)) {
        tracing::warn!(instance = %a.instance_id, "renewing the message's visibility: {e}");
    }
    match hb.map_err(|e| call_error("RecordLifecycleActionHeartbeat", e)) {
        Ok(_) => {
            ctx.metrics.heartbeat();
            Beat::Ok
        }
        Err(e) if no_active_action(&e) => Beat::NoAction(e.message),
        Err(e) => Beat::Failed(e),
    }
}

fn no_active_action(e: &CallError) -> bool {
    e.code_is("ValidationError") && e.message.contains("No active Lifecycle Action")
}

/// Every third of the shorter of the hook's timeout and the message's lease: a heartbeat, so neither
/// the instance nor the message times out while the work goes on.
async fn heartbeats(
    ctx: Arc<Ctx>,
    a: Action,
    receipt: String,
    timeout: Duration,
    lease: Duration,
    stop: CancellationToken,
) {
    let every = (timeout.min(lease) / 3).max(Duration::from_millis(300));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        match beat(&ctx, &a, &receipt, lease).await {
            Beat::Ok => {}
            Beat::NoAction(why) => {
                tracing::warn!(instance = %a.instance_id, "heartbeat: the action is no longer active ({why})")
            }
            Beat::Failed(e) => tracing::warn!(instance = %a.instance_id, "heartbeat: {e}"),
        }
    }
}

type Failure = (ActionError, Option<String>);

/// The transition's work, resumed from the start while it fails in passing (throttling, contention,
/// server errors, no answer) for up to [`TRANSIENT_PATIENCE`]: every step finds what an earlier
/// attempt did (the interface by its token, the attachment on the instance), so a retry never
/// doubles it, and a passing fault of AWS never ends in an ABANDON.
async fn patiently(ctx: &Ctx, a: &Action) -> Result<Option<String>, Failure> {
    let start = tokio::time::Instant::now();
    let mut wait = Backoff::new(Duration::from_secs(1), Duration::from_secs(15));
    // The interface an earlier attempt made, for the cleanup if a later one fails before finding it.
    let mut made = None;
    loop {
        let r = match a.transition {
            Transition::Launching => launch(ctx, a).await,
            Transition::Terminating => terminate(ctx, a).await,
        };
        match r {
            Err((e, created)) if e.passing() && start.elapsed() + wait.next_wait() < TRANSIENT_PATIENCE => {
                made = created.or(made);
                let pause = wait.fail();
                tracing::warn!("{e}; resuming in {pause:?}");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = ctx.abort.cancelled() => return Err((EniError::Cancelled.into(), None)),
                }
            }
            Err((e, created)) => return Err((e, created.or(made))),
            ok => return ok,
        }
    }
}

/// Give the instance its interface. Returns the interface id; on failure, the error and the id of
/// an interface this action created (for cleanup).
async fn launch(ctx: &Ctx, a: &Action) -> Result<Option<String>, Failure> {
    let idx = ctx.eni.device_index.0;
    let inst = eni::instance(&ctx.ec2, &a.instance_id, &ctx.abort).await.map_err(|e| (e.into(), None))?;
    if let Some(existing) = inst.attached.get(&idx) {
        // A redelivery after the attach, or a second launch hook (warm pools): nothing to add.
        tracing::info!(instance = %a.instance_id, "already has interface {existing} at device index {idx}");
        return Ok(Some(existing.clone()));
    }
    let (cands, groups) =
        placement::candidates(&a.hook, a.metadata.as_deref(), &ctx.eni.subnets, &ctx.eni.security_groups)
            .map_err(|e| (e.into(), None))?;
    let zones = eni::subnet_zones(&ctx.ec2, cands.to_look_up()).await.map_err(|e| (e.into(), None))?;
    let subnet = placement::choose(&a.hook, &cands, &inst.zone, &zones).map_err(|e| (e.into(), None))?;
    // An interface already created for this action (redelivery, or a crash after the create) is reused.
    let mine = eni::tagged(&ctx.ec2, eni::TAG_TOKEN, &a.token).await.map_err(|e| (e.into(), None))?;
    let id = match mine.into_iter().next() {
        Some(e) => e.id,
        None => {
            let new = NewEni {
                subnet: &subnet,
                security_groups: &groups,
                description: &ctx.eni.description,
                instance_id: &a.instance_id,
                token: &a.token,
            };
            let id = eni::create(&ctx.ec2, new).await.map_err(|e| (e.into(), None))?;
            ctx.metrics.eni(EniOp::Created);
            tracing::info!(instance = %a.instance_id, "created interface {id} in {subnet} ({})", inst.zone);
            id
        }
    };
    let attached = attach_when_ready(ctx, &id, &a.instance_id, idx).await.map_err(|e| (e, Some(id.clone())))?;
    if attached != id {
        // Another interface took the index first (a concurrent delivery of another launch hook).
        tracing::info!(instance = %a.instance_id, "interface {attached} is at device index {idx}; removing {id}, made for this action");
        cleanup(ctx, &id, Some(&a.instance_id)).await;
    }
    Ok(Some(attached))
}

/// Wait until the interface is `available`, then attach it at `idx`. Returns the id of the interface
/// at `idx` of the instance in the end: this one, or one another worker attached first (SQS delivers
/// at least once: two workers may hold the same action).
async fn attach_when_ready(ctx: &Ctx, id: &str, instance: &str, idx: i32) -> Result<String, ActionError> {
    let start = tokio::time::Instant::now();
    let limit = ctx.eni.ready_timeout.0;
    // When EC2 first said it does not know the interface or the instance: a new id is NotFound for
    // a while (eventual consistency), so that is waited out, for NOT_FOUND_PATIENCE.
    let mut unseen: Option<tokio::time::Instant> = None;
    // Polls slow down to a few seconds apart, so many workers waiting stay within EC2's Describe rate.
    let mut poll = Backoff::new(eni::POLL, eni::POLL * 4);
    let mut last;
    loop {
        match eni::describe(&ctx.ec2, id).await? {
            Some(e) if e.attachment.as_ref().is_some_and(|(_, i, d)| i == instance && *d == idx) => {
                return Ok(id.into())
            }
            Some(e) if e.status == "available" => match eni::attach(&ctx.ec2, id, instance, idx).await {
                Ok(_) => return Ok(id.into()),
                Err(err) if not_yet_visible(&err) => last = format!("not found ({})", err.code.unwrap_or_default()),
                // An instance still `pending` takes no interface yet (EC2's IncorrectInstanceState):
                // waited for within ready_timeout, like an interface that is not available yet.
                Err(err)
                    if err.code_is("IncorrectInstanceState")
                        && eni::instance_state(&ctx.ec2, instance).await?.as_deref() == Some("pending") =>
                {
                    last = "instance pending".into()
                }
                Err(err) => {
                    return match eni::instance(&ctx.ec2, instance, &ctx.abort).await?.attached.get(&idx) {
                        Some(other) => Ok(other.clone()),
                        None => Err(err.into()),
                    }
                }
            },
            Some(e) => last = e.status,
            None => last = "not found".into(),
        }
        let gave_up = if last.starts_with("not found") {
            let since = *unseen.get_or_insert_with(tokio::time::Instant::now);
            (since.elapsed() >= eni::NOT_FOUND_PATIENCE).then(|| "gone".to_string())
        } else {
            unseen = None;
            (start.elapsed() >= limit).then_some(last)
        };
        if let Some(status) = gave_up {
            return Err(
                EniError::NotReady { eni: id.into(), want: "available", status, waited: start.elapsed() }.into()
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(poll.fail()) => {}
            _ = ctx.abort.cancelled() => return Err(EniError::Cancelled.into()),
        }
    }
}

/// EC2's answer for an id it does not know yet (or any more).
fn not_yet_visible(e: &CallError) -> bool {
    e.code_is("InvalidNetworkInterfaceID.NotFound") || e.code_is("InvalidInstanceID.NotFound")
}

/// Detach and delete the interfaces opsd gave the instance. Already gone is success.
async fn terminate(ctx: &Ctx, a: &Action) -> Result<Option<String>, Failure> {
    let idx = ctx.eni.device_index.0;
    let enis = eni::tagged(&ctx.ec2, eni::TAG_INSTANCE, &a.instance_id).await.map_err(|e| (e.into(), None))?;
    if a.destination.as_deref() == Some("WarmPool") && ctx.eni.keep_in_warm_pool {
        // Stopped and kept in the warm pool: it comes back with its interface (a launch from the
        // pool finds it attached and completes at once).
        let kept =
            enis.iter().find(|e| e.attachment.as_ref().is_some_and(|(_, i, d)| i == &a.instance_id && *d == idx));
        tracing::info!(
            instance = %a.instance_id,
            "returns to the warm pool: keeps {} (keep_in_warm_pool = true)",
            kept.map(|e| format!("interface {}", e.id)).unwrap_or_else(|| "no interface of opsd's".into())
        );
        return Ok(kept.map(|e| e.id.clone()));
    }
    let mut removed = Vec::new();
    for e in enis {
        let ours = match &e.attachment {
            None => true,
            Some((_, inst, index)) => inst == &a.instance_id && *index == idx,
        };
        if !ours {
            continue;
        }
        eni::remove(&ctx.ec2, &e, ctx.eni.ready_timeout.0, &ctx.abort).await.map_err(|err| (err.into(), None))?;
        ctx.metrics.eni(EniOp::Deleted);
        tracing::info!(instance = %a.instance_id, "detached and deleted interface {}", e.id);
        removed.push(e.id);
    }
    Ok(removed.into_iter().next())
}

/// Delete an interface a launch created and does not keep, on its own time limit (it must happen
/// even at shutdown). One attached to the `spare` instance (the action's, while it may live) is never
/// touched: another worker holding the same action attached it, and the instance keeps it.
async fn cleanup(ctx: &Ctx, id: &str, spare: Option<&str>) {
    let own = CancellationToken::new();
    let work = async {
        match eni::describe(&ctx.ec2, id).await? {
            None => Ok(false),
            Some(e) if e.attachment.as_ref().is_some_and(|(_, i, _)| Some(i.as_str()) == spare) => Ok(false),
            Some(e) => eni::remove(&ctx.ec2, &e, CLEANUP_LIMIT, &own).await.map(|_| true),
        }
    };
    match tokio::time::timeout(CLEANUP_LIMIT, work).await {
        Ok(Ok(true)) => {
            ctx.metrics.eni(EniOp::Deleted);
            tracing::info!("deleted interface {id} that this action created");
        }
        Ok(Ok(false)) => {}
        Ok(Err(e)) => tracing::error!("cannot delete interface {id}: {e}; the sweep will retry"),
        Err(_) => tracing::error!("deleting interface {id} timed out; the sweep will retry"),
    }
}

/// A launch action that ended without this worker's completion (it timed out while the completion
/// failed, or its instance was abandoned): if the instance is gone or going, the interfaces made for
/// the action are deleted now, not left to the sweep. An instance still running keeps them (its
/// action was completed with CONTINUE, here or by another worker).
async fn tidy(ctx: &Ctx, a: &Action) {
    if a.transition != Transition::Launching {
        return;
    }
    let made = match eni::tagged(&ctx.ec2, eni::TAG_TOKEN, &a.token).await {
        Ok(m) if m.is_empty() => return,
        Ok(m) => m,
        Err(e) => {
            tracing::warn!("cannot look for the interfaces this action made: {e}; the sweep will find them");
            return;
        }
    };
    // Only when EC2 says the instance ended (a NotFound may be eventual consistency), and only the
    // interfaces that are this instance's: the message is text, and its action is gone.
    match eni::instance_state(&ctx.ec2, &a.instance_id)
        .await
        .map(|s| s.is_some_and(|s| matches!(s.as_str(), "terminated" | "shutting-down")))
    {
        Ok(true) => {
            let mine = match eni::tagged(&ctx.ec2, eni::TAG_INSTANCE, &a.instance_id).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!("cannot look for the instance's interfaces: {e}; the sweep will find them");
                    return;
                }
            };
            for e in made.iter().filter(|e| mine.iter().any(|m| m.id == e.id)) {
                if e.attachment.as_ref().is_none_or(|(_, i, _)| i == &a.instance_id) {
                    cleanup(ctx, &e.id, None).await;
                }
            }
        }
        Ok(false) => {}
        Err(e) => tracing::warn!("cannot tell whether the instance is gone: {e}; the sweep will find its interfaces"),
    }
}

enum Completion {
    Done,
    /// AWS has no active action for the token: completed before, or timed out.
    NoAction(String),
    Failed(CallError),
}

async fn complete(ctx: &Ctx, a: &Action, result: LifecycleResult) -> Completion {
    let mut wait = Backoff::new(COMPLETE_FIRST_WAIT, COMPLETE_FIRST_WAIT * 2u32.pow(COMPLETE_ATTEMPTS));
    let mut last = None;
    for attempt in 1..=COMPLETE_ATTEMPTS {
        let r = ctx
            .asg
            .complete_lifecycle_action()
            .auto_scaling_group_name(&a.group)
            .lifecycle_hook_name(&a.hook)
            .lifecycle_action_token(&a.token)
            .instance_id(&a.instance_id)
            .lifecycle_action_result(result.as_str())
            .send()
            .await;
        match r.map_err(|e| call_error("CompleteLifecycleAction", e)) {
            Ok(_) => return Completion::Done,
            Err(e) if no_active_action(&e) => return Completion::NoAction(e.message),
            Err(e) if e.is_final() => return Completion::Failed(e),
            Err(e) => {
                tracing::warn!(instance = %a.instance_id, "attempt {attempt}: {e}");
                last = Some(e);
            }
        }
        // Backoff between attempts; a shutdown does not cut it short: completing is what matters most.
        tokio::time::sleep(wait.fail()).await;
    }
    Completion::Failed(last.unwrap_or(CallError {
        operation: "CompleteLifecycleAction",
        code: None,
        message: "no attempt".into(),
    }))
}

async fn delete(ctx: &Ctx, m: &Received) -> bool {
    let r = ctx.sqs.delete_message().queue_url(&ctx.queue_url).receipt_handle(&m.receipt).send().await;
    match r.map_err(|e| call_error("DeleteMessage", e)) {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(message = %m.id, "{e}; the message will be redelivered and found already done");
            false
        }
    }
}

/// Make a message visible again at once (work stopped before completion).
async fn release(ctx: &Ctx, m: &Received) {
    let r = ctx
        .sqs
        .change_message_visibility()
        .queue_url(&ctx.queue_url)
        .receipt_handle(&m.receipt)
        .visibility_timeout(0)
        .send()
        .await;
    if let Err(e) = r.map_err(|e| call_error("ChangeMessageVisibility", e)) {
        tracing::warn!(message = %m.id, "{e}; it returns after its visibility timeout");
    }
}
