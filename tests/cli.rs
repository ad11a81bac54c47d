//! The command line's shared behaviour: exit statuses and usage errors.

use crate::support::faultline;

#[test]
fn unknown_subcommand_is_a_usage_error_with_status_4() {
    let output = faultline()
        .arg("no-such-command")
        .output()
        .expect("run faultline");
    assert_eq!(output.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no-such-command"));
}

#[test]
fn help_exits_zero() {
    let output = faultline().arg("--help").output().expect("run faultline");
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).contains("sim"));
}
