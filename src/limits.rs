//! Rate limits: a checked config in; per user, requests and records per second with a burst (`[[users]]
//! requests_per_second`, `records_per_second`, `burst_seconds`), per `[[routes]]` entry (each its own, also when
//! several name one file), requests and records (written with `kafka.produce`) per second for all callers
//! (`requests_per_second`, `records_per_second`, `burst_seconds`), and per client address, failed logins
//! (`[server] max_auth_failures_per_minute`) out, as a [`RateLimited`] answer (429 with `Retry-After`).
//!
//! Besides the rates, [`PerClient`] counts what each client holds at once (its open connections, its requests with an
//! `Idempotency-Key` still running) against a cap.
//!
//! The counting is governor's (GCRA); what is kept per address is bounded: failures are counted per IPv4 address and
//! per IPv6 /64 (one host can have a whole /64), and the addresses shut out are forgotten as their time runs out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

use crate::config::Config;

/// Addresses remembered at once (shut out, or failed lately), at most; past it the expired ones are dropped, and
/// new ones are not remembered until there is room.
const MAX_BLOCKED: usize = 100_000;

/// A full table of addresses is swept for expired ones at most this often: kept full (failures from ever more
/// addresses, each in its first minute), sweeping at every failure would scan all of it under its lock each time.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How long after a failed login an address's attempts made at the same moment are counted before their credentials
/// are looked at.
const SUSPECT_FOR: Duration = Duration::from_secs(60);

/// What each client (IPv4 address, IPv6 /64) holds at once of something bounded per client: open connections, or
/// requests with an `Idempotency-Key` still running (they run on after their client leaves).
#[derive(Debug, Default)]
pub struct PerClient {
    /// Held by each client, and by all of them together.
    held: Mutex<(HashMap<AddressKey, usize>, usize)>,
}

/// One place a client holds; given back when dropped.
#[derive(Debug)]
pub struct ClientSlot {
    table: Arc<PerClient>,
    client: AddressKey,
}

impl PerClient {
    /// One more place for `ip`'s client, unless it holds `cap` already, or all clients hold `total` together.
    pub fn take(self: &Arc<Self>, ip: IpAddr, cap: usize, total: Option<usize>) -> Option<ClientSlot> {
        let client = AddressKey::from(ip);
        let mut held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (by_client, all) = &mut *held;
        if total.is_some_and(|total| *all >= total) {
            return None;
        }
        let count = by_client.entry(client).or_default();
        if *count >= cap {
            return None;
        }
        *count += 1;
        *all += 1;
        Some(ClientSlot {
            table: Arc::clone(self),
            client,
        })
    }
}

impl PerClient {
    /// Places held by all clients together.
    pub fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).1
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut held = self
            .table
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (by_client, all) = &mut *held;
        if let Some(count) = by_client.get_mut(&self.client) {
            *count -= 1;
            *all -= 1;
            if *count == 0 {
                by_client.remove(&self.client);
            }
        }
    }
}

/// A request over a limit: what was limited and when to retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}; retry in {} s", .retry_after.as_secs().max(1))]
pub struct RateLimited {
    pub what: String,
    pub retry_after: Duration,
}

/// A login attempt being checked ([`Limits::may_log_in`]); over when dropped.
pub struct Attempt<'a> {
    limits: &'a Limits,
    /// The suspect address it is counted among those being checked.
    checking: Option<AddressKey>,
    /// Counted as a failure before its credentials were checked.
    pub counted: bool,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let Some(key) = self.checking else { return };
        let mut checking = self
            .limits
            .checking
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(now) = checking.get_mut(&key) {
            *now -= 1;
            if *now == 0 {
                checking.remove(&key);
            }
        }
    }
}

/// A request with more records than a user's burst: it could never pass, so it is refused for good (413).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{count} records in one request; {who} may write at most {burst} at once (records_per_second × \
     burst_seconds): split them over several requests"
)]
pub struct OverBurst {
    /// "user 'name'", or "this route".
    pub who: String,
    pub count: usize,
    pub burst: u32,
}

/// Why records were refused: for now, or for good.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordsRefused {
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    #[error(transparent)]
    OverBurst(#[from] OverBurst),
}

/// Every rate limit of one server.
pub struct Limits {
    users: HashMap<String, Rates>,
    /// Each `[[routes]]` entry's own limits, in the config's order ([`crate::lua::Target::route`]): two routes of
    /// one function file are counted apart, and a route that sets none has none.
    routes: Vec<Rates>,
    failures: Option<DefaultKeyedRateLimiter<AddressKey>>,
    /// Addresses that failed too often, until when.
    blocked: Mutex<HashMap<AddressKey, Instant>>,
    /// Addresses that failed a login within the last minute: their attempts checked at the same moment as another
    /// of theirs are counted before their credentials are looked at, so that guesses sent at once cannot slip past
    /// the limit together.
    suspect: Mutex<HashMap<AddressKey, Instant>>,
    /// Login attempts of suspect addresses being checked now, per address (an entry lives while one is).
    checking: Mutex<HashMap<AddressKey, usize>>,
    /// When each of the tables above (`failures`, `blocked`, `suspect`) was last swept full.
    swept: [Sweep; 3],
}

