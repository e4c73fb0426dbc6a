//! The command line: subcommands and their options (clap derive).
//!
//! Scenario options are plain structs so that `compare` can carry any scenario, and tests can
//! build them by parsing a command line exactly as a user would type it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Load generator for shardcast and any WebSocket server that relays text.
///
/// Every message carries a token `SCL1:<publisher>:<seq>:<send ns>;` that is found anywhere in
/// what the server delivers, so latency (from the scheduled send time), loss, duplicates and
/// reordering are measured at every recipient. Traffic goes to loopback addresses only.
#[derive(Debug, Parser)]
#[command(name = "shardcast-load", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(flatten)]
    Scenario(Scenario),
    /// Start the server once per model x workers, run a scenario against each, compare.
    ///
    /// Without a scenario, the scenario is `sweep --max-failures 3` with every other option
    /// at its default: at one fixed rate every model delivers the same, so it is the curves
    /// of latency, server CPU and loss against the offered rate, and where each configuration
    /// stops meeting the p99 limit (its knee), that tell them apart. --plot draws them.
    Compare(CompareArgs),
}

#[derive(Debug, Clone, Subcommand)]
pub enum Scenario {
    /// N subscribers and P publishers in one room; publishers send at a fixed total rate.
    Fanout(FanoutArgs),
    /// Fanout at increasing rates until p99 passes the limit or messages are lost.
    Sweep(SweepArgs),
    /// R rooms x M members; every member sends at a fixed rate.
    Chat(ChatArgs),
    /// Open C connections, hold them, close them: handshakes/s and server RSS per connection.
    Idle(IdleArgs),
    /// The largest room whose broadcast round trip stays under a bound (websocket-shootout).
    Knee(KneeArgs),
    /// v1 subscribers drop abruptly and resume with `since`: loss, duplicates, catch-up time.
    ///
    /// shardcast.v1 subscribers drop at random moments (socket shut, no close frame) and
    /// reconnect with since=EPOCH:LAST_OFFSET while publishers send. Reports the messages
    /// lost and duplicated across reconnects (from each subscriber's offsets), recovered and
    /// unrecovered resumes, and catch-up time. Exits non-zero if a message was lost or
    /// duplicated although every resume was recovered, or if the server sent no offsets.
    ///
    /// With several --url (nodes of one cluster), subscribers and publishers are spread over
    /// them and each reconnect goes to the next URL, so a resume lands on another node; the
    /// report counts the reconnects that changed node, and, by token, the messages missed or
    /// received twice (which offsets, numbered per epoch, cannot tell across nodes).
    Resume(ResumeArgs),
}

/// Options every scenario takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Server URL, ws://HOST:PORT/ROOM (repeatable: connections are spread round-robin).
    #[arg(
        long = "url",
        value_name = "URL",
        default_value = "ws://127.0.0.1:8080/"
    )]
    pub urls: Vec<String>,
    /// Client threads, each with its own event loop.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub threads: usize,
    /// Server process to sample: CPU seconds (/proc/PID/stat) and RSS (/proc/PID/status).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Seconds of measured traffic.
    #[arg(long, default_value_t = 5.0, value_name = "S")]
    pub duration: f64,
    /// Seconds of traffic before measuring (counted for loss, not for latency or rate).
    #[arg(long, default_value_t = 1.0, value_name = "S")]
    pub warmup: f64,
    /// Most seconds to wait after the last send for messages still on their way.
    #[arg(long, default_value_t = 3.0, value_name = "S")]
    pub drain: f64,
    /// Most seconds for opening all connections; those not open by then count as failed.
    #[arg(long, default_value_t = 60.0, value_name = "S")]
    pub connect_timeout: f64,
    /// Seconds to wait after connecting, before traffic (room joins propagate).
    #[arg(long, default_value_t = 0.2, value_name = "S")]
    pub settle: f64,
    /// Spread connections over source addresses 127.0.0.1..=127.0.0.K
    /// [default: one per 1,000 connections, at most 64].
    #[arg(long, value_name = "K")]
    pub source_ips: Option<usize>,
    /// Most connects in progress at once.
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub connect_concurrency: usize,
    /// Largest server frame accepted, in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024, value_name = "BYTES")]
    pub max_frame: u64,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Where results go besides the human-readable summary.
