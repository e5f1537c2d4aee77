//! Timeouts that cost nothing while nothing times out.
//!
//! Registering an `async_io::Timer` with the reactor wakes the thread that polls it (so it can shorten its
//! sleep). A session used to create one for every wait and every write, several per command, and a transfer
//! one per socket write; with small files that was a reactor wake-up every few tens of microseconds. Here a
//! one-off wait ([`within`]) only creates its timer when the operation does not finish on its first poll, and a
//! loop's deadline ([`LazyTimer`]) stays armed until it fires or must fire earlier.

use std::future::Future;
use std::pin::pin;
use std::time::{Duration, Instant};

use async_io::Timer;
use futures_lite::future;

/// Awaits `op`, giving up after `limit`: `None` when the time ran out.
///
/// The timer is created only when `op` is not ready at once: a write to a socket with room, or a read with
/// bytes waiting, never touches the reactor's timer list.
pub(crate) async fn within<T>(limit: Duration, op: impl Future<Output = T>) -> Option<T> {
    let mut op = pin!(op);
    if let Some(done) = future::poll_once(op.as_mut()).await {
        return Some(done);
    }
    future::or(async { Some(op.await) }, async {
        Timer::after(limit).await;
        None
    })
    .await
}

/// Awaits `op` for at most `limit` of *waiting*: `None` when `op` was not woken and done within it.
///
/// Unlike [`within`], the timer wins when both are ready: `op` is not polled once more when the time is up. A
/// socket write blocked on a peer that does not read is woken by the kernel only when a third of the send buffer
/// is free again, yet it may find a little room when polled anyway; with [`within`] that last poll wrote a few
/// KiB at each expiry, counted as progress, and a stalled download ran for several timeouts in a row.
pub(crate) async fn strictly_within<T>(limit: Duration, op: impl Future<Output = T>) -> Option<T> {
    let mut op = pin!(op);
    if let Some(done) = future::poll_once(op.as_mut()).await {
        return Some(done);
    }
    future::or(
        async {
            Timer::after(limit).await;
            None
        },
        async { Some(op.await) },
    )
    .await
}

/// A timer for a loop whose deadline keeps moving later (an idle timeout): armed once, and re-armed only after
/// it fired or when the deadline moves earlier than the armed time.
///
/// It may therefore fire before the current deadline; the caller checks its deadline when it does, and arms
/// the timer again for the new one.
pub(crate) struct LazyTimer {
    timer: Timer,
    armed: Option<Instant>,
}

impl LazyTimer {
    /// A timer that is not armed.
    pub(crate) fn new() -> Self {
        Self {
            timer: Timer::never(),
            armed: None,
        }
    }

    /// Makes sure the timer fires no later than `at`.
    pub(crate) fn arm_by(&mut self, at: Instant) {
        if self.armed.is_some_and(|armed| armed <= at) {
            return;
        }
        self.timer.set_at(at);
        self.armed = Some(at);
    }

    /// Waits until the armed time (forever when not armed); the timer is then disarmed.
    pub(crate) async fn fired(&mut self) {
        if self.armed.is_none() {
            return future::pending().await;
        }
        (&mut self.timer).await;
        self.armed = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_returns_ready_values_and_times_out_pending_ones() {
        future::block_on(async {
            assert_eq!(within(Duration::from_secs(5), async { 7 }).await, Some(7));
            let started = Instant::now();
            let never = within(Duration::from_millis(20), future::pending::<()>()).await;
            assert_eq!(never, None);
            assert!(started.elapsed() >= Duration::from_millis(20));
            // Ready after a while, before the limit.
            let later = within(Duration::from_secs(5), async {
                Timer::after(Duration::from_millis(10)).await;
                3
            });
            assert_eq!(later.await, Some(3));
        });
    }

    #[test]
    fn strictly_within_lets_the_timer_win_a_tie() {
        future::block_on(async {
            assert_eq!(strictly_within(Duration::ZERO, async { 7 }).await, Some(7));
            // Ready once the time is up, but never woken: like a socket that has a little room again, below
            // the kernel's wake-up threshold. Only a poll at the timer's expiry would find it ready.
            let limit = Duration::from_millis(10);
            let silent = |start: Instant| {
                future::poll_fn(move |_| {
                    if start.elapsed() >= limit {
                        std::task::Poll::Ready(3)
                    } else {
                        std::task::Poll::Pending
                    }
                })
            };
            assert_eq!(strictly_within(limit, silent(Instant::now())).await, None);
            assert_eq!(within(limit, silent(Instant::now())).await, Some(3));
        });
    }

    #[test]
    fn lazy_timer_rearms_only_earlier_and_after_firing() {
        future::block_on(async {
            let mut timer = LazyTimer::new();
            let start = Instant::now();
            timer.arm_by(start + Duration::from_millis(30));
            // A later deadline keeps the earlier arming.
            timer.arm_by(start + Duration::from_secs(60));
            assert_eq!(timer.armed, Some(start + Duration::from_millis(30)));
            // An earlier one moves it.
            timer.arm_by(start + Duration::from_millis(10));
            timer.fired().await;
            let waited = start.elapsed();
            assert!(waited >= Duration::from_millis(10) && waited < Duration::from_secs(30));
            assert_eq!(timer.armed, None);
            // Disarmed: waits forever until armed again.
            assert!(future::poll_once(timer.fired()).await.is_none());
            timer.arm_by(Instant::now());
            timer.fired().await;
        });
    }
}
