//! The upload queue: closed packs waiting for the store, the bookkeeping of the worker threads
//! that upload them (retrying with backoff while the store is out), and waiting for a set of
//! packs or for room in the cache. The upload itself is the caller's closure.

use std::collections::{HashSet, VecDeque};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::format::Id;

#[derive(Default)]
struct State {
    queue: VecDeque<Id>,
    /// Queued or being uploaded; a pack leaves this set once it is in the store.
    in_flight: HashSet<Id>,
    workers: usize,
    stopping: bool,
    retries: u64,
    last_error: Option<String>,
    uploaded_bytes: u64,
}

/// What `status` reports.
#[derive(Debug, Clone, Default)]
pub struct UploadStatus {
    pub queued: usize,
    pub in_flight: usize,
    pub retries: u64,
    pub last_error: Option<String>,
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

    /// One worker: uploads queued packs until `stop`, retrying each failure with exponential
    /// backoff (the pack is never given up). `upload` returns the bytes it stored.
    pub fn work(&self, upload: impl Fn(&Id) -> Result<u64, String>) {
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
                        self.cv.notify_all();
                        break;
                    }
                    Err(e) => {
                        let mut s = self.state.lock().unwrap();
                        s.retries += 1;
                        log::warn!("upload of pack {} failed (retrying in {backoff:?}): {e}", crate::format::hex(&id));
                        s.last_error = Some(e);
                        if s.stopping {
                            s.queue.push_front(id);
                            self.cv.notify_all();
                            break;
                        }
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

    /// Asks the workers to finish (a pack being retried goes back to the queue).
    pub fn stop(&self) {
        self.state.lock().unwrap().stopping = true;
        self.cv.notify_all();
    }

    /// Waits until none of `ids` is in flight. On timeout the error carries the last upload
    /// error.
    pub fn wait_for(&self, ids: &HashSet<Id>, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut s = self.state.lock().unwrap();
        loop {
            let left = ids.iter().filter(|id| s.in_flight.contains(*id)).count();
            if left == 0 {
                return Ok(());
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
                u.work(|_| if attempts.fetch_add(1, Ordering::SeqCst) < 3 { Err("store down".into()) } else { Ok(7) })
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
}
