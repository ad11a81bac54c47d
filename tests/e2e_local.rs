//! End to end: `faultline serve --local-agents N` with no config is a
//! working system on its own, and the CLI on the same machine needs no flags.

use std::os::unix::fs::PermissionsExt;

use crate::support::cluster::{eventually, spawn_serve, TempDir, DEADLINE};
use crate::support::faultline;

#[test]
fn serve_with_local_agents_and_no_config_is_one_command_to_a_working_system() {
    let dir = TempDir::new("local");
    let (mut serve, url) = spawn_serve(&dir, &["--listen", "127.0.0.1:0", "--local-agents", "2"]);
    assert!(url.starts_with("http://127.0.0.1:"), "loopback only: {url}");
    let data = dir.path().join("data");
    let token = data.join("token");
    let mode = std::fs::metadata(&token)
        .expect("token file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the token is private");
    let jobs_mode = std::fs::metadata(data.join("jobs.db"))
        .expect("job store file")
        .permissions()
        .mode();
    assert_eq!(jobs_mode & 0o777, 0o600, "the job store is private");

    let second = faultline()
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .output()
        .expect("run a second faultline serve");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(
        second.status.code(),
        Some(4),
        "a second supervisor on the same data directory is refused: {stderr}"
    );
    assert!(
        stderr.contains("in use by another supervisor")
            && stderr.contains(&format!("pid {}", serve.id())),
        "names the holder: {stderr}"
    );

    let cli = |args: &[&str]| {
        faultline()
            .args(args)
            .env_remove("FAULTLINE_URL")
            .env_remove("FAULTLINE_TOKEN")
            .env("FAULTLINE_DATA", &data)
            .output()
            .expect("run faultline")
    };
    let submitted = cli(&[
        "job",
        "submit",
        "--",
        "sh",
        "-c",
        "echo hello from a local agent",
    ]);
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let id = String::from_utf8(submitted.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned();
    let waited = cli(&["job", "wait", &id]);
    let shown = String::from_utf8_lossy(&waited.stdout);
    assert_eq!(
        waited.status.code(),
        Some(0),
        "{shown}{}",
        String::from_utf8_lossy(&waited.stderr)
    );
    assert!(shown.contains("hello from a local agent"), "{shown}");
    assert!(shown.contains("local-"), "ran on a local agent: {shown}");
    let status = cli(&["status"]);
    let overview = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        overview.contains("AGENTS (2)") && overview.contains("kind/parallel"),
        "{overview}"
    );

    let terminated = std::process::Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status()
        .expect("run kill");
    assert!(terminated.success());
    let exit = eventually("serve to stop on SIGTERM", DEADLINE, || {
        serve.try_wait().expect("try_wait")
    });
    assert_eq!(exit.code(), Some(0), "a clean shutdown");
}

#[test]
fn a_bad_config_file_is_a_usage_error_naming_file_line_and_field() {
    let dir = TempDir::new("bad-config");
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[supervisor]\nheartbeat_interval = \"0s\"\n",
    )
    .expect("write");
    let output = faultline()
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data")
        .arg(dir.path().join("data"))
        .output()
        .expect("run faultline");
    assert_eq!(output.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.toml:5"), "{stderr}");
    assert!(stderr.contains("supervisor.heartbeat_interval"), "{stderr}");
}
