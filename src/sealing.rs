//! The sealer pool: threads that run the sealing jobs the file system hands over (compress,
//! pad, seal, append to the staging pack, log the chunk record), so a FUSE thread returns as
//! soon as a chunk's plaintext is handed over and several chunks seal at once; and the tickets
//! by which a file waits for the seals it handed over.
//!
//! The queue is bounded: a thread handing over a job blocks while it is full. A pool of no
//! threads runs each job at once on the thread that hands it over.
//!
//! Locks here are leaves: the pool's queue, and one `Tickets` mutex per file (waited on with a
//! condition variable). A job must never take an fs `FileData` lock: threads holding one wait
//! for jobs (a full queue, or a file's tickets).

use std::collections::BTreeSet;
use std::sync::{Condvar, Mutex};
use std::thread::JoinHandle;

use crossbeam::channel::{Sender, bounded};

/// One sealing job.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// A fixed set of threads working off a bounded queue of jobs.
pub struct Pool {
    tx: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    queue: usize,
    /// Tests hold the workers before they take a job (to look at work in flight).
    #[cfg(test)]
    gate: std::sync::Arc<(Mutex<bool>, Condvar)>,
}

impl Pool {
    /// `threads` workers (none: jobs run on the caller) behind a queue of `queue` jobs (at
    /// least one).
    pub fn new(threads: usize, queue: usize) -> Self {
        Self::start(threads, queue, false)
    }

    /// A pool whose workers are held before their first job until `hold(false)` (tests: a
    /// worker already waiting for a job would not see a later hold).
    #[cfg(test)]
    pub fn new_held(threads: usize, queue: usize) -> Self {
        Self::start(threads, queue, true)
    }

    fn start(threads: usize, queue: usize, _held: bool) -> Self {
        let queue = queue.max(1);
        #[cfg(test)]
        let gate = std::sync::Arc::new((Mutex::new(_held), Condvar::new()));
        if threads == 0 {
            return Pool {
                tx: None,
                threads: Vec::new(),
                queue,
                #[cfg(test)]
                gate,
            };
        }
        let (tx, rx) = bounded::<Job>(queue);
        let threads = (0..threads)
            .map(|i| {
                let rx = rx.clone();
                #[cfg(test)]
                let gate = gate.clone();
                std::thread::Builder::new()
                    .name(format!("sealer-{i}"))
                    .spawn(move || {
                        loop {
                            #[cfg(test)]
                            {
                                let (held, cv) = &*gate;
                                let mut h = held.lock().unwrap();
                                while *h {
                                    h = cv.wait(h).unwrap();
                                }
                            }
                            match rx.recv() {
                                Ok(job) => job(),
                                Err(_) => break, // the pool was dropped and the queue is empty
                            }
                        }
                    })
                    .expect("spawning a sealer thread")
            })
            .collect();
        Pool {
            tx: Some(tx),
            threads,
            queue,
            #[cfg(test)]
            gate,
        }
    }

    /// Runs `job` on a worker, waiting while the queue is full; without workers, runs it now.
    pub fn run(&self, job: Job) {
        match &self.tx {
            Some(tx) => {
                if let Err(e) = tx.send(job) {
                    // Only after the workers are gone (never while the pool is alive).
                    (e.0)();
                }
            }
            None => job(),
        }
    }

    /// Worker threads (0: jobs run on the caller).
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// The queue's bound.
    pub fn queue_bound(&self) -> usize {
        self.queue
    }

    /// Jobs waiting in the queue.
    pub fn queued(&self) -> usize {
        self.tx.as_ref().map_or(0, |t| t.len())
    }

    /// Releases (or holds again) the workers before their next job; a worker already waiting
    /// for one is not held.
    #[cfg(test)]
    pub fn hold(&self, on: bool) {
        let (held, cv) = &*self.gate;
        *held.lock().unwrap() = on;
        cv.notify_all();
    }
}

