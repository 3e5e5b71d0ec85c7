//! Login tokens (`POST /v1/login/get_token`, then an `m.login.token` login): an existing session
//! lets a new device log in as the same user, once, within `login_token.lifetime_ms`. Tokens are
//! stored hashed; a login deletes its token in the statement that reads it, so a token logs in at
//! most one device even when two logins race with it.

use std::time::Duration;

use sqlx::PgPool;

use crate::service::auth::{hash_token, random_string};
use crate::{Error, Result, store};

/// A token just issued.
pub struct LoginToken {
    pub token: String,
    /// How long it is honoured.
    pub lifetime: Duration,
}

/// Issues a token that logs in as `user_id`. The caller has checked that the feature is on and
/// that the request passed user-interactive authentication if the configuration asks for it.
pub async fn issue(db: &PgPool, user_id: &str, lifetime_ms: u64) -> Result<LoginToken> {
    let token = random_string(32);
    let expires_ts = store::now_ms().saturating_add(lifetime_ms as i64);
    store::login_tokens::insert(db, &hash_token(&token), user_id, expires_ts).await?;
    Ok(LoginToken {
        token,
        lifetime: Duration::from_millis(lifetime_ms),
    })
}

/// Uses up a token and says whose it was. Unknown, already used and expired tokens (and tokens of
/// accounts deactivated since) are 403 `M_FORBIDDEN`, as in Synapse.
pub async fn consume(db: &PgPool, token: &str) -> Result<String> {
    store::login_tokens::consume(db, &hash_token(token), store::now_ms())
        .await?
        .ok_or_else(|| Error::forbidden("Invalid login token"))
}

/// Housekeeping: forgets expired tokens.
pub async fn prune(db: &PgPool) -> Result<u64> {
    Ok(store::login_tokens::prune(db, store::now_ms()).await?)
}
