//! Token buckets: per client address (login, registration), per account (failed password logins) and
//! per user (sending events, creating rooms, joining, inviting, uploading media, reporting).
//!
//! Every bucket lives in memory in this process (several processes each keep their own). A key whose
//! bucket has refilled is the same as an absent one, so idle keys are swept out periodically, and each
//! table has a hard cap on its number of keys.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::{Config, Limit};
use crate::service::auth::Requester;
use crate::{Error, Result};

/// How often full (idle) buckets are dropped.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Most keys one table holds; beyond it the least recently used buckets are dropped.
const MAX_KEYS: usize = 100_000;

/// The per-user limits. Admins are exempt from all of them (Axon has no application services yet,
/// so there is no appservice exemption to make).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserAction {
    /// Sending an event: PUT send, PUT state, redactions (Synapse's `rc_message`).
    Message,
    /// createRoom (Synapse's `rc_room_creation`; it also counts against `rc_message`).
    RoomCreation,
    /// Joining a room the user is not in (Synapse's `rc_joins.local`).
    Join,
    /// Media uploads and `/create` (Synapse's `rc_media_create`).
    MediaCreate,
    /// Asking for a login token that logs in another device (Synapse: one a minute, fixed).
    LoginToken,
    /// Reporting content: events, rooms and users (Synapse's `rc_reports`, which Synapse applies to
    /// user reports only).
    Report,
}

/// One table of token buckets, all with the same rate and burst.
pub struct Buckets<K> {
    per_second: f64,
    burst: f64,
    max_keys: usize,
    inner: Mutex<Inner<K>>,
}

struct Inner<K> {
    /// key → (tokens left, when last refilled)
    map: HashMap<K, (f64, Instant)>,
    next_sweep: Instant,
}

impl<K: Hash + Eq> Buckets<K> {
    pub fn new(limit: Limit) -> Self {
        Self::with_cap(limit, MAX_KEYS)
    }

    fn with_cap(limit: Limit, max_keys: usize) -> Self {
        Self {
            per_second: limit.per_second,
            burst: f64::from(limit.burst),
            max_keys,
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                next_sweep: Instant::now() + SWEEP_INTERVAL,
            }),
        }
    }

    /// Takes one token from `key`'s bucket (`update`), or only looks whether one is there. On refusal,
    /// the milliseconds until a token will be there.
    pub fn take<Q>(
        &self,
        key: &Q,
        own: impl FnOnce() -> K,
        update: bool,
        now: Instant,
    ) -> std::result::Result<(), u64>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.charge(key, own, if update { 1.0 } else { 0.0 }, now)
    }

    /// Serves a request while `key`'s bucket has a token, and then charges it `cost` tokens (the
    /// bucket may go into debt: the next requests wait until it is paid off).
    pub fn charge<Q>(
        &self,
        key: &Q,
        own: impl FnOnce() -> K,
        cost: f64,
        now: Instant,
    ) -> std::result::Result<(), u64>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut inner = self.inner.lock().unwrap();
        if now >= inner.next_sweep || inner.map.len() >= self.max_keys {
            self.sweep(&mut inner, now);
        }
        let tokens = match inner.map.get(key) {
            Some(&(tokens, at)) => self.refilled(tokens, at, now),
            None => self.burst,
        };
        if tokens >= 1.0 {
            if cost > 0.0 {
                match inner.map.get_mut(key) {
                    Some(bucket) => *bucket = (tokens - cost, now),
                    None => {
                        inner.map.insert(own(), (tokens - cost, now));
                    }
                }
            }
            Ok(())
        } else {
            Err(((1.0 - tokens) / self.per_second * 1000.0).ceil() as u64)
        }
    }

    fn refilled(&self, tokens: f64, at: Instant, now: Instant) -> f64 {
        (tokens + now.saturating_duration_since(at).as_secs_f64() * self.per_second).min(self.burst)
    }

    /// Drops the buckets that have refilled; if the table is still at its cap, drops the least recently
    /// used tenth as well (those keys start again with a full bucket).
    fn sweep(&self, inner: &mut Inner<K>, now: Instant) {
        inner.next_sweep = now + SWEEP_INTERVAL;
        inner
            .map
            .retain(|_, &mut (tokens, at)| self.refilled(tokens, at, now) < self.burst);
        if inner.map.len() >= self.max_keys {
            let keep = (self.max_keys * 9 / 10).max(1);
            let mut ages: Vec<Instant> = inner.map.values().map(|&(_, at)| at).collect();
            let drop = ages.len() - keep;
            let (_, &mut oldest_kept, _) = ages.select_nth_unstable(drop);
            inner.map.retain(|_, &mut (_, at)| at >= oldest_kept);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap().map.len()
    }
}

