//! Records the git revision the server is built from, for `shardcast_build_info` in
//! `/metrics` and `--version`. Outside a git checkout (a crate tarball) it is `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim().to_owned())
}

fn main() {
    let revision = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SHARDCAST_GIT_REVISION={revision}");
    // Rebuild when HEAD moves: HEAD itself (a checkout) and the branch it names (a commit).
    // `--git-path` finds both in a worktree too.
    // (A path that does not exist, such as a packed branch, would rerun this every build.)
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    for name in ["HEAD"].into_iter().chain(branch.as_deref()) {
        if let Some(path) = git(&["rev-parse", "--git-path", name])
            && std::path::Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