#[derive(Debug, Clone, Default, Args)]
pub struct OutputArgs {
    /// Write the report as JSON: to stdout, or to FILE with --json=FILE.
    #[arg(long, value_name = "FILE", num_args = 0..=1, require_equals = true, default_missing_value = "-")]
    pub json: Option<PathBuf>,
    /// Write the figures as CSV: to stdout, or to FILE with --csv=FILE.
    #[arg(long, value_name = "FILE", num_args = 0..=1, require_equals = true, default_missing_value = "-")]
    pub csv: Option<PathBuf>,
    /// No progress bars (they are drawn only on a terminal anyway).
    #[arg(long)]
    pub quiet: bool,
}

impl OutputArgs {
    /// Options given at the inner level win over the outer (compare's) ones.
    pub fn or(&self, outer: &OutputArgs) -> OutputArgs {
        OutputArgs {
            json: self.json.clone().or_else(|| outer.json.clone()),
            csv: self.csv.clone().or_else(|| outer.csv.clone()),
            quiet: self.quiet || outer.quiet,
        }
    }
}

/// The shape of a fanout room (shared by `fanout` and `sweep`).
#[derive(Debug, Clone, Args)]
pub struct FanoutShape {
    /// Connections that only receive.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub subscribers: usize,
    /// Connections that send (they receive the room's messages too).
    #[arg(long, default_value_t = 1, value_name = "P")]
    pub publishers: usize,
    /// Payload bytes per message (the token itself takes ~30).
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    pub size: usize,
    /// Room to use instead of the URL's path.
    #[arg(long, value_name = "NAME")]
    pub room: Option<String>,
    /// Connect the publishers to this URL only, and the subscribers to the --url list: with
    /// cluster nodes, every delivery to a subscriber then crosses nodes.
    #[arg(long, value_name = "URL")]
    pub publisher_url: Option<String>,
    /// Connections that flood the room with filler the others do not count (no token), to
    /// see what their traffic looks like while the server limits and closes the flooders
    /// (shardcast --max-publish-rate). Not members: not in the loss, latency or order figures.
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub flooders: usize,
    /// Messages per second each flooder sends (--size bytes each).
    #[arg(long, default_value_t = 1000.0, value_name = "MSG_PER_S")]
    pub flood_rate: f64,
}

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub shape: FanoutShape,
    /// Total messages per second, spread evenly over the publishers.
    #[arg(long, default_value_t = 100.0, value_name = "MSG_PER_S")]
    pub rate: f64,
    /// Exit non-zero if the members of a room saw its messages in different orders (the
    /// order check compares members connected throughout that lost nothing). Off by default:
    /// relays other than shardcast promise only per-sender order.
    #[arg(long)]
    pub expect_one_order: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Clone, Args)]
