//! Page retirement (mimalloc's `mi_page_retire`): a block grown through several size
//! classes, with nothing else live in them, frees its page in each class on every round;
//! a just-emptied page alone in its class stays a few rounds, so the loop makes no pages.

#[global_allocator]
static GLOBAL: shardalloc::ShardAlloc = shardalloc::ShardAlloc::new();

/// Runs `rounds` rounds of: `malloc(16)`, `realloc` through 8 size classes, `free`, on
/// this thread; returns the pages made (`stats().pages.total`) during them.
/// With `perturb`, each round also allocates ten blocks of 12,000 bytes that stay live
/// (two pages made for another size class each round), all freed at the end.
fn pages_made(sizes: &[usize], rounds: usize, perturb: bool) -> i64 {
    let before = shardalloc::stats().pages.total;
    let mut live = Vec::new();
    for _ in 0..rounds {
        if perturb {
            for _ in 0..10 {
                live.push(vec![1u8; 12_000]);
            }
        }
        if sizes.is_empty() {
            continue;
        }
        // SAFETY: `p` is a live block of this allocator until it is freed at the end; each
        // `realloc` returns the block's new address (or null, checked).
        unsafe {
            let mut p = shardalloc::alloc(sizes[0], 8, false);
            assert!(!p.is_null());
            p.write(1);
            for &s in &sizes[1..] {
                p = shardalloc::realloc(p, s, 8, false);
                assert!(!p.is_null());
                p.add(s - 1).write(2);
            }
            shardalloc::free(p);
        }
    }
    drop(live);
    shardalloc::stats().pages.total - before
}

#[test]
fn realloc_loop_keeps_its_pages() {
    // a thread of its own, so that no other test's blocks share these size classes
    std::thread::spawn(|| {
        let small: Vec<usize> = (0..8).map(|i| 16usize << i).collect(); // 16 .. 2048
        let medium: Vec<usize> = (0..8).map(|i| 20_000 + 12_000 * i).collect(); // 20K..104K
        for sizes in [&small, &medium] {
            // Pages made for another class meanwhile count the retired pages down; pages
            // used in every round must not expire: the loop's classes make no page
            // beyond those the other class makes on its own.
            let alone = pages_made(&[], 40, true);
            // that freed the loop's idle pages (retirement must not keep unused pages for
            // ever): the loop makes them again
            let again = pages_made(sizes, 4, false);
            assert!(again > 0, "sizes {sizes:?}: idle retired pages were never freed");
            let together = pages_made(sizes, 40, true);
            println!(
                "sizes {sizes:?}: {together} pages made in 40 rounds with another class making pages, \
                 {alone} by that class alone"
            );
            assert!(alone >= 40, "the other class made {alone} pages: it did not count the retired pages down");
            assert!(
                together <= alone,
                "sizes {sizes:?}: {together} pages made in 40 rounds with another class making pages, \
                 {alone} by that class alone: pages in use every round expired"
            );
            let rounds = 1000;
            let made = pages_made(sizes, rounds, false);
            println!("sizes {sizes:?}: {made} pages made in {rounds} rounds");
            assert!(
                made == 0,
                "sizes {sizes:?}: {made} pages made in {rounds} rounds (each class's page should stay retired)"
            );
        }
    })
    .join()
    .unwrap();
}