pub struct RateLimiter {
    /// `rate_limits.enabled`: off turns every limit off.
    enabled: bool,
    /// Whether the per-user limits apply (see `Config::per_user_rate_limits`).
    per_user: bool,
    /// (action, client address): login, registration, refresh, username availability.
    address: Buckets<(&'static str, IpAddr)>,
    /// Lower-cased user ID: failed password logins.
    failed_login: Buckets<String>,
    message: Buckets<String>,
    room_creation: Buckets<String>,
    join: Buckets<String>,
    /// Room ID: invites sent into one room.
    invite_per_room: Buckets<String>,
    /// Invitee's user ID: invites one user receives.
    invite_per_user: Buckets<String>,
    media_create: Buckets<String>,
    report: Buckets<String>,
    login_token: Buckets<String>,
    key_lookups: Buckets<String>,
    /// `ip:…` and `email:…`: validation mails per client address and per email address.
    threepid_validation: Buckets<String>,
}

fn refusal(wait_ms: u64) -> Error {
    Error::limit_exceeded(wait_ms)
}

impl RateLimiter {
    pub fn new(config: &Config) -> Self {
        let limits = &config.rate_limits;
        Self {
            enabled: limits.enabled,
            per_user: limits.enabled && config.per_user_rate_limits(),
            address: Buckets::new(Limit {
                per_second: limits.per_second,
                burst: limits.burst,
            }),
            failed_login: Buckets::new(limits.failed_login),
            message: Buckets::new(limits.message),
            room_creation: Buckets::new(limits.room_creation),
            join: Buckets::new(limits.join),
            invite_per_room: Buckets::new(limits.invite_per_room),
            invite_per_user: Buckets::new(limits.invite_per_user),
            media_create: Buckets::new(limits.media_create),
            report: Buckets::new(limits.report),
            login_token: Buckets::new(limits.login_token),
            key_lookups: Buckets::new(limits.key_lookups),
            threepid_validation: Buckets::new(limits.threepid_validation),
        }
    }

    /// Takes one token from the bucket of (`action`, `ip`), or says how long to wait.
    pub fn check(&self, action: &'static str, ip: Option<IpAddr>) -> Result<()> {
        let (true, Some(ip)) = (self.enabled, ip) else {
            return Ok(());
        };
        let key = (action, ip);
        self.address
            .take(&key, || key, true, Instant::now())
            .map_err(refusal)
    }

    /// Before a password is checked: refuses while `user_id` has used up its failed attempts, even if
    /// this password is right (as Synapse does). Counts nothing.
    pub fn check_failed_logins(&self, user_id: &str) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let key = user_id.to_lowercase();
        self.failed_login
            .take(key.as_str(), String::new, false, Instant::now())
            .map_err(refusal)
    }

    /// After a wrong password for `user_id` (whether or not the account exists).
    pub fn note_failed_login(&self, user_id: &str) {
        if self.enabled {
            let key = user_id.to_lowercase();
            let _ = self
                .failed_login
                .take(key.as_str(), || key.clone(), true, Instant::now());
        }
    }

    /// One `action` by `requester`; admins are exempt.
    pub fn user(&self, action: UserAction, requester: &Requester) -> Result<()> {
        if !self.per_user || requester.is_admin {
            return Ok(());
        }
        let buckets = match action {
            UserAction::Message => &self.message,
            UserAction::RoomCreation => &self.room_creation,
            UserAction::Join => &self.join,
            UserAction::MediaCreate => &self.media_create,
            UserAction::Report => &self.report,
            UserAction::LoginToken => &self.login_token,
        };
        let user = requester.user_id.as_str();
        buckets
            .take(user, || user.to_owned(), true, Instant::now())
            .map_err(refusal)
    }

