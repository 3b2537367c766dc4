//! Kernel tier: the suites work from any checkout location. Tests run the probe as other
//! uids (the guard suites switch to uid 1000); a checkout in a directory other users cannot
//! enter (a 0700 home or temp directory) would make every such exec fail with EACCES.

use std::{fs, os::unix::fs::PermissionsExt, os::unix::process::CommandExt, process::Command};

use enforcer_tests::{
    built_probe, is_root, runnable_by_all, sim::tempfile_dir::TempDir as TmpDir, skip,
};

#[test]
fn the_probe_runs_as_another_user_from_a_private_checkout() {
    let test = "the_probe_runs_as_another_user_from_a_private_checkout";
    if !is_root() {
        skip(test, "needs root (runs a binary as another uid)");
        return;
    }
    // A checkout nobody else can enter.
    let private = TmpDir::new("enf-private-checkout");
    fs::set_permissions(private.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let bin = private.path().join("enforcer-probe");
    fs::copy(built_probe(), &bin).unwrap();
    let run_as_nobody = |p: &std::path::Path| Command::new(p).arg("whoami").uid(65534).output();
    let direct = run_as_nobody(&bin);
    assert!(
        matches!(&direct, Err(e) if e.raw_os_error() == Some(libc::EACCES)),
        "the scenario: a private checkout's binary is not runnable by others: {direct:?}"
    );
    let usable = runnable_by_all(&bin);
    assert_ne!(usable, bin, "a runnable copy is made");
    let out = run_as_nobody(&usable).expect("the copy runs as uid 65534");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("uid=65534"),
        "{out:?}"
    );
    // A binary others can reach is used where it is.
    assert_eq!(runnable_by_all(&usable), usable);
}
