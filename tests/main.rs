//! Integration tests of the whole workspace, in one binary.
//! Each module under `tests/` covers one area; `support/` holds shared helpers.

mod cli;
mod sim;
mod support;