impl Drop for Pool {
    /// Finishes the queued jobs and joins the workers (whatever they hold, e.g. the vault and
    /// its cache lock, is released when this returns).
    fn drop(&mut self) {
        self.tx = None;
        #[cfg(test)]
        self.hold(false);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Numbered jobs of one file, in flight until `done`: a waiter waits for a given ticket, or
/// for every ticket up to one (jobs finish in any order).
#[derive(Default)]
pub struct Tickets {
    state: Mutex<TicketState>,
    cv: Condvar,
}

#[derive(Default)]
struct TicketState {
    /// The last ticket handed out (tickets start at 1).
    last: u64,
    open: BTreeSet<u64>,
}

impl Tickets {
    /// A new ticket, open until `done`.
    pub fn take(&self) -> u64 {
        let mut s = self.state.lock().unwrap();
        s.last += 1;
        let t = s.last;
        s.open.insert(t);
        t
    }

    pub fn done(&self, ticket: u64) {
        let mut s = self.state.lock().unwrap();
        s.open.remove(&ticket);
        drop(s);
        self.cv.notify_all();
    }

    /// The last ticket handed out (0 before the first).
    pub fn last(&self) -> u64 {
        self.state.lock().unwrap().last
    }

    /// Tickets not yet done.
    pub fn open(&self) -> usize {
        self.state.lock().unwrap().open.len()
    }

    /// Waits until `ticket` is done.
    pub fn wait_for(&self, ticket: u64) {
        let mut s = self.state.lock().unwrap();
        while s.open.contains(&ticket) {
            s = self.cv.wait(s).unwrap();
        }
    }

    /// Waits until every ticket up to `ticket` is done (later ones may still be open: a writer
    /// that goes on handing over jobs does not keep the waiter waiting).
    pub fn wait_upto(&self, ticket: u64) {
        let mut s = self.state.lock().unwrap();
        while s.open.first().is_some_and(|&t| t <= ticket) {
            s = self.cv.wait(s).unwrap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Jobs run on the workers; a full queue blocks the thread handing over until a worker
    /// takes a job; dropping the pool finishes what is queued.
    #[test]
    fn the_queue_is_bounded_and_drains() {
        let pool = Arc::new(Pool::new_held(2, 3));
        let ran = Arc::new(AtomicUsize::new(0));
        let feeder = {
            let (pool, ran) = (pool.clone(), ran.clone());
            std::thread::spawn(move || {
                for _ in 0..4 {
                    let ran = ran.clone();
                    pool.run(Box::new(move || {
                        ran.fetch_add(1, Ordering::SeqCst);
                    }));
                }
            })
        };
        // The workers are held before they take a job: three fill the queue, the fourth waits.
        while pool.queued() < 3 {
            std::thread::yield_now();
        }
        assert!(!feeder.is_finished(), "a full queue blocks the thread handing over");
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        pool.hold(false);
        feeder.join().unwrap();
        let pool = Arc::into_inner(pool).expect("the feeder is done");
        drop(pool);
        assert_eq!(ran.load(Ordering::SeqCst), 4, "dropping the pool finishes the queued jobs");
    }

    /// Without workers a job runs on the caller, before `run` returns.
    #[test]
    fn no_workers_runs_jobs_inline() {
        let pool = Pool::new(0, 1);
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        pool.run(Box::new(move || {
            r.fetch_add(1, Ordering::SeqCst);
        }));
        assert_eq!((pool.threads(), ran.load(Ordering::SeqCst)), (0, 1));
    }

    /// `wait_upto` waits for the tickets up to the one named, not for later ones.
    #[test]
    fn tickets_wait_for_what_came_before() {
        let t = Arc::new(Tickets::default());
        let (a, b, c) = (t.take(), t.take(), t.take());
        assert_eq!((a, b, c, t.last(), t.open()), (1, 2, 3, 3, 3));
        t.done(b);
        t.wait_for(b);
        let waiter = {
            let t = t.clone();
            std::thread::spawn(move || t.wait_upto(2))
        };
        t.done(a);
        waiter.join().unwrap(); // returns although ticket 3 is still open
        assert_eq!(t.open(), 1);
        t.done(c);
        t.wait_upto(u64::MAX);
        assert_eq!(t.open(), 0);
    }
}
