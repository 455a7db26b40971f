//! Group commit: the task that publishes the changes queued by
//! [`Control::change`](crate::hub::Control::change) and writes the state
//! file for them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::hub::Control;

/// Publishes the changes queued by [`Control::change`] and writes the state
/// file for them: one snapshot and one write for all that arrived meanwhile,
/// the write off the runtime's thread (the API goes on serving); then
/// acknowledges them. Drains the queue before lbd stops.
pub async fn committer(control: &Mutex<Control>, stop: &AtomicBool) {
    let wanted = control.lock().expect("control lock").commit_wanted();
    loop {
        tokio::select! {
            _ = wanted.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        let (state, path, batch) = {
            let mut c = control.lock().expect("control lock");
            if !c.has_commits() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                continue;
            }
            match c.take_batch() {
                Some(write) => write,
                None => continue,
            }
        };
        let written = tokio::task::spawn_blocking(move || {
            state
                .save(&path)
                .map(|()| state)
                .map_err(|e| format!("writing the state file {}: {e}", path.display()))
        })
        .await
        .unwrap_or_else(|e| Err(format!("writing the state file: {e}")));
        let mut c = control.lock().expect("control lock");
        match written {
            Ok(state) => c.committed(state, batch),
            Err(reason) => c.undo_uncommitted(&reason, batch),
        }
    }
}
