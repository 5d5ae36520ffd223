//! The incremental projection ([`Projector`]) against the whole one ([`to_datapath`]): on
//! random sequences of Service and EndpointSlice changes, fed only the Services that
//! changed, it must give the same datapath state and report, and name exactly the
//! frontends whose spec changed.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{build, endpoint, patch, service_json, slice_json};
use lb_kube::{
    projection::{to_datapath, Projector},
    rules::ServiceName,
};
use lb_model::{Frontend, Settings};
use serde_json::{json, Value};

/// xorshift64*: deterministic, so a failure is reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// A few addresses and ports, so Services collide on frontends (conflicts), need port
/// translation, or have no endpoints.
fn random_service(rng: &mut Rng, name: &str) -> (Value, Value) {
    const IPS: [&str; 3] = ["198.18.1.1", "198.18.1.2", "198.18.1.3"];
    let ip = *rng.pick(&IPS);
    let port = *rng.pick(&[80, 81]);
    let target = if rng.below(4) == 0 { 8080 } else { port };
    let mut svc = patch(
        service_json(name, ip),
        json!({"spec": {"ports": [{"name": "http", "protocol": "TCP", "port": port, "targetPort": target}]}}),
    );
    if rng.below(3) == 0 {
        svc = patch(svc, json!({"spec": {"externalIPs": [*rng.pick(&IPS)]}}));
    }
    let endpoints: Vec<Value> = (0..rng.below(4))
        .map(|_| {
            let addr = format!("198.19.0.{}", 1 + rng.below(5));
            let ready = rng.below(4) != 0;
            endpoint(&addr, common::NODE, ready, ready, false)
        })
        .collect();
    let slice = slice_json(&format!("{name}-x"), name, "IPv4", target, endpoints);
    (svc, slice)
}

#[test]
fn incremental_projection_equals_the_whole_one() {
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut objects: BTreeMap<String, (Value, Value)> = BTreeMap::new();
        let mut projector = Projector::new(Settings::default());
        let mut before = to_datapath(&build(vec![], vec![]), Settings::default()).0;
        for step in 0..15 {
            let mut touched = BTreeSet::new();
            for _ in 0..1 + rng.below(3) {
                let name = format!("s{}", rng.below(6));
                if rng.below(5) == 0 {
                    objects.remove(&name);
                } else {
                    objects.insert(name.clone(), random_service(&mut rng, &name));
                }
                touched.insert(ServiceName::new("default", name));
            }
            let state = build(
                objects.values().map(|(s, _)| s.clone()).collect(),
                objects.values().map(|(_, e)| e.clone()).collect(),
            );
            let changed = projector.update(
                touched
                    .iter()
                    .map(|name| (name, state.services.get(name).map(|s| &**s))),
            );
            let (desired, report) = to_datapath(&state, Settings::default());
            let what = format!("seed {seed} step {step}");
            assert_eq!(**projector.desired(), desired, "{what}: datapath state");
            assert_eq!(**projector.report(), report, "{what}: report");
            let expected: BTreeSet<Frontend> = before
                .services
                .keys()
                .chain(desired.services.keys())
                .filter(|f| before.services.get(*f) != desired.services.get(*f))
                .copied()
                .collect();
            assert_eq!(changed, expected, "{what}: changed frontends");
            before = desired;
        }
    }
}
