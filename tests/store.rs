//! The job store through `faultline serve`: a file that is not faultline's
//! is refused with exit status 4 and never written; acknowledged jobs and
//! idempotency keys survive a SIGKILL; ids are never reused.

use std::path::Path;

use crate::store_cluster::Restartable;
use crate::support::cluster::TempDir;
use crate::support::faultline;

/// Run `serve` on a data directory whose `jobs.db` holds `bytes` (written by
/// `prepare`); check it exits 4 naming the problem and leaves the file as it
/// was. Returns stderr.
fn refused(name: &str, prepare: impl FnOnce(&Path)) -> String {
    let dir = TempDir::new(name);
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("create the data directory");
    let file = data.join("jobs.db");
    prepare(&file);
    let before = std::fs::read(&file).expect("read the file");
    let output = faultline()
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .output()
        .expect("run faultline");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(4),
        "exit status; stderr: {stderr}"
    );
    assert!(stderr.contains("jobs.db"), "names the file: {stderr}");
    assert!(stderr.contains("left untouched"), "{stderr}");
    let after = std::fs::read(&file).expect("read the file again");
    assert!(before == after, "the refused file was modified");
    stderr
}

/// Bytes that are not a database, the same every run.
fn noise(length: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

#[test]
fn a_data_directory_whose_job_store_is_random_bytes_is_refused_with_status_4() {
    let stderr = refused("store-noise", |file| {
        std::fs::write(file, noise(10_000)).expect("write noise");
    });
    assert!(stderr.contains("not a SQLite database"), "{stderr}");
}

#[test]
fn a_job_store_of_another_application_is_refused_with_status_4() {
    let stderr = refused("store-foreign", |file| {
        let other = rusqlite::Connection::open(file).expect("create");
        other
            .execute_batch(
                "PRAGMA application_id = 1234;
                 CREATE TABLE jobs (id INTEGER PRIMARY KEY, name TEXT);
                 INSERT INTO jobs (name) VALUES ('not ours');",
            )
            .expect("another application's database");
    });
    assert!(stderr.contains("another application"), "{stderr}");
}

#[test]
fn a_job_store_from_a_newer_faultline_is_refused_with_status_4() {
    let stderr = refused("store-newer", |file| {
        let newer = rusqlite::Connection::open(file).expect("create");
        newer
            .execute_batch(
                "PRAGMA application_id = 1179404866;
                 PRAGMA user_version = 999;
                 CREATE TABLE jobs (seq INTEGER PRIMARY KEY);",
            )
            .expect("a future schema");
    });
    assert!(stderr.contains("newer"), "{stderr}");
}

#[test]
fn acknowledged_jobs_and_their_keys_survive_a_sigkill_and_ids_are_not_reused() {
    let mut cluster = Restartable::start("store-sigkill", &[], 2);
    let first = cluster.submit(&["--idempotency-key", "k-1"], &["true"]);
    let second = cluster.submit(&[], &["sleep", "5"]);
    let canceled = cluster.submit(&[], &["sleep", "5"]);
    let output = cluster.cli(&["job", "cancel", &canceled]);
    assert!(output.status.success(), "cancel acknowledged");
    cluster.kill_supervisor();

    cluster.start_supervisor();
    for id in [&first, &second] {
        let job = cluster.job(id);
        assert_eq!(
            job["status"], "pending",
            "{id} is back, still queued: {job}"
        );
    }
    let job = cluster.job(&canceled);
    assert_eq!(
        job["status"], "canceled",
        "an acknowledged cancel holds: {job}"
    );
    let retried = cluster.submit(&["--idempotency-key", "k-1"], &["true"]);
    assert_eq!(retried, first, "a retried submit returns the same job");
    let next = cluster.submit(&[], &["true"]);
    let number = |id: &str| -> u64 { id.trim_start_matches("j-").parse().expect("j-N") };
    assert!(
        number(&next) > number(&canceled),
        "{next} reuses an id (last was {canceled})"
    );
}
