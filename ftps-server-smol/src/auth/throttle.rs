//! Per-IP failed-login lockout.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// What [`LoginThrottle::begin`] allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckSlot {
    /// Check the password now.
    Go,
    /// Checks already running fill the address's budget: ask again when they may have ended.
    Wait,
    /// The address is locked out: refuse without checking.
    Locked,
}

/// Counts failed logins per client IP: `max_failures` within `window` lock the IP out for
/// `lockout`. Memory is bounded: at most `capacity` addresses are tracked; when full, expired
/// entries go first, then the entry idle the longest. Time enters only as `now` arguments.
#[derive(Debug)]
pub struct LoginThrottle {
    max_failures: u32,
    window: Duration,
    lockout: Duration,
    capacity: usize,
    entries: Mutex<HashMap<IpAddr, Entry>>,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Start of the current counting window.
    window_start: Instant,
    failures: u32,
    /// Password checks running now ([`LoginThrottle::begin`] without its [`LoginThrottle::finish`]): each may
    /// still become a failure, so they count against the limit too.
    in_flight: u32,
    /// Set while locked out.
    locked_until: Option<Instant>,
    last_seen: Instant,
}

impl LoginThrottle {
    /// A tracker; `max_failures` and `capacity` of 0 are treated as 1.
    #[must_use]
    pub fn new(max_failures: u32, window: Duration, lockout: Duration, capacity: usize) -> Self {
        Self {
            max_failures: max_failures.max(1),
            window,
            lockout,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `ip` is locked out at `now` (the server refuses its logins without checking them).
    #[must_use]
    pub fn is_locked(&self, ip: IpAddr, now: Instant) -> bool {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(&ip)
            .and_then(|e| e.locked_until)
            .is_some_and(|until| now < until)
    }

    /// Records a failed login; returns whether `ip` is now locked out.
    pub fn record_failure(&self, ip: IpAddr, now: Instant) -> bool {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if !entries.contains_key(&ip) && entries.len() >= self.capacity {
            self.evict(&mut entries, now);
        }
        let entry = Self::current(&mut entries, ip, now, self.window);
        entry.failures = entry.failures.saturating_add(1);
        if entry.failures >= self.max_failures && entry.locked_until.is_none() {
            entry.locked_until = Some(now + self.lockout);
        }
        entry.locked_until.is_some_and(|until| now < until)
    }

    /// Reserves one password check for `ip` before it runs. [`CheckSlot::Locked`]: `ip` is locked out, refuse
    /// without checking. [`CheckSlot::Wait`]: its failures plus the checks already running reach `max_failures`,
    /// so this one must wait for those to end (their successes free their places; their failures may lock
    /// `ip` out) and ask again. [`CheckSlot::Go`] must be followed by one [`LoginThrottle::finish`].
    ///
    /// Counting checks when they start, not when their failure is reported, keeps parallel sessions from one
    /// address to `max_failures` checks per window: with 16 sessions guessing at once, about 7.6 passwords per
    /// address were checked against a limit of 5 while the failures were still on their way. Waiting rather
    /// than refusing keeps parallel *correct* logins from one address (a client's `--parallel`, a load test)
    /// from being refused for the others' checks in flight.
    pub fn begin(&self, ip: IpAddr, now: Instant) -> CheckSlot {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if !entries.contains_key(&ip) && entries.len() >= self.capacity {
            self.evict(&mut entries, now);
        }
        let entry = Self::current(&mut entries, ip, now, self.window);
        if entry.locked_until.is_some() {
            return CheckSlot::Locked;
        }
        if entry.failures.saturating_add(entry.in_flight) >= self.max_failures {
            return CheckSlot::Wait;
        }
        entry.in_flight += 1;
        CheckSlot::Go
    }

    /// Ends a check [`LoginThrottle::begin`] reserved: a failure is counted (and may lock `ip` out: the return
    /// value says whether it is locked now), a success forgets the failures like
    /// [`LoginThrottle::record_success`].
    pub fn finish(&self, ip: IpAddr, accepted: bool, now: Instant) -> bool {
        {
            let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = entries.get_mut(&ip) {
                entry.in_flight = entry.in_flight.saturating_sub(1);
            }
        }
        if accepted {
            self.record_success(ip, now);
            false
        } else {
            self.record_failure(ip, now)
        }
    }

    /// The entry of `ip`, its window restarted when it (or its lockout) has expired.
    fn current(
        entries: &mut HashMap<IpAddr, Entry>,
        ip: IpAddr,
        now: Instant,
        window: Duration,
    ) -> &mut Entry {
        let entry = entries.entry(ip).or_insert(Entry {
            window_start: now,
            failures: 0,
            in_flight: 0,
            locked_until: None,
            last_seen: now,
        });
        if entry.locked_until.is_some_and(|until| now >= until)
            || (entry.locked_until.is_none()
                && now.saturating_duration_since(entry.window_start) > window)
        {
            entry.window_start = now;
            entry.failures = 0;
            entry.locked_until = None;
        }
        entry.last_seen = now;
        entry
    }

    /// Records a successful login: forgets the IP's failures (a lockout in force stays).
    pub fn record_success(&self, ip: IpAddr, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = entries.get_mut(&ip) {
            if entry.locked_until.is_none_or(|until| now >= until) {
                if entry.in_flight == 0 {
                    entries.remove(&ip);
                } else {
                    entry.failures = 0;
                    entry.locked_until = None;
                }
            }
        }
    }

    /// How many addresses are tracked.
    #[must_use]
    pub fn tracked(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn evict(&self, entries: &mut HashMap<IpAddr, Entry>, now: Instant) {
        let (window, lockout) = (self.window, self.lockout);
        entries.retain(|_, e| match e.locked_until {
            Some(until) => now < until,
            None => now.saturating_duration_since(e.window_start) <= window.max(lockout),
        });
        if entries.len() >= self.capacity {
            if let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(ip, _)| *ip)
            {
                entries.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[test]
    fn locks_after_max_failures_and_unlocks_after_period() {
        let t = LoginThrottle::new(3, Duration::from_secs(60), Duration::from_secs(300), 100);
        let t0 = Instant::now();
        assert!(!t.record_failure(ip(1), t0));
        assert!(!t.record_failure(ip(1), t0 + Duration::from_secs(1)));
        assert!(!t.is_locked(ip(1), t0 + Duration::from_secs(2)));
        assert!(t.record_failure(ip(1), t0 + Duration::from_secs(2)));
        assert!(t.is_locked(ip(1), t0 + Duration::from_secs(3)));
        assert!(!t.is_locked(ip(2), t0 + Duration::from_secs(3)));
        // A success during the lockout does not lift it.
        t.record_success(ip(1), t0 + Duration::from_secs(4));
        assert!(t.is_locked(ip(1), t0 + Duration::from_secs(301)));
        assert!(!t.is_locked(ip(1), t0 + Duration::from_secs(302)));
        // After the lockout the count starts again.
        assert!(!t.record_failure(ip(1), t0 + Duration::from_secs(303)));
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let t = LoginThrottle::new(2, Duration::from_secs(10), Duration::from_secs(100), 100);
        let t0 = Instant::now();
        assert!(!t.record_failure(ip(1), t0));
        assert!(!t.record_failure(ip(1), t0 + Duration::from_secs(11)));
        assert!(t.record_failure(ip(1), t0 + Duration::from_secs(12)));
    }

    #[test]
    fn success_forgets_failures() {
        let t = LoginThrottle::new(2, Duration::from_secs(10), Duration::from_secs(100), 100);
        let t0 = Instant::now();
        assert!(!t.record_failure(ip(1), t0));
        t.record_success(ip(1), t0);
        assert_eq!(t.tracked(), 0);
        assert!(!t.record_failure(ip(1), t0));
    }

    #[test]
    fn checks_in_flight_count_against_the_limit() {
        let t = LoginThrottle::new(3, Duration::from_secs(60), Duration::from_secs(300), 100);
        let t0 = Instant::now();
        // Three checks start before any ends: a fourth may not start.
        assert!(CheckSlot::Go == t.begin(ip(1), t0));
        assert!(CheckSlot::Go == t.begin(ip(1), t0));
        assert!(CheckSlot::Go == t.begin(ip(1), t0));
        assert_eq!(t.begin(ip(1), t0), CheckSlot::Wait);
        assert!(
            CheckSlot::Go == t.begin(ip(2), t0),
            "another address is not affected"
        );
        assert!(!t.finish(ip(1), false, t0));
        assert!(!t.finish(ip(1), false, t0));
        assert_eq!(
            t.begin(ip(1), t0),
            CheckSlot::Wait,
            "two failures and one check running"
        );
        // The last one fails too: locked.
        assert!(t.finish(ip(1), false, t0));
        assert!(t.is_locked(ip(1), t0));
        assert_eq!(
            t.begin(ip(1), t0 + Duration::from_secs(299)),
            CheckSlot::Locked
        );
        assert!(CheckSlot::Go == t.begin(ip(1), t0 + Duration::from_secs(300)));
    }

    #[test]
    fn a_success_in_flight_frees_the_reservations() {
        let t = LoginThrottle::new(2, Duration::from_secs(60), Duration::from_secs(300), 100);
        let t0 = Instant::now();
        assert!(CheckSlot::Go == t.begin(ip(1), t0));
        assert!(CheckSlot::Go == t.begin(ip(1), t0));
        assert!(!t.finish(ip(1), true, t0));
        // One check still running: it counts, the forgotten failures do not.
        assert!(CheckSlot::Go == t.begin(ip(1), t0));
        assert_eq!(t.begin(ip(1), t0), CheckSlot::Wait);
        assert!(!t.finish(ip(1), false, t0));
        assert!(t.finish(ip(1), false, t0));
        assert!(t.is_locked(ip(1), t0));
    }

    #[test]
    fn table_is_bounded() {
        let t = LoginThrottle::new(2, Duration::from_secs(10), Duration::from_secs(100), 3);
        let t0 = Instant::now();
        assert!(!t.record_failure(ip(1), t0));
        assert!(t.record_failure(ip(1), t0));
        for n in 2..=200 {
            t.record_failure(ip(n), t0 + Duration::from_secs(u64::from(n)));
        }
        assert_eq!(t.tracked(), 3);
    }
}
