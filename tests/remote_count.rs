//! The remote-free list keeps its length (64-bit targets: the top bits of the page's
//! `xthread_free`, one added by each remote free's CAS), and the owner collects it by that
//! count, without walking it: the list becomes `local_free`; or `local_free` moves to an
//! empty `free` first; or, when both lists hold blocks and the remote frees are the last
//! blocks in use, the page starts afresh, empty; or, while the page has blocks in both
//! lists and blocks in use, the remote frees wait. Whatever the mix, every free block must
//! be handed out again exactly once (none twice, none still live), the heap must count its
//! live blocks exactly, and pages must be reused rather than grow without bound.
//!
//! An owner thread allocates from a first-class heap, frees some blocks itself, keeps some,
//! and has a second thread free the rest (remote frees); then it collects in one of the
//! ways a program does (allocating until pages run out, `Heap::collect`, or not at all),
//! and checks its live blocks against the heap's own count and walk. Seeded (`SEED`).

mod common;

use common::Rng;
use std::collections::{HashMap, HashSet};
use std::sync::mpsc;

/// Sizes of three classes, with a few dozen to several hundred blocks per 64 KiB page.
const SIZES: [usize; 3] = [48, 320, 1200];
const ROUNDS: usize = 300;

fn fill(p: usize, size: usize, tag: u64) {
    common::fill(p as *mut u8, size, tag);
}

fn holds(p: usize, size: usize, tag: u64) -> bool {
    common::verify(p as *const u8, size, tag)
}

/// Allocates a block of `size` from `heap`, checks that it is not one of the live blocks,
/// fills it with a pattern of a new tag and records it.
fn alloc_new(
    heap: &shardalloc::Heap,
    size: usize,
    live: &mut HashMap<usize, (usize, u64)>,
    tag: &mut u64,
    seed: u64,
    round: usize,
) {
    let p = heap.alloc(size, 8) as usize;
    assert_ne!(p, 0, "seed {seed}: out of memory");
    assert!(
        !live.contains_key(&p),
        "seed {seed}, round {round}: block {p:#x} handed out while live"
    );
    *tag += 1;
    fill(p, size, *tag);
    live.insert(p, (size, *tag));
}

#[test]
fn remote_frees_collected_by_count_hand_out_each_block_once() {
    let seed = common::seed("remote_frees_collected_by_count_hand_out_each_block_once");
    // the freeing thread: frees every block of a batch, then says so
    let (to_freer, batches) = mpsc::channel::<Vec<usize>>();
    let (done_tx, done) = mpsc::channel::<()>();
    let freer = std::thread::spawn(move || {
        for batch in batches {
            for p in batch {
                // SAFETY: a live block handed over by the owner, freed once, here.
                unsafe { shardalloc::free(p as *mut u8) };
            }
            done_tx.send(()).unwrap();
        }
    });
    let owner = std::thread::spawn(move || {
        let heap = shardalloc::Heap::new();
        let mut rng = Rng::new(seed);
        // live blocks: address -> (size, tag)
        let mut live: HashMap<usize, (usize, u64)> = HashMap::new();
        let mut tag = 0u64;
        let mut pages_first_round = 0usize;
        let mut pages_max = 0usize;
        for round in 0..ROUNDS {
            // allocate a burst of one or two classes
            let size = SIZES[rng.below(SIZES.len() as u64) as usize];
            let n = 50 + rng.below(600) as usize;
            for _ in 0..n {
                alloc_new(&heap, size, &mut live, &mut tag, seed, round);
            }
            // of all live blocks: some freed here (local), some by the other thread (remote)
            let mut local = Vec::new();
            let mut remote = Vec::new();
            let all_remote = rng.below(4) == 0; // at times, the last blocks in use go remote
            for (&p, &(sz, t)) in live.iter() {
                assert!(
                    holds(p, sz, t),
                    "seed {seed}, round {round}: block {p:#x} changed"
                );
                match rng.below(10) {
                    _ if all_remote => remote.push(p),
                    0..=2 => local.push(p),
                    3..=6 => remote.push(p),
                    _ => {}
                }
            }
            for p in &local {
                live.remove(p);
                // SAFETY: a live block of ours, freed once.
                unsafe { shardalloc::free(*p as *mut u8) };
            }
            for p in &remote {
                live.remove(p);
            }
            to_freer.send(remote).unwrap();
            done.recv().unwrap();
            // collect the way a program does
            match rng.below(3) {
                0 => heap.collect(false),
                1 => {
                    // allocate until the pages with room run out and are collected
                    let more = 20 + rng.below(200) as usize;
                    for _ in 0..more {
                        alloc_new(&heap, size, &mut live, &mut tag, seed, round);
                    }
                }
                _ => {}
            }
            // the heap's own count and walk of its live blocks match ours
            let st = heap.stats();
            assert_eq!(
                st.blocks,
                live.len(),
                "seed {seed}, round {round}: the heap counts {} live blocks, we hold {}",
                st.blocks,
                live.len()
            );
            if round % 10 == 0 {
                let mut seen = HashSet::new();
                heap.visit_blocks(|p, _| {
                    seen.insert(p as usize);
                    true
                });
                let ours: HashSet<usize> = live.keys().copied().collect();
                assert_eq!(seen, ours, "seed {seed}, round {round}: live blocks differ");
            }
            if round == 0 {
                pages_first_round = st.pages.max(1);
            }
            pages_max = pages_max.max(st.pages);
            // now and then every block goes, and the pages must be empty and reusable
            if rng.below(8) == 0 {
                let rest: Vec<usize> = live.keys().copied().collect();
                live.clear();
                let (mine, theirs) = rest.split_at(rest.len() / 2);
                for p in mine {
                    // SAFETY: a live block of ours, freed once.
                    unsafe { shardalloc::free(*p as *mut u8) };
                }
                to_freer.send(theirs.to_vec()).unwrap();
                done.recv().unwrap();
                heap.collect(false);
                assert_eq!(
                    heap.stats().blocks,
                    0,
                    "seed {seed}, round {round}: blocks left"
                );
            }
        }
        // pages are reused: the most the heap held is bounded by its live blocks (at most
        // about a thousand of up to 1,200 bytes: 20-25 pages of 64 KiB over 400 seeds), not
        // by the rounds (lost remote frees would leave pages that never empty, hundreds of
        // them by the end)
        let bound = 64;
        assert!(
            pages_max <= bound,
            "seed {seed}: the heap grew to {pages_max} pages (first round {pages_first_round})"
        );
        for (&p, &(sz, t)) in live.iter() {
            assert!(holds(p, sz, t), "seed {seed}: block {p:#x} changed");
            // SAFETY: a live block of ours, freed once.
            unsafe { shardalloc::free(p as *mut u8) };
        }
        drop(to_freer);
        eprintln!("pages: first round {pages_first_round}, most {pages_max}");
    });
    owner.join().unwrap();
    freer.join().unwrap();
}
