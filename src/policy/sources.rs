//! The policy files of a directory, read once: what is compiled is exactly the bytes that were
//! read (and digested), so a file that changes while it is loaded cannot mix two versions.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{Policy, PolicyError, compile};

/// The `*.toml` files directly inside a policy directory, with their bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    dir: PathBuf,
    files: BTreeMap<PathBuf, Vec<u8>>,
}

impl Sources {
    /// Reads every `*.toml` directly inside `dir` (test files in `dir/tests` are not policies).
    pub fn read(dir: &Path) -> Result<Self, PolicyError> {
        let read_err = |path: &Path| {
            let path = path.to_owned();
            move |source| PolicyError::Read { path, source }
        };
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(read_err(dir))? {
            let path = entry.map_err(read_err(dir))?.path();
            if path.extension().is_some_and(|x| x == "toml") && path.is_file() {
                let bytes = std::fs::read(&path).map_err(read_err(&path))?;
                files.insert(path, bytes);
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            files,
        })
    }

    /// Whether the directory holds no policy file.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Policy names (file stems).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.files
            .keys()
            .filter_map(|p| p.file_stem().and_then(|s| s.to_str()))
    }

    /// Hex SHA-256 of each file, by path: what audit events and `Policy::digest` carry.
    pub fn digests(&self) -> BTreeMap<PathBuf, String> {
        self.files
            .iter()
            .map(|(p, b)| (p.clone(), hex::encode(Sha256::digest(b))))
            .collect()
    }

    /// Compiles every file separately, in path order.
    pub fn compile_each(&self) -> Vec<(PathBuf, Result<Policy, PolicyError>)> {
        self.files
            .iter()
            .map(|(path, bytes)| {
                let policy = std::str::from_utf8(bytes)
                    .map_err(|_| PolicyError::NotText(path.clone()))
                    .and_then(|text| Ok(compile(path, text)?));
                (path.clone(), policy)
            })
            .collect()
    }

    /// Compiles every file; the first invalid one fails the whole set.
    pub fn compile(&self) -> Result<HashMap<Arc<str>, Arc<Policy>>, PolicyError> {
        let mut out = HashMap::new();
        for (_, policy) in self.compile_each() {
            let policy = policy?;
            out.insert(policy.name.clone(), Arc::new(policy));
        }
        if out.is_empty() {
            return Err(PolicyError::Empty(self.dir.clone()));
        }
        Ok(out)
    }
}
