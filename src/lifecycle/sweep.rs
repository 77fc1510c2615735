//! The orphan sweep: every `sweep_interval`, opsd's interfaces left unattached (a crash between
//! create and attach, a failed cleanup) whose instance is gone are deleted once they have been seen
//! unattached for `sweep_grace`.

use super::action::Ctx;
use super::eni;
use super::metrics::EniOp;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Every `interval`: delete opsd's interfaces that have been unattached for `grace` (as seen by
/// this process) and whose instance is gone (a crash between create and attach, a failed cleanup).
pub async fn run(ctx: Arc<Ctx>, interval: Duration, grace: Duration, stop: CancellationToken) {
    let mut seen_unattached: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
        if let Err(e) = sweep(&ctx, grace, &mut seen_unattached).await {
            tracing::warn!("lifecycle sweep: {e}");
        }
    }
}

async fn sweep(ctx: &Ctx, grace: Duration, seen: &mut HashMap<String, Instant>) -> Result<(), crate::aws::CallError> {
    let now = Instant::now();
    let all = eni::all_opsd(&ctx.ec2).await?;
    let unattached: Vec<_> =
        all.into_iter().filter(|(e, _)| e.attachment.is_none() && e.status == "available").collect();
    seen.retain(|id, _| unattached.iter().any(|(e, _)| &e.id == id));
    for (e, instance) in unattached {
        let since = *seen.entry(e.id.clone()).or_insert(now);
        if now.duration_since(since) < grace {
            continue;
        }
        let gone = match eni::instance_gone(&ctx.ec2, &instance).await {
            Ok(g) => g,
            Err(err) => {
                tracing::warn!("lifecycle sweep: cannot check instance {instance} of {}: {err}", e.id);
                false
            }
        };
        if gone {
            match eni::delete(&ctx.ec2, &e.id).await {
                Ok(()) => {
                    tracing::info!("lifecycle sweep: deleted interface {} of gone instance {instance}", e.id);
                    ctx.metrics.eni(EniOp::Swept);
                    seen.remove(&e.id);
                }
                Err(err) => tracing::warn!("lifecycle sweep: {err}"),
            }
        }
    }
    Ok(())
}
