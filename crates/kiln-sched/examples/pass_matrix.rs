//! One pass per cell of the hard-case matrix (issue 19), timed once each:
//! empty, half-busy and full clusters of 1k and 10k nodes, 10k and 100k
//! waiting jobs. `cargo run --release -p kiln-sched --example pass_matrix`
//! (criterion's `benches/pass.rs` measures the same cells properly).

use std::time::Instant;

#[path = "../benches/matrix.rs"]
mod matrix;

fn main() {
    let only: Option<String> = std::env::args().nth(1);
    println!("| cluster | nodes | waiting | running | pass | started |");
    println!("|---|---|---|---|---|---|");
    for case in matrix::cases() {
        if only.as_deref().is_some_and(|o| !case.name.contains(o)) {
            continue;
        }
        let t = Instant::now();
        let plan = kiln_sched::schedule(&case.nodes, &case.running, &case.waiting, 10);
        let took = t.elapsed();
        println!(
            "| {} | {} | {} | {} | {:.1} ms | {} |",
            case.fill,
            case.nodes.len(),
            case.waiting.len(),
            case.running.len(),
            took.as_secs_f64() * 1000.0,
            plan.start.len()
        );
    }
}