/// When a full table was last swept (see [`SWEEP_EVERY`]).
#[derive(Default)]
struct Sweep(Mutex<Option<Instant>>);

impl Sweep {
    /// Whether the table may be swept now (then the next sweep is a [`SWEEP_EVERY`] away).
    fn due(&self) -> bool {
        let mut last = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < SWEEP_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }
}

const FAILURES: usize = 0;
const BLOCKED: usize = 1;
const SUSPECT: usize = 2;

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("limited_users", &self.users.len())
            .field("auth_failures_limited", &self.failures.is_some())
            .finish()
    }
}

/// A user's or a route's rates: requests and records per second, each with its limiter, and the burst.
struct Rates {
    requests: Option<(u32, DefaultDirectRateLimiter)>,
    records: Option<(u32, DefaultDirectRateLimiter)>,
    burst_seconds: u32,
}

/// An IPv4 address, or the /64 of an IPv6 address: one client, as far as shares per address go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressKey {
    V4([u8; 4]),
    V6([u8; 8]),
}

impl From<IpAddr> for AddressKey {
    fn from(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4.octets()),
                None => {
                    let octets = v6.octets();
                    Self::V6(octets[..8].try_into().expect("8 bytes"))
                }
            },
        }
    }
}

fn per_second(rate: u32, burst_seconds: u32) -> Option<(u32, DefaultDirectRateLimiter)> {
    let per = NonZeroU32::new(rate)?;
    let burst = NonZeroU32::new(rate.saturating_mul(burst_seconds)).unwrap_or(per);
    Some((
        rate,
        DefaultDirectRateLimiter::direct(Quota::per_second(per).allow_burst(burst)),
    ))
}

impl Limits {
    pub fn new(config: &Config) -> Self {
        let users = config
            .users
            .iter()
            .map(|user| {
                let limits = Rates {
                    requests: user.requests_per_second.and_then(|r| per_second(r, user.burst_seconds)),
                    records: user.records_per_second.and_then(|r| per_second(r, user.burst_seconds)),
                    burst_seconds: user.burst_seconds,
                };
                (user.name.clone(), limits)
            })
            .collect();
        let routes = config
            .routes
            .iter()
            .map(|route| Rates {
                requests: route
                    .requests_per_second
                    .and_then(|r| per_second(r, route.burst_seconds)),
                records: route
                    .records_per_second
                    .and_then(|r| per_second(r, route.burst_seconds)),
                burst_seconds: route.burst_seconds,
            })
            .collect();
        let failures = NonZeroU32::new(config.server.max_auth_failures_per_minute)
            .map(|n| DefaultKeyedRateLimiter::keyed(Quota::per_minute(n)));
        Self {
            users,
            routes,
            failures,
            blocked: Mutex::new(HashMap::new()),
            suspect: Mutex::new(HashMap::new()),
            checking: Mutex::new(HashMap::new()),
            swept: Default::default(),
        }
    }

