//! The runtime image installs the Debian package of every shared library the binary links, so
//! a container does not stop at the loader ("libcurl.so.4: cannot open shared object file").
//! The binary is the one this test run built; the packages are the ones this Debian machine
//! (CI's) took those libraries from.

use std::path::Path;
use std::process::Command;

/// In `debian:bookworm-slim` already.
const BASE_IMAGE_PACKAGES: [&str; 2] = ["libc6", "libgcc-s1"];

#[test]
fn the_runtime_image_installs_every_library_the_binary_links() {
    let Some(needed) = needed_libraries(Path::new(env!("CARGO_BIN_EXE_streamrec"))) else {
        eprintln!("skipped: readelf (binutils) is not installed");
        return;
    };
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/Dockerfile"))
            .unwrap();
    let installed = runtime_packages(&dockerfile);
    for library in needed {
        if library.starts_with("ld-linux") {
            continue;
        }
        let Some(package) = debian_package_of(&library) else {
            eprintln!("skipped: no Debian package owns {library} here (not a Debian machine?)");
            return;
        };
        assert!(
            BASE_IMAGE_PACKAGES.contains(&package.as_str()) || installed.contains(&package),
            "the binary links {library} (package {package}); the runtime stage installs {installed:?}"
        );
    }
}

/// The binary's `NEEDED` entries: the shared libraries the loader must find.
fn needed_libraries(binary: &Path) -> Option<Vec<String>> {
    let output = Command::new("readelf")
        .arg("-d")
        .arg(binary)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let needed = text
        .lines()
        .filter(|line| line.contains("(NEEDED)"))
        .filter_map(|line| line.split('[').nth(1)?.split(']').next())
        .map(str::to_owned)
        .collect();
    Some(needed)
}

/// The package that installed `library` on this machine, without its architecture.
fn debian_package_of(library: &str) -> Option<String> {
    let output = Command::new("dpkg")
        .arg("-S")
        .arg(format!("*/{library}"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let owner = text.lines().next()?.split(':').next()?;
    Some(owner.trim().to_owned())
}

/// What the last stage's `apt-get install` lines install.
fn runtime_packages(dockerfile: &str) -> Vec<String> {
    let runtime = dockerfile.rsplit("\nFROM ").next().unwrap();
    let installs = runtime
        .lines()
        .filter_map(|l| l.split("apt-get install").nth(1));
    let words = installs.flat_map(str::split_whitespace);
    let packages = words
        .take_while(|w| *w != "\\")
        .filter(|w| !w.starts_with('-'));
    packages.map(str::to_owned).collect()
}
