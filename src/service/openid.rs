//! OpenID tokens: a user asks for one (`POST /user/{userId}/openid/request_token`) and hands it to
//! a third party (a widget, an integration manager, a call server), which exchanges it at
//! `GET /_matrix/federation/v1/openid/userinfo` for the user's ID. Tokens are stored hashed with
//! their expiry; they may be exchanged any number of times until then, as in Synapse.

use std::time::Duration;

use ruma::{OwnedUserId, UserId};
use sqlx::PgPool;

use crate::service::auth::{hash_token, random_string};
use crate::{Error, Result, store};

/// A token just issued.
pub struct OpenIdToken {
    pub token: String,
    /// How long it is honoured.
    pub lifetime: Duration,
}

/// Issues a token for `user_id`, which must be the requester: nobody gets a token for another user.
pub async fn request_token(
    db: &PgPool,
    requester: &UserId,
    user_id: &UserId,
    lifetime_ms: u64,
) -> Result<OpenIdToken> {
    if requester != user_id {
        return Err(Error::forbidden("Cannot request tokens for other users"));
    }
    let token = random_string(32);
    let expires_ts = store::now_ms().saturating_add(lifetime_ms as i64);
    store::openid_tokens::insert(db, &hash_token(&token), user_id.as_str(), expires_ts).await?;
    Ok(OpenIdToken {
        token,
        lifetime: Duration::from_millis(lifetime_ms),
    })
}

/// The owner of a token that is known and has not expired (their account still active); otherwise
/// 401 `M_UNKNOWN_TOKEN`.
pub async fn userinfo(db: &PgPool, token: &str) -> Result<OwnedUserId> {
    let owner = store::openid_tokens::owner(db, &hash_token(token), store::now_ms())
        .await?
        .ok_or_else(|| Error::unknown_token("Access token unknown or expired"))?;
    OwnedUserId::try_from(owner).map_err(Error::internal)
}

/// Housekeeping: forgets expired tokens.
pub async fn prune(db: &PgPool) -> Result<u64> {
    Ok(store::openid_tokens::prune(db, store::now_ms()).await?)
}
