//! The data directory: where a supervisor keeps its secrets, its URL and
//! (through [`super::store`]) its jobs, and where the CLI on the same
//! machine finds the URL and token when none is given.
//!
//! | file | what | mode |
//! |---|---|---|
//! | `token` | the `local` user's token, created on first start | 0600 |
//! | `agent-token` | the token of agents started with `--local-agents` | 0600 |
//! | `url` | the URL the running supervisor answers on | 0644 |
//! | `lock` | locked while a supervisor uses the directory; holds its pid | 0600 |
//!
//! The directory itself is created 0700. A secret file that others can
//! read is refused rather than used. Two supervisors on one directory would
//! share one job store and each take the other's agents for lost: the
//! second is refused while the first holds the lock (an advisory `flock`,
//! released by the kernel however the holder ends, SIGKILL included).

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::cli::env;

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// No location was given and none can be derived from the environment.
    #[error("no data directory: set {} or HOME, or pass --data", env::DATA)]
    Unresolved,
    /// A file or the directory cannot be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another process holds the directory's lock.
    #[error(
        "{} is in use by another supervisor{}; stop it first or pass a different --data",
        dir.display(),
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// The pid recorded by the holder, if readable.
        holder: Option<u32>,
    },
    /// A secret file is readable by other users.
    #[error("{} is readable by other users; run `chmod 600 {}` or remove it", path.display(), path.display())]
    Exposed {
        /// The file.
        path: PathBuf,
    },
}

/// A secret read from, or just created in, the data directory.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Secret {
    /// The secret.
    pub value: String,
    /// Whether this call created it.
    pub created: bool,
}

/// A data directory (which may not exist yet).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DataDir {
    path: PathBuf,
}

const USER_TOKEN_FILE: &str = "token";
const AGENT_TOKEN_FILE: &str = "agent-token";
const URL_FILE: &str = "url";
const LOCK_FILE: &str = "lock";

/// The lock on a data directory, held until dropped (or the process ends).
#[derive(Debug)]
pub struct DirLock {
    _file: fs::File,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_owned(),
        source,
    }
}

impl DataDir {
    /// `explicit` if given, else `$FAULTLINE_DATA`, else
    /// `$XDG_DATA_HOME/faultline`, else `~/.local/share/faultline`.
    pub fn resolve(explicit: Option<&Path>) -> Result<DataDir, DataDirError> {
        let from_env = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
        let path = if let Some(path) = explicit {
            path.to_owned()
        } else if let Some(path) = from_env(env::DATA) {
            PathBuf::from(path)
        } else if let Some(xdg) = from_env("XDG_DATA_HOME") {
            PathBuf::from(xdg).join("faultline")
        } else if let Some(home) = from_env("HOME") {
            PathBuf::from(home).join(".local/share/faultline")
        } else {
            return Err(DataDirError::Unresolved);
        };
        Ok(DataDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Create the directory (mode 0700) if it does not exist.
    pub fn create(&self) -> Result<(), DataDirError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
            .map_err(io_error(&self.path))
    }

    /// Take the directory's lock (creating the directory if needed) and
    /// record this process's pid in it; [`DataDirError::Locked`] if another
    /// process holds it.
    pub fn lock(&self) -> Result<DirLock, DataDirError> {
        self.create()?;
        let path = self.path.join(LOCK_FILE);
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_error(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let holder = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(DataDirError::Locked {
                    dir: self.path.clone(),
                    holder,
                });
            }
            Err(fs::TryLockError::Error(error)) => return Err(io_error(&path)(error)),
        }
        file.set_len(0).map_err(io_error(&path))?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())
            .map_err(io_error(&path))?;
        Ok(DirLock { _file: file })
    }

    /// The `local` user's token, created if absent.
    pub fn user_token(&self) -> Result<Secret, DataDirError> {
        self.secret(USER_TOKEN_FILE)
    }

    /// The local agents' token, created if absent.
    pub fn agent_token(&self) -> Result<Secret, DataDirError> {
        self.secret(AGENT_TOKEN_FILE)
    }

    /// The `local` user's token if one was created; never creates one.
    pub fn read_user_token(&self) -> Result<Option<String>, DataDirError> {
        self.read_secret(&self.path.join(USER_TOKEN_FILE))
    }

    /// Record the URL the supervisor answers on.
    pub fn write_url(&self, url: &str) -> Result<(), DataDirError> {
        let path = self.path.join(URL_FILE);
        let temporary = self.path.join(format!("{URL_FILE}.tmp"));
        fs::write(&temporary, format!("{url}\n")).map_err(io_error(&temporary))?;
        fs::rename(&temporary, &path).map_err(io_error(&path))
    }

    /// The URL a supervisor using this directory answers on, if recorded.
    pub fn read_url(&self) -> Result<Option<String>, DataDirError> {
        let path = self.path.join(URL_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text.trim().to_owned()).filter(|url| !url.is_empty())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io_error(&path)(error)),
        }
    }

    fn read_secret(&self, path: &Path) -> Result<Option<String>, DataDirError> {
        let mut file = match fs::File::open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io_error(path)(error)),
        };
        let mode = file
            .metadata()
            .map_err(io_error(path))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(DataDirError::Exposed {
                path: path.to_owned(),
            });
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(io_error(path))?;
        Ok(Some(text.trim().to_owned()).filter(|token| !token.is_empty()))
    }

    fn secret(&self, name: &str) -> Result<Secret, DataDirError> {
        let path = self.path.join(name);
        if let Some(value) = self.read_secret(&path)? {
            return Ok(Secret {
                value,
                created: false,
            });
        }
        self.create()?;
        let value = random_token().map_err(io_error(Path::new("/dev/urandom")))?;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_error(&path))?;
        file.write_all(format!("{value}\n").as_bytes())
            .map_err(io_error(&path))?;
        Ok(Secret {
            value,
            created: true,
        })
    }
}

