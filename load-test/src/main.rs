//! `shardcast-load`: the load generator (scenarios arrive with the load-test issue).

fn main() {
    // Touch the histogram type so the dependency is real from the start.
    let histogram = hdrhistogram::Histogram::<u64>::new(3).expect("3 significant digits is valid");
    println!(
        "shardcast-load: no scenarios yet (histogram ready, {} bytes)",
        histogram.len()
    );
}
