//! EC2 Instance Connect: a key made for one run, in memory, pushed to each host with
//! `SendSSHPublicKey` just before opsd connects. AWS keeps a pushed key for 60 seconds, and the
//! instance's EC2 Instance Connect agent hands it to sshd (an `AuthorizedKeysCommand`), so no private
//! key is ever at rest and none outlives its run.

use crate::aws::{call_error, CallError};
use russh::keys::ssh_key::Algorithm;
use russh::keys::PrivateKey;
use std::future::Future;
use std::pin::Pin;

/// Pushes a public key to an instance for one OS user (the seam between SSH and AWS).
pub trait KeyPush: Send + Sync + 'static {
    /// Push `public_key` (OpenSSH text) to `instance_id` for `user`; the error says what to fix.
    fn push<'a>(
        &'a self,
        instance_id: &'a str,
        user: &'a str,
        public_key: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
}

/// A fresh ed25519 key pair for one run: the private half stays in this process's memory.
pub fn run_key() -> Result<(PrivateKey, String), String> {
    let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
        .map_err(|e| format!("cannot make a key for EC2 Instance Connect: {e}"))?;
    let public = key.public_key().to_openssh().map_err(|e| format!("cannot encode the run's public key: {e}"))?;
    Ok((key, public))
}

/// The AWS EC2 Instance Connect API.
pub struct Aws(pub aws_sdk_ec2instanceconnect::Client);

impl Aws {
    pub fn new(sdk: &aws_config::SdkConfig) -> Aws {
        Aws(aws_sdk_ec2instanceconnect::Client::new(sdk))
    }
}

impl KeyPush for Aws {
    fn push<'a>(
        &'a self,
        instance_id: &'a str,
        user: &'a str,
        public_key: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            let r = self
                .0
                .send_ssh_public_key()
                .instance_id(instance_id)
                .instance_os_user(user)
                .ssh_public_key(public_key)
                .send()
                .await;
            match r {
                Ok(out) if out.success() => Ok(()),
                Ok(_) => Err(format!(
                    "EC2 Instance Connect did not accept the key for {instance_id} (Success = false); try again, or use auth = \"key\""
                )),
                Err(e) => Err(explain(instance_id, user, &call_error("SendSSHPublicKey", e))),
            }
        })
    }
}

/// What a refused push means, and what to do about it.
pub fn explain(instance_id: &str, user: &str, e: &CallError) -> String {
    let code = e.code.as_deref().unwrap_or_default();
    match code {
        "AccessDeniedException" | "AuthException" => format!(
            "EC2 Instance Connect refused to push a key to {instance_id}: opsd's IAM identity needs ec2-instance-connect:SendSSHPublicKey on this instance (with condition ec2:osuser = {user} if the policy has one) ({})",
            e.message
        ),
        "EC2InstanceStateInvalidException" => format!(
            "instance {instance_id} is not running, so EC2 Instance Connect cannot reach it; start it, or narrow target.states to running ({})",
            e.message
        ),
        "EC2InstanceNotFoundException" => {
            format!("EC2 Instance Connect does not know instance {instance_id}; it may have been terminated ({})", e.message)
        }
        "InvalidArgsException" => format!(
            "EC2 Instance Connect refused the request for {instance_id} as invalid; check the OS user {user:?} (1-32 characters) ({})",
            e.message
        ),
        _ => format!("pushing the run's key to {instance_id} with EC2 Instance Connect failed: {e}"),
    }
}
