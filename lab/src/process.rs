//! Background processes a lab started: kept until stopped, waited for, or killed when the
//! lab goes.

use std::{
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use crate::LabError;

/// Starts `cmd` with stdin closed and stdout and stderr to `log` (or nowhere).
pub(crate) fn spawn_logged(mut cmd: Command, log: Option<&Path>) -> Result<Child, LabError> {
    let what = format!("{:?}", cmd);
    let spawn_err = |source| LabError::Spawn {
        command: what.clone(),
        source,
    };
    cmd.stdin(Stdio::null());
    match log.map(std::fs::File::create) {
        Some(Ok(file)) => {
            let err = file.try_clone().map_err(spawn_err)?;
            cmd.stdout(file).stderr(err);
        }
        _ => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    cmd.spawn().map_err(spawn_err)
}

/// A lab's background processes, by PID.
#[derive(Default)]
pub(crate) struct Processes(Vec<Child>);

impl Processes {
    pub(crate) fn push(&mut self, child: Child) -> u32 {
        let pid = child.id();
        self.0.push(child);
        pid
    }

    fn take(&mut self, pid: u32) -> Option<Child> {
        let index = self.0.iter().position(|c| c.id() == pid)?;
        Some(self.0.remove(index))
    }

    /// SIGTERM, then SIGKILL after 5 s.
    pub(crate) fn stop(&mut self, pid: u32) -> Option<ExitStatus> {
        terminate(&mut self.take(pid)?)
    }

    /// Waits for a process to finish by itself (no signal).
    pub(crate) fn wait(&mut self, pid: u32, timeout: Duration) -> Result<ExitStatus, LabError> {
        let index = self
            .0
            .iter()
            .position(|c| c.id() == pid)
            .ok_or_else(|| LabError::Timeout(timeout, format!("unknown pid {pid}")))?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.0[index].try_wait() {
                // Already exited; wait() only collects the status.
                let _ = self.0.remove(index).wait();
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(LabError::Timeout(timeout, format!("process {pid}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for mut child in std::mem::take(&mut self.0) {
            terminate(&mut child);
        }
    }
}

pub(crate) fn terminate(child: &mut Child) -> Option<ExitStatus> {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok()
}