pub struct SweepArgs {
    #[command(flatten)]
    pub shape: FanoutShape,
    /// First total rate, messages/s.
    #[arg(long, default_value_t = 100.0, value_name = "MSG_PER_S")]
    pub start_rate: f64,
    /// Multiply the rate by this after each step [default: 2 unless --step].
    #[arg(long, conflicts_with = "step", value_name = "X")]
    pub factor: Option<f64>,
    /// Add this to the rate after each step.
    #[arg(long, value_name = "MSG_PER_S")]
    pub step: Option<f64>,
    /// A step passes while its p99 latency stays at or under this.
    #[arg(long, default_value_t = 50.0, value_name = "MS")]
    pub p99_limit_ms: f64,
    /// Highest rate to try.
    #[arg(long, default_value_t = 1_000_000.0, value_name = "MSG_PER_S")]
    pub max_rate: f64,
    /// Stop at the Nth failing step. 1 stops at the first; more show how latency and loss
    /// grow past the knee, and ride over one unlucky step on a busy machine (the knee stays
    /// the highest rate that passed).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_failures: u32,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    #[arg(long, default_value_t = 10, value_name = "R")]
    pub rooms: usize,
    /// Members per room; every member sends.
    #[arg(long, default_value_t = 10, value_name = "M")]
    pub members: usize,
    /// Messages per second each member sends.
    #[arg(long, default_value_t = 1.0, value_name = "X")]
    pub rate_per_member: f64,
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    pub size: usize,
    /// Rooms are named PREFIX0, PREFIX1, ...
    #[arg(long, default_value = "chat-", value_name = "PREFIX")]
    pub room_prefix: String,
    /// Exit non-zero if the members of a room saw its messages in different orders (the
    /// order check compares members connected throughout that lost nothing). Off by default:
    /// relays other than shardcast promise only per-sender order.
    #[arg(long)]
    pub expect_one_order: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    #[arg(long, default_value_t = 1000, value_name = "C")]
    pub connections: usize,
    /// Seconds to hold the connections open before closing them.
    #[arg(long, default_value_t = 2.0, value_name = "S")]
    pub hold: f64,
    /// Room to join instead of the URL's path.
    #[arg(long, value_name = "NAME")]
    pub room: Option<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Clone, Args)]
pub struct KneeArgs {
    /// Clients added per step (the first step has this many).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub step: usize,
    /// Largest client count to try.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub max_clients: usize,
    /// A step passes while the p95 broadcast round trip stays at or under this.
    #[arg(long, default_value_t = 500.0, value_name = "MS")]
    pub bound_ms: f64,
    /// Broadcasts the sender keeps in flight.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub in_flight: u32,
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    pub size: usize,
    /// Room to use instead of the URL's path.
    #[arg(long, value_name = "NAME")]
    pub room: Option<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ResumeArgs {
    /// shardcast.v1 subscribers (nick resumeN, then resumeN-K on reconnection K); each drops
    /// and resumes on its own.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub subscribers: usize,
    /// Connections that send; they are never dropped.
    #[arg(long, default_value_t = 1, value_name = "P")]
    pub publishers: usize,
    /// Publishers speak shardcast.v1 ({"type":"message","text":...}) instead of plain text.
    #[arg(long)]
    pub v1_publishers: bool,
    /// Total messages per second, spread evenly over the publishers.
    #[arg(long, default_value_t = 100.0, value_name = "MSG_PER_S")]
    pub rate: f64,
    /// Text bytes per message (the token itself takes ~30).
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    pub size: usize,
    /// Mean seconds between two abrupt drops of one subscriber (exponentially distributed;
    /// drops happen only while publishing).
    #[arg(long, default_value_t = 1.0, value_name = "S")]
    pub drop_every: f64,
    /// Seconds between a drop (or a server close) and the reconnect.
    #[arg(long, default_value_t = 0.1, value_name = "S")]
    pub reconnect_after: f64,
    /// Ask history=N on every reconnect (what an unrecovered resume then replays; 0: none).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub history: u64,
    /// Room to use instead of the URL's path.
    #[arg(long, value_name = "NAME")]
    pub room: Option<String>,
    /// Seed of the drop times (the same seed repeats the same drop pattern) [default: random].
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// The server binary (started with --listen 127.0.0.1:0 --no-pin --model M --workers W)
    /// [default: the `shardcast` beside this `shardcast-load`].
    #[arg(long, value_name = "PATH")]
    pub server_bin: Option<PathBuf>,
    /// Threading models to compare, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "sharded,shared,single",
        value_name = "LIST"
    )]
    pub models: Vec<String>,
    /// Worker counts to compare, comma-separated (`single` runs one loop whatever the count,
    /// so it is started once, with the first).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,2",
        value_name = "LIST"
    )]
    pub workers: Vec<usize>,
    /// Extra argument for the server (repeatable), e.g. --server-arg=--max-buffered=65536.
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// Draw the comparison as an SVG chart: for `sweep`, latency, deliveries per server
    /// CPU-second and loss against the offered rate, one line per model x workers, each
    /// knee marked; for the other scenarios, bars.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
    /// The scenario to run against each server [default: `sweep --max-failures 3`, every
    /// other option at its default].
    #[command(subcommand)]
    pub scenario: Option<Scenario>,
}

