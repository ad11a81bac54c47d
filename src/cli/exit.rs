//! Exit statuses, stated once for every subcommand.

use std::process::ExitCode;

/// Everything passed.
pub const OK: u8 = 0;
/// A safety oracle failed.
pub const SAFETY: u8 = 1;
/// A liveness oracle failed (a hang).
pub const LIVENESS: u8 = 2;
/// The same seed replayed differently.
pub const NONDETERMINISM: u8 = 3;
/// Bad usage or bad input (arguments, files).
pub const USAGE: u8 = 4;
/// Any other runtime error (I/O, a server that cannot be reached).
pub const RUNTIME: u8 = 5;
/// `job wait`: the job ended in a status other than `completed`.
pub const JOB_UNSUCCESSFUL: u8 = 6;

/// An error that knows its exit status. Commands return `anyhow::Error`s;
/// those that wrap a `Failure` exit with its status, all others with
/// [`RUNTIME`].
#[derive(Debug)]
pub struct Failure {
    /// The exit status.
    pub status: u8,
    /// What to print (already formatted; may be empty when already printed).
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// An input error (exit status 4) with its message.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Failure {
        status: USAGE,
        message: message.into(),
    })
}

/// A failure with an explicit status whose report was already printed.
pub fn silent(status: u8) -> anyhow::Error {
    anyhow::Error::new(Failure {
        status,
        message: String::new(),
    })
}

/// Print a command's error (if any) and turn it into the process's exit code.
pub fn report(result: anyhow::Result<()>) -> ExitCode {
    let Err(error) = result else {
        return ExitCode::from(OK);
    };
    let status = error
        .downcast_ref::<Failure>()
        .map_or(RUNTIME, |failure| failure.status);
    let text = format!("{error:#}");
    if !text.is_empty() {
        eprintln!("error: {text}");
    }
    ExitCode::from(status)
}

/// clap's own errors: help and version exit 0, everything else is a usage
/// error (status 4, not clap's default 2, which means liveness here).
pub fn clap_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let _ = error.print();
    match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => ExitCode::from(OK),
        _ => ExitCode::from(USAGE),
    }
}
