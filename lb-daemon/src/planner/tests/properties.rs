//! Random change sequences: every single map write keeps packets safe, and the
//! incremental plan equals the whole one.

use std::{collections::BTreeSet, net::IpAddr};

use proptest::prelude::*;

use super::{configuration, frontend, summary, FakeKernel};
use crate::planner::{plan, plan_changes, KernelState};
use lb_model::{DesiredState, Frontend};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Any sequence of configurations keeps every live table whole and pointing at active
    /// backends after every single map write, and ends with exactly the desired services.
    #[test]
    fn every_step_is_make_before_break(
        steps in prop::collection::vec(
            prop::collection::vec(
                (0u16..5, prop::collection::vec((1u8..5, 0u32..3), 0..4), prop::bool::ANY),
                0..5,
            ),
            1..7,
        ),
        restart_after in prop::collection::vec(prop::bool::ANY, 7),
    ) {
        let mut state = KernelState::new(200_000);
        let mut kernel = FakeKernel::default();
        for (i, step) in steps.into_iter().enumerate() {
            let want = configuration(step);
            let (ops, next) = plan(&state, &want).unwrap();
            kernel.apply(&ops);
            state = next;
            if restart_after[i] {
                // A restarted daemon goes on from what it reads back.
                state = kernel.adopt(200_000);
            }
            prop_assert_eq!(kernel.services.len(), want.services.len());
            for (f, s) in &want.services {
                let table = kernel.table(f);
                let live: BTreeSet<IpAddr> = s.backends.iter().filter(|b| b.weight > 0).map(|b| b.address).collect();
                prop_assert_eq!(table.is_empty(), live.is_empty());
                prop_assert!(table.iter().all(|a| live.contains(a)));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    /// Planning only the frontends that changed gives the whole plan's operations and
    /// state, applied maps included; the undo record restores the state before the plan.
    #[test]
    fn changes_planned_alone_equal_the_whole_plan(
        steps in prop::collection::vec(
            (
                prop::collection::vec(
                    (0u16..5, prop::collection::vec((1u8..5, 0u32..3), 0..4), prop::bool::ANY),
                    0..5,
                ),
                // Frontends listed as changed although they are not: harmless.
                prop::collection::vec(0u16..6, 0..3),
                prop::bool::ANY,
            ),
            1..10,
        ),
    ) {
        let capacity = 200_000;
        let mut whole = KernelState::new(capacity);
        let mut alone = KernelState::new(capacity);
        let mut whole_kernel = FakeKernel::default();
        let mut alone_kernel = FakeKernel::default();
        let mut before = DesiredState::default();
        for (i, (step, extra, restart)) in steps.into_iter().enumerate() {
            let want = configuration(step);
            let (whole_ops, whole_next) = plan(&whole, &want).unwrap();
            let mut changed: BTreeSet<Frontend> = before
                .services
                .keys()
                .chain(want.services.keys())
                .filter(|f| before.services.get(*f) != want.services.get(*f))
                .copied()
                .collect();
            changed.extend(extra.into_iter().map(|p| frontend(80 + p)));
            let ops = if alone.can_plan_changes() {
                let saved = alone.clone();
                let (ops, undo) = plan_changes(&mut alone, &want, &changed).unwrap();
                let mut reverted = alone.clone();
                reverted.revert(undo);
                prop_assert_eq!(&reverted, &saved);
                ops
            } else {
                // Adopted: only the whole plan knows what the maps hold.
                let (ops, next) = plan(&alone, &want).unwrap();
                alone = next;
                ops
            };
            prop_assert_eq!(summary(&ops), summary(&whole_ops), "step {}", i);
            prop_assert_eq!(&ops, &whole_ops);
            prop_assert_eq!(&alone, &whole_next);
            whole_kernel.apply(&whole_ops);
            alone_kernel.apply(&ops);
            prop_assert_eq!(&alone_kernel.services, &whole_kernel.services);
            prop_assert_eq!(&alone_kernel.backends, &whole_kernel.backends);
            prop_assert_eq!(&alone_kernel.slots, &whole_kernel.slots);
            whole = whole_next;
            if restart {
                // One adoption for both: adoption numbers tables in the order it reads the
                // maps, and both planners must start from the same state.
                whole = whole_kernel.adopt(capacity);
                alone = whole.clone();
            }
            before = want;
        }
    }
}
