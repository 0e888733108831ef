//! Single-threaded churn of small objects, in the spirit of cfrac (continued-fraction
//! factoring on a bignum library that allocates every intermediate value) and espresso
//! (logic minimisation over covers of bit-set cubes).

use crate::util::{scaled, Rng};
use std::hint::black_box;

// ------------------------------------------------------------------ cfrac

/// A non-negative bignum, little-endian base-2^32 limbs, no trailing zero limbs.
type Big = Vec<u32>;

fn trim(mut v: Big) -> Big {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

#[allow(clippy::needless_range_loop)]
fn add(a: &Big, b: &Big) -> Big {
    let (a, b) = if a.len() >= b.len() { (a, b) } else { (b, a) };
    let mut r = Vec::with_capacity(a.len() + 1);
    let mut carry = 0u64;
    for i in 0..a.len() {
        let s = a[i] as u64 + *b.get(i).unwrap_or(&0) as u64 + carry;
        r.push(s as u32);
        carry = s >> 32;
    }
    if carry > 0 {
        r.push(carry as u32);
    }
    r
}

fn mul(a: &Big, b: &Big) -> Big {
    if a.is_empty() || b.is_empty() {
        return Vec::new();
    }
    let mut r = vec![0u32; a.len() + b.len()];
    for (i, &x) in a.iter().enumerate() {
        let mut carry = 0u64;
        for (j, &y) in b.iter().enumerate() {
            let t = x as u64 * y as u64 + r[i + j] as u64 + carry;
            r[i + j] = t as u32;
            carry = t >> 32;
        }
        r[i + b.len()] = carry as u32;
    }
    trim(r)
}

/// (a / d, a % d) for a small divisor, as a fresh vector.
fn divmod_small(a: &Big, d: u32) -> (Big, u32) {
    let mut q = vec![0u32; a.len()];
    let mut rem = 0u64;
    for i in (0..a.len()).rev() {
        let cur = (rem << 32) | a[i] as u64;
        q[i] = (cur / d as u64) as u32;
        rem = cur % d as u64;
    }
    (trim(q), rem as u32)
}

fn mul_small_add(a: &Big, m: u32, add: u32) -> Big {
    let mut r = Vec::with_capacity(a.len() + 1);
    let mut carry = add as u64;
    for &x in a {
        let t = x as u64 * m as u64 + carry;
        r.push(t as u32);
        carry = t >> 32;
    }
    if carry > 0 {
        r.push(carry as u32);
    }
    r
}

fn to_decimal(a: &Big) -> String {
    if a.is_empty() {
        return "0".to_string();
    }
    let mut parts: Vec<String> = Vec::new();
    let mut cur = a.clone();
    while !cur.is_empty() {
        let (q, r) = divmod_small(&cur, 1_000_000_000);
        parts.push(format!("{r:09}"));
        cur = q;
    }
    let mut s: String = parts.iter().rev().map(|p| p.as_str()).collect();
    let nz = s.find(|c| c != '0').unwrap_or(s.len() - 1);
    s.drain(..nz);
    s
}

fn from_decimal(s: &str) -> Big {
    let mut r: Big = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let mut m = 1u32;
        let mut v = 0u32;
        for &c in chunk {
            m *= 10;
            v = v * 10 + (c - b'0') as u32;
        }
        r = mul_small_add(&r, m, v);
    }
    trim(r)
}

fn random_big(rng: &mut Rng, max_limbs: usize) -> Big {
    let n = rng.range(1, max_limbs);
    trim((0..n).map(|_| rng.next_u64() as u32).collect())
}

const CFRAC_ITERS: usize = 120_000;

