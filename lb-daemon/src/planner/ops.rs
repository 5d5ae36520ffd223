//! What a plan produces: map writes in the order they must run, or why there is no plan.

use std::sync::Arc;

use lb_common::{BackendValue, ServiceKey, ServiceValue};
use lb_hashing::maglev;

use lb_model::{Frontend, IpNetwork, Scope};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("{wanted} services exceed the service map's {max} entries")]
    TooManyServices { wanted: usize, max: u32 },
    #[error("{wanted} distinct backends exceed the backend map's {max} entries")]
    TooManyBackends { wanted: usize, max: u32 },
    #[error(
        "service {frontend}: no room for a {size}-slot table ({free} of {capacity} slots free)"
    )]
    NoTableRoom {
        frontend: Frontend,
        size: u32,
        free: u64,
        capacity: u32,
    },
    #[error(
        "no free backend id below {max}: this change adds backends before it retires others; \
         apply it in two steps"
    )]
    BackendIdsExhausted { max: u32 },
    #[error("service {frontend}: {source}")]
    Maglev {
        frontend: Frontend,
        source: maglev::MaglevError,
    },
    #[error(
        "the state was adopted from pinned maps without the specs it came from: plan it whole first"
    )]
    SpecsUnknown,
}

/// One write to one map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapOp {
    PutBackend {
        id: u32,
        value: BackendValue,
    },
    /// Writes a whole table, `slots[i]` the backend id of slot `base + i`, into its
    /// region: `base` is word-aligned and the region's words are the table's alone (see
    /// `lb_common::maglev_words`), so lanes past the table's end are written as 0.
    WriteSlots {
        base: u32,
        slots: Arc<Vec<u32>>,
    },
    ResetServiceStats {
        service_id: u32,
    },
    ResetBackendStats {
        backend_id: u32,
    },
    /// Writes a service record into the map of its scope.
    PutService {
        scope: Scope,
        key: ServiceKey,
        value: ServiceValue,
    },
    DeleteService {
        scope: Scope,
        key: ServiceKey,
    },
    /// Clears the active flag (keeping the generation), so flow entries re-select.
    RetireBackend {
        id: u32,
        value: BackendValue,
    },
    /// Deletes the flow entries of one service that name these backends: they left the
    /// service but still serve others, so the generation check would keep them alive.
    PurgeFlows {
        key: ServiceKey,
        backend_ids: Vec<u32>,
    },
    /// Allows `ranges` as sources of the external service `service_id` (`LB_SRC_RANGES`).
    PutSourceRanges {
        service_id: u32,
        ranges: Vec<IpNetwork>,
    },
    /// Deletes these entries of the external service `service_id` from `LB_SRC_RANGES`.
    DeleteSourceRanges {
        service_id: u32,
        ranges: Vec<IpNetwork>,
    },
    /// Deletes session-affinity entries of `scope`'s map: every entry of the services
    /// `service_ids` (removed, or affinity turned off: their ids may be reused) and the
    /// entries of each (service id, backend id) in `pairs` (the backend stopped serving
    /// that service but serves others, so its generation does not end them).
    PurgeAffinity {
        scope: Scope,
        service_ids: Vec<u32>,
        pairs: Vec<(u32, u32)>,
    },
}
