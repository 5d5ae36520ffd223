//! `ferrolb run`: the bare-metal mode. Services come from a YAML file, watched for changes;
//! a rejected file leaves the running state untouched.

use std::{path::PathBuf, time::Duration};

use tracing::{error, info};

use crate::{
    config::{self, ConfigError},
    datapath::{self, DatapathOptions, StartError, Ticks},
    edge::{Edge, EdgeError, EdgeOptions, ANNOUNCE_TICK},
    sync::SyncError,
};

#[derive(Debug, thiserror::Error)]
pub enum FileModeError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Edge(#[from] EdgeError),
}

pub struct RunOptions {
    pub datapath: DatapathOptions,
    pub config: PathBuf,
    pub poll_interval: Duration,
    /// Health checks' metrics and VIP announcement (`edge`).
    pub edge: EdgeOptions,
}

/// Watches the config file and applies every accepted change; exits on SIGTERM/SIGINT
/// leaving the datapath forwarding.
pub async fn run(opts: RunOptions) -> Result<(), FileModeError> {
    let (mut desired, checks) = config::load_with_health(&opts.config)?;
    let mut engine = datapath::start(&opts.datapath)?;
    let mut edge = Edge::start(&opts.edge, &opts.datapath).await?;
    edge.configure(&desired, &checks);
    datapath::warm_neighbours(&desired);
    let applied = engine.apply(&edge.effective(&desired))?;
    edge.announce(&edge.effective(&desired));
    info!(
        services = desired.services.len(),
        ops = applied.ops,
        "synced"
    );

    let mut last_text = std::fs::read_to_string(&opts.config).ok();
    let mut dirty = false;
    let mut ticks = Ticks::new()?;
    let mut config_tick = tokio::time::interval(opts.poll_interval);
    let mut announce_tick = tokio::time::interval(ANNOUNCE_TICK);
    loop {
        tokio::select! {
            _ = ticks.terminate.recv() => break,
            _ = ticks.interrupt.recv() => break,
            _ = ticks.refresh.tick() => datapath::warm_neighbours(&desired),
            _ = ticks.neigh.tick() => engine.resolve_neighbour_misses(),
            _ = announce_tick.tick() => edge.announce(&edge.effective(&desired)),
            outcome = edge.next_check() => {
                if edge.record(outcome) {
                    let effective = edge.effective(&desired);
                    match engine.apply(&effective) {
                        Ok(applied) => info!(ops = applied.ops, "health change applied"),
                        Err(e) => {
                            error!(error = %e, "health change not applied; will retry");
                            dirty = true;
                        }
                    }
                    edge.announce(&effective);
                }
            }
            _ = config_tick.tick() => {
                let text = std::fs::read_to_string(&opts.config).ok();
                if text == last_text && !dirty {
                    continue;
                }
                last_text = text.clone();
                let Some(text) = text else {
                    error!(config = %opts.config.display(), "config file unreadable; keeping the running state");
                    continue;
                };
                match config::parse_with_health(&text) {
                    Ok((next, checks)) => {
                        if next != desired {
                            datapath::warm_neighbours(&next);
                        }
                        edge.configure(&next, &checks);
                        match engine.apply(&edge.effective(&next)) {
                            Ok(applied) => {
                                info!(services = next.services.len(), ops = applied.ops, "config change applied");
                                desired = next;
                                dirty = false;
                                edge.announce(&edge.effective(&desired));
                            }
                            Err(e) => {
                                error!(error = %e, "config change not applied; will retry");
                                dirty = true;
                            }
                        }
                    }
                    Err(e) => {
                        error!(config = %opts.config.display(), error = %e, "config rejected; keeping the running state");
                        dirty = false;
                    }
                }
            }
        }
    }
    edge.shutdown();
    info!("exiting; the datapath stays attached and keeps forwarding (ferrolb cleanup removes it)");
    Ok(())
}
