//! Connections held open through the VIP by `ferrolb-lab hold` in the lab's client, in
//! the background, with the files it talks through.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use lb_lab::{wait_for, Binaries, Lab};

/// What to hold: `count` TCP connections from source ports `sport..`, each pinged every
/// `interval_ms`, for at most `max_ms`.
pub struct HoldSpec<'a> {
    pub target: &'a str,
    pub sport: u16,
    pub count: u16,
    pub max_ms: u64,
    pub interval_ms: u64,
    /// Whether `hold` reports its rounds and losses as it goes.
    pub progress: bool,
}

/// A running `hold`: its pid and files (named after the first source port).
pub struct HeldRun {
    pub pid: u32,
    pub out: PathBuf,
    pub stop: PathBuf,
    pub progress: PathBuf,
}

/// Starts `hold` in the lab's client and waits until every connection is open and has
/// been pinged once.
pub fn start(lab: &mut Lab, bins: &Binaries, dir: &Path, spec: &HoldSpec) -> HeldRun {
    let file = |name: &str| dir.join(format!("{name}-{}", spec.sport));
    let (out, ready, stop, progress) = (
        file("hold.json"),
        file("ready"),
        file("stop"),
        file("progress.json"),
    );
    let (sport, count) = (spec.sport.to_string(), spec.count.to_string());
    let (max_ms, interval_ms) = (spec.max_ms.to_string(), spec.interval_ms.to_string());
    let mut args = vec![
        "hold",
        "--target",
        spec.target,
        "--sport",
        &sport,
        "--count",
        &count,
        "--max-ms",
        &max_ms,
        "--interval-ms",
        &interval_ms,
        "--ready-file",
        ready.to_str().unwrap(),
        "--stop-file",
        stop.to_str().unwrap(),
    ];
    if spec.progress {
        args.extend(["--progress-file", progress.to_str().unwrap()]);
    }
    let pid = lab.client_background(bins, &args, &out).expect("hold");
    wait_for(Duration::from_secs(60), "held connections to open", || {
        ready.exists().then_some(())
    })
    .expect("hold ready");
    HeldRun {
        pid,
        out,
        stop,
        progress,
    }
}
