//! Did every member of a room see the room's messages in the same order?
//!
//! Each recipient folds the (publisher, seq) of every first arrival, in arrival order, into an
//! [`OrderPrint`]: an order-sensitive running hash and a count. Two members saw the same
//! sequence exactly when their prints match (up to a 64-bit hash collision). At the end of a
//! run [`compare`] groups a room's *comparable* members by print and counts those outside
//! the largest group.
//!
//! Only members that can have seen the same sequence are comparable: connected for the whole
//! run, every message of their room delivered, no duplicate. A member that lost a message
//! necessarily differs, which the integrity figures already say; comparing it would only
//! blur what this check is for (one order per room). Per-publisher order (`reordered`) is the
//! weaker promise every relay keeps; this is the stronger one shardcast makes (one order per
//! room, across publishers, shards and threading models).

use std::collections::HashMap;

use serde::Serialize;

/// The order one recipient saw its room's messages in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct OrderPrint {
    hash: u64,
    /// First arrivals folded in.
    pub count: u64,
}

impl OrderPrint {
    /// Folds in the next first arrival. Runs once per delivery: a multiply and a rotate.
    #[inline]
    pub fn observe(&mut self, publisher: u32, seq: u64) {
        // Rotating before mixing in makes the hash depend on the position of each message,
        // so two members that saw the same messages in another order get other prints.
        let message = mix((u64::from(publisher) << 40) ^ seq);
        self.hash = mix(self.hash.rotate_left(17) ^ message);
        self.count += 1;
    }
}

/// splitmix64's finalizer: every input bit affects every output bit.
#[inline]
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// What a worker hands in for each member still connected when the run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberOrder {
    /// Index into the plan's rooms.
    pub room: u32,
    pub print: OrderPrint,
    /// Arrivals of a message already seen (not folded into the print).
    pub duplicates: u64,
}

/// The outcome of the order check over all rooms of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OrderReport {
    /// Members of all rooms when traffic started.
    pub members: u64,
    /// Members whose sequence was compared: connected throughout, nothing lost or duplicated.
    pub compared: u64,
    /// Compared members whose sequence differs from their room's most common one.
    pub differ: u64,
    /// Rooms with at least two compared members (a single member has nothing to differ from).
    pub rooms_compared: u64,
    /// `--expect-one-order`: a difference fails the run.
    pub required: bool,
}

impl OrderReport {
    pub fn identical(&self) -> bool {
        self.differ == 0
    }

    /// True when the run asked for one order and did not get it.
    pub fn failed(&self) -> bool {
        self.required && !self.identical()
    }

    /// `identical across N members` or `K of N members differ`, with what was left out.
    pub fn describe(&self) -> String {
        let verdict = if self.identical() {
            format!("identical across {} members", self.compared)
        } else {
            format!("{} of {} members differ", self.differ, self.compared)
        };
        let left_out = self.members.saturating_sub(self.compared);
        if left_out == 0 {
            verdict
        } else {
            format!(
                "{verdict} ({left_out} of {} not compared: disconnected, or lost or duplicated messages)",
                self.members
            )
        }
    }
}

/// Compares the members of each room. `room_sent[r]` is how many messages room `r`'s
/// publishers sent; `members` is how many members all rooms had when traffic started.
pub fn compare(connected: &[MemberOrder], room_sent: &[u64], members: u64) -> OrderReport {
    let mut by_room: HashMap<u32, HashMap<OrderPrint, u64>> = HashMap::new();
    for m in connected {
        let complete = room_sent.get(m.room as usize) == Some(&m.print.count);
        if complete && m.duplicates == 0 {
            *by_room
                .entry(m.room)
                .or_default()
                .entry(m.print)
                .or_default() += 1;
        }
    }
    let mut report = OrderReport {
        members,
        ..OrderReport::default()
    };
    for prints in by_room.values() {
        let compared: u64 = prints.values().sum();
        let majority = prints.values().copied().max().unwrap_or(0);
        report.compared += compared;
        report.differ += compared - majority;
        if compared >= 2 {
            report.rooms_compared += 1;
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn print_of(messages: &[(u32, u64)]) -> OrderPrint {
        let mut p = OrderPrint::default();
        for &(publisher, seq) in messages {
            p.observe(publisher, seq);
        }
        p
    }

    fn member(room: u32, messages: &[(u32, u64)]) -> MemberOrder {
        MemberOrder {
            room,
            print: print_of(messages),
            duplicates: 0,
        }
    }

    #[test]
    fn prints_depend_on_order_not_only_on_content() {
        let a = print_of(&[(0, 0), (1, 0), (0, 1)]);
        assert_eq!(a, print_of(&[(0, 0), (1, 0), (0, 1)]));
        assert_ne!(a, print_of(&[(1, 0), (0, 0), (0, 1)]));
        assert_ne!(a, print_of(&[(0, 0), (0, 1), (1, 0)]));
        // Publisher and sequence number do not alias each other.
        assert_ne!(print_of(&[(1, 0)]), print_of(&[(0, 1)]));
        assert_eq!(a.count, 3);
    }

    #[test]
    fn counts_members_outside_the_majority_per_room() {
        let order = [(0, 0), (1, 0), (0, 1)];
        let swapped = [(1, 0), (0, 0), (0, 1)];
        let members = [
            member(0, &order),
            member(0, &order),
            member(0, &swapped),
            // Room 1 has its own order; it is not compared with room 0's.
            member(1, &[(2, 0), (2, 1)]),
            member(1, &[(2, 0), (2, 1)]),
        ];
        let report = compare(&members, &[3, 2], 5);
        assert_eq!(report.compared, 5);
        assert_eq!(report.differ, 1);
        assert_eq!(report.rooms_compared, 2);
        assert!(!report.identical());
        assert_eq!(
            report.describe(),
            "1 of 5 members differ",
            "nothing left out"
        );
        assert!(!report.failed(), "not required");
        assert!(
            OrderReport {
                required: true,
                ..report
            }
            .failed()
        );
    }

    #[test]
    fn leaves_out_incomplete_and_duplicated_members() {
        let all = [(0, 0), (0, 1)];
        let mut duplicated = member(0, &all);
        duplicated.duplicates = 1;
        let members = [
            member(0, &all),
            member(0, &all),
            member(0, &[(0, 1)]), // lost (0, 0): differs, but is not compared
            duplicated,
        ];
        // Six members when traffic started: two more disconnected before the end.
        let report = compare(&members, &[2], 6);
        assert_eq!((report.compared, report.differ), (2, 0));
        assert_eq!(
            report.describe(),
            "identical across 2 members (4 of 6 not compared: disconnected, or lost or duplicated messages)"
        );
    }
}
