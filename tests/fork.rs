//! fork() while other threads allocate: the child must be able to allocate (no lock of
//! the allocator left held by a thread that does not exist in the child).

#[global_allocator]
static GLOBAL: shardalloc::ShardAlloc = shardalloc::ShardAlloc::new();

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[test]
fn fork_while_threads_allocate() {
    let stop = Arc::new(AtomicBool::new(false));
    // threads that keep exiting (thread data cache, abandoned list) and allocating
    let workers: Vec<_> = (0..3)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::spawn(move || {
                        let v: Vec<Vec<u8>> =
                            (0..200).map(|i| vec![t as u8; 16 + i * 40]).collect();
                        std::hint::black_box(v);
                    })
                    .join()
                    .unwrap();
                    let big = vec![1u8; 5 << 20];
                    std::hint::black_box(big);
                }
            })
        })
        .collect();
    for round in 0..60 {
        // SAFETY: the child only allocates, frees and calls `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let v: Vec<Box<[u8]>> = (0..2000)
                .map(|i| vec![7u8; 1 + i % 3000].into_boxed_slice())
                .collect();
            let ok = v.iter().all(|b| b.iter().all(|&x| x == 7));
            // huge blocks and a forced collection take every lock of the domain (cache,
            // abandoned list); no std thread is spawned here: std's own locks are not
            // fork-safe, which is not the allocator's to fix
            let big: Vec<Vec<u8>> = (0..4).map(|i| vec![i as u8; 6 << 20]).collect();
            let big_ok = big
                .iter()
                .enumerate()
                .all(|(i, b)| b[b.len() - 1] == i as u8);
            drop(big);
            shardalloc::collect(true);
            unsafe { libc::_exit(if ok && big_ok { 0 } else { 3 }) };
        }
        // wait up to 10 s: a deadlocked child is killed and fails the test
        let mut status = 0;
        let mut waited = 0;
        loop {
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                break;
            }
            waited += 1;
            if waited > 1000 {
                unsafe { libc::kill(pid, libc::SIGKILL) };
                unsafe { libc::waitpid(pid, &mut status, 0) };
                panic!("round {round}: the child hung (deadlock after fork)");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "round {round}: child status {status:#x}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
}
