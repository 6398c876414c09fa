//! Property tests of the parts that read what users and peers hand in: the statement
//! splitter, the migration source readers, the linter's entry point and the wire forms. Each
//! property runs on generated inputs (`PROPTEST_CASES` raises the count; a failure prints the
//! smallest input that breaks it); none may panic on any input.

mod lint;
mod sources;
mod splitter;
mod wire;
