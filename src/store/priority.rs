//! The checkpoint writer's CPU priority. A checkpoint's encoding and sled's write (its IO
//! threads copy the batch into the page cache) run beside the workers; where the machine has no
//! idle core for them they take CPU from the event path. So, as RocksDB does with its background
//! threads, they run at a lower priority and a worker with an event to process preempts them.

/// The nice value of the checkpoint writer and of sled's IO threads (0 is the default, 19 the
/// lowest priority). Raising it needs no privilege.
pub const WRITER_NICE: i32 = 10;

/// sled's threads that write a batch out: its IO thread pool and each database's flusher.
const SLED_THREADS: [&str; 2] = ["sled-io", "log flusher"];

/// Lowers this thread's priority, and that of sled's IO threads, to `WRITER_NICE` (or leaves
/// it lower, in a process started under `nice`). Best effort: on Linux, where a nice value is
/// per thread; elsewhere, and on any failure, nothing changes but the priority. Threads sled
/// starts later from this thread inherit it.
pub fn lower_writer_priority() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process, Pid};
        let this = Some(rustix::thread::gettid());
        let nice = getpriority_process(this).unwrap_or(0).max(WRITER_NICE);
        let _ = setpriority_process(this, nice);
        for tid in threads_named(&SLED_THREADS) {
            let thread = Pid::from_raw(tid);
            if getpriority_process(thread).is_ok_and(|current| current < nice) {
                let _ = setpriority_process(thread, nice);
            }
        }
    }
}

/// This process's threads whose name starts with one of `prefixes`.
#[cfg(target_os = "linux")]
fn threads_named(prefixes: &[&str]) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let named = |entry: &std::fs::DirEntry| {
        let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        prefixes.iter().any(|prefix| name.starts_with(prefix))
    };
    let tasks = tasks.flatten().filter(named);
    tasks
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn nice_of(tid: i32) -> i32 {
        let pid = rustix::process::Pid::from_raw(tid);
        rustix::process::getpriority_process(pid).expect("own thread")
    }

    #[test]
    fn the_writer_and_sleds_io_threads_run_at_the_lower_priority() {
        let this = rustix::thread::gettid().as_raw_nonzero().get();
        let before = nice_of(this);
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        db.insert(b"k", b"v").unwrap();
        db.flush().unwrap();
        let writer = std::thread::spawn(|| {
            lower_writer_priority();
            nice_of(rustix::thread::gettid().as_raw_nonzero().get())
        });
        let lowered = before.max(WRITER_NICE);
        assert_eq!(writer.join().unwrap(), lowered);
        let sled_threads = threads_named(&SLED_THREADS);
        assert!(!sled_threads.is_empty(), "sled runs IO threads");
        for tid in sled_threads {
            assert!(nice_of(tid) >= lowered, "thread {tid}");
        }
        assert_eq!(
            nice_of(this),
            before,
            "the calling thread keeps its priority"
        );
    }
}
