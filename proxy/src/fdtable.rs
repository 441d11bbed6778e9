//! The process's descriptor table, sized before any thread starts.
//!
//! Linux grows a process's descriptor table by doubling it when a new descriptor does not fit (past 64, 128, 256,
//! ... open descriptors). In a process with more than one thread the grower waits for an RCU grace period first,
//! inside whatever syscall allocated the descriptor: the sidecar's `accept` blocks, and with it the one-core
//! runtime and every request on it. Measured on a 2 vCPU VM: `accept4` returning descriptor 256 took 16 ms, 512
//! and 1,024 about 9 ms each, so the first 1,000 connections a fresh sidecar takes see a p99 of 11 ms against
//! HAProxy's (single-threaded) 1.8 ms (BENCHMARKS.md). A single-threaded process grows its table without the
//! wait, and a table never shrinks: sized at the start of `main`, the running sidecar never grows it below
//! [`PRESIZE`] descriptors.
//!
//! The soft open-files limit is raised to the hard one first, as a server that holds one descriptor per connection
//! should (HAProxy and Go programs do the same): the soft 1,024 of many shells and container runtimes would refuse
//! the 1,021st connection.

use rustix::process::{getrlimit, setrlimit, Resource};

/// Descriptors the table holds from the start: 128 KiB of kernel memory (one pointer each) for any sidecar that
/// stays below 16 Ki connections; a busier one grows it as before, once per doubling.
pub const PRESIZE: u64 = 16_384;

/// What `prepare` did, for the log once logging is set up.
#[derive(Debug, PartialEq, Eq)]
pub struct Prepared {
    /// The soft open-files limit after raising it (`None`: unlimited).
    pub open_files: Option<u64>,
    /// Descriptors the table was sized for (0: it could not be).
    pub table: u64,
    /// Why something could not be done; the process runs anyway, with the kernel's defaults.
    pub problem: Option<String>,
}

impl Prepared {
    /// A warning when something could not be done, else a debug line.
    pub fn log(&self) {
        match &self.problem {
            None => tracing::debug!(open_files = ?self.open_files, table = self.table, "descriptor table sized"),
            Some(problem) => tracing::warn!(open_files = ?self.open_files, "{problem}"),
        }
    }
}

/// Raises the soft open-files limit to the hard limit and sizes the descriptor table for `PRESIZE` descriptors (or
/// the limit, if lower). Call it in `main` before anything starts a thread, and only for the commands that serve:
/// processes the proxy starts (`init` runs iptables) would inherit the raised limit.
pub fn prepare() -> Prepared {
    let mut problems = Vec::new();
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit.current = limit.maximum,
            Err(e) => problems.push(format!("raising the open-files limit to {:?}: {e}", limit.maximum)),
        }
    }
    let mut table = table_size(limit.current);
    if let Err(e) = presize(table) {
        problems.push(format!("sizing the descriptor table for {table}: {e}"));
        table = 0;
    }
    Prepared { open_files: limit.current, table, problem: (!problems.is_empty()).then(|| problems.join("; ")) }
}

/// Descriptors to size the table for under a soft limit of `soft` (`None`: unlimited).
fn table_size(soft: Option<u64>) -> u64 {
    soft.map_or(PRESIZE, |soft| soft.min(PRESIZE))
}

/// Opens descriptor `table - 1` (a duplicate of /dev/null) and closes it again: the table grows to fit it.
fn presize(table: u64) -> std::io::Result<()> {
    let Some(highest) = table.checked_sub(1).and_then(|n| i32::try_from(n).ok()) else { return Ok(()) };
    let null = std::fs::File::open("/dev/null")?;
    drop(rustix::io::fcntl_dupfd_cloexec(&null, highest)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sized_for_the_limit_when_it_is_lower() {
        assert_eq!(table_size(None), PRESIZE);
        assert_eq!(table_size(Some(1_048_576)), PRESIZE);
        assert_eq!(table_size(Some(1_024)), 1_024);
        assert_eq!(table_size(Some(0)), 0);
    }

    /// The test harness runs on threads (and other tests open sockets meanwhile), so this cannot show the grace
    /// period avoided, nor which descriptor numbers are free; it shows sizing within the limit succeeds, without
    /// touching the test process's open-files limit (the processes tests spawn inherit it).
    #[test]
    fn sizing_within_the_limit_succeeds() {
        let soft = getrlimit(Resource::Nofile).current;
        assert!(presize(0).is_ok(), "nothing to size");
        assert!(presize(table_size(soft).min(512)).is_ok());
    }
}
