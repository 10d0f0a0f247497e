//! Placement simulation front end (issue 8): prints, for each strategy, how evenly chunks
//! spread over capacity and how many copies move on a join, a leave and a 1% loss, against the
//! optimum, plus the CPU time to place one chunk. Deterministic for a given `--seed`.
//!
//! `cargo run --release -p p2pfs-sim -- --members 10000 --chunks 10000000 --k 16,32,64`
//! (`--full` adds the full-membership rule, O(members) per chunk, measured on the first
//! `--full-sample` chunks only; `--rule1-sample N` adds the same with placement rule 1's pair
//! hash on N chunks, the baseline of the CPU time; `--no-closest` skips the closest-k rules.)
//!
//! The rule the nodes run at 10,000 members, on every chunk:
//! `placement_sim --members 10000 --chunks 10000000 --full --full-sample 10000000 --no-closest
//! --rule1-sample 20000`

use std::time::Instant;

use clap::Parser;
use p2pfs_sim::{Strategy, chunk, measure, world};

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
    /// Neighbourhood sizes of the closest-peers rules to try.
    #[arg(long, value_delimiter = ',', default_values_t = vec![16, 32, 64])]
    k: Vec<usize>,
    /// Weightings of the closest-peers rules: `capacity` (plain), `region` (capacity over the
    /// exact region), `d<j>` (capacity over the distance to the j-th closest other member;
    /// `dk` for j = k), `m<l>` (capacity over region, union of l lookups).
    #[arg(long, value_delimiter = ',', default_values_t = vec!["capacity".to_string(), "region".to_string()])]
    weights: Vec<String>,
    /// Also simulate the full-membership rule, on a sample of the chunks.
    #[arg(long)]
    full: bool,
    /// Chunks the full-membership rule is measured on (the first ones: a uniform sample).
    #[arg(long, default_value_t = 20_000)]
    full_sample: u64,
    /// Also simulate the full-membership rule with placement rule 1's pair hash (blake3 per
    /// pair) on this many chunks (0: not at all): the baseline for the CPU time per chunk.
    #[arg(long, default_value_t = 0)]
    rule1_sample: u64,
    /// Time the nodes' own code path (`Placement::new`, then `Placement::owners` for R owners)
    /// on this many chunks, one thread (0: not at all).
    #[arg(long, default_value_t = 0)]
    owners_sample: u64,
    /// Skip the closest-peers rules (`--k`, `--weights`).
    #[arg(long)]
    no_closest: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() {
    let args = Args::parse();
    let t = Instant::now();
    let mut w = world(
        args.seed,
        args.members,
        args.spread,
        args.chunks,
        args.replicas,
    );
    if let Some(threads) = args.threads {
        w.threads = threads;
    }
    eprintln!(
        "{} members (capacity spread {}x), {} chunks, R={}, {} threads: world built in {:.1} s",
        args.members,
        args.spread,
        args.chunks,
        args.replicas,
        w.threads,
        t.elapsed().as_secs_f64()
    );
    if args.owners_sample > 0 {
        let t = Instant::now();
        let placement = w.placement();
        let built = t.elapsed();
        let n = args.owners_sample.min(args.chunks.max(1));
        let t = Instant::now();
        let mut owners = 0;
        for i in 0..n {
            owners += placement.owners(&chunk(i).0, args.replicas).len();
        }
        let per_chunk = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        eprintln!(
            "Placement::new over {} members: {:.1} ms; Placement::owners: {per_chunk:.1} µs per chunk ({n} chunks, {owners} owners, one thread, wall time)",
            placement.len(),
            built.as_secs_f64() * 1e3,
        );
    }
    let mut runs: Vec<(Strategy, u64)> = Vec::new();
    if args.full {
        runs.push((Strategy::Full, args.full_sample.min(args.chunks)));
    }
    if args.rule1_sample > 0 {
        runs.push((Strategy::FullRule1, args.rule1_sample.min(args.chunks)));
    }
    let closest = if args.no_closest {
        &[][..]
    } else {
        &args.k[..]
    };
    for &k in closest {
        for weight in &args.weights {
            let s = match weight.as_str() {
                "capacity" => Strategy::Closest { k },
                "region" => Strategy::ClosestRegion { k },
                m if m.starts_with('m') => Strategy::ClosestMulti {
                    k,
                    lookups: m[1..].parse().expect("m<lookups>"),
                },
                "dk" => Strategy::ClosestNeighbour { k, j: k },
                d if d.starts_with('d') => Strategy::ClosestNeighbour {
                    k,
                    j: d[1..].parse().expect("d<j>"),
                },
                other => panic!("unknown weighting {other}"),
            };
            runs.push((s, args.chunks));
        }
    }
    println!(
        "| strategy | chunks | mean copies/member | load max/mean | noise floor max/mean | excess CV | join moved/opt | leave moved/opt | 1% loss moved/opt | chunks with every owner lost | CPU us per chunk | wall s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (s, chunks) in runs {
        let t = Instant::now();
        let r = measure(&w.sample(chunks), s, args.seed);
        println!(
            "| {s} | {chunks} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2e} | {:.2} | {:.0} |",
            r.mean_copies,
            r.load_max_over_mean,
            r.noise_max_over_mean,
            r.excess_cv,
            r.join_moved_over_optimal,
            r.leave_moved_over_optimal,
            r.loss_moved_over_optimal,
            r.loss_all_owners_gone,
            r.us_per_chunk,
            t.elapsed().as_secs_f64()
        );
    }
}
