//! Chat: R rooms x M members, every member sending X messages/s into its own room.

use crate::cli::ChatArgs;
use crate::engine::run_plan;
use crate::error::LoadError;
use crate::plan::{Role, Room};
use crate::report::TrafficReport;
use crate::scenario::{Base, add_room, positive_rate};

pub fn run(args: &ChatArgs) -> Result<TrafficReport, LoadError> {
    positive_rate("--rate-per-member", args.rate_per_member)?;
    if args.rooms == 0 || args.members == 0 {
        return Err(LoadError::InvalidOptions(
            "--rooms and --members must be at least 1".into(),
        ));
    }
    let base = Base::new(&args.common)?;
    let total = args.rooms * args.members;
    let label = format!(
        "chat: {} rooms x {} members, {} msg/s per member ({} msg/s in, {} deliveries/s expected), {} B",
        args.rooms,
        args.members,
        args.rate_per_member,
        total as f64 * args.rate_per_member,
        total as f64 * args.rate_per_member * args.members as f64,
        args.size
    );
    let mut plan = base.plan(label, args.size, total)?;
    let interval_ns = ((1e9 / args.rate_per_member) as u64).max(1);
    for room in 0..args.rooms {
        let first = (room * args.members) as u32;
        let roles = (0..args.members as u32).map(|m| Role::OpenLoop {
            publisher: first + m,
            interval_ns,
            offset_ns: spread(first + m, interval_ns),
        });
        let targets = base.room_targets(Some(&format!("{}{room}", args.room_prefix)));
        add_room(
            &mut plan,
            targets,
            Room {
                first_publisher: first,
                publishers: args.members as u32,
            },
            roles,
        );
    }
    let mut report = run_plan(plan, &base.options())?;
    report.require_one_order(args.expect_one_order);
    Ok(report)
}

/// A fixed pseudo-random phase in `0..interval`: members do not all speak at once.
fn spread(publisher: u32, interval_ns: u64) -> u64 {
    (u64::from(publisher).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) % interval_ns
}