    /// Before checking credentials from `address`: refused while the address is shut out for failing too often. An
    /// address that failed within the last minute has this attempt counted now if another of its attempts is being
    /// checked at the same moment: guesses sent at once cannot all be checked before the first failures are counted.
    /// Attempts one after another are counted only when they fail, so one wrong password does not make the right
    /// logins after it (a whole office behind one NAT) count as failures.
    pub fn may_log_in(&self, address: IpAddr) -> Result<Attempt<'_>, RateLimited> {
        let uncounted = Attempt {
            limits: self,
            checking: None,
            counted: false,
        };
        if self.failures.is_none() {
            return Ok(uncounted); // nothing is counted, so nothing is shut out
        }
        let key = AddressKey::from(address);
        {
            let mut blocked = self.blocked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match blocked.get(&key) {
                Some(until) if *until > Instant::now() => return Err(failed_logins(*until - Instant::now())),
                Some(_) => {
                    blocked.remove(&key);
                }
                None => {}
            }
        }
        let suspect = self
            .suspect
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .is_some_and(|at| at.elapsed() < SUSPECT_FOR);
        if !suspect {
            return Ok(uncounted);
        }
        let alongside = {
            let mut checking = self.checking.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = checking.entry(key).or_insert(0);
            *now += 1;
            *now > 1
        };
        // Made before counting: refused, the attempt is over all the same.
        let attempt = Attempt {
            limits: self,
            checking: Some(key),
            counted: alongside,
        };
        if alongside {
            self.count_failure(key)?;
        }
        Ok(attempt)
    }

    /// After credentials from `address` were wrong (`counted`: already counted by [`Limits::may_log_in`]): refused
    /// (and the address shut out) once it has failed `max_auth_failures_per_minute` times.
    pub fn failed_log_in(&self, address: IpAddr, counted: bool) -> Result<(), RateLimited> {
        let key = AddressKey::from(address);
        {
            let mut suspect = self.suspect.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if suspect.len() >= MAX_BLOCKED && self.swept[SUSPECT].due() {
                suspect.retain(|_, at| at.elapsed() < SUSPECT_FOR);
            }
            if suspect.len() < MAX_BLOCKED {
                suspect.insert(key, Instant::now());
            }
        }
        if counted { Ok(()) } else { self.count_failure(key) }
    }

    /// One failed login of `key` against the limit; past it the address is shut out.
    fn count_failure(&self, key: AddressKey) -> Result<(), RateLimited> {
        let Some(failures) = &self.failures else {
            return Ok(());
        };
        if failures.len() >= MAX_BLOCKED && self.swept[FAILURES].due() {
            failures.retain_recent();
            failures.shrink_to_fit();
        }
        let Err(not_until) = failures.check_key(&key) else {
            return Ok(());
        };
        let wait = wait(&not_until);
        let mut blocked = self.blocked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if blocked.len() >= MAX_BLOCKED && self.swept[BLOCKED].due() {
            let now = Instant::now();
            blocked.retain(|_, until| *until > now);
            failures.retain_recent();
        }
        if blocked.len() < MAX_BLOCKED {
            blocked.insert(key, Instant::now() + wait);
        }
        Err(failed_logins(wait))
    }

    /// One request of `user`.
    pub fn request(&self, user: &str) -> Result<(), RateLimited> {
        let Some((rate, limiter)) = self.users.get(user).and_then(|u| u.requests.as_ref()) else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| RateLimited {
            what: format!("user '{user}' may send {rate} requests per second (requests_per_second)"),
            retry_after: wait(&not_until),
        })
    }

    /// One request to the `[[routes]]` entry at `route` (its place in the config).
    pub fn route_request(&self, route: usize) -> Result<(), RateLimited> {
        let Some((rate, limiter)) = self.routes.get(route).and_then(|r| r.requests.as_ref()) else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| RateLimited {
            what: format!("this route serves {rate} requests per second (requests_per_second)"),
            retry_after: wait(&not_until),
        })
    }

    /// `count` records written by `user`, all or none.
    pub fn records(&self, user: &str, count: usize) -> Result<(), RecordsRefused> {
        let Some(limits) = self.users.get(user) else {
            return Ok(());
        };
        let Some((rate, limiter)) = &limits.records else {
            return Ok(());
        };
        take_records(limiter, count, || RecordsLimit {
            who: format!("user '{user}'"),
            what: format!("user '{user}' may write {rate} records per second (records_per_second)"),
            burst: rate.saturating_mul(limits.burst_seconds),
        })
    }

    /// `count` records written with `kafka.produce` by a request of the `[[routes]]` entry at `route`, all or none.
    pub fn route_records(&self, route: usize, count: usize) -> Result<(), RecordsRefused> {
        let Some(limits) = self.routes.get(route) else {
            return Ok(());
        };
        let Some((rate, limiter)) = &limits.records else {
            return Ok(());
        };
        take_records(limiter, count, || RecordsLimit {
            who: "this route".to_owned(),
            what: format!("this route writes {rate} records per second (records_per_second)"),
            burst: rate.saturating_mul(limits.burst_seconds),
        })
    }
}

/// A records limit as a refusal names it.
struct RecordsLimit {
    who: String,
    what: String,
    burst: u32,
}

/// `count` records from `limiter`, all or none; `limit` names it when it refuses.
fn take_records(
    limiter: &DefaultDirectRateLimiter,
    count: usize,
    limit: impl FnOnce() -> RecordsLimit,
) -> Result<(), RecordsRefused> {
    let n = NonZeroU32::new(u32::try_from(count).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
    match limiter.check_n(n) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(not_until)) => Err(RateLimited {
            what: limit().what,
            retry_after: wait(&not_until),
        }
        .into()),
        Err(_) => {
            let RecordsLimit { who, burst, .. } = limit();
            Err(OverBurst { who, count, burst }.into())
        }
    }
}

/// How long until a refused request would pass.
fn wait(not_until: &governor::NotUntil<<DefaultClock as Clock>::Instant>) -> Duration {
    not_until.wait_time_from(DefaultClock::default().now())
}

fn failed_logins(wait: Duration) -> RateLimited {
    RateLimited {
        what: "too many failed logins from this address (max_auth_failures_per_minute)".to_owned(),
        retry_after: wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_is_swept_at_most_once_a_second() {
        let sweep = Sweep::default();
        assert!(sweep.due(), "the first sweep");
        assert!(!sweep.due() && !sweep.due(), "none again within the second");
        *sweep.0.lock().unwrap() = Some(Instant::now() - SWEEP_EVERY);
        assert!(sweep.due(), "the next, a second later");
    }

    #[test]
    fn ipv6_addresses_share_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(AddressKey::from(a), AddressKey::from(b));
        assert_ne!(AddressKey::from(a), AddressKey::from(c));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(
            AddressKey::from(mapped),
            AddressKey::from("127.0.0.1".parse::<IpAddr>().unwrap())
        );
    }
}
