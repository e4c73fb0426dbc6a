//! Resume: v1 subscribers drop abruptly and resume with `since`, while publishers send
//! (the machinery is in [`crate::resume`]; this checks the options and builds its own).

use crate::cli::ResumeArgs;
use crate::clock::{Clock, secs_to_ns};
use crate::error::LoadError;
use crate::resume::publisher::Dialect;
use crate::resume::report::ResumeReport;
use crate::resume::{self, ResumeOptions};
use crate::scenario::{Base, positive_rate};
use crate::target::{SourceIps, Target};

pub fn run(args: &ResumeArgs) -> Result<ResumeReport, LoadError> {
    resume::run(options(args)?)
}

pub(crate) fn options(args: &ResumeArgs) -> Result<ResumeOptions, LoadError> {
    positive_rate("--rate", args.rate)?;
    let invalid = |reason: &str| Err(LoadError::InvalidOptions(reason.into()));
    if args.subscribers == 0 || args.publishers == 0 {
        return invalid("--subscribers and --publishers must be at least 1");
    }
    if !(args.drop_every.is_finite() && args.drop_every > 0.0) {
        return invalid("--drop-every must be a positive number of seconds");
    }
    if !(args.reconnect_after.is_finite() && args.reconnect_after >= 0.0) {
        return invalid("--reconnect-after must be a non-negative number of seconds");
    }
    if args.common.threads != 1 {
        return invalid("resume runs on one client thread: leave --threads at 1");
    }
    let base = Base::new(&args.common)?;
    let targets = base.room_targets(args.room.as_deref());
    let dialect = if args.v1_publishers {
        Dialect::V1
    } else {
        Dialect::Plain
    };
    let label = format!(
        "resume: {} v1 subscribers + {} {} publishers in {}, {} msg/s, {} B; a drop every {} s per subscriber (mean), reconnect after {} s{}",
        args.subscribers,
        args.publishers,
        if args.v1_publishers { "v1" } else { "plain" },
        where_to(&targets),
        args.rate,
        args.size,
        args.drop_every,
        args.reconnect_after,
        if args.history > 0 {
            format!(", history={}", args.history)
        } else {
            String::new()
        }
    );
    let connections = args.subscribers + args.publishers;
    let source_ips = match args.common.source_ips {
        Some(k) => SourceIps::new(k)?,
        None => SourceIps::enough_for(connections),
    };
    Ok(ResumeOptions {
        label,
        targets,
        subscribers: args.subscribers,
        publishers: args.publishers,
        publisher_dialect: dialect,
        rate: args.rate,
        size: args.size.max(1),
        drop_every_ns: secs_to_ns(args.drop_every).max(1),
        reconnect_after_ns: secs_to_ns(args.reconnect_after),
        history: args.history,
        seed: args
            .seed
            .unwrap_or_else(|| Clock::process().now_ns() ^ u64::from(std::process::id())),
        timing: base.timing(),
        source_ips,
        max_frame: args.common.max_frame,
        server: base.options().server,
        progress: !args.common.output.quiet,
    })
}

/// The label's "where": one URL, or several and how reconnects move between them.
fn where_to(targets: &[Target]) -> String {
    let urls: Vec<String> = targets.iter().map(Target::url).collect();
    match urls.len() {
        1 => urls.concat(),
        _ => format!("{} (each reconnect to the next)", urls.join(", ")),
    }
}
