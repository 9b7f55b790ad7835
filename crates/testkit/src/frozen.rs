//! Members cut off by SIGSTOP: their sockets stay open and they never answer, which is what
//! a partition looks like to the others (connections hang rather than fail), without needing
//! network namespaces or firewall rules on a shared machine.

use std::process::Command;

use super::Cluster;

pub fn signal(pid: u32, sig: &str) -> Result<(), String> {
    let out = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .output()
        .map_err(|e| format!("run kill: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("kill -{sig} {pid}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Members stopped with SIGSTOP; SIGCONT is sent when this is dropped, also when a check
/// fails, so the cluster is never dropped (SIGKILLed) while some of it is stopped.
pub struct Frozen {
    pids: Vec<(usize, u32)>,
}

impl Frozen {
    pub fn stop(c: &Cluster, members: &[usize]) -> Frozen {
        let mut frozen = Frozen { pids: Vec::new() };
        for &i in members {
            let pid = c.pid(i).unwrap_or_else(|| panic!("m{i} is not running"));
            signal(pid, "STOP").unwrap_or_else(|e| panic!("{e}"));
            frozen.pids.push((i, pid));
        }
        frozen
    }

    pub fn resume(mut self) {
        for (i, pid) in std::mem::take(&mut self.pids) {
            signal(pid, "CONT").unwrap_or_else(|e| panic!("resume m{i}: {e}"));
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for &(_, pid) in &self.pids {
            let _ = signal(pid, "CONT");
        }
    }
}
