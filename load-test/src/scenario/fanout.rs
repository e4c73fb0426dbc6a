//! Fanout: N subscribers and P publishers in one room, publishing at a total rate R.

use crate::cli::{FanoutArgs, FanoutShape};
use crate::engine::run_plan;
use crate::error::LoadError;
use crate::plan::{Plan, Role, Room};
use crate::report::TrafficReport;
use crate::scenario::{Base, add_room, positive_rate};
use crate::target::Target;

pub fn run(args: &FanoutArgs) -> Result<TrafficReport, LoadError> {
    let base = Base::new(&args.common)?;
    let mut report = run_plan(plan(&base, &args.shape, args.rate)?, &base.options())?;
    report.require_one_order(args.expect_one_order);
    Ok(report)
}

pub(crate) fn plan(base: &Base, shape: &FanoutShape, rate: f64) -> Result<Plan, LoadError> {
    positive_rate("--rate", rate)?;
    if shape.publishers == 0 {
        return Err(LoadError::InvalidOptions(
            "--publishers must be at least 1".into(),
        ));
    }
    if shape.flooders > 0 {
        positive_rate("--flood-rate", shape.flood_rate)?;
    }
    let targets = base.room_targets(shape.room.as_deref());
    let total = shape.subscribers + shape.publishers + shape.flooders;
    let flooders = match shape.flooders {
        0 => String::new(),
        k => format!(" + {k} flooders at {} msg/s each", shape.flood_rate),
    };
    let label = format!(
        "fanout: {} subscribers + {} publishers{flooders} in {}, {} msg/s total, {} B",
        shape.subscribers,
        shape.publishers,
        targets[0].url(),
        rate,
        shape.size
    );
    let mut plan = base.plan(label, shape.size, total)?;
    let publishers = shape.publishers as u64;
    // Each publisher sends every P/R seconds; their phases are staggered evenly so the room
    // sees one message every 1/R seconds rather than bursts of P.
    let interval_ns = ((publishers as f64 * 1e9 / rate) as u64).max(1);
    let roles = (0..publishers)
        .map(|k| Role::OpenLoop {
            publisher: k as u32,
            interval_ns,
            offset_ns: k * interval_ns / publishers,
        })
        .chain((0..shape.subscribers).map(|_| Role::Subscriber))
        .chain(flooder_roles(shape.flooders, shape.flood_rate));
    let room = Room {
        first_publisher: 0,
        publishers: publishers as u32,
    };
    match &shape.publisher_url {
        None => add_room(&mut plan, targets, room, roles),
        Some(url) => {
            // Publishers on one target, subscribers round-robin over the others: the target
            // list is [publisher target, subscriber targets...].
            let publisher_target = Target::parse(url)?;
            let publisher_target = match &shape.room {
                Some(name) => publisher_target.with_room(name),
                None => publisher_target,
            };
            let room_index = plan.rooms.len() as u32;
            plan.rooms.push(room);
            let first = plan.targets.len() as u32;
            plan.targets.push(publisher_target);
            let count = targets.len() as u32;
            plan.targets.extend(targets);
            let mut subscriber = 0;
            for role in roles {
                let target = match role {
                    Role::Subscriber => {
                        subscriber += 1;
                        first + 1 + (subscriber - 1) % count
                    }
                    _ => first,
                };
                plan.connections.push(crate::plan::ConnSpec {
                    target,
                    room: room_index,
                    role,
                });
            }
        }
    }
    Ok(plan)
}

/// `count` flooders at `rate` messages a second each, their phases staggered evenly.
fn flooder_roles(count: usize, rate: f64) -> impl Iterator<Item = Role> {
    let interval_ns = ((1e9 / rate) as u64).max(1);
    (0..count as u64).map(move |k| Role::Flooder {
        interval_ns,
        offset_ns: k * interval_ns / count.max(1) as u64,
    })
}
