//! Port claiming: loopback ports that no other thread or test binary of this machine uses.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A TCP port on 127.0.0.1 reserved for this process until dropped.
///
/// Ports are taken below the kernel's ephemeral range (so outgoing client
/// connections never grab them) and claimed with a lock file in
/// `$TMPDIR/kaname-test-ports/` (so parallel test binaries never share one);
/// a lock file whose owner process is gone is reclaimed.
#[derive(Debug)]
pub struct PortClaim {
    pub port: u16,
    lock: PathBuf,
}

impl Drop for PortClaim {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.lock);
    }
}

fn port_range() -> (u32, u32) {
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<u32>().ok()))
        .unwrap_or(32768);
    let hi = ephemeral_low.clamp(12_000, 65_000);
    (10_000, hi)
}

static PORT_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Claims a free port on 127.0.0.1 (see [`PortClaim`]).
pub fn claim_port() -> PortClaim {
    let dir = std::env::temp_dir().join("kaname-test-ports");
    fs::create_dir_all(&dir).expect("create port lock dir");
    let (lo, hi) = port_range();
    let span = hi - lo;
    // Per-process pseudo-random start, so binaries start far apart.
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let seed = std::process::id().wrapping_mul(2_654_435_761) ^ nanos;
    let start = seed % span;
    for _ in 0..span {
        let n = PORT_COUNTER.fetch_add(1, Ordering::Relaxed);
        let port = (lo + (start + n) % span) as u16;
        let lock = dir.join(port.to_string());
        if !try_lock(&lock) {
            continue;
        }
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => {
                drop(l);
                return PortClaim { port, lock };
            }
            Err(_) => {
                let _ = fs::remove_file(&lock);
            }
        }
    }
    panic!("no free port found in {lo}..{hi}");
}

fn try_lock(lock: &Path) -> bool {
    for _ in 0..2 {
        match OpenOptions::new().write(true).create_new(true).open(lock) {
            Ok(mut f) => {
                let _ = write!(f, "{}", std::process::id());
                return true;
            }
            Err(_) => {
                // Reclaim the lock of a process that no longer exists.
                let owner = fs::read_to_string(lock).unwrap_or_default();
                let alive = match owner.trim().parse::<u32>() {
                    Ok(pid) => Path::new(&format!("/proc/{pid}")).exists(),
                    Err(_) => {
                        // Being written right now, or garbage: young files count as alive.
                        fs::metadata(lock)
                            .and_then(|m| m.modified())
                            .map(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(60))
                            .unwrap_or(false)
                    }
                };
                if alive {
                    return false;
                }
                let _ = fs::remove_file(lock);
            }
        }
    }
    false
}
