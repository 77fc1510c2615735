//! Lifecycle notification bodies, as Auto Scaling sends them to SQS directly, through SNS (the same
//! JSON as a string in `Message`) or through EventBridge (the same fields under `detail`). Pure.

use serde::Deserialize;

pub const LAUNCHING: &str = "autoscaling:EC2_INSTANCE_LAUNCHING";
pub const TERMINATING: &str = "autoscaling:EC2_INSTANCE_TERMINATING";

/// What a message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// `autoscaling:TEST_NOTIFICATION`, sent when a hook is created: log and delete.
    Test {
        group: String,
    },
    Action(Action),
}

crate::vocabulary! {
    /// Which way the instance is going, as recorded and exported.
    pub enum Transition {
        Launching = "launch",
        Terminating = "terminate",
    }
}

/// One lifecycle action to carry out and complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub transition: Transition,
    pub group: String,
    pub hook: String,
    pub token: String,
    pub instance_id: String,
    /// The hook's NotificationMetadata (a string; JSON by convention), if any.
    pub metadata: Option<String>,
    /// `Origin`/`Destination` (`EC2`, `AutoScalingGroup`, `WarmPool`), when present.
    pub origin: Option<String>,
    pub destination: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the body is JSON but not an Auto Scaling lifecycle notification (direct, SNS or EventBridge): {0}")]
    NotLifecycle(String),
    #[error("unsupported lifecycle transition {0:?}")]
    Transition(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Fields {
    event: Option<String>,
    lifecycle_transition: Option<String>,
    auto_scaling_group_name: Option<String>,
    lifecycle_hook_name: Option<String>,
    lifecycle_action_token: Option<String>,
    #[serde(rename = "EC2InstanceId")]
    ec2_instance_id: Option<String>,
    notification_metadata: Option<serde_json::Value>,
    origin: Option<String>,
    destination: Option<String>,
}

/// Parse a message body of any of the three forms.
pub fn parse(body: &str) -> Result<Notification, ParseError> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| ParseError::NotJson(e.to_string()))?;
    // SNS envelope: {"Type": "Notification", "Message": "<the JSON as a string>", ...}
    if let (Some("Notification"), Some(inner)) = (v.get("Type").and_then(|t| t.as_str()), v.get("Message")) {
        let inner = inner.as_str().ok_or_else(|| ParseError::NotLifecycle("SNS Message is not a string".into()))?;
        return parse(inner);
    }
    // EventBridge: {"source": "aws.autoscaling", "detail-type": "...", "detail": {...}}
    if v.get("source").and_then(|s| s.as_str()) == Some("aws.autoscaling") {
        let detail = v.get("detail").cloned().ok_or_else(|| ParseError::NotLifecycle("no detail".into()))?;
        return from_fields(detail);
    }
    from_fields(v)
}

fn from_fields(v: serde_json::Value) -> Result<Notification, ParseError> {
    let f: Fields = serde_json::from_value(v).map_err(|e| ParseError::NotLifecycle(e.to_string()))?;
    if f.event.as_deref() == Some("autoscaling:TEST_NOTIFICATION") {
        return Ok(Notification::Test { group: f.auto_scaling_group_name.unwrap_or_default() });
    }
    let transition = match f.lifecycle_transition.as_deref() {
        Some(LAUNCHING) => Transition::Launching,
        Some(TERMINATING) => Transition::Terminating,
        Some(other) => return Err(ParseError::Transition(other.to_string())),
        None => return Err(ParseError::NotLifecycle("no LifecycleTransition or Event".into())),
    };
    let need = |name: &str, v: Option<String>| {
        v.filter(|s| !s.is_empty()).ok_or_else(|| ParseError::NotLifecycle(format!("{name} is missing")))
    };
    Ok(Notification::Action(Action {
        transition,
        group: need("AutoScalingGroupName", f.auto_scaling_group_name)?,
        hook: need("LifecycleHookName", f.lifecycle_hook_name)?,
        token: need("LifecycleActionToken", f.lifecycle_action_token)?,
        instance_id: need("EC2InstanceId", f.ec2_instance_id)?,
        // A string by AWS's contract; an object (some hand-made messages) is taken as its JSON text.
        metadata: match f.notification_metadata {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s),
            Some(other) => Some(other.to_string()),
        },
        origin: f.origin,
        destination: f.destination,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIRECT: &str = r#"{"Origin":"EC2","Destination":"AutoScalingGroup","Service":"AWS Auto Scaling",
        "Time":"2026-11-25T10:00:00.000Z","AccountId":"123456789012","LifecycleTransition":"autoscaling:EC2_INSTANCE_LAUNCHING",
        "RequestId":"r-1","LifecycleActionToken":"71514b9d-6a40-4b26-8523-05e7ee35fa40","EC2InstanceId":"i-0123",
        "LifecycleHookName":"eni","AutoScalingGroupName":"web","NotificationMetadata":"{\"SubnetId\":\"subnet-1\"}"}"#;

    fn action() -> Action {
        Action {
            transition: Transition::Launching,
            group: "web".into(),
            hook: "eni".into(),
            token: "71514b9d-6a40-4b26-8523-05e7ee35fa40".into(),
            instance_id: "i-0123".into(),
            metadata: Some("{\"SubnetId\":\"subnet-1\"}".into()),
            origin: Some("EC2".into()),
            destination: Some("AutoScalingGroup".into()),
        }
    }

    #[test]
    fn direct_sns_and_eventbridge_bodies() {
        assert_eq!(parse(DIRECT), Ok(Notification::Action(action())));
        let sns = serde_json::json!({"Type": "Notification", "MessageId": "m", "TopicArn": "arn:aws:sns:x", "Message": DIRECT});
        assert_eq!(parse(&sns.to_string()), Ok(Notification::Action(action())));
        let detail: serde_json::Value = serde_json::from_str(DIRECT).unwrap();
        let eb = serde_json::json!({"version": "0", "source": "aws.autoscaling",
            "detail-type": "EC2 Instance-launch Lifecycle Action", "detail": detail});
        assert_eq!(parse(&eb.to_string()), Ok(Notification::Action(action())));
        let term = DIRECT.replace("LAUNCHING", "TERMINATING");
        let Ok(Notification::Action(a)) = parse(&term) else { panic!() };
        assert_eq!(a.transition, Transition::Terminating);
    }

    #[test]
    fn test_notifications_and_bad_bodies() {
        let t = r#"{"AccountId":"1","RequestId":"r","AutoScalingGroupARN":"arn","AutoScalingGroupName":"web",
            "Service":"AWS Auto Scaling","Event":"autoscaling:TEST_NOTIFICATION","Time":"t"}"#;
        assert_eq!(parse(t), Ok(Notification::Test { group: "web".into() }));
        assert!(matches!(parse("not json"), Err(ParseError::NotJson(_))));
        assert!(matches!(parse("{}"), Err(ParseError::NotLifecycle(_))));
        assert!(
            matches!(parse(&DIRECT.replace("\"i-0123\"", "\"\"")), Err(ParseError::NotLifecycle(m)) if m.contains("EC2InstanceId"))
        );
        assert!(matches!(
            parse(&DIRECT.replace("EC2_INSTANCE_LAUNCHING", "EC2_INSTANCE_REBOOTING")),
            Err(ParseError::Transition(_))
        ));
    }
}
