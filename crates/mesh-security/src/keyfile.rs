//! Key files on disk: PKCS#8 PEM private keys written with mode 0600, and a
//! refusal to load a private key that group or others can read.
//!
//! This is the crate's only file I/O; everything else in `mesh-security` is
//! pure computation. It lives here so that every binary and test that loads a
//! node or CA key applies the same permission rule.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::identity::{IdentityError, NodeIdentity};

/// Errors from reading or writing key files.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read or written (may succeed on retry if the cause
    /// is transient, e.g. a full disk).
    #[error("key file {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The key file is readable by group or others; fix it, then retry.
    #[error(
        "key file {path} has mode {mode:o}, readable by group or others; \
         run `chmod 600 {path}` and retry"
    )]
    InsecurePermissions {
        /// The file involved.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file exists already and would be overwritten (retrying will not help).
    #[error("key file {0} already exists; refusing to overwrite it")]
    AlreadyExists(PathBuf),
    /// The file's content is not a valid key.
    #[error("key file {path}: {source}")]
    BadKey {
        /// The file involved.
        path: PathBuf,
        /// What is wrong with the content.
        source: IdentityError,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `identity` as PKCS#8 PEM to `path`, created new with mode 0600.
pub fn write_private_key(path: &Path, identity: &NodeIdentity) -> Result<(), KeyFileError> {
    let pem = identity
        .to_pkcs8_pem()
        .map_err(|source| KeyFileError::BadKey {
            path: path.to_path_buf(),
            source,
        })?;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeyFileError::AlreadyExists(path.to_path_buf())
        } else {
            KeyFileError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        }
    })?;
    file.write_all(pem.as_bytes()).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))
}

/// Reads a PKCS#8 PEM private key, refusing files readable by group or others.
pub fn read_private_key(path: &Path) -> Result<NodeIdentity, KeyFileError> {
    check_permissions(path)?;
    let pem = zeroize::Zeroizing::new(fs::read_to_string(path).map_err(io_err(path))?);
    NodeIdentity::from_pkcs8_pem(&pem).map_err(|source| KeyFileError::BadKey {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(unix)]
fn check_permissions(path: &Path) -> Result<(), KeyFileError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path)
        .map_err(io_err(path))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_path: &Path) -> Result<(), KeyFileError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn written_key_is_private_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key.pem");
        let id = NodeIdentity::from_seed(&[3u8; 32]);
        write_private_key(&path, &id).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(read_private_key(&path).unwrap().node_id(), id.node_id());
        assert!(matches!(
            write_private_key(&path, &id),
            Err(KeyFileError::AlreadyExists(_))
        ));
    }

    #[cfg(unix)]
    #[test]
    fn group_readable_key_is_refused_with_a_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key.pem");
        write_private_key(&path, &NodeIdentity::from_seed(&[4u8; 32])).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let err = read_private_key(&path).unwrap_err();
        assert!(matches!(
            err,
            KeyFileError::InsecurePermissions { mode: 0o640, .. }
        ));
        assert!(err.to_string().contains("chmod 600"));
    }
}
