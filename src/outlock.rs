//! One run at a time per output: a lock file next to an `--out` being built, and removal
//! of the temporary directories that killed runs left behind.
//!
//! `OUT` is built as `.OUT.tmp<PID>` and renamed when complete (and a training run keeps
//! its checkpoints in `OUT.train`). [`OutputLock::acquire`] creates `.OUT.lock` holding
//! the process id before any work: a second run on the same `--out` fails at once, naming
//! the first, instead of doing all the work and failing at the final rename (or training
//! into the same `OUT.train`). A lock or a temporary directory whose process is gone (a
//! `kill -9`, a crash, a power cut) is stale and is removed by the next run.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Held while `out` is being built; the lock file goes when it is dropped.
#[derive(Debug)]
pub struct OutputLock {
    path: PathBuf,
}

impl OutputLock {
    /// Takes the lock on `out` (failing, with the holder's process id, if a live process
    /// holds it) and removes stale temporaries of `out` left by dead processes.
    pub fn acquire(out: &Path) -> Result<Self> {
        let name = file_name(out)?;
        let path = out.with_file_name(format!(".{name}.lock"));
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("{}: cannot create", dir.display()))?;
        }
        // Two tries: the second after removing a stale lock.
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    write!(f, "{}", std::process::id())
                        .with_context(|| format!("{}: cannot write", path.display()))?;
                    remove_stale_temporaries(out)?;
                    return Ok(Self { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.trim().parse::<u32>().ok());
                    match holder {
                        Some(pid) if pid != std::process::id() && alive(pid) => bail!(
                            "{}: another interlace run (process {pid}) is writing it ({} is its lock); wait for it, or choose another --out",
                            out.display(),
                            path.display()
                        ),
                        // Dead, unreadable (a kill between create and write), or our own.
                        _ => {
                            let _ = std::fs::remove_file(&path);
                        }
                    }
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("{}: cannot create", path.display()))
                }
            }
        }
        bail!(
            "{}: cannot take the lock (another run keeps creating it)",
            path.display()
        )
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn file_name(out: &Path) -> Result<String> {
    Ok(out
        .file_name()
        .with_context(|| format!("{}: not a file or directory path", out.display()))?
        .to_string_lossy()
        .into_owned())
}

/// Removes `.NAME.tmp<PID>` siblings of `out` (directories or files) whose process is gone.
fn remove_stale_temporaries(out: &Path) -> Result<()> {
    let name = file_name(out)?;
    let prefix = format!(".{name}.tmp");
    let dir = match out.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(pid) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || alive(pid) {
            continue;
        }
        let path = entry.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Ok(()) => eprintln!(
                "{}: removed, left by an earlier run (process {pid}) that did not finish",
                path.display()
            ),
            Err(e) => eprintln!(
                "{}: left by an earlier run (process {pid}); cannot remove it: {e}",
                path.display()
            ),
        }
    }
    Ok(())
}

/// Whether process `pid` exists (signal 0 asks without sending anything).
fn alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = i32::try_from(pid) else {
            return false;
        };
        // SAFETY: kill with signal 0 only checks that the process exists.
        if unsafe { libc::kill(pid, 0) } == 0 {
            return true;
        }
        // EPERM: it exists but belongs to someone else.
        std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The id of a process that has exited.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn a_live_holder_blocks_and_a_dead_one_does_not() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("model");
        let first = OutputLock::acquire(&out).unwrap();
        let lock = tmp.path().join(".model.lock");
        assert_eq!(
            std::fs::read_to_string(&lock).unwrap(),
            std::process::id().to_string()
        );
        // Another live process's lock (pid 1 always exists) is refused.
        std::fs::write(&lock, "1").unwrap();
        let err = OutputLock::acquire(&out).unwrap_err().to_string();
        assert!(err.contains("another interlace run (process 1)"), "{err}");
        drop(first); // (removes the lock file)
        assert!(!lock.exists());
        // A dead process's lock, and its temporary directory, are removed.
        let dead = dead_pid();
        std::fs::write(&lock, dead.to_string()).unwrap();
        let stale = tmp.path().join(format!(".model.tmp{dead}"));
        std::fs::create_dir(&stale).unwrap();
        std::fs::write(stale.join("x"), b"partial").unwrap();
        let live_tmp = tmp.path().join(".model.tmp1");
        std::fs::create_dir(&live_tmp).unwrap();
        let second = OutputLock::acquire(&out).unwrap();
        assert!(!stale.exists());
        assert!(live_tmp.exists(), "a live process's temporary is kept");
        drop(second);
        assert!(!lock.exists());
    }
}
