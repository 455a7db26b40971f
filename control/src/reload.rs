//! SIGHUP (what `systemctl reload` and logrotate send): read the state
//! file again and converge to it as one change, with the validation of an
//! Apply. A file that does not read, parse or validate changes nothing;
//! the reason is logged (and returned, for tests).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use tracing::{error, info};

use crate::config::Config;
use crate::hub::Control;
use crate::state::DesiredState;

/// The flag SIGHUP sets; the monitor takes it (and resets it) each round.
pub fn reload_signal() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&flag))
        .context("installing the SIGHUP handler")?;
    Ok(flag)
}

/// Whether a reload was asked for since the last call.
pub fn requested(flag: &AtomicBool) -> bool {
    flag.swap(false, Ordering::Relaxed)
}

/// The desired state a state file holds, validated as an Apply would.
pub fn read_state(path: &Path) -> Result<DesiredState, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let config: Config = toml::from_str(&text)
        .map_err(|e| format!("{}: {}", path.display(), e.to_string().trim()))?;
    DesiredState::load(&config).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reload `path` into `control`: the changes made, once the state file
/// holds them, or why nothing changed.
pub async fn reload(control: &Mutex<Control>, path: Option<&Path>) -> Result<Vec<String>, String> {
    let result = async {
        let path = path.ok_or("lbd runs without --state: there is no file to reload")?;
        let desired = read_state(path)?;
        let (changes, commit) = control
            .lock()
            .map_err(|_| "control lock poisoned".to_string())?
            .converge(&desired, false, "reload")
            .map_err(|e| e.to_string())?;
        if let Some(commit) = commit {
            commit.durable().await.map_err(|e| e.to_string())?;
        }
        Ok(changes)
    }
    .await;
    match &result {
        Ok(changes) if changes.is_empty() => {
            info!("reload: the state file holds the current state")
        }
        Ok(changes) => info!(changes = changes.len(), "reload: applied"),
        Err(reason) => error!(%reason, "reload refused: nothing changed"),
    }
    result
}
