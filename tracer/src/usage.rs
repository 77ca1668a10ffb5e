//! Bad input: the one error type that means "the user asked for something wrong". `main` prints
//! it as one line and exits 2; it is raised before anything is loaded or attached.

/// Bad input: printed as one line, exit code 2, nothing attached.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub String);
