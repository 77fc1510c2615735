//! Claims: an item that exactly one replica manages to create. A claim is a conditional put
//! (`attribute_not_exists(pk)`) carrying a token unique to the attempt; when the put is refused,
//! the item that is there says who holds the claim, and the token tells a claim this replica made
//! itself (its first attempt succeeded but the answer was lost, so a retry was refused) from
//! another's. So a timeout, a lost answer or throttling can delay a claim, never give it to two
//! replicas or to none. A claim also carries `active = <owner>` until its work ends: a token match
//! counts as won only while the claim is still active (a sweep may have ended it meanwhile).

use super::table::{get_s, n, s, Item, Table, TableError, Written, ACTIVE, EXPIRES, PK, SK};
use chrono::Utc;
use std::time::Duration;

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

/// Whether the claim there is this attempt's, still active.
fn mine(there: &Item, token: &str) -> bool {
    get_s(there, TOKEN) == Some(token) && there.contains_key(ACTIVE)
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
    fields.insert(ACTIVE.into(), s(owner));
    fields.insert(TOKEN.into(), s(&token));
    fields.insert(CLAIMED_AT.into(), s(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)));
    fields.insert(EXPIRES.into(), n(Utc::now().timestamp() + expires_in.as_secs() as i64));

    // `put_if` retries while DynamoDB throttles or does not answer; a retry of a put that landed is
    // refused, and the token then tells it was this attempt's.
    let start = std::time::Instant::now();
    let put = table.put_if(fields, "attribute_not_exists(pk)").await;
    table.claimed(start.elapsed());
    match put? {
        Written::Done => Ok(Claim::Won),
        Written::Refused(Some(there)) if mine(&there, &token) => Ok(Claim::Won),
        Written::Refused(Some(there)) => Ok(Claim::Lost { owner: get_s(&there, OWNER).unwrap_or("?").to_string() }),
        // Refused without the item (an emulator that does not return it): read it.
        Written::Refused(None) => match table.get(pk, sk).await? {
            Some(there) if mine(&there, &token) => Ok(Claim::Won),
            Some(there) => Ok(Claim::Lost { owner: get_s(&there, OWNER).unwrap_or("?").to_string() }),
            None => Err(TableError::Aws {
                table: table.name().to_string(),
                source: crate::aws::CallError {
                    operation: "PutItem",
                    code: None,
                    message: format!("{pk}/{sk}: the claim was refused but no item is there"),
                },
            }),
        },
    }
}
