//! The upload queue: closed packs waiting for the store, the bookkeeping of the worker threads
//! that upload them (retrying with backoff while the store is out, parking packs the store
//! refuses), and waiting for a set of packs or for room in the cache. The upload itself is the
//! caller's closure.

use std::collections::{HashSet, VecDeque};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::format::Id;

#[derive(Default)]
struct State {
    queue: VecDeque<Id>,
    /// Queued, being uploaded or parked; a pack leaves this set once it is in the store.
    in_flight: HashSet<Id>,
    /// Packs not retried until someone asks (`retry_parked`): the store refused them, or they
    /// failed after `stop`.
    parked: HashSet<Id>,
    workers: usize,
    stopping: bool,
    retries: u64,
    last_error: Option<String>,
    /// The store's reason while it refuses uploads (a permanent error); cleared by a success.
    refused: Option<String>,
    uploaded_bytes: u64,
}

/// Why one upload failed.
#[derive(Debug, Clone)]
pub struct Failure {
    pub message: String,
    /// The store refused it (credentials, missing bucket, forbidden): retrying at once will
    /// not help, so the pack is parked and waiters are told now.
    pub permanent: bool,
}

/// What `status` reports.
#[derive(Debug, Clone, Default)]
pub struct UploadStatus {
    pub queued: usize,
    pub in_flight: usize,
    pub retries: u64,
    pub last_error: Option<String>,
    /// Set while the store refuses uploads: its reason.
    pub refused: Option<String>,
    pub uploaded_bytes: u64,
}

#[derive(Default)]
pub struct Uploads {
    state: Mutex<State>,
    cv: Condvar,
}

