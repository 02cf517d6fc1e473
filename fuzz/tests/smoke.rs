//! The stable stand-in for `cargo fuzz run`: every corpus file, then seeded mutations of
//! them, through each target. `FUZZ_ITERATIONS` (default 20000 per target) and
//! `FUZZ_SEED` (default 1) make a run longer or different; a failure prints the input.

use std::path::Path;
use weft_fuzz::mutate::{mutate, Rng};

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run(target: &str, f: fn(&[u8]), max: usize) {
    let seeds = corpus(target);
    assert!(!seeds.is_empty(), "no corpus for {target}");
    let iterations = env("FUZZ_ITERATIONS", 20_000);
    let mut rng = Rng::new(env("FUZZ_SEED", 1));
    let mut pool = seeds.clone();
    for input in &seeds {
        check(target, f, input);
    }
    for _ in 0..iterations {
        let base = &pool[rng.below(pool.len())];
        let input = mutate(&mut rng, base, max);
        check(target, f, &input);
        // Mutations of mutations reach further; a bounded pool keeps memory flat.
        if pool.len() < 4096 && rng.below(8) == 0 {
            pool.push(input);
        }
    }
}

fn check(target: &str, f: fn(&[u8]), input: &[u8]) {
    let outcome = std::panic::catch_unwind(|| f(input));
    assert!(
        outcome.is_ok(),
        "{target} failed on {:?}",
        String::from_utf8_lossy(input)
    );
}

#[test]
fn sniff() {
    run("sniff", weft_fuzz::sniff, 4096);
}

#[test]
fn request_head() {
    run("request_head", weft_fuzz::request_head, 4096);
}

#[test]
fn load() {
    run("load", weft_fuzz::load, 16 * 1024);
}

#[test]
fn exposition() {
    run("exposition", weft_fuzz::exposition, 16 * 1024);
}

#[test]
fn expression() {
    run("expression", weft_fuzz::expression, 1024);
}

#[test]
fn admission() {
    run("admission", weft_fuzz::admission, 16 * 1024);
}
