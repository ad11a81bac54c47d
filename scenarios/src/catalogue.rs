//! The scenario catalogue: `scenarios/catalogue/*.toml`.

use std::path::{Path, PathBuf};

use crate::scenario::{Scenario, ScenarioError};

/// The catalogue shipped with the crate (`scenarios/catalogue`).
pub fn catalogue_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("catalogue")
}

/// Every `*.toml` scenario in `dir`, sorted by file name. The first file
/// that cannot be read or is invalid is the error.
pub fn load_catalogue(dir: &Path) -> Result<Vec<(PathBuf, Scenario)>, ScenarioError> {
    let unreadable = |message: String| ScenarioError {
        file: dir.to_path_buf(),
        line: None,
        column: None,
        field: None,
        message,
    };
    let entries = std::fs::read_dir(dir)
        .map_err(|error| unreadable(format!("cannot read the catalogue directory: {error}")))?;
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|error| unreadable(format!("cannot list the catalogue: {error}")))?
            .path();
        if path
            .extension()
            .is_some_and(|extension| extension == "toml")
        {
            paths.push(path);
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| Scenario::load(&path).map(|scenario| (path, scenario)))
        .collect()
}

/// The scenario named `name` in `dir` (by its `name` field).
pub fn find_scenario(dir: &Path, name: &str) -> Result<Option<(PathBuf, Scenario)>, ScenarioError> {
    Ok(load_catalogue(dir)?
        .into_iter()
        .find(|(_, scenario)| scenario.name == name))
}
