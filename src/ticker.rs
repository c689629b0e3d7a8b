//! Running a periodic task on a thread of its own for as long as some work runs (lease
//! renewal during long operations, service-manager updates during the drain).

use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Runs `work`; meanwhile calls `tick` every `every` (not before the first interval). Returns
/// once `work` has and the ticker has stopped.
pub fn while_working<T>(every: Duration, tick: impl Fn() + Sync, work: impl FnOnce() -> T) -> T {
    let done = (Mutex::new(false), Condvar::new());
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut finished = done.0.lock().unwrap();
            // Checked before each wait: the work may be done before this thread runs.
            while !*finished {
                finished = done.1.wait_timeout(finished, every).unwrap().0;
                if !*finished {
                    tick();
                }
            }
        });
        let r = work();
        *done.0.lock().unwrap() = true;
        done.1.notify_all();
        r
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn ticks_while_the_work_runs_and_stops_with_it() {
        let ticks = AtomicU32::new(0);
        let r = while_working(Duration::from_millis(5), || {
            ticks.fetch_add(1, Ordering::SeqCst);
        }, || {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while ticks.load(Ordering::SeqCst) < 3 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            7
        });
        assert_eq!(r, 7);
        let after = ticks.load(Ordering::SeqCst);
        assert!(after >= 3, "the task ticked while the work ran ({after})");
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(ticks.load(Ordering::SeqCst), after, "and stopped with it");
        // Work that ends before the first interval sees no tick (a tick would panic here).
        while_working(Duration::from_secs(3600), || panic!("no tick"), || ());
    }
}