pub fn run_cfrac(scale: f64) -> u64 {
    let iters = scaled(CFRAC_ITERS, scale);
    let mut rng = Rng::new(0xcf7ac);
    let mut pool: Vec<Big> = (0..64).map(|_| random_big(&mut rng, 8)).collect();
    let mut check = 0u64;
    for _ in 0..iters {
        let a = &pool[rng.below(pool.len())];
        let b = &pool[rng.below(pool.len())];
        let p = mul(a, b);
        let s = add(&p, a);
        let (q, r) = divmod_small(&s, rng.range(2, u32::MAX as usize) as u32);
        let dec = to_decimal(&q);
        let back = from_decimal(&dec);
        if back != q {
            eprintln!("cfrac: decimal round trip failed");
            std::process::exit(3);
        }
        check = check.wrapping_add(dec.len() as u64).wrapping_add(r as u64);
        // Replace a pool entry; keep numbers from growing without bound.
        let i = rng.below(pool.len());
        pool[i] = if q.len() > 12 {
            random_big(&mut rng, 8)
        } else {
            q
        };
        black_box(&pool);
    }
    check
}

// ------------------------------------------------------------------ espresso

type Cube = Vec<u64>;

fn random_cube(rng: &mut Rng, words: usize) -> Cube {
    // Each variable is a 2-bit field: 01, 10 or 11 (don't care); densely "don't care".
    (0..words)
        .map(|_| {
            let mut w = 0u64;
            for f in 0..32 {
                let v = match rng.below(8) {
                    0 => 1u64,
                    1 => 2u64,
                    _ => 3u64,
                };
                w |= v << (2 * f);
            }
            w
        })
        .collect()
}

fn intersect(a: &Cube, b: &Cube) -> Option<Cube> {
    let r: Cube = a.iter().zip(b).map(|(x, y)| x & y).collect();
    // Empty if some variable's field became 00.
    for &w in &r {
        let lo = w & 0x5555_5555_5555_5555;
        let hi = (w >> 1) & 0x5555_5555_5555_5555;
        if (lo | hi) != 0x5555_5555_5555_5555 {
            return None;
        }
    }
    Some(r)
}

fn supercube(a: &Cube, b: &Cube) -> Cube {
    a.iter().zip(b).map(|(x, y)| x | y).collect()
}

fn contains(a: &Cube, b: &Cube) -> bool {
    a.iter().zip(b).all(|(x, y)| x & y == *y)
}

fn weight(c: &Cube) -> u32 {
    c.iter().map(|w| w.count_ones()).sum()
}

const ESPRESSO_ROUNDS: usize = 5_000;

pub fn run_espresso(scale: f64) -> u64 {
    let rounds = scaled(ESPRESSO_ROUNDS, scale);
    let mut rng = Rng::new(0xe5b2e550);
    let mut check = 0u64;
    let mut cover: Vec<Cube> = Vec::new();
    for round in 0..rounds {
        let words = 1 + round % 6;
        if cover.first().is_none_or(|c| c.len() != words) {
            cover = (0..150).map(|_| random_cube(&mut rng, words)).collect();
        }
        // Expand: pairwise intersections and supercubes of random pairs.
        let mut next: Vec<Cube> = Vec::new();
        for _ in 0..300 {
            let a = &cover[rng.below(cover.len())];
            let b = &cover[rng.below(cover.len())];
            if let Some(c) = intersect(a, b) {
                next.push(c);
            }
            if rng.chance(30) {
                next.push(supercube(a, b));
            }
        }
        // Irredundant-ish: sort by weight, drop duplicates and cubes contained in a
        // heavier one among their neighbours.
        next.sort_by(|a, b| weight(b).cmp(&weight(a)).then_with(|| a.cmp(b)));
        next.dedup();
        let mut kept: Vec<Cube> = Vec::with_capacity(next.len());
        for c in next {
            if !kept.iter().rev().take(8).any(|k| contains(k, &c)) {
                kept.push(c);
            }
        }
        check = check.wrapping_add(kept.iter().map(|c| weight(c) as u64).sum::<u64>());
        // The new cover: survivors plus fresh cubes, bounded in size.
        kept.truncate(120);
        while kept.len() < 150 {
            kept.push(random_cube(&mut rng, words));
        }
        cover = kept;
        black_box(&cover);
    }
    check
}
