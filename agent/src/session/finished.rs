//! The results of the assignments this process ran to an end of their own last, across
//! sessions: an assignment delivered again after it ended (its result may have been lost with
//! a session) is answered with its result, not run a second time. Interrupted runs are not
//! kept: a replica delivers an assignment again only while its claim stands, and then it runs
//! again under that claim (the agent moved to another replica and kept its lease).

use std::collections::VecDeque;

use fleetshift_common::proto::v1::{AssignmentResult, ErrorKind};

#[derive(Debug, Default)]
pub struct Finished {
    results: VecDeque<AssignmentResult>,
}

impl Finished {
    /// Enough for every shard of a large host to have ended twice in a row.
    const KEPT: usize = 256;

    pub fn remember(&mut self, result: &AssignmentResult) {
        let interrupted = result
            .error
            .as_ref()
            .is_some_and(|error| error.kind == i32::from(ErrorKind::Interrupted));
        if interrupted {
            return;
        }
        if self.results.len() == Self::KEPT {
            self.results.pop_front();
        }
        self.results.push_back(result.clone());
    }

    pub fn result_of(&self, assignment_id: &str) -> Option<AssignmentResult> {
        self.results
            .iter()
            .rev()
            .find(|result| result.assignment_id == assignment_id)
            .cloned()
    }
}