    /// A validation mail to `address` asked for from `ip`: limited per client address and per email
    /// address (Synapse's `rc_3pid_validation`); nothing is taken when either refuses.
    pub fn validation_mail(&self, ip: Option<IpAddr>, address: &str) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let now = Instant::now();
        let mut keys = vec![format!("email:{address}")];
        if let Some(ip) = ip {
            keys.push(format!("ip:{ip}"));
        }
        for key in &keys {
            self.threepid_validation
                .take(key.as_str(), String::new, false, now)
                .map_err(refusal)?;
        }
        for key in keys {
            let _ = self
                .threepid_validation
                .take(key.as_str(), || key.clone(), true, now);
        }
        Ok(())
    }

    /// A key query or claim naming `cost` users or devices; admins are exempt.
    pub fn key_lookups(&self, requester: &Requester, cost: usize) -> Result<()> {
        if !self.per_user || requester.is_admin {
            return Ok(());
        }
        let user = requester.user_id.as_str();
        self.key_lookups
            .charge(user, || user.to_owned(), cost as f64, Instant::now())
            .map_err(refusal)
    }

    /// Room creation counts against both the message and the room-creation limits (as in Synapse);
    /// nothing is taken when either refuses.
    pub fn create_room(&self, requester: &Requester) -> Result<()> {
        if !self.per_user || requester.is_admin {
            return Ok(());
        }
        let user = requester.user_id.as_str();
        let now = Instant::now();
        self.room_creation
            .take(user, String::new, false, now)
            .map_err(refusal)?;
        self.user(UserAction::Message, requester)?;
        self.user(UserAction::RoomCreation, requester)
    }

    /// An invite by `requester` of `invitee` into `room_id`: limited per room and per invitee.
    pub fn invite(&self, requester: &Requester, room_id: &str, invitee: &str) -> Result<()> {
        if !self.per_user || requester.is_admin {
            return Ok(());
        }
        let now = Instant::now();
        self.invite_per_room
            .take(room_id, || room_id.to_owned(), true, now)
            .map_err(refusal)?;
        self.invite_per_user
            .take(invitee, || invitee.to_owned(), true, now)
            .map_err(refusal)
    }

    /// An invite of local user `invitee` from another server: limited per invitee (the sending
    /// server limits its rooms' invites).
    pub fn remote_invite(&self, invitee: &str) -> Result<()> {
        if !self.per_user {
            return Ok(());
        }
        self.invite_per_user
            .take(invitee, || invitee.to_owned(), true, Instant::now())
            .map_err(refusal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: f64, burst: u32) -> Limit {
        Limit { per_second, burst }
    }

    fn take(b: &Buckets<String>, key: &str, now: Instant) -> std::result::Result<(), u64> {
        b.take(key, || key.to_owned(), true, now)
    }

    #[test]
    fn a_bucket_allows_its_burst_then_the_rate() {
        let b = Buckets::new(limit(0.5, 3));
        let t = Instant::now();
        for _ in 0..3 {
            take(&b, "k", t).unwrap();
        }
        assert_eq!(take(&b, "k", t), Err(2000));
        // Looking does not take.
        let later = t + Duration::from_secs(2);
        b.take("k", String::new, false, later).unwrap();
        b.take("k", String::new, false, later).unwrap();
        take(&b, "k", later).unwrap();
        assert!(take(&b, "k", later).is_err());
        // Other keys have their own buckets.
        take(&b, "other", later).unwrap();
    }

    #[test]
    fn idle_keys_are_swept() {
        let b = Buckets::new(limit(1.0, 2));
        let t = Instant::now();
        for i in 0..1000 {
            take(&b, &i.to_string(), t).unwrap();
        }
        // Still refilling after a second: a sweep keeps them.
        take(&b, "busy", t + Duration::from_millis(500)).unwrap();
        assert_eq!(b.len(), 1001);
        // Once the sweep interval has passed, every bucket that refilled goes.
        let later = t + SWEEP_INTERVAL + Duration::from_secs(1);
        take(&b, "busy", later).unwrap();
        assert_eq!(b.len(), 1, "only the key just used is left");
    }

    #[test]
    fn the_table_has_a_hard_cap() {
        let b = Buckets::with_cap(limit(0.001, 1), 100);
        let t = Instant::now();
        for i in 0..1000u64 {
            // Every bucket is empty (rate limited), so none is idle; the oldest are dropped.
            take(&b, &i.to_string(), t + Duration::from_millis(i)).unwrap();
            assert!(b.len() <= 100, "{}", b.len());
        }
        // The most recent keys are still limited.
        assert!(take(&b, "999", t + Duration::from_millis(1000)).is_err());
    }
}
