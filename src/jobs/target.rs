//! A job's target (EC2 tags, instance states, which address) and its resolution into hosts, through
//! every DescribeInstances page; or hosts read from a hosts file. SDK types stop here; the rest of
//! the wing sees [`Host`].

use super::outcome::Host;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::Filter;
use serde::{de, Deserialize, Deserializer};
use std::collections::BTreeMap;

/// Which instances a job runs on, and which of their addresses it connects to.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct Target {
    pub tags: Tags,
    pub states: Vec<InstanceState>,
    pub address: AddressKind,
}

/// Tag filters: every tag must match; a value may be a list (any of).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Tags(pub BTreeMap<String, Vec<String>>);

impl<'de> Deserialize<'de> for Tags {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum V {
            One(String),
            Many(Vec<String>),
        }
        let raw: BTreeMap<String, V> = BTreeMap::deserialize(d)?;
        if raw.is_empty() {
            return Err(de::Error::custom(
                "at least one tag is required (opsd never targets a whole account); add e.g. tags = { Environment = \"Dev\" }",
            ));
        }
        let mut out = BTreeMap::new();
        for (k, v) in raw {
            let vals = match v {
                V::One(s) => vec![s],
                V::Many(v) if v.is_empty() => {
                    return Err(de::Error::custom(format!("tag {k:?} has an empty list of values; give at least one")))
                }
                V::Many(v) => v,
            };
            out.insert(k, vals);
        }
        Ok(Tags(out))
    }
}

/// EC2 instance states a target may select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    Pending,
    Running,
    ShuttingDown,
    Terminated,
    Stopping,
    Stopped,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::ShuttingDown => "shutting-down",
            InstanceState::Terminated => "terminated",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
        }
    }
}

/// Which address of an instance opsd connects to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddressKind {
    #[default]
    PrivateIp,
    PublicIp,
    PrivateDns,
}

impl AddressKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AddressKind::PrivateIp => "private-ip",
            AddressKind::PublicIp => "public-ip",
            AddressKind::PrivateDns => "private-dns",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("EC2 DescribeInstances was denied ({code}): {message}; check opsd's AWS credentials and that they allow ec2:DescribeInstances")]
    Denied { code: String, message: String },
    #[error("EC2 is unreachable: {0}; check the network, AWS_REGION and AWS_ENDPOINT_URL(_EC2)")]
    Unreachable(String),
    #[error("no usable AWS credentials: {0}; set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run opsd with an instance role")]
    Credentials(String),
    #[error("EC2 DescribeInstances failed ({code}): {message}; check the job's target and opsd's permissions")]
    Api { code: String, message: String },
}

/// The EC2 filters for a target: one `tag:K` filter per tag (values OR'ed, tags AND'ed) and the states.
pub fn filters(target: &Target) -> Vec<Filter> {
    let mut f: Vec<Filter> = target
        .tags
        .0
        .iter()
        .map(|(k, v)| Filter::builder().name(format!("tag:{k}")).set_values(Some(v.clone())).build())
        .collect();
    f.push(
        Filter::builder()
            .name("instance-state-name")
            .set_values(Some(target.states.iter().map(|s| s.as_str().to_string()).collect()))
            .build(),
    );
    f
}

/// Every instance matching `target`, sorted by instance id, each once.
/// `page_size` is DescribeInstances' MaxResults (5..=1000; the config's `aws.page_size`).
pub async fn resolve(client: &aws_sdk_ec2::Client, target: &Target, page_size: u16) -> Result<Vec<Host>, ResolveError> {
    let mut pages = client
        .describe_instances()
        .set_filters(Some(filters(target)))
        .max_results(i32::from(page_size))
        .into_paginator()
        .send();
    let mut hosts = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(classify)?;
        for inst in page.reservations().iter().flat_map(|r| r.instances()) {
            let address = match target.address {
                AddressKind::PrivateIp => inst.private_ip_address(),
                AddressKind::PublicIp => inst.public_ip_address(),
                AddressKind::PrivateDns => inst.private_dns_name(),
            }
            .filter(|a| !a.is_empty())
            .map(str::to_string);
            let name = inst.tags().iter().find(|t| t.key() == Some("Name")).and_then(|t| t.value()).map(str::to_string);
            hosts.push(Host { instance_id: inst.instance_id().map(str::to_string), address, name });
        }
    }
    hosts.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    hosts.dedup_by(|a, b| a.instance_id.is_some() && a.instance_id == b.instance_id);
    Ok(hosts)
}

fn classify<E, R>(e: aws_sdk_ec2::error::SdkError<E, R>) -> ResolveError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_ec2::error::SdkError;
    match &e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            let code = err.code().unwrap_or("Unknown").to_string();
            let message = err.message().unwrap_or_default().to_string();
            if matches!(
                code.as_str(),
                "AuthFailure"
                    | "UnauthorizedOperation"
                    | "AccessDenied"
                    | "AccessDeniedException"
                    | "InvalidClientTokenId"
                    | "SignatureDoesNotMatch"
                    | "ExpiredToken"
                    | "RequestExpired"
            ) {
                ResolveError::Denied { code, message }
            } else {
                ResolveError::Api { code, message }
            }
        }
        _ => {
            let why = crate::aws::describe(&e);
            if why.to_ascii_lowercase().contains("credential") {
                ResolveError::Credentials(why)
            } else {
                ResolveError::Unreachable(why)
            }
        }
    }
}

/// Hosts from a hosts file: one per line, `ADDRESS` or `INSTANCE_ID ADDRESS`; blank lines and
/// `#` comments are skipped. A malformed line is a `file:line` diagnostic.
pub fn hosts_file(path: &std::path::Path) -> Result<Vec<Host>, crate::diag::Diagnostic> {
    use crate::diag::Diagnostic;
    let text = std::fs::read_to_string(path)
        .map_err(|e| Diagnostic::file(path, format!("cannot read the hosts file: {e}; check --hosts-file")))?;
    let mut hosts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (instance_id, address) = match fields[..] {
            [a] => (None, a),
            [id, a] => (Some(id.to_string()), a),
            _ => {
                return Err(Diagnostic {
                    file: path.to_path_buf(),
                    line: i + 1,
                    col: 1,
                    field: "-".into(),
                    message: format!("{line:?}: write ADDRESS or INSTANCE_ID ADDRESS, one host per line"),
                })
            }
        };
        hosts.push(Host { instance_id, address: Some(address.to_string()), name: None });
    }
    Ok(hosts)
}
