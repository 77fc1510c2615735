//! Host keys from an instance's console output. At first boot cloud-init prints the host's public
//! keys between `-----BEGIN SSH HOST KEY KEYS-----` and `-----END SSH HOST KEY KEYS-----`, and
//! GetConsoleOutput returns that output (base64, decoded here) to the account alone: a source for a
//! new instance's key that no one on the network can forge.

use crate::aws::call_error;
use russh::keys::ssh_key::PublicKey;
use std::future::Future;
use std::pin::Pin;

const BEGIN: &str = "-----BEGIN SSH HOST KEY KEYS-----";
const END: &str = "-----END SSH HOST KEY KEYS-----";

/// What to do when an instance's console has no host-key block, said wherever opsd refuses for it.
pub const NO_BLOCK_HELP: &str = "cloud-init prints the block at first boot only (Amazon Linux, Ubuntu and most cloud-init AMIs, unless ssh_key_console_blacklist or no_ssh_fingerprints hides it), some minutes after boot, and the console keeps only recent output, so an instance rebooted or stopped since may no longer show it; for such instances and other AMIs use host_keys = \"known-hosts\" (or \"tofu\"), or pin keys at launch with [lifecycle] pin_host_keys";

/// The keys of a console's block, `None` without one, or why the console could not be read.
pub type Lookup<'a> = Pin<Box<dyn Future<Output = Result<Option<Vec<String>>, String>> + Send + 'a>>;

/// Reads an instance's host keys from its console output (the seam between SSH and EC2).
pub trait ConsoleKeys: Send + Sync + 'static {
    /// The keys of the console's host-key block (OpenSSH `type base64`); `None` when the console
    /// has no block (yet).
    fn host_keys<'a>(&'a self, instance_id: &'a str) -> Lookup<'a>;
}

/// The host keys in a console text: every valid OpenSSH public key line of the first complete,
/// non-empty block, as `type base64`; `None` without one. The first: cloud-init prints it at boot,
/// and anything that writes to the console later must not be able to replace it.
pub fn parse_host_keys(text: &str) -> Option<Vec<String>> {
    let mut block: Option<Vec<String>> = None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        // Some cloud-init versions prefix console lines with "ec2: ".
        let line = line.strip_prefix("ec2: ").unwrap_or(line).trim();
        if line == BEGIN {
            block = Some(Vec::new());
        } else if line == END {
            match block.take() {
                Some(keys) if !keys.is_empty() => return Some(keys),
                _ => {}
            }
        } else if let Some(keys) = block.as_mut() {
            if let Ok(k) = PublicKey::from_openssh(line) {
                if let Ok(text) = k.to_openssh() {
                    // Without the comment (root@host): the key alone is compared.
                    keys.push(text.split_whitespace().take(2).collect::<Vec<_>>().join(" "));
                }
            }
        }
    }
    None
}

/// GetConsoleOutput through the EC2 API.
pub struct Aws(pub aws_sdk_ec2::Client);

impl ConsoleKeys for Aws {
    fn host_keys<'a>(&'a self, instance_id: &'a str) -> Lookup<'a> {
        Box::pin(async move {
            let out = self.0.get_console_output().instance_id(instance_id).send().await.map_err(|e| {
                let e = call_error("GetConsoleOutput", e);
                match e.code.as_deref() {
                    Some("UnauthorizedOperation") => format!(
                        "cannot read the console output of {instance_id}: opsd's IAM identity needs ec2:GetConsoleOutput ({})",
                        e.message
                    ),
                    _ if !e.is_final() => format!(
                        "cannot read the console output of {instance_id} now: {e}; the next run reads it again (lower max_concurrency if GetConsoleOutput is throttled)"
                    ),
                    _ => format!("cannot read the console output of {instance_id}: {e}"),
                }
            })?;
            let Some(b64) = out.output() else { return Ok(None) };
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| format!("the console output of {instance_id} is not base64: {e}"))?;
            Ok(parse_host_keys(&String::from_utf8_lossy(&bytes)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPEaveb+CD4jzGCSPIyQ/4GQeKh9od/mKbG12t6VV7O3";

    #[test]
    fn the_block_is_parsed_as_cloud_init_prints_it() {
        let text = format!(
            "boot\r\nec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\nec2: 256 SHA256:x root@ip (ED25519)\nec2: -----END SSH HOST KEY FINGERPRINTS-----\n{BEGIN}\r\n{ED} root@ip-10-0-0-1\r\nnot a key\n{END}\nlogin:"
        );
        assert_eq!(parse_host_keys(&text), Some(vec![ED.to_string()]));
    }

    #[test]
    fn no_block_an_unfinished_one_or_an_empty_one_is_none() {
        assert_eq!(parse_host_keys("boot\nlogin:"), None);
        assert_eq!(parse_host_keys(&format!("{BEGIN}\n{ED}\n")), None);
        assert_eq!(parse_host_keys(&format!("{BEGIN}\ngarbage\n{END}\n")), None);
    }

    #[test]
    fn the_first_complete_block_wins() {
        // A later block (anything writing to the console after boot) does not replace cloud-init's.
        let other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVdoRdpfP76YFXT2GX60VbRHoAVmGaarAXQU7zk2BZY";
        let text = format!("{BEGIN}\n{ED} a\n{END}\nlater\n{BEGIN}\n{other} b\n{END}\n");
        assert_eq!(parse_host_keys(&text), Some(vec![ED.to_string()]));
        // An empty block first, then a real one: the real one.
        let text = format!("{BEGIN}\n{END}\n{BEGIN}\n{other} b\n{END}\n");
        assert_eq!(parse_host_keys(&text), Some(vec![other.to_string()]));
    }
}
