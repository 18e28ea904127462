//! The process itself: its CPU time and memory as Prometheus's standard
//! `process_*` metrics (read from `/proc` on every scrape), the same figures
//! for any process by id (for benchmarks), and the memory policy every
//! service runs under.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// What a process has used so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// CPU time, user and system, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory now, in bytes.
    pub resident_bytes: u64,
    /// The most resident memory so far, in bytes.
    pub peak_resident_bytes: u64,
    /// Virtual memory, in bytes.
    pub virtual_bytes: u64,
    /// Threads.
    pub threads: i64,
    /// Open file descriptors (0 when they cannot be counted).
    pub open_fds: u64,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

/// The usage of process `pid`; `None` where `/proc` does not have it.
#[cfg(target_os = "linux")]
pub fn usage(pid: u32) -> Option<Usage> {
    let process = procfs::process::Process::new(i32::try_from(pid).ok()?).ok()?;
    read(&process)
}

/// The usage of process `pid`; `None` where `/proc` does not have it.
#[cfg(not(target_os = "linux"))]
pub fn usage(_pid: u32) -> Option<Usage> {
    None
}

#[cfg(target_os = "linux")]
fn read(process: &procfs::process::Process) -> Option<Usage> {
    let stat = process.stat().ok()?;
    let status = process.status().ok()?;
    let ticks = procfs::ticks_per_second() as f64;
    let boot = procfs::boot_time_secs().unwrap_or(0) as f64;
    let kib = |v: Option<u64>| v.unwrap_or(0) * 1024;
    Some(Usage {
        cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
        resident_bytes: kib(status.vmrss),
        peak_resident_bytes: kib(status.vmhwm),
        virtual_bytes: stat.vsize,
        threads: stat.num_threads,
        open_fds: process.fd_count().map_or(0, |n| n as u64),
        start_time_seconds: boot + stat.starttime as f64 / ticks,
    })
}

/// The machine's memory, in bytes; `None` where `/proc` does not have it.
pub fn machine_memory_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        use procfs::Current;
        procfs::Meminfo::current().ok().map(|m| m.mem_total)
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// This process's usage.
fn own_usage() -> Option<Usage> {
    #[cfg(target_os = "linux")]
    {
        read(&procfs::process::Process::myself().ok()?)
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// Exports this process's usage on every scrape, under Prometheus's standard names.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl ProcessCollector {
    /// Adds the collector to `registry`.
    pub fn register(registry: &mut Registry) {
        registry.register_collector(Box::new(ProcessCollector));
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(u) = own_usage() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(u.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges: [(&str, &str, f64); 6] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                u.resident_bytes as f64,
            ),
            (
                "process_resident_memory_max_bytes",
                "Peak resident memory size in bytes",
                u.peak_resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                u.virtual_bytes as f64,
            ),
            ("process_threads", "Number of OS threads", u.threads as f64),
            (
                "process_open_fds",
                "Number of open file descriptors",
                u.open_fds as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                u.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// Asks Linux not to back this process's memory with transparent huge pages.
/// mimalloc reserves its regions in large spans and touches them a little at a
/// time; with huge pages each touch faults in 2 MiB, so a service's resident
/// memory ends up a third larger than what it holds (the edge at full load:
/// 114 MB against 81 MB) for no measurable gain in speed.
pub fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::debug!(error = %e, "Could not opt out of transparent huge pages.");
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn the_process_reports_its_own_usage_in_prometheus_text() {
        let u = usage(std::process::id()).expect("this process is in /proc");
        assert!(u.resident_bytes > 0 && u.peak_resident_bytes >= u.resident_bytes);
        assert!(u.threads >= 1 && u.open_fds >= 3);
        assert!(u.start_time_seconds > 1.0e9, "{u:?}");
        let mut registry = Registry::default();
        ProcessCollector::register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(name), "{name} in {text}");
        }
        assert!(usage(u32::MAX).is_none());
        assert!(machine_memory_bytes().is_some_and(|b| b > 1 << 20));
    }
}
