//! `opsd lifecycle status`: the queue's depth, the messages being worked, and the last lifecycle
//! actions with their outcome.

use super::history::ActionHistory;
use super::settings::LifecycleSettings;
use crate::aws::call_error;
use crate::exit::Exit;
use crate::outln;
use crate::output::OutputFormat;
use crate::store::Store;
use clap::Subcommand;
use std::future::Future;

#[derive(Debug, Subcommand)]
pub enum LifecycleCommand {
    /// The queue's depth, the messages being worked, and the last lifecycle actions with their outcome.
    #[command(
        after_help = "Examples:\n  opsd lifecycle status\n  opsd lifecycle status --limit 50 --output json\n\nExit codes:\n  0   shown\n  64  no [lifecycle] section in the config\n  69  the queue could not be read\n  70  the history could not be read"
    )]
    Status {
        /// How many recent actions to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
}

/// Run a `opsd lifecycle …` command. The store and the SDK config are opened when needed, in that order.
pub async fn run<S, A>(cmd: LifecycleCommand, settings: Option<&LifecycleSettings>, store: S, sdk: A) -> Exit
where
    S: Future<Output = Result<Store, Exit>>,
    A: Future<Output = Result<aws_config::SdkConfig, Exit>>,
{
    let LifecycleCommand::Status { limit, output } = cmd;
    let Some(l) = settings else {
        eprintln!("opsd: the config has no [lifecycle] section; add one with queue_url to consume lifecycle hooks");
        return Exit::Usage;
    };
    let history = match store.await {
        Ok(s) => ActionHistory::new(s),
        Err(exit) => return exit,
    };
    let actions = match history.recent(limit).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("opsd: {e}");
            return Exit::Software;
        }
    };
    let sdk = match sdk.await {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    let (_, _, sqs) = super::clients(&sdk);
    let (visible, in_flight) = match queue_depth(&sqs, &l.queue_url).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("opsd: queue {}: {e}; check queue_url and sqs:GetQueueAttributes", l.queue_url);
            return Exit::Unavailable;
        }
    };
    match output {
        OutputFormat::Json => outln!(
            "{}",
            serde_json::json!({ "queue_url": l.queue_url, "messages_waiting": visible, "messages_in_flight": in_flight, "actions": actions })
        ),
        OutputFormat::Text => {
            outln!("queue {}: {visible} waiting, {in_flight} being worked (in flight)", l.queue_url);
            outln!(
                "{:<24} {:<10} {:<20} {:<9} {:<16} {:<22} {:>8} {:>8} ERROR",
                "ENDED",
                "KIND",
                "INSTANCE",
                "RESULT",
                "OUTCOME",
                "INTERFACE",
                "TOOK_MS",
                "AWS_MS"
            );
            for a in actions {
                outln!(
                    "{:<24} {:<10} {:<20} {:<9} {:<16} {:<22} {:>8} {:>8} {}",
                    a.ended_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    a.transition,
                    a.instance_id,
                    a.result,
                    a.outcome,
                    a.eni_id.as_deref().unwrap_or("-"),
                    (a.ended_at - a.started_at).num_milliseconds(),
                    a.aws_ms.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
                    a.error.as_deref().unwrap_or("")
                );
            }
        }
    }
    Exit::Ok
}

/// The queue's depth and in-flight count.
async fn queue_depth(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<(i64, i64), crate::aws::CallError> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(|e| call_error("GetQueueAttributes", e))?;
    let get = |k: A| out.attributes().and_then(|a| a.get(&k)).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok((get(A::ApproximateNumberOfMessages), get(A::ApproximateNumberOfMessagesNotVisible)))
}
