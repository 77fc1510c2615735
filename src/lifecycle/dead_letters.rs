//! The lifecycle queue's dead-letter queue, watched: at start a queue without one is warned about;
//! then every minute its depth is read (the queue's RedrivePolicy names it) and exported as `opsd_lifecycle_dead_letter_messages`, so a message opsd
//! could not work (malformed, unverified again and again) raises an alert instead of waiting there
//! for someone to look.

use super::action::Ctx;
use crate::aws::call_error;
use aws_sdk_sqs::types::QueueAttributeName;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the dead-letter queue's depth is read.
pub const EVERY: Duration = Duration::from_secs(60);

/// The queue's dead-letter queue: (name, owner account) from its RedrivePolicy's target ARN.
pub fn target(redrive_policy: &str) -> Option<(String, String)> {
    let doc: serde_json::Value = serde_json::from_str(redrive_policy).ok()?;
    let arn = doc.get("deadLetterTargetArn")?.as_str()?;
    // arn:aws:sqs:REGION:ACCOUNT:NAME
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts[..] {
        ["arn", _, "sqs", _, account, name] if !name.is_empty() => Some((name.to_string(), account.to_string())),
        _ => None,
    }
}

/// Read the dead-letter queue's depth now; `None` (logged) when the queue has none or it cannot be
/// read. The first round also says, as a warning, that the queue has no redrive policy.
async fn depth(ctx: &Ctx, first: bool) -> Option<i64> {
    let attrs = ctx
        .sqs
        .get_queue_attributes()
        .queue_url(&ctx.queue_url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .map_err(|e| call_error("GetQueueAttributes", e));
    let policy = match attrs {
        Ok(a) => match a.attributes().and_then(|a| a.get(&QueueAttributeName::RedrivePolicy).cloned()) {
            Some(p) => p,
            None => {
                if first {
                    tracing::warn!(
                        queue = %ctx.queue_url,
                        "the lifecycle queue has no redrive policy: a message opsd cannot parse will be received again and again; give the queue a dead-letter queue (RedrivePolicy with maxReceiveCount)"
                    );
                }
                return None;
            }
        },
        Err(e) if first => {
            tracing::warn!(queue = %ctx.queue_url, "cannot read the queue's attributes: {e}; check queue_url and sqs:GetQueueAttributes");
            return None;
        }
        Err(e) => {
            tracing::debug!("cannot read the lifecycle queue's redrive policy: {e}");
            return None;
        }
    };
    let (name, account) = target(&policy)?;
    let url = ctx.sqs.get_queue_url().queue_name(&name).queue_owner_aws_account_id(&account).send().await;
    let url = match url.map_err(|e| call_error("GetQueueUrl", e)) {
        Ok(u) => u.queue_url?,
        Err(e) => {
            tracing::warn!("cannot find the dead-letter queue {name}: {e}; check sqs:GetQueueUrl on it");
            return None;
        }
    };
    let out = ctx
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .map_err(|e| call_error("GetQueueAttributes", e));
    match out {
        Ok(o) => o
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
            .and_then(|n| n.parse().ok()),
        Err(e) => {
            tracing::warn!(
                "cannot read the depth of the dead-letter queue {name}: {e}; check sqs:GetQueueAttributes on it"
            );
            None
        }
    }
}

/// Export the dead-letter queue's depth every `every` until `stop`.
pub async fn watch(ctx: Arc<Ctx>, every: Duration, stop: CancellationToken) {
    let mut first = true;
    loop {
        let n = depth(&ctx, first).await;
        first = false;
        if let Some(n) = n {
            if n > 0 {
                tracing::warn!("{n} message(s) in the lifecycle queue's dead-letter queue: opsd could not work them; read them, fix the cause, and redrive or delete them");
            }
            ctx.metrics.set_dead_letters(n);
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_comes_from_the_redrive_policy() {
        let p = r#"{"deadLetterTargetArn":"arn:aws:sqs:eu-west-1:123456789012:opsd-dlq","maxReceiveCount":"5"}"#;
        assert_eq!(target(p), Some(("opsd-dlq".into(), "123456789012".into())));
        assert_eq!(target(r#"{"maxReceiveCount":5}"#), None);
        assert_eq!(target("not json"), None);
        assert_eq!(target(r#"{"deadLetterTargetArn":"arn:aws:sns:eu-west-1:1:x"}"#), None);
    }
}
