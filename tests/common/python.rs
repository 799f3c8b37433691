//! Independent implementations our tests check against, from PyPI: `.ci/run` installs them;
//! outside CI a test without them says it skipped.

use std::process::{Command, Stdio};

/// Whether `python3` can import `module`; CI fails without it, naming `package` to install.
pub fn module_present(module: &str, package: &str) -> bool {
    let present = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install {package} (pip)"
        );
        eprintln!("SKIPPED: python3 without {module} (pip install {package})");
    }
    present
}
