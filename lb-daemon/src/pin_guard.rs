//! A start that fails leaves no pins it created: [`NewPins`] notes what a pin directory
//! holds before a daemon installs anything and, unless told the start succeeded, removes
//! what appeared since (links first, which detaches their programs, then maps) and the
//! directory itself if the start created it. Pins an earlier daemon left are never touched.

use std::{
    collections::BTreeSet,
    ffi::OsString,
    path::{Path, PathBuf},
};

use tracing::{info, warn};

fn entries(dir: &Path) -> Option<BTreeSet<OsString>> {
    let read = std::fs::read_dir(dir).ok()?;
    Some(read.flatten().map(|e| e.file_name()).collect())
}

/// What a pin directory held before a start; see the module docs.
pub struct NewPins {
    dir: PathBuf,
    /// `None`: the directory did not exist.
    before: Option<BTreeSet<OsString>>,
    keep: bool,
}

impl NewPins {
    pub fn note(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            before: entries(dir),
            keep: false,
        }
    }

    /// The start succeeded: what it pinned stays.
    pub fn keep(mut self) {
        self.keep = true;
    }

    /// Pins created since [`NewPins::note`], links (names starting with `link`) first.
    fn created(&self) -> Vec<OsString> {
        let now = entries(&self.dir).unwrap_or_default();
        let mut new: Vec<OsString> = now
            .into_iter()
            .filter(|name| self.before.as_ref().is_none_or(|b| !b.contains(name)))
            .collect();
        new.sort_by_key(|name| !name.to_string_lossy().starts_with("link"));
        new
    }
}

impl Drop for NewPins {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let created = self.created();
        for name in &created {
            let path = self.dir.join(name);
            if let Err(e) = std::fs::remove_file(&path) {
                warn!(pin = %path.display(), error = %e, "cannot remove a pin of the failed start");
            }
        }
        if self.before.is_none() {
            let _ = std::fs::remove_dir(&self.dir);
        }
        if !created.is_empty() {
            info!(dir = %self.dir.display(), removed = created.len(), "start failed; removed the pins it created");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_start_removes_only_the_pins_it_created() {
        let dir = std::env::temp_dir().join(format!("fl-hard-pins-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("LB_OLD"), b"").unwrap();
        let guard = NewPins::note(&dir);
        std::fs::write(dir.join("LB_NEW"), b"").unwrap();
        std::fs::write(dir.join("link_xdp"), b"").unwrap();
        drop(guard);
        assert_eq!(
            entries(&dir).unwrap(),
            BTreeSet::from([OsString::from("LB_OLD")])
        );

        let kept = NewPins::note(&dir);
        std::fs::write(dir.join("LB_NEW"), b"").unwrap();
        kept.keep();
        assert!(dir.join("LB_NEW").exists());
        std::fs::remove_dir_all(&dir).unwrap();

        // A directory the start created goes with its pins.
        let fresh = NewPins::note(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("LB_NEW"), b"").unwrap();
        drop(fresh);
        assert!(!dir.exists());
    }
}