/// A fresh secret: 32 bytes from the operating system, hex-encoded, with a
/// recognisable prefix so secret scanners can spot a leaked one.
pub fn random_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    Ok(format!("flt_{hex}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh, empty directory under the system's temporary directory.
    fn scratch(name: &str) -> DataDir {
        let path =
            std::env::temp_dir().join(format!("faultline-datadir-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        DataDir::resolve(Some(&path)).expect("explicit path")
    }

    #[test]
    fn tokens_are_created_once_with_mode_0600_then_reused() {
        let dir = scratch("tokens");
        assert_eq!(dir.read_user_token().expect("readable"), None);
        let first = dir.user_token().expect("created");
        assert!(first.created);
        assert!(first.value.starts_with("flt_") && first.value.len() == 68);
        let mode = fs::metadata(dir.path().join("token"))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = fs::metadata(dir.path()).expect("dir").permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let second = dir.user_token().expect("read back");
        assert_eq!(
            second,
            Secret {
                value: first.value.clone(),
                created: false
            }
        );
        assert_eq!(
            dir.read_user_token().expect("readable"),
            Some(first.value.clone())
        );
        let agent = dir.agent_token().expect("created");
        assert_ne!(agent.value, first.value, "each secret is drawn afresh");
        let _ = fs::remove_dir_all(dir.path());
    }

    #[test]
    fn a_token_readable_by_others_is_refused() {
        let dir = scratch("exposed");
        dir.user_token().expect("created");
        let path = dir.path().join("token");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            dir.user_token(),
            Err(DataDirError::Exposed { .. })
        ));
        let _ = fs::remove_dir_all(dir.path());
    }

    #[test]
    fn the_url_round_trips() {
        let dir = scratch("url");
        assert_eq!(dir.read_url().expect("readable"), None);
        dir.create().expect("created");
        dir.write_url("http://127.0.0.1:7070").expect("written");
        assert_eq!(
            dir.read_url().expect("readable").as_deref(),
            Some("http://127.0.0.1:7070")
        );
        let _ = fs::remove_dir_all(dir.path());
    }

    #[test]
    fn a_locked_directory_is_refused_until_its_lock_is_dropped() {
        let dir = scratch("lock");
        let held = dir.lock().expect("the first lock is taken");
        match dir.lock() {
            Err(DataDirError::Locked {
                dir: locked,
                holder,
            }) => {
                assert_eq!(locked, dir.path());
                assert_eq!(holder, Some(std::process::id()));
            }
            other => panic!("a second lock must be refused, got {other:?}"),
        }
        let message = dir.lock().expect_err("still held").to_string();
        assert!(
            message.contains("in use by another supervisor") && message.contains("--data"),
            "{message}"
        );
        drop(held);
        let again = dir.lock().expect("free once the holder dropped it");
        drop(again);
        let _ = fs::remove_dir_all(dir.path());
    }

    #[test]
    fn an_explicit_directory_wins() {
        let dir = DataDir::resolve(Some(Path::new("/tmp/x"))).expect("explicit");
        assert_eq!(dir.path(), Path::new("/tmp/x"));
    }
}
