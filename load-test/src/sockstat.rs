//! The kernel's own TCP figures (`/proc/net/sockstat`): memory a server's RSS does not show.
//!
//! `TCP: inuse N orphan N tw N alloc N mem N`: sockets in use and allocated, and `mem`, the
//! pages the kernel has charged to TCP socket buffers (what `tcp_mem` limits). The figures are
//! the whole network namespace's, not one process's: on loopback both ends of every connection
//! are counted (the client's socket and the server's), and anything else running on the machine
//! moves them too. `mem` counts buffer memory only, so an idle connection, with nothing queued,
//! adds next to nothing to it; the socket structures themselves (the TCP socket, its file,
//! inode and epoll entry: a few KiB per socket) live in the kernel's slab caches, which
//! `/proc/meminfo`'s `Slab:` shows for the whole machine, noise from everything else included.

use std::fs;

use serde::Serialize;

/// The `TCP:` line of `/proc/net/sockstat`, and the machine's slab memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TcpSockstat {
    /// TCP sockets in use (established, listening, closing).
    pub inuse: u64,
    /// TCP sockets allocated (in use, orphaned or in TIME_WAIT).
    pub alloc: u64,
    /// Pages charged to TCP socket buffers.
    pub mem_pages: u64,
    /// The kernel's slab memory, in bytes (`Slab:` of /proc/meminfo; 0 if unreadable).
    pub slab_bytes: u64,
}

/// The kernel's TCP figures before the connections opened and with them open.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KernelTcpReport {
    pub page_size: u64,
    pub before: TcpSockstat,
    pub after: TcpSockstat,
    /// TCP buffer memory added, in bytes, per connection opened (both ends on loopback).
    pub tcp_mem_per_connection: f64,
    /// Sockets in use added per connection opened (2 on loopback: the client's and the
    /// server's).
    pub sockets_per_connection: f64,
    /// The machine's slab memory added, in bytes, per connection opened: the socket
    /// structures of both ends on loopback, and whatever else the machine did meanwhile.
    pub slab_per_connection: f64,
}

impl KernelTcpReport {
    /// The change from `before` to `after` over `opened` connections.
    pub fn new(before: TcpSockstat, after: TcpSockstat, opened: u64) -> KernelTcpReport {
        let page_size = page_size();
        let per = |grown: f64| {
            if opened > 0 {
                grown / opened as f64
            } else {
                0.0
            }
        };
        let mem = (after.mem_pages as f64 - before.mem_pages as f64) * page_size as f64;
        KernelTcpReport {
            page_size,
            before,
            after,
            tcp_mem_per_connection: per(mem),
            sockets_per_connection: per(after.inuse as f64 - before.inuse as f64),
            slab_per_connection: per(after.slab_bytes as f64 - before.slab_bytes as f64),
        }
    }
}

/// The namespace's TCP figures now; `None` where /proc/net/sockstat is missing or unreadable.
pub fn read() -> Option<TcpSockstat> {
    let mut now = parse(&fs::read_to_string("/proc/net/sockstat").ok()?)?;
    now.slab_bytes = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| slab_from_meminfo(&m))
        .unwrap_or(0);
    Some(now)
}

/// `Slab:` of a /proc/meminfo text, in bytes.
pub fn slab_from_meminfo(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find_map(|l| l.strip_prefix("Slab:"))?;
    let kib: u64 = line.split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// The `TCP:` line of a sockstat text.
pub fn parse(text: &str) -> Option<TcpSockstat> {
    let line = text.lines().find_map(|l| l.strip_prefix("TCP:"))?;
    let mut fields = line.split_whitespace();
    let (mut inuse, mut alloc, mut mem) = (None, None, None);
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        let value = value.parse::<u64>().ok();
        match name {
            "inuse" => inuse = value,
            "alloc" => alloc = value,
            "mem" => mem = value,
            _ => {}
        }
    }
    Some(TcpSockstat {
        inuse: inuse?,
        alloc: alloc?,
        mem_pages: mem?,
        slab_bytes: 0,
    })
}

/// The size of the kernel's pages (the unit of `mem`).
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "sockets: used 20290\n\
        TCP: inuse 20012 orphan 0 tw 3 alloc 20015 mem 57\n\
        UDP: inuse 2 mem 2\nUDPLITE: inuse 0\nRAW: inuse 0\nFRAG: inuse 0 memory 0\n";

    #[test]
    fn parses_the_tcp_line() {
        assert_eq!(
            parse(SAMPLE),
            Some(TcpSockstat {
                inuse: 20012,
                alloc: 20015,
                mem_pages: 57,
                slab_bytes: 0,
            })
        );
        assert_eq!(parse("sockets: used 1\nUDP: inuse 2 mem 2\n"), None);
    }

    #[test]
    fn reports_the_change_per_connection() {
        let before = TcpSockstat {
            inuse: 12,
            alloc: 15,
            mem_pages: 7,
            slab_bytes: 100 << 20,
        };
        let after = TcpSockstat {
            inuse: 20012,
            alloc: 20015,
            mem_pages: 57,
            slab_bytes: (100 << 20) + 10_000 * 4096,
        };
        let report = KernelTcpReport::new(before, after, 10_000);
        assert_eq!(report.sockets_per_connection, 2.0);
        let expected = 50.0 * report.page_size as f64 / 10_000.0;
        assert_eq!(report.tcp_mem_per_connection, expected);
        assert_eq!(report.slab_per_connection, 4096.0);
    }

    #[test]
    fn parses_slab_of_meminfo() {
        let meminfo = "MemTotal:  8000000 kB\nSlab:     204800 kB\nSReclaimable: 1 kB\n";
        assert_eq!(slab_from_meminfo(meminfo), Some(200 << 20));
    }

    #[test]
    fn reads_this_machine() {
        assert!(read().is_some(), "Linux has /proc/net/sockstat");
    }
}
