//! Claims: an item that exactly one replica manages to create. A claim is a conditional put
//! (`attribute_not_exists(pk)`) carrying a token unique to the attempt; when the put is refused,
//! the item that is there says who holds the claim, and the token tells a claim this replica made
//! itself (its first attempt succeeded but the answer was lost, so a retry was refused) from
//! another's. So a timeout, a lost answer or throttling can delay a claim, never give it to two
//! replicas or to none.

use super::table::{get_s, n, s, Item, Table, TableError, Written, EXPIRES, PK, SK};
use crate::backoff::Backoff;
use chrono::Utc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a claim keeps trying while DynamoDB does not answer (timeouts, connection errors):
/// each retry is safe (the token), and a firing claimed this late still runs once.
const UNANSWERED_PATIENCE: Duration = Duration::from_secs(60);

/// The attributes every claim carries.
pub const OWNER: &str = "owner";
pub const TOKEN: &str = "token";
pub const CLAIMED_AT: &str = "claimed_at";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This replica holds it.
    Won,
    /// Another replica (or an earlier attempt of this one, under another token) holds it.
    Lost { owner: String },
}

/// A token no other attempt has: 128 random bits.
fn token() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// Claim `pk`/`sk` for `owner`, with `fields` added to the item and a TTL `expires_in` from now.
pub async fn claim(
    table: &Table,
    pk: &str,
    sk: &str,
    owner: &str,
    mut fields: Item,
    expires_in: Duration,
) -> Result<Claim, TableError> {
    let token = token();
    fields.insert(PK.into(), s(pk));
    fields.insert(SK.into(), s(sk));
    fields.insert(OWNER.into(), s(owner));
    fields.insert(TOKEN.into(), s(&token));
    fields.insert(CLAIMED_AT.into(), s(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)));
    fields.insert(EXPIRES.into(), n(Utc::now().timestamp() + expires_in.as_secs() as i64));
    let deadline = Instant::now() + UNANSWERED_PATIENCE;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        match table.put_if(fields.clone(), "attribute_not_exists(pk)").await {
            Ok(Written::Done) => return Ok(Claim::Won),
            Ok(Written::Refused(Some(there))) if get_s(&there, TOKEN) == Some(token.as_str()) => return Ok(Claim::Won),
            Ok(Written::Refused(Some(there))) => {
                return Ok(Claim::Lost { owner: get_s(&there, OWNER).unwrap_or("?").to_string() })
            }
            // Refused without the item (an emulator that does not return it): read it.
            Ok(Written::Refused(None)) => {
                return match table.get(pk, sk).await? {
                    Some(there) if get_s(&there, TOKEN) == Some(token.as_str()) => Ok(Claim::Won),
                    Some(there) => Ok(Claim::Lost { owner: get_s(&there, OWNER).unwrap_or("?").to_string() }),
                    None => Err(TableError::Aws {
                        table: table.name().to_string(),
                        source: crate::aws::CallError {
                            operation: "PutItem",
                            code: None,
                            message: format!("{pk}/{sk}: the claim was refused but no item is there"),
                        },
                    }),
                };
            }
            Err(TableError::Aws { source, .. }) if source.code.is_none() && Instant::now() < deadline => {
                let wait = backoff.fail();
                tracing::warn!(table = %table.name(), "claiming {pk}/{sk}: {source}; trying again in {wait:?}");
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e),
        }
    }
}
