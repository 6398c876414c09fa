//! Reading script files as UTF-8, turning failures into problems with a location.

use std::path::Path;

use super::SourceProblem;

/// The file's text, or a problem naming the file (and the line of the first invalid byte).
pub fn text(path: &Path, problems: &mut Vec<SourceProblem>) -> Option<String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) => {
            problems.push(SourceProblem::new(
                path,
                format!("cannot read file: {error}"),
            ));
            return None;
        }
    };
    match String::from_utf8(bytes) {
        Ok(text) => Some(text),
        Err(error) => {
            let valid = &error.as_bytes()[..error.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
            problems.push(SourceProblem::at_line(
                path,
                line,
                "file is not valid UTF-8; re-encode it as UTF-8",
            ));
            None
        }
    }
}
