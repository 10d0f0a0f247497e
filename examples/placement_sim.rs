//! Placement simulation front end (issue 8): prints, for each strategy, how evenly chunks
//! spread over capacity and how many copies move on a join, a leave and a 1% loss, against the
//! optimum, plus the time to place one chunk. Deterministic for a given `--seed`.
//!
//! `cargo run --release --example placement_sim -- --members 10000 --chunks 100000 --k 16,32,64`
//! (`--full` adds the full-membership rule, O(members) per chunk: keep `--chunks` small then.)

use std::time::Instant;

use clap::Parser;
use p2pfs::sim::{Strategy, measure, world};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1000)]
    members: usize,
    #[arg(long, default_value_t = 100_000)]
    chunks: u64,
    /// Capacities spread uniformly between 1x and this many times the smallest.
    #[arg(long, default_value_t = 4)]
    spread: u64,
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Neighbourhood sizes of the closest-peers rule to try.
    #[arg(long, value_delimiter = ',', default_values_t = vec![16, 32, 64])]
    k: Vec<usize>,
    /// Also simulate the full-membership rule.
    #[arg(long)]
    full: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() {
    let args = Args::parse();
    let t = Instant::now();
    let w = world(
        args.seed,
        args.members,
        args.spread,
        args.chunks,
        args.replicas,
    );
    eprintln!(
        "{} members (capacity spread {}x), {} chunks, R={}: world built in {:.1} s",
        args.members,
        args.spread,
        args.chunks,
        args.replicas,
        t.elapsed().as_secs_f64()
    );
    let mut strategies: Vec<Strategy> = args.k.iter().map(|&k| Strategy::Closest { k }).collect();
    if args.full {
        strategies.insert(0, Strategy::Full);
    }
    println!(
        "| strategy | load max/mean | join moved/opt | leave moved/opt | 1% loss moved/opt | chunks with every owner lost | us per chunk placed |"
    );
    println!("|---|---|---|---|---|---|---|");
    for s in strategies {
        let t = Instant::now();
        let r = measure(&w, s, args.seed);
        // measure() places every chunk four times (base, join, leave, loss).
        let per_chunk = t.elapsed().as_secs_f64() * 1e6 / (4.0 * args.chunks as f64);
        let name = match s {
            Strategy::Full => "full membership".to_string(),
            Strategy::Closest { k } => format!("closest k={k}"),
        };
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2e} | {:.1} |",
            r.load_max_over_mean,
            r.join_moved_over_optimal,
            r.leave_moved_over_optimal,
            r.loss_moved_over_optimal,
            r.loss_all_owners_gone,
            per_chunk
        );
    }
}