const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Uploads {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of running workers (0: uploads happen inline in commits).
    pub fn workers(&self) -> usize {
        self.state.lock().unwrap().workers
    }

    pub fn enqueue(&self, ids: impl IntoIterator<Item = Id>) {
        let mut s = self.state.lock().unwrap();
        for id in ids {
            if s.in_flight.insert(id) {
                s.queue.push_back(id);
            }
        }
        self.cv.notify_all();
    }

    /// Packs not yet in the store.
    pub fn in_flight(&self) -> HashSet<Id> {
        self.state.lock().unwrap().in_flight.clone()
    }

    /// One worker: uploads queued packs until `stop`, retrying a failure with exponential
    /// backoff while the store may only be out. A pack the store refuses, or one that fails
    /// after `stop`, is parked (never given up: it stays staged and in flight) until
    /// `retry_parked`, so a worker never spins on it. `upload` returns the bytes it stored.
    pub fn work(&self, upload: impl Fn(&Id) -> Result<u64, Failure>) {
        self.state.lock().unwrap().workers += 1;
        loop {
            let id = {
                let mut s = self.state.lock().unwrap();
                loop {
                    if let Some(id) = s.queue.pop_front() {
                        break Some(id);
                    }
                    if s.stopping {
                        break None;
                    }
                    s = self.cv.wait(s).unwrap();
                }
            };
            let Some(id) = id else { break };
            let mut backoff = Duration::from_millis(100);
            loop {
                match upload(&id) {
                    Ok(bytes) => {
                        let mut s = self.state.lock().unwrap();
                        s.in_flight.remove(&id);
                        s.uploaded_bytes += bytes;
                        s.last_error = None;
                        s.refused = None;
                        self.cv.notify_all();
                        break;
                    }
                    Err(e) => {
                        let mut s = self.state.lock().unwrap();
                        s.retries += 1;
                        let pack = crate::format::hex(&id);
                        s.last_error = Some(e.message.clone());
                        if e.permanent || s.stopping {
                            if e.permanent {
                                log::error!("the store refuses pack {pack} (kept in the cache; not retried until the next sync): {}", e.message);
                                s.refused = Some(e.message);
                            } else {
                                log::warn!("upload of pack {pack} failed while stopping (kept in the cache): {}", e.message);
                            }
                            s.parked.insert(id);
                            self.cv.notify_all();
                            break;
                        }
                        log::warn!("upload of pack {pack} failed (retrying in {backoff:?}): {}", e.message);
                        // Sit out the whole backoff (other wake-ups do not count) unless stopping.
                        let until = Instant::now() + backoff;
                        while !s.stopping && Instant::now() < until {
                            s = self.cv.wait_timeout(s, until - Instant::now()).unwrap().0;
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
        self.state.lock().unwrap().workers -= 1;
        self.cv.notify_all();
    }

    /// Queues the parked packs again (a sync or commit asks: the store may accept them now).
    pub fn retry_parked(&self) {
        let mut s = self.state.lock().unwrap();
        if s.stopping || s.parked.is_empty() {
            return;
        }
        let parked: Vec<Id> = s.parked.drain().collect();
        s.queue.extend(parked);
        self.cv.notify_all();
    }

    /// Asks the workers to finish what is queued; a pack that fails from now on is parked.
    pub fn stop(&self) {
        self.state.lock().unwrap().stopping = true;
        self.cv.notify_all();
    }

    /// Waits until none of `ids` is in flight. On timeout the error carries the last upload
    /// error; a pack the store refused ends the wait at once with the store's reason.
    pub fn wait_for(&self, ids: &HashSet<Id>, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut s = self.state.lock().unwrap();
        loop {
            let left = ids.iter().filter(|id| s.in_flight.contains(*id)).count();
            if left == 0 {
                return Ok(());
            }
            if let Some(reason) = s.refused.as_ref().filter(|_| ids.iter().any(|id| s.parked.contains(id))) {
                return Err(format!("{left} packs are not in the store: the store refuses them ({reason})"));
            }
            let now = Instant::now();
            if now >= deadline || s.workers == 0 {
                return Err(format!(
                    "{left} packs are not in the store yet{}",
                    s.last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default()
                ));
            }
            s = self.cv.wait_timeout(s, deadline - now).unwrap().0;
        }
    }

    /// Waits until `room()` holds, re-checking after every upload; false on timeout.
    pub fn wait_until(&self, timeout: Duration, room: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.state.lock().unwrap();
        loop {
            if room() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s = self.cv.wait_timeout(s, (deadline - now).min(Duration::from_millis(500))).unwrap().0;
        }
    }

    pub fn status(&self) -> UploadStatus {
        let s = self.state.lock().unwrap();
        UploadStatus {
            queued: s.queue.len(),
            in_flight: s.in_flight.len(),
            retries: s.retries,
            last_error: s.last_error.clone(),
            refused: s.refused.clone(),
            uploaded_bytes: s.uploaded_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn failures_are_retried_until_stored() {
        let u = Arc::new(Uploads::new());
        let attempts = Arc::new(AtomicU32::new(0));
        let worker = {
            let (u, attempts) = (u.clone(), attempts.clone());
            std::thread::spawn(move || {
                u.work(|_| {
                    if attempts.fetch_add(1, Ordering::SeqCst) < 3 {
                        Err(Failure { message: "store down".into(), permanent: false })
                    } else {
                        Ok(7)
                    }
                })
            })
        };
        u.enqueue([[1u8; 16]]);
        let want: HashSet<Id> = [[1u8; 16]].into();
        while u.workers() == 0 {
            std::thread::yield_now();
        }
        u.wait_for(&want, Duration::from_secs(10)).unwrap();
        let st = u.status();
        assert_eq!((st.retries, st.in_flight, st.uploaded_bytes, st.last_error), (3, 0, 7, None));
        u.stop();
        worker.join().unwrap();
        // Without workers, waiting reports what is missing instead of hanging.
        u.enqueue([[2u8; 16]]);
        let e = u.wait_for(&[[2u8; 16]].into(), Duration::from_secs(5)).unwrap_err();
        assert!(e.contains("1 packs are not in the store"), "{e}");
    }

    /// A store that refuses (403, a missing bucket) fails waiters at once with its reason and is
    /// not retried in a loop; after `stop`, a failing pack is parked, never taken again, and the
    /// worker ends (it used to requeue and retake it for as long as the store refused).
    #[test]
    fn refusals_end_waits_at_once_and_stop_never_spins() {
        let u = Arc::new(Uploads::new());
        let attempts = Arc::new(AtomicU32::new(0));
        let refuse = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let worker = {
            let (u, attempts, refuse) = (u.clone(), attempts.clone(), refuse.clone());
            std::thread::spawn(move || {
                u.work(|_| {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    if refuse.load(Ordering::SeqCst) {
                        Err(Failure { message: "403 Forbidden: AccessDenied".into(), permanent: true })
                    } else {
                        Err(Failure { message: "connection refused".into(), permanent: false })
                    }
                })
            })
        };
        while u.workers() == 0 {
            std::thread::yield_now();
        }
        u.enqueue([[1u8; 16]]);
        let t = Instant::now();
        let e = u.wait_for(&[[1u8; 16]].into(), Duration::from_secs(60)).unwrap_err();
        assert!(e.contains("refuses") && e.contains("AccessDenied"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10), "a refusal must not wait for the timeout");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(attempts.load(Ordering::SeqCst), 1, "a refused pack is not retried by itself");
        assert!(u.status().refused.is_some() && u.status().in_flight == 1);
        // A sync asks again: one more attempt. Now the store is merely down; stop, and the
        // worker gives the pack up to the cache instead of spinning on it.
        refuse.store(false, Ordering::SeqCst);
        u.retry_parked();
        while attempts.load(Ordering::SeqCst) < 2 {
            std::thread::yield_now();
        }
        u.stop();
        worker.join().unwrap();
        let n = attempts.load(Ordering::SeqCst);
        assert!(n <= 3, "{n} attempts after stop");
        assert_eq!(u.status().in_flight, 1, "the pack stays in flight (staged), never dropped");
    }
}
