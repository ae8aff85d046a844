//! Finding the job and service binaries: `$PIPELINE_BIN_DIR`, then the runner's own folder,
//! then `PATH`. When the runner was started by `cargo run` (which builds only the runner), it
//! first builds the binaries the DAG uses with the same cargo and profile, so
//! `cargo run -p runner -- dags/demo.yaml` works on a fresh clone and never runs stale jobs.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};
use crate::registry;

/// Where binaries are looked for.
#[derive(Debug, Clone)]
pub struct BinDirs {
    /// `$PIPELINE_BIN_DIR`.
    pub env_dir: Option<PathBuf>,
    /// The folder of the running executable.
    pub exe_dir: Option<PathBuf>,
    /// `$PATH`.
    pub path: Vec<PathBuf>,
}

impl BinDirs {
    pub fn from_env() -> BinDirs {
        BinDirs {
            env_dir: std::env::var_os("PIPELINE_BIN_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            exe_dir: std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf)),
            path: std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default(),
        }
    }

    /// The path of a binary; a name with a `/` is taken as a path.
    pub fn find(&self, name: &str) -> Result<PathBuf> {
        if name.contains('/') {
            let p = PathBuf::from(name);
            return if p.is_file() {
                Ok(p)
            } else {
                Err(Error::BinaryNotFound {
                    name: name.into(),
                    looked: "that path".into(),
                })
            };
        }
        let dirs = self
            .env_dir
            .iter()
            .chain(self.exe_dir.iter())
            .chain(self.path.iter());
        for d in dirs {
            let p = d.join(name);
            if is_executable(&p) {
                return Ok(p);
            }
        }
        let mut looked = Vec::new();
        if let Some(d) = &self.env_dir {
            looked.push(format!("PIPELINE_BIN_DIR={}", d.display()));
        }
        if let Some(d) = &self.exe_dir {
            looked.push(d.display().to_string());
        }
        looked.push("PATH".into());
        Err(Error::BinaryNotFound {
            name: name.into(),
            looked: looked.join(", "),
        })
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The cargo profile a binary in `exe_dir` was built with (`target/<profile>/runner`).
fn profile_of(exe_dir: &Path) -> Option<String> {
    let name = exe_dir.file_name()?.to_str()?;
    let parent = exe_dir.parent()?;
    // target/<profile> or target/<triple>/<profile>.
    let under_target = parent.file_name().is_some_and(|n| n == "target")
        || parent
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == "target");
    under_target.then(|| name.to_string())
}

/// When the runner runs under cargo (`CARGO` and `CARGO_MANIFEST_DIR` set by `cargo run`) from
/// a `target/<profile>` folder, and `PIPELINE_BIN_DIR` is not set, build the workspace binaries
/// among `programs` with that cargo and profile. Returns whether it built.
pub fn build_if_under_cargo(dirs: &BinDirs, programs: &[String]) -> Result<bool> {
    if dirs.env_dir.is_some() {
        return Ok(false);
    }
    let (Some(cargo), Some(manifest_dir)) = (
        std::env::var_os("CARGO"),
        std::env::var_os("CARGO_MANIFEST_DIR"),
    ) else {
        return Ok(false);
    };
    let Some(profile) = dirs.exe_dir.as_deref().and_then(profile_of) else {
        return Ok(false);
    };
    let bins: Vec<&str> = programs
        .iter()
        .map(String::as_str)
        .filter(|p| registry::job(p).is_some() || registry::WORKSPACE_TOOLS.contains(p))
        .collect();
    if bins.is_empty() {
        return Ok(false);
    }
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&manifest_dir)
        .args(["build", "--workspace"]);
    for b in &bins {
        cmd.args(["--bin", b]);
    }
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        p => {
            cmd.args(["--profile", p]);
        }
    }
    tracing::info!(
        binaries = %bins.join(" "),
        profile = %profile,
        "started by cargo: building the binaries this DAG runs (`cargo build --workspace --bin …`)"
    );
    let status = cmd.status().map_err(|e| Error::Spawn {
        program: format!("{}", Path::new(&cargo).display()),
        source: e,
    })?;
    if !status.success() {
        return Err(Error::Build(format!("cargo exited with {status}")));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_in_order_and_names_where_it_looked() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let exe = |d: &Path, n: &str| {
            use std::os::unix::fs::PermissionsExt;
            let p = d.join(n);
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        let in_a = exe(a.path(), "job");
        let in_b = exe(b.path(), "job");
        let only_b = exe(b.path(), "other");
        std::fs::write(a.path().join("plain"), "").unwrap();
        let dirs = BinDirs {
            env_dir: Some(a.path().into()),
            exe_dir: Some(b.path().into()),
            path: vec![],
        };
        assert_eq!(dirs.find("job").unwrap(), in_a);
        assert_eq!(dirs.find("other").unwrap(), only_b);
        let e = dirs.find("plain").unwrap_err().to_string();
        assert!(e.contains("PIPELINE_BIN_DIR=") && e.contains("PATH"), "{e}");
        let no_env = BinDirs {
            env_dir: None,
            ..dirs
        };
        assert_eq!(no_env.find("job").unwrap(), in_b);
    }

    #[test]
    fn profiles_from_the_target_folder() {
        assert_eq!(
            profile_of(Path::new("/w/target/debug")).as_deref(),
            Some("debug")
        );
        assert_eq!(
            profile_of(Path::new("/w/target/x86_64-unknown-linux-gnu/release")).as_deref(),
            Some("release")
        );
        assert_eq!(profile_of(Path::new("/usr/local/bin")), None);
    }
}
