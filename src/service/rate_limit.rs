//! Per-client-address token buckets for login and registration.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::RateLimits;
use crate::{Error, Result};

/// (action, client address) → (tokens left, when last refilled).
type Buckets = HashMap<(&'static str, IpAddr), (f64, Instant)>;

pub struct RateLimiter {
    enabled: bool,
    per_second: f64,
    burst: f64,
    buckets: Mutex<Buckets>,
}

impl RateLimiter {
    pub fn new(config: &RateLimits) -> Self {
        Self {
            enabled: config.enabled,
            per_second: config.per_second,
            burst: f64::from(config.burst),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from the bucket of (`action`, `ip`), or says how long to wait.
    pub fn check(&self, action: &'static str, ip: Option<IpAddr>) -> Result<()> {
        let (true, Some(ip)) = (self.enabled, ip) else {
            return Ok(());
        };
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap();
        if buckets.len() > 100_000 {
            // Full buckets are the same as absent ones: drop them rather than grow without bound.
            let burst = self.burst;
            let rate = self.per_second;
            buckets.retain(|_, (tokens, at)| *tokens + at.elapsed().as_secs_f64() * rate < burst);
        }
        let (tokens, at) = buckets.entry((action, ip)).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - *tokens) / self.per_second;
            Err(Error::limit_exceeded((wait * 1000.0).ceil() as u64))
        }
    }
}
