//! The standard library's sources, written to a cache directory so that "go to definition" can
//! open them as ordinary files in any editor. The directory name carries a hash of the sources,
//! so a newer `post` never shows stale text; files are written atomically.

use std::path::{Path, PathBuf};

use post_compiler::stdlib::MODULES;

/// FNV-1a over every module: stable across runs and platforms.
fn content_hash() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, _, src) in MODULES {
        for b in name.bytes().chain(src.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The cache root: `$POST_LSP_CACHE`, else `$XDG_CACHE_HOME/post`, else `~/.cache/post`, else
/// the system temporary directory.
pub fn cache_root() -> PathBuf {
    if let Some(p) = std::env::var_os("POST_LSP_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("post");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(h).join(".cache").join("post");
    }
    std::env::temp_dir().join("post")
}

pub struct StdlibFiles {
    dir: PathBuf,
    written: bool,
}

impl StdlibFiles {
    pub fn new(root: &Path) -> StdlibFiles {
        StdlibFiles {
            dir: root.join(format!("stdlib-{:016x}", content_hash())),
            written: false,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of module `i`, written on first use.
    pub fn path(&mut self, i: usize) -> Result<PathBuf, String> {
        let (_, repo_path, _) = MODULES
            .get(i)
            .ok_or_else(|| format!("no standard module {i}"))?;
        if !self.written {
            self.write_all()?;
            self.written = true;
        }
        let file = Path::new(repo_path)
            .file_name()
            .ok_or_else(|| format!("bad module path {repo_path}"))?;
        Ok(self.dir.join(file))
    }

    /// Which module a path is (a file of this directory).
    pub fn module_of(&self, path: &str) -> Option<usize> {
        let p = Path::new(path);
        if p.parent()? != self.dir {
            return None;
        }
        let name = p.file_name()?;
        MODULES
            .iter()
            .position(|(_, rp, _)| Path::new(rp).file_name() == Some(name))
    }

    fn write_all(&self) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        for (_, repo_path, src) in MODULES {
            let Some(name) = Path::new(repo_path).file_name() else {
                continue;
            };
            let target = self.dir.join(name);
            if std::fs::read_to_string(&target).is_ok_and(|t| t == *src) {
                continue;
            }
            let tmp = self.dir.join(format!(
                ".{}.{}.tmp",
                name.to_string_lossy(),
                std::process::id()
            ));
            std::fs::write(&tmp, src)
                .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
            std::fs::rename(&tmp, &target)
                .map_err(|e| format!("cannot write {}: {e}", target.display()))?;
        }
        Ok(())
    }
}
