//! perf-lab: ferrolb measured side by side with kube-proxy's datapaths on one machine, in
//! network namespaces it makes and removes. See README.md for the method.

pub mod control;
pub mod cost;
pub mod eastwest;
pub mod external;
pub mod generator;
pub mod measured;
pub mod netfilter;
pub mod netns;
pub mod objects;
pub mod peers;
pub mod plot;
pub mod preflight;
pub mod programs;
pub mod rate;
pub mod report;
pub mod rules;
pub mod services;
pub mod stats;
pub mod suite;
pub mod tcp;
pub mod topology;
