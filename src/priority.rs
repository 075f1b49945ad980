//! CPU priorities of the server's threads, for when the cores are short: API answers first,
//! scraping next, long list renders last.
//!
//! Owns the nice values and the call that applies them; touches nothing but the calling thread's
//! own priority. Linux keeps a nice value per thread, so each kind of thread lowers its own once
//! it starts. A thread only ever lowers its priority here (raising it needs a privilege the
//! server does not ask for); the API's workers and the discovery thread keep the priority the
//! process started with.
//!
//! Why this order: an HPA's read waits while its worker waits for a core, and at 20,000 reads a
//! second a few milliseconds of queueing are the whole latency budget. A scrape has its
//! resolution (15 s by default) to finish and its point is stamped with the kubelet's own time,
//! so a scrape that starts a few milliseconds late costs nothing; a render of a whole-cluster
//! list takes a core for a second or more and is read by clients that wait seconds anyway.
//! Lowered priority is not starvation: the scheduler weighs a nice-5 thread at about a third of a
//! nice-0 one, so on two cores with both API workers busy each scrape thread still gets about a
//! quarter of a core; scraping 10,000 nodes every 15 s takes about 0.12 core in all.

/// The nice value of the scrape threads (0 is the default, 19 the lowest priority).
pub const SCRAPE_NICE: i32 = 5;
/// The nice value of threads rendering long lists.
pub const RENDER_NICE: i32 = 10;

/// Makes the calling thread run at `nice`. Left as it is when the thread already runs at that
/// priority or lower, or when the system refuses.
pub fn lower_current_thread(nice: i32) {
    let Some(id) = current_thread_id() else {
        return;
    };
    match current_thread_nice() {
        Some(current) if current < nice => {
            // SAFETY: a plain system call on this thread's own id; no memory is passed.
            let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, id, nice) };
        }
        _ => {}
    }
}

/// The calling thread's nice value, or `None` if the system will not say.
pub fn current_thread_nice() -> Option<i32> {
    let id = current_thread_id()?;
    // `getpriority` can return -1 as a valid value, so errors are told apart by `errno`.
    // SAFETY: plain system calls on this thread's own id; no memory is passed.
    unsafe {
        *libc::__errno_location() = 0;
        let current = libc::getpriority(libc::PRIO_PROCESS, id);
        (*libc::__errno_location() == 0).then_some(current)
    }
}

fn current_thread_id() -> Option<libc::id_t> {
    // SAFETY: `gettid` has no preconditions.
    libc::id_t::try_from(unsafe { libc::gettid() }).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_lowers_its_own_priority_and_never_raises_it() {
        std::thread::spawn(|| {
            let start = current_thread_nice().expect("readable");
            lower_current_thread(start + 3);
            assert_eq!(current_thread_nice(), Some(start + 3));
            // Asking for a higher priority than it has leaves it alone.
            lower_current_thread(start + 1);
            assert_eq!(current_thread_nice(), Some(start + 3));
        })
        .join()
        .expect("the thread ran");
        // Per thread: the test's own thread kept its priority.
        let here = current_thread_nice().expect("readable");
        std::thread::spawn(move || assert_eq!(current_thread_nice(), Some(here)))
            .join()
            .expect("the thread ran");
    }
}