impl CompareArgs {
    /// The scenario to run: the one given, else a `sweep` that stops at its third failing
    /// step (so each line of the chart shows what happens beyond its knee).
    pub fn scenario(&self) -> Scenario {
        match &self.scenario {
            Some(scenario) => scenario.clone(),
            None => Scenario::Sweep(default_sweep()),
        }
    }
}

/// `sweep` exactly as `shardcast-load sweep --max-failures 3` would run it.
fn default_sweep() -> SweepArgs {
    use clap::{Command as ClapCommand, FromArgMatches};
    let command = SweepArgs::augment_args(ClapCommand::new("sweep"));
    let matches = command
        .try_get_matches_from(["sweep", "--max-failures", "3"])
        .expect("every other sweep option has a default");
    SweepArgs::from_arg_matches(&matches).expect("the defaults parse")
}

impl Scenario {
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Fanout(_) => "fanout",
            Scenario::Sweep(_) => "sweep",
            Scenario::Chat(_) => "chat",
            Scenario::Idle(_) => "idle",
            Scenario::Knee(_) => "knee",
            Scenario::Resume(_) => "resume",
        }
    }

    pub fn common(&self) -> &CommonArgs {
        match self {
            Scenario::Fanout(a) => &a.common,
            Scenario::Sweep(a) => &a.common,
            Scenario::Chat(a) => &a.common,
            Scenario::Idle(a) => &a.common,
            Scenario::Knee(a) => &a.common,
            Scenario::Resume(a) => &a.common,
        }
    }

    pub fn common_mut(&mut self) -> &mut CommonArgs {
        match self {
            Scenario::Fanout(a) => &mut a.common,
            Scenario::Sweep(a) => &mut a.common,
            Scenario::Chat(a) => &mut a.common,
            Scenario::Idle(a) => &mut a.common,
            Scenario::Knee(a) => &mut a.common,
            Scenario::Resume(a) => &mut a.common,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn compare_takes_a_scenario_and_hyphenated_server_args() {
        let cli = Cli::try_parse_from([
            "shardcast-load",
            "compare",
            "--server-bin",
            "/bin/true",
            "--models",
            "sharded,shared",
            "--workers",
            "1,2",
            "--server-arg",
            "--max-buffered=65536",
            "--json",
            "fanout",
            "--subscribers",
            "5",
        ])
        .unwrap();
        let Command::Compare(args) = cli.command else {
            panic!("not compare");
        };
        assert_eq!(args.models, ["sharded", "shared"]);
        assert_eq!(args.workers, [1, 2]);
        assert_eq!(args.server_args, ["--max-buffered=65536"]);
        assert_eq!(args.output.json.as_deref(), Some(std::path::Path::new("-")));
        let Some(Scenario::Fanout(fanout)) = args.scenario else {
            panic!("not fanout");
        };
        assert_eq!(fanout.shape.subscribers, 5);
    }

    #[test]
    fn compare_defaults_to_a_sweep_of_every_model() {
        let cli = Cli::try_parse_from(["shardcast-load", "compare", "--plot", "c.svg"]).unwrap();
        let Command::Compare(args) = cli.command else {
            panic!("not compare");
        };
        assert_eq!(args.server_bin, None);
        assert_eq!(args.models, ["sharded", "shared", "single"]);
        assert_eq!(args.workers, [1, 2]);
        let Scenario::Sweep(sweep) = args.scenario() else {
            panic!("the default is not a sweep");
        };
        assert_eq!(sweep.shape.subscribers, 100);
        assert_eq!(sweep.p99_limit_ms, 50.0);
        assert_eq!(sweep.max_failures, 3);
    }
}
