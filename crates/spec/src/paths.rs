//! Paths inside the sandbox: the workdir and artifact paths.

/// Top-level directories the sandbox builds itself (the host image, `/src`,
/// kernel file systems, secrets under `/run`); a workdir may not hide them.
/// `bin`, `sbin` and `lib*` are the merged-usr links into `/usr`.
const RESERVED_DIRS: &[&str] = &[
    "proc", "dev", "sys", "src", "usr", "etc", "run", "bin", "sbin", "lib", "lib32", "lib64",
    "libx32",
];

/// Splits a `/`-separated path into its components, dropping empty and `.`
/// ones; `..` is an error.
fn components(path: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("'..' is not allowed (expected a path without '..')".to_owned()),
            other => out.push(other),
        }
    }
    Ok(out)
}

/// Checks and normalises a workdir: absolute, no `..`, not `/`, not under a
/// reserved directory. Returns it without `.`, repeated or trailing `/`.
pub(crate) fn workdir(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err("expected an absolute path like /workspace".to_owned());
    }
    if path.chars().any(char::is_control) {
        return Err("control characters are not allowed".to_owned());
    }
    let parts = components(path)?;
    let Some(first) = parts.first() else {
        return Err("expected a directory below / like /workspace, not / itself".to_owned());
    };
    if RESERVED_DIRS.contains(first) {
        return Err(format!(
            "/{first} is reserved by the sandbox (expected a path like /workspace)"
        ));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Checks and normalises an artifact path: relative to the workdir, no
/// `..`, naming something below it.
pub(crate) fn artifact(path: &str) -> Result<String, String> {
    if path.starts_with('/') {
        return Err("expected a path relative to the workdir, not an absolute one".to_owned());
    }
    if path.chars().any(char::is_control) {
        return Err("control characters are not allowed".to_owned());
    }
    let parts = components(path)?;
    if parts.is_empty() {
        return Err("expected a path naming a file or directory under the workdir".to_owned());
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workdirs() {
        assert_eq!(workdir("/workspace"), Ok("/workspace".into()));
        assert_eq!(workdir("//w/./x//"), Ok("/w/x".into()));
        assert_eq!(workdir("/tmp/build"), Ok("/tmp/build".into()));
        assert_eq!(workdir("/usrx"), Ok("/usrx".into()));
        for bad in [
            "",
            "w",
            "./w",
            "/",
            "//",
            "/./",
            "/a/../b",
            "/..",
            "/proc",
            "/proc/x",
            "/dev",
            "/sys/fs",
            "/src",
            "/usr/local",
            "/etc",
            "/run/secrets",
            "/bin",
            "/lib64",
            "/a\nb",
        ] {
            assert!(workdir(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn artifacts() {
        assert_eq!(artifact("hello"), Ok("hello".into()));
        assert_eq!(artifact("./out//bin/"), Ok("out/bin".into()));
        for bad in ["", ".", "./", "/abs", "../x", "a/../b", "a/..", "a\0b"] {
            assert!(artifact(bad).is_err(), "{bad}");
        }
    }
}
