//! CPU-heavy work off the async workers: the network runtime has two worker threads, and a
//! loop that ranks every member for every chunk on one of them stalls every connection it
//! serves for as long.

/// Runs `f` on the runtime's blocking pool and waits for it. A panic in `f` is raised again
/// here, as if `f` had run inline; `None` when the runtime is shutting down and `f` did not
/// run to its end.
pub async fn off_workers<T, F>(f: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => Some(value),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}

/// Panics, in debug builds, when the calling thread drives a tokio runtime's async tasks (a
/// runtime worker, or a thread inside `block_on`): blocking there stalls every task that
/// thread serves. Threads of the blocking pool (`spawn_blocking`), and threads outside any
/// runtime (FUSE request threads, the seal pool), pass.
#[track_caller]
pub fn debug_assert_may_block() {
    #[cfg(debug_assertions)]
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        // A runtime handle alone does not tell a worker from a blocking-pool thread (both have
        // one). `Handle::block_on` does: it panics ("Cannot start a runtime from within a
        // runtime") exactly on a thread that drives async tasks, and returns at once on a
        // ready future anywhere else.
        handle.block_on(std::future::ready(()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_is_refused_only_on_threads_that_run_async_tasks() {
        // Outside any runtime.
        debug_assert_may_block();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .expect("a runtime");
        rt.block_on(async {
            assert_eq!(off_workers(debug_assert_may_block).await, Some(()));
            let on_worker = tokio::spawn(async { debug_assert_may_block() }).await;
            if cfg!(debug_assertions) {
                assert!(on_worker.expect_err("refused on a worker").is_panic());
            } else {
                assert!(on_worker.is_ok());
            }
        });
        // A thread that entered the runtime's context without driving it (as the node's main
        // thread does between its `block_on`s).
        let _context = rt.enter();
        debug_assert_may_block();
    }

    #[tokio::test]
    async fn a_panic_off_the_workers_is_raised_in_the_caller() {
        let caught = tokio::spawn(off_workers(|| panic!("planning failed"))).await;
        assert!(caught.expect_err("the panic comes through").is_panic());
        assert_eq!(off_workers(|| 7).await, Some(7));
    }
}
