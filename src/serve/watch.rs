//! `--watch`: poll the source files and reload when one changes.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::engine::Engine;

/// Size and modification time of each file (`None` where it cannot be read).
pub type Stamps = Vec<Option<(SystemTime, u64)>>;

pub fn stamp(files: &[PathBuf]) -> Stamps {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// Reload whenever the files differ from `last`, which was taken before the index was
/// loaded: a change made while loading or before this thread starts is still seen.
pub fn watch_files(
    engine: &Engine,
    files: &[PathBuf],
    mut last: Stamps,
    stop: &super::connection::Shutdown,
) {
    while stop.borrow().is_none() {
        std::thread::sleep(Duration::from_secs(2));
        let now = stamp(files);
        if now != last {
            tracing::info!("a watched file changed: reloading");
            let _ = engine.reload();
            last = now;
        }
    }
}
