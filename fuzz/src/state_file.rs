//! The state file (and `lbctl apply`'s TOML): arbitrary text through the
//! parser, validation into a desired state, and Apply onto a running state
//! (the fixture's). Invariants: no panic; a state that loads writes back
//! to text that loads to the same state; Apply of it succeeds or refuses
//! as a whole, and once applied the running state has what it carried.

use crate::{fixture_state, PORT_MAC};
use control::config::Config;
use control::state::DesiredState;
use lb_core::snapshot::Snapshot;

/// Tables beyond this many entries in all are not built here: the build is
/// linear in them and would only slow the search down.
const MAX_TABLE_ENTRIES: u64 = 200_000;

/// One input of the target.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = toml::from_str::<Config>(text) else {
        return;
    };
    let Ok(state) = DesiredState::from_config(&config) else {
        return;
    };
    // Written back as the state file is, it loads to the same state.
    let written = toml::to_string_pretty(&state.to_config()).expect("a state serialises");
    let again: Config = toml::from_str(&written).expect("what lbd writes parses");
    let reloaded = DesiredState::from_config(&again).expect("what lbd writes loads");
    assert_eq!(reloaded.to_config(), state.to_config(), "{written}");
    assert_eq!(reloaded.digest(), state.digest());

    let entries: u64 = state.vips().values().map(|v| u64::from(v.table_size)).sum();
    if entries > MAX_TABLE_ENTRIES {
        return;
    }
    // A state that loads is one the dataplane can take.
    if let Err(e) = Snapshot::build(&state.to_spec(2, PORT_MAC, |_| None)) {
        panic!("loaded but cannot be published: {e}\n{written}");
    }
    // Apply onto a running state: on success, it now carries the VIPs.
    let mut running = fixture_state();
    if running.converge(&state).is_ok() {
        assert_eq!(running.digest(), state.digest(), "{written}");
    }
}
